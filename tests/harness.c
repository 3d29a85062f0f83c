/* tests/harness.c: see harness.h. */
#include "tests/harness.h"
#include "common/murmur2.h"
#include "common/util.h"
#include "common/uuid.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STACK_LEDGER "postgresql://outboxd@127.0.0.1:55433/"

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
obh_init_twin(obh_t *twin, const obh_t *h)
{
    *twin = *h;
    twin->pid = 0;
    twin->shm = NULL;
    snprintf(twin->name, sizeof(twin->name), "%s-b", h->name);
    snprintf(twin->conf, sizeof(twin->conf), "%s/twin.conf", h->dir);
    snprintf(twin->log, sizeof(twin->log), "%s/twin.log", h->dir);
    snprintf(twin->pidfile, sizeof(twin->pidfile), "%s/twin.pid", h->dir);
    obh_free_ports(&twin->orders_port, &twin->ledger_port, &twin->admin_port);
}

void
obh_write_conf(obh_t *h, const char *extra)
{
    FILE *f = fopen(h->conf, "w");

    cr_assert_not_null(f);
    fprintf(f,
            "[supervisor]\nname = %s\npidfile = %s\n"
            "[orders]\nlisten = 127.0.0.1:%d\ndsn = %s\n"
            "[ledger]\nlisten = 127.0.0.1:%d\ndsn = %s\ngroup = ledger-%s\n"
            "[kafka]\nbrokers = " STACK_KAFKA "\ntopic = %s\npartitions = %d\n"
            "[admin]\nlisten = 127.0.0.1:%d\n"
            "[relay]\nslot_prefix = ob_%s\n"
            "[log]\nfile = %s\n%s",
            h->name, h->pidfile, h->orders_port, h->orders_dsn, h->ledger_port, h->ledger_dsn, h->tag, h->topic,
            h->partitions, h->admin_port, h->tag, h->log, extra);
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
        /* an aborted test run must not leave an instance behind */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
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

int
obh_log_count(obh_t *h, const char *needle)
{
    FILE *f = fopen(h->log, "r");
    char  line[4096];
    int   n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* A database with replication slots cannot be dropped, and a slot left behind keeps WAL. */
void
obh_drop_slots(obh_t *h)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '%s' AND active",
             h->orders_db);
    obh_exec(STACK_ORDERS "postgres", sql);
    for (int tries = 0; tries < 50; tries++) {
        snprintf(sql, sizeof(sql),
                 "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '%s'"
                 " AND NOT active",
                 h->orders_db);
        obh_exec(STACK_ORDERS "postgres", sql);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_replication_slots WHERE database = '%s'", h->orders_db);
        if (obh_scalar(STACK_ORDERS "postgres", sql) == 0)
            return;
        usleep(100 * 1000);    /* a terminated walsender lets go of its slot within moments */
    }
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
    obh_drop_slots(h);
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

int obh_http_timeout_ms = 30000;

int
obh_http(int port, const char *method, const char *path, const char *extra_headers, const char *req_body,
         char *body, size_t bodylen, char *hdrs, size_t hdrslen)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
    enum { BUFLEN = 1 << 18 };
    char              *buf = malloc(BUFLEN);
    size_t             used = 0, blen = req_body ? strlen(req_body) : 0;
    int                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), status = 0, n;
    struct timeval     tv = { obh_http_timeout_ms / 1000, (obh_http_timeout_ms % 1000) * 1000 };
    char               head[2048];

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_not_null(buf);
    if (fd < 0) {
        free(buf);
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));    /* bounds connect() too */
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

static rd_kafka_t *
obh_kafka_admin(void)
{
    char             err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cr_assert_not_null(rk, "%s", err);
    return rk;
}

