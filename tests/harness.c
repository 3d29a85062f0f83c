/* tests/harness.c: see harness.h. */
#include "tests/harness.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STACK_ORDERS "postgresql://outboxd@127.0.0.1:55432/"
#define STACK_LEDGER "postgresql://outboxd@127.0.0.1:55433/"
#define STACK_KAFKA  "127.0.0.1:59092"

static const char *
obh_bin(void)
{
    const char *b = getenv("OB_BIN");

    return b ? b : "build/outboxd";
}

int
obh_ms(int ms)
{
    const char *s = getenv("OB_TEST_SLOW");

    return s && atoi(s) > 1 ? ms * atoi(s) : ms;
}

int
obh_alive(pid_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

int
obh_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

/* Three distinct ports the kernel says are free right now (held open
 * together while choosing, so it cannot hand out one twice). */
static void
obh_free_ports(int *a, int *b, int *c)
{
    int *out[3] = { a, b, c }, fds[3];

    for (int i = 0; i < 3; i++) {
        struct sockaddr_in sa = { .sin_family = AF_INET };
        socklen_t          len = sizeof(sa);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fds[i] >= 0);
        cr_assert_eq(bind(fds[i], (struct sockaddr *) &sa, sizeof(sa)), 0);
        cr_assert_eq(getsockname(fds[i], (struct sockaddr *) &sa, &len), 0);
        *out[i] = ntohs(sa.sin_port);
    }
    for (int i = 0; i < 3; i++)
        close(fds[i]);
}

PGconn *
obh_pg(const char *dsn)
{
    PGconn *pg = PQconnectdb(dsn);

    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "connect %s: %s", dsn, PQerrorMessage(pg));
    return pg;
}

static void
obh_exec(const char *dsn, const char *sql)
{
    PGconn   *pg = obh_pg(dsn);
    PGresult *r = PQexec(pg, sql);

    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
              PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);
}

long long
obh_scalar(const char *dsn, const char *sql)
{
    PGconn   *pg = obh_pg(dsn);
    PGresult *r = PQexec(pg, sql);
    long long v;

    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    cr_assert_gt(PQntuples(r), 0, "%s: no rows", sql);
    v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return v;
}