void
obh_kafka_create_topic(obh_t *h, int max_message_bytes)
{
    char                 err[256], mmb[16];
    rd_kafka_t          *rk = obh_kafka_admin();
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(h->topic, h->partitions, 1, err, sizeof(err));
    rd_kafka_queue_t    *q = rd_kafka_queue_new(rk);

    if (max_message_bytes > 0) {
        snprintf(mmb, sizeof(mmb), "%d", max_message_bytes);
        rd_kafka_NewTopic_set_config(nt, "max.message.bytes", mmb);
    }
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    cr_assert_not_null(ev, "CreateTopics timed out");
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t                                cnt;
    const rd_kafka_topic_result_t       **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
    cr_assert(cnt == 1 && rd_kafka_topic_result_error(tr[0]) == 0, "CreateTopics: %s",
              cnt ? rd_kafka_topic_result_error_string(tr[0]) : "no result");
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(rk);
}

void
obh_kafka_grow_topic(obh_t *h, int partitions)
{
    char                     err[256];
    rd_kafka_t              *rk = obh_kafka_admin();
    rd_kafka_NewPartitions_t *np = rd_kafka_NewPartitions_new(h->topic, (size_t) partitions, err, sizeof(err));
    rd_kafka_queue_t        *q = rd_kafka_queue_new(rk);

    cr_assert_not_null(np, "NewPartitions: %s", err);
    rd_kafka_CreatePartitions(rk, &np, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    cr_assert_not_null(ev, "CreatePartitions timed out");
    size_t                          cnt;
    const rd_kafka_topic_result_t **tr =
        rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(ev), &cnt);
    cr_assert(cnt == 1 && rd_kafka_topic_result_error(tr[0]) == 0, "CreatePartitions: %s",
              cnt ? rd_kafka_topic_result_error_string(tr[0]) : "no result");
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewPartitions_destroy(np);
    rd_kafka_destroy(rk);
    h->partitions = partitions;
}

void
obh_kafka_set_max_message_bytes(obh_t *h, int bytes)
{
    char                  v[16];
    rd_kafka_t           *rk = obh_kafka_admin();
    rd_kafka_ConfigResource_t *cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, h->topic);
    rd_kafka_queue_t     *q = rd_kafka_queue_new(rk);

    snprintf(v, sizeof(v), "%d", bytes);
    rd_kafka_ConfigResource_set_config(cr, "max.message.bytes", v);
    rd_kafka_AlterConfigs(rk, &cr, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    cr_assert_not_null(ev, "AlterConfigs timed out");
    cr_assert_eq(rd_kafka_event_error(ev), 0, "AlterConfigs: %s", rd_kafka_event_error_string(ev));
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_ConfigResource_destroy(cr);
    rd_kafka_destroy(rk);
}

void
obh_header(const rd_kafka_message_t *m, const char *name, char *out, size_t outlen)
{
    rd_kafka_headers_t *hdrs;
    const void         *v;
    size_t              len;

    out[0] = '\0';
    if (rd_kafka_message_headers(m, &hdrs) == 0 && rd_kafka_header_get_last(hdrs, name, &v, &len) == 0) {
        if (len >= outlen)
            len = outlen - 1;
        memcpy(out, v, len);
        out[len] = '\0';
    }
}