int
obh_run(const char *const *args, char *out, size_t outlen)
{
    int   p[2], st;
    pid_t pid;
    size_t used = 0;

    cr_assert_eq(pipe(p), 0);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        const char *argv[32];
        int         n = 0;
        argv[n++] = obh_bin();
        for (int i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        dup2(p[1], STDOUT_FILENO);
        dup2(p[1], STDERR_FILENO);
        close(p[0]);
        execv(argv[0], (char *const *) argv);
        _exit(127);
    }
    close(p[1]);
    for (;;) {
        ssize_t n = read(p[0], out + used, outlen - 1 - used);
        if (n <= 0)
            break;
        used += (size_t) n;
        if (used >= outlen - 1)
            break;
    }
    out[used] = '\0';
    close(p[0]);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void
obh_init(obh_t *h, int migrate)
{
    static int seq;
    char       sql[256], out[4096];

    memset(h, 0, sizeof(*h));
    snprintf(h->tag, sizeof(h->tag), "t%d_%d_%ld", (int) getpid(), seq++, (long) (time(NULL) % 100000));
    snprintf(h->name, sizeof(h->name), "test-%s", h->tag);
    snprintf(h->dir, sizeof(h->dir), "/tmp/outboxd-%s", h->tag);
    cr_assert_eq(mkdir(h->dir, 0700), 0, "mkdir %s: %s", h->dir, strerror(errno));
    snprintf(h->conf, sizeof(h->conf), "%s/outboxd.conf", h->dir);
    snprintf(h->log, sizeof(h->log), "%s/outboxd.log", h->dir);
    snprintf(h->pidfile, sizeof(h->pidfile), "%s/outboxd.pid", h->dir);
    snprintf(h->orders_db, sizeof(h->orders_db), "orderdb_%s", h->tag);
    snprintf(h->ledger_db, sizeof(h->ledger_db), "ledgerdb_%s", h->tag);
    snprintf(h->orders_dsn, sizeof(h->orders_dsn), STACK_ORDERS "%s", h->orders_db);
    snprintf(h->ledger_dsn, sizeof(h->ledger_dsn), STACK_LEDGER "%s", h->ledger_db);
    snprintf(h->topic, sizeof(h->topic), "outbox-events-%s", h->tag);
    h->partitions = 12;
    obh_free_ports(&h->orders_port, &h->ledger_port, &h->admin_port);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", h->orders_db);
    obh_exec(STACK_ORDERS "postgres", sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", h->ledger_db);
    obh_exec(STACK_LEDGER "postgres", sql);
    obh_write_conf(h, "");
    if (migrate) {
        const char *args[] = { "migrate", "-c", h->conf, NULL };
        cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "migrate failed: %s", out);
    }
}

void
obh_write_conf(obh_t *h, const char *extra)
{
    FILE *f = fopen(h->conf, "w");

    cr_assert_not_null(f);
    fprintf(f,
            "[supervisor]\nname = %s\npidfile = %s\n"
            "[orders]\nlisten = 127.0.0.1:%d\ndsn = %s\n"
            "[ledger]\nlisten = 127.0.0.1:%d\ndsn = %s\n"
            "[kafka]\nbrokers = " STACK_KAFKA "\ntopic = %s\npartitions = %d\n"
            "[admin]\nlisten = 127.0.0.1:%d\n"
            "[log]\nfile = %s\n%s",
            h->name, h->pidfile, h->orders_port, h->orders_dsn, h->ledger_port, h->ledger_dsn, h->topic,
            h->partitions, h->admin_port, h->log, extra);
    fclose(f);
}

static int
obh_header_ready(obh_t *h, void *arg)
{
    char err[256];

    (void) arg;
    if (h->shm != NULL && atomic_load(&h->shm->map->hdr.sup_pid) != h->pid) {
        /* a dead predecessor's segment: the new supervisor will replace it */
        ob_shm_close(h->shm, 0);
        h->shm = NULL;
    }
    if (h->shm == NULL)
        h->shm = ob_shm_attach(h->name, err, sizeof(err));
    return h->shm != NULL && atomic_load(&h->shm->map->hdr.sup_pid) == h->pid;
}

void
obh_start(obh_t *h, const char *const *args)
{
    pid_t pid = fork();

    cr_assert(pid >= 0);
    if (pid == 0) {
        const char *argv[32];
        int         n = 0;
        argv[n++] = obh_bin();
        argv[n++] = "-f";
        argv[n++] = "-c";
        argv[n++] = h->conf;
        for (int i = 0; args && args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        int fd = open("/dev/null", O_RDWR);
        dup2(fd, STDIN_FILENO);
        execv(argv[0], (char *const *) argv);
        _exit(127);
    }
    h->pid = pid;
    if (h->shm != NULL) {
        ob_shm_close(h->shm, 0);
        h->shm = NULL;
    }
    cr_assert(obh_poll(obh_header_ready, h, NULL, obh_ms(5000)), "outboxd did not create its segment; log %s",
              h->log);
}

int
obh_stop(obh_t *h, int timeout_ms)
{
    int64_t deadline = ob_now_ms() + timeout_ms;
    int     st;

    if (h->pid <= 0)
        return 0;
    kill(h->pid, SIGTERM);
    while (ob_now_ms() < deadline) {
        pid_t r = waitpid(h->pid, &st, WNOHANG);
        if (r == h->pid) {
            h->pid = 0;
            return st;
        }
        ob_sleep_ms(10);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, &st, 0);
    h->pid = 0;
    return -1;
}

/* Deletes the test's topic with the Kafka admin API. */
static void
obh_drop_topic(obh_t *h)
{
    char             err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL)
        return;
    rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(h->topic);
    rd_kafka_queue_t       *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_DeleteTopic_destroy(dt);
    rd_kafka_destroy(rk);
}

void
obh_cleanup(obh_t *h)
{
    char sql[256], cmd[300];

    obh_stop(h, obh_ms(15000));
    if (h->shm != NULL) {
        ob_shm_close(h->shm, 0);
        h->shm = NULL;
    }
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", h->orders_db);
    obh_exec(STACK_ORDERS "postgres", sql);
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", h->ledger_db);
    obh_exec(STACK_LEDGER "postgres", sql);
    obh_drop_topic(h);
    if (getenv("OB_KEEP_LOGS") == NULL) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
        if (system(cmd) != 0) {
            /* leftover temp dir is harmless */
        }
    }
}