obh_msg_t *
obh_kafka_read_all(obh_t *h, int want, int timeout_ms, int *n)
{
    char             err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int              cap = want + 1024, got = 0;
    obh_msg_t       *out = malloc((size_t) cap * sizeof(*out));
    int64_t          deadline = ob_now_ms() + timeout_ms;

    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", h->tag, err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(h->partitions);
    for (int p = 0; p < h->partitions; p++)
        rd_kafka_topic_partition_list_add(tp, h->topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(c, tp), 0);
    rd_kafka_topic_partition_list_destroy(tp);
    int eof = 0;
    while (ob_now_ms() < deadline && !(got >= want && eof >= h->partitions)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eof++;
        } else if (m->err == 0) {
            if (got == cap) {
                cap *= 2;
                out = realloc(out, (size_t) cap * sizeof(*out));
            }
            obh_msg_t *o = &out[got++];
            char       seq[16];
            o->partition = m->partition;
            o->offset = m->offset;
            o->len = m->len;
            snprintf(o->key, sizeof(o->key), "%.*s", (int) (m->key_len < 39 ? m->key_len : 39), (const char *) m->key);
            obh_header(m, "event-id", o->event_id, sizeof(o->event_id));
            obh_header(m, "aggregate-seq", seq, sizeof(seq));
            o->seq = atoi(seq);
            eof = 0;      /* a new message: wait for every partition's EOF again */
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    *n = got;
    return out;
}

void
obh_insert_events(obh_t *h, int n, int per_order, char (*ids)[37])
{
    obh_insert_events_ex(h, n, per_order, ids, 0, 0);
}

void
obh_insert_events_ex(obh_t *h, int n, int per_order, char (*ids)[37], int one_txn, int first_bytes)
{
    PGconn *pg = obh_pg(h->orders_dsn);

    if (one_txn)
        PQclear(PQexec(pg, "BEGIN"));
    for (int i = 0; i < n; i++) {
        ob_uuid_t u;
        char      part[16], per[16], size[16];
        cr_assert_eq(ob_uuid_v7(&u), 0);
        ob_uuid_format(&u, ids[i]);
        snprintf(part, sizeof(part), "%d", ob_partition_for(ids[i], 36, h->partitions));
        snprintf(per, sizeof(per), "%d", per_order);
        snprintf(size, sizeof(size), "%d", i == 0 ? first_bytes : 0);
        const char *params[4] = { ids[i], part, per, size };
        PGresult   *r = PQexecParams(pg,
                                     "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, seq, event_type,"
                                     " partition, payload) SELECT gen_random_uuid(), 'order', $1::uuid, s,"
                                     " 'order.test', $2::int, convert_to(CASE WHEN s = 1 AND $4::int > 0"
                                     "   THEN repeat('x', $4::int) ELSE 'payload ' || s END, 'UTF8')"
                                     " FROM generate_series(1, $3::int) s",
                                     4, NULL, params, NULL, NULL, 0);
        cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
        PQclear(r);
    }
    if (one_txn)
        PQclear(PQexec(pg, "COMMIT"));
    PQfinish(pg);
}

typedef struct {
    char    key[40];
    int32_t partition;
    int32_t max_seq;
} obh_order_seen_t;

static int
obh_cmp_msg(const void *a, const void *b)
{
    const obh_msg_t *x = a, *y = b;

    if (x->partition != y->partition)
        return x->partition - y->partition;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int
obh_check_log(obh_t *h, const obh_msg_t *msgs, int n, int expect_events)
{
    obh_msg_t *m = malloc((size_t) n * sizeof(*m));
    int        dups = 0, norders = 0;
    obh_order_seen_t *seen = calloc((size_t) n + 1, sizeof(*seen));

    memcpy(m, msgs, (size_t) n * sizeof(*m));
    qsort(m, (size_t) n, sizeof(*m), obh_cmp_msg);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(m[i].partition, ob_partition_for(m[i].key, strlen(m[i].key), h->partitions),
                     "event %s of %s in partition %d, murmur2 says %d", m[i].event_id, m[i].key, m[i].partition,
                     ob_partition_for(m[i].key, strlen(m[i].key), h->partitions));
        obh_order_seen_t *o = NULL;
        for (int k = 0; k < norders && o == NULL; k++)
            if (strcmp(seen[k].key, m[i].key) == 0)
                o = &seen[k];
        if (o == NULL) {
            o = &seen[norders++];
            ob_strlcpy(o->key, m[i].key, sizeof(o->key));
            o->partition = m[i].partition;
        }
        if (m[i].seq <= o->max_seq) {
            dups++;    /* a re-send of something already in the log */
            continue;
        }
        cr_assert_eq(m[i].seq, o->max_seq + 1, "order %s: seq %d after %d at %d/%lld (gap or reorder)", m[i].key,
                     m[i].seq, o->max_seq, m[i].partition, (long long) m[i].offset);
        o->max_seq = m[i].seq;
    }
    /* every outbox event is in the log, and its row carries its true offset */
    cr_assert_eq(n - dups, expect_events, "%d distinct events in Kafka, %d expected", n - dups, expect_events);
    PGconn *pg = obh_pg(h->orders_dsn);
    for (int i = 0; i < n; i++) {
        const char *params[1] = { m[i].event_id };
        PGresult   *r = PQexecParams(pg, "SELECT kafka_offset, partition FROM outbox WHERE event_id = $1::uuid", 1, NULL,
                                     params, NULL, NULL, 0);
        cr_assert_eq(PQntuples(r), 1, "event %s from Kafka is not in the outbox", m[i].event_id);
        cr_assert_eq(atoi(PQgetvalue(r, 0, 1)), m[i].partition);
        if (dups == 0)
            cr_assert_eq(atoll(PQgetvalue(r, 0, 0)), m[i].offset, "event %s marked with offset %s, Kafka has %lld",
                         m[i].event_id, PQgetvalue(r, 0, 0), (long long) m[i].offset);
        PQclear(r);
    }
    PQfinish(pg);
    free(seen);
    free(m);
    return dups;
}

void
obh_kafka_produce(obh_t *h, int partition, const char *key, const void *value, size_t len, const char *ctype)
{
    rd_kafka_t         *rk = obh_kafka_admin();
    rd_kafka_resp_err_t e;
    int64_t             deadline = ob_now_ms() + 15000;

    do {
        if (ctype != NULL)
            e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(h->topic), RD_KAFKA_V_PARTITION(partition),
                                  RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *) value, len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_HEADER("content-type", ctype, -1), RD_KAFKA_V_END);
        else
            e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(h->topic), RD_KAFKA_V_PARTITION(partition),
                                  RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *) value, len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e != 0)
            rd_kafka_poll(rk, 100);
    } while (e != 0 && ob_now_ms() < deadline);
    cr_assert_eq(e, 0, "produce: %s", rd_kafka_err2str(e));
    cr_assert_eq(rd_kafka_flush(rk, 15000), 0, "produce not acknowledged");
    rd_kafka_destroy(rk);
}