int
obh_worker(obh_t *h, int kind, int index, ob_shm_slot_t *out)
{
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t s;
        if (ob_shm_slot_snapshot(&h->shm->map->slots[i], &s) != 0)
            continue;
        if (s.state != OB_SLOT_EMPTY && s.kind == kind && s.index == index && s.pid > 0 &&
            s.state != OB_SLOT_STOPPING) {
            if (out)
                *out = s;
            return i;
        }
    }
    return -1;
}

int
obh_count(obh_t *h, int kind)
{
    int n = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t s;
        if (ob_shm_slot_snapshot(&h->shm->map->slots[i], &s) == 0 && s.kind == kind && s.pid > 0)
            n++;
    }
    return n;
}

pid_t
obh_wait_worker(obh_t *h, int kind, int index, pid_t not_pid, int timeout_ms)
{
    int64_t deadline = ob_now_ms() + timeout_ms;

    do {
        ob_shm_slot_t s;
        if (obh_worker(h, kind, index, &s) >= 0 && s.pid != not_pid && s.heartbeat_ms != 0)
            return s.pid;
        ob_sleep_ms(5);
    } while (ob_now_ms() < deadline);
    return 0;
}

int
obh_poll(int (*cond)(obh_t *, void *), obh_t *h, void *arg, int timeout_ms)
{
    int64_t deadline = ob_now_ms() + timeout_ms;

    do {
        if (cond(h, arg))
            return 1;
        ob_sleep_ms(10);
    } while (ob_now_ms() < deadline);
    return cond(h, arg);
}

int
obh_http(int port, const char *method, const char *path, const char *extra_headers, const char *req_body,
         char *body, size_t bodylen, char *hdrs, size_t hdrslen)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
    enum { BUFLEN = 1 << 18 };
    char              *buf = malloc(BUFLEN);
    size_t             used = 0, blen = req_body ? strlen(req_body) : 0;
    int                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), status = 0, n;
    struct timeval     tv = { 30, 0 };
    char               head[2048];

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_not_null(buf);
    if (fd < 0) {
        free(buf);
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        free(buf);
        return -e;
    }
    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %zu\r\n%s\r\n", method,
                 path, blen, extra_headers ? extra_headers : "");
    if (send(fd, head, (size_t) n, MSG_NOSIGNAL) != n || (blen && send(fd, req_body, blen, MSG_NOSIGNAL) != (ssize_t) blen)) {
        int e = errno ? errno : EPIPE;
        close(fd);
        free(buf);
        return -e;
    }
    for (;;) {
        ssize_t r = recv(fd, buf + used, BUFLEN - 1 - used, 0);
        if (r <= 0)
            break;
        used += (size_t) r;
        if (used >= BUFLEN - 1)
            break;
    }
    close(fd);
    buf[used] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return -ECONNRESET;    /* closed before a status line: the request failed */
    }
    char *sep = strstr(buf, "\r\n\r\n");
    if (hdrs != NULL) {
        size_t hl = sep ? (size_t) (sep - buf) : used;
        if (hl >= hdrslen)
            hl = hdrslen - 1;
        memcpy(hdrs, buf, hl);
        hdrs[hl] = '\0';
    }
    if (body != NULL) {
        ob_strlcpy(body, sep ? sep + 4 : "", bodylen);
    }
    free(buf);
    return status;
}

void
obh_sql(const char *dsn, const char *sql)
{
    obh_exec(dsn, sql);
}