pid_t
obh_kafka_pid(void)
{
    FILE *f = fopen("var/run/kafka.pid", "r");
    int   pid = 0;

    cr_assert_not_null(f, "var/run/kafka.pid: run tests from the repository root with the stack up");
    cr_assert_eq(fscanf(f, "%d", &pid), 1);
    fclose(f);
    return (pid_t) pid;
}

void
obh_db_allow(obh_t *h, int ledger, int allow)
{
    const char *admin = ledger ? STACK_LEDGER "postgres" : STACK_ORDERS "postgres";
    const char *db = ledger ? h->ledger_db : h->orders_db;
    char        sql[256];

    snprintf(sql, sizeof(sql), "ALTER DATABASE %s ALLOW_CONNECTIONS %s", db, allow ? "true" : "false");
    obh_exec(admin, sql);
    if (!allow) {
        snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'", db);
        obh_exec(admin, sql);
    }
}

void
obh_new_uuid(char id[37])
{
    ob_uuid_t u;

    cr_assert_eq(ob_uuid_v7(&u), 0);
    ob_uuid_format(&u, id);
}

typedef struct {
    const char *dsn, *sql;
    long long   want;
} obh_scalar_cond_t;

static int
obh_scalar_is(obh_t *h, void *arg)
{
    obh_scalar_cond_t *c = arg;

    (void) h;
    return obh_scalar(c->dsn, c->sql) == c->want;
}

void
obh_wait_scalar(obh_t *h, const char *dsn, const char *sql, long long want, int timeout_ms)
{
    obh_scalar_cond_t c = { dsn, sql, want };

    cr_assert(obh_poll(obh_scalar_is, h, &c, obh_ms(timeout_ms)), "never reached %lld for: %s (now %lld); log %s", want,
              sql, obh_scalar(dsn, sql), h->log);
}
