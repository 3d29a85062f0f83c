/*
 * bench/peers.c: a peer publisher, Debezium in a Kafka Connect standalone
 * worker, measured like outboxd's relays (bench/README.md, section 9).
 *
 *   peer-ready    waits for the worker run.sh started: its connector task
 *                 RUNNING (REST) and its replication slot active, i.e. it
 *                 streams; the time since the JVM was launched is its
 *                 start-up;
 *   peer-drain    times a backlog from its commit until the topic holds it
 *                 all, as `drain` times outboxd in mode wal (section 7),
 *                 with the same CPU accounting and the JVM's RSS;
 *   peer-watch    the JVM's RSS and everyone's CPU while a paced load runs;
 *   backlog-save  the drain's backlog into a file, and backlog-load back
 *                 into a fresh orderdb: the peer drains the very rows
 *                 outboxd drained, though the sections in between drop
 *                 the database.
 *
 * Nothing here can see inside the JVM: progress is what Kafka holds (the
 * topic's watermarks), which is also what "published" means to a reader.
 */
#include "bench/obbench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define PEER_REST_MAX (256 * 1024)    /* a status with a stack trace fits */
#define PEER_TICK_S   0.05

static double
peer_wall(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (double) tv.tv_sec + (double) tv.tv_usec / 1e6;
}

/* GET path on the worker's loopback REST port: the JSON body, or NULL while it does not answer yet. */
static json_t *
peer_rest_get(int port, const char *path)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
    struct timeval     tmo = { 2, 0 };    /* a worker busy starting must not stall the wait for good */
    char              *buf = malloc(PEER_REST_MAX + 1), req[512];
    size_t             used = 0;
    ssize_t            n;
    json_t            *j = NULL;
    int                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (buf == NULL || fd < 0)
        bench_die("peer: out of memory or sockets");
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo));
    int len = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n", path);
    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0 && write(fd, req, (size_t) len) == len) {
        while (used < PEER_REST_MAX && (n = read(fd, buf + used, PEER_REST_MAX - used)) > 0)
            used += (size_t) n;
        buf[used] = '\0';
        char *body = strstr(buf, "\r\n\r\n");
        if (strncmp(buf, "HTTP/1.1 200", 12) == 0 && body != NULL)
            j = json_loads(body + 4, 0, NULL);
    }
    close(fd);
    free(buf);
    return j;
}

/* The connector's task state ("RUNNING", "FAILED", ...), or "" before there is one; trace when it failed. */
static void
peer_task_state(int port, const char *connector, char *state, size_t statelen, char *trace, size_t tracelen)
{
    char    path[256];
    json_t *j, *task;

    snprintf(path, sizeof(path), "/connectors/%s/status", connector);
    state[0] = trace[0] = '\0';
    if ((j = peer_rest_get(port, path)) == NULL)
        return;
    task = json_array_get(json_object_get(j, "tasks"), 0);
    if (task == NULL)
        task = json_object_get(j, "connector");      /* a connector that failed has no task */
    const char *s = json_string_value(json_object_get(task, "state"));
    const char *t = json_string_value(json_object_get(task, "trace"));
    snprintf(state, statelen, "%s", s ? s : "");
    snprintf(trace, tracelen, "%s", t ? t : "");
    trace[strcspn(trace, "\n")] = '\0';               /* the exception's first line says enough */
    json_decref(j);
}

static int
peer_slot_active(PGconn *pg, const char *slot)
{
    const char *params[1] = { slot };
    PGresult   *r = PQexecParams(pg, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", 1, NULL, params,
                                 NULL, NULL, 0);
    int         active;

    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        bench_die("peer: slot %s: %s", slot, PQntuples(r) == 0 ? "does not exist" : PQresultErrorMessage(r));
    active = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return active;
}

/*
 * peer-ready --dsn D --slot S --pid JVM --rest-port P --connector C --launched EPOCH_S [--timeout 180]
 * --launched is bash's $EPOCHREALTIME just before it started the JVM.
 */
int
cmd_peer_ready(int argc, char **argv)
{
    PGconn     *pg = bench_pg(bench_opt_req(argc, argv, "--dsn"));
    const char *slot = bench_opt_req(argc, argv, "--slot"), *connector = bench_opt_req(argc, argv, "--connector");
    pid_t       pid = (pid_t) bench_opt_long(argc, argv, "--pid", 0);
    int         port = (int) bench_opt_long(argc, argv, "--rest-port", 0);
    double      launched = bench_opt_double(argc, argv, "--launched", peer_wall());
    double      deadline = bench_now() + bench_opt_double(argc, argv, "--timeout", 180);
    double      running_at = -1, streaming_at = -1;
    char        state[32] = "", trace[512] = "";

    while (running_at < 0 || streaming_at < 0) {
        if (pid <= 0 || kill(pid, 0) != 0)
            bench_die("peer-ready: the Connect worker (pid %d) exited while starting", (int) pid);
        if (bench_now() > deadline)
            bench_die("peer-ready: %s not streaming in time (task %s, slot %s)", connector, state[0] ? state : "absent",
                      streaming_at < 0 ? "inactive" : "active");
        peer_task_state(port, connector, state, sizeof(state), trace, sizeof(trace));
        if (strcmp(state, "FAILED") == 0)
            bench_die("peer-ready: %s failed: %s", connector, trace);
        if (running_at < 0 && strcmp(state, "RUNNING") == 0)
            running_at = peer_wall();
        if (streaming_at < 0 && peer_slot_active(pg, slot))
            streaming_at = peer_wall();
        bench_sleep(PEER_TICK_S);
    }
    double ready = running_at > streaming_at ? running_at : streaming_at;
    bench_note("peer-ready: %s streaming %.1f s after the JVM started", connector, ready - launched);
    bench_emit(json_pack("{s:f, s:f, s:f, s:I}", "startup_seconds", ready - launched, "task_running_seconds",
                         running_at - launched, "slot_active_seconds", streaming_at - launched, "rss_kb",
                         (json_int_t) bench_rss_kb(pid)));
    PQfinish(pg);
    return 0;
}

/* ---- drain ------------------------------------------------------------------ */

typedef struct {
    double    start, first, end;    /* end < 0: timed out */
    long long first_msgs, done;
    long      rss_max_kb;
} peer_clock_t;

static void
peer_drain_wait(rd_kafka_t *rk, const char *topic, int partitions, long long rows, double timeout, pid_t jvm,
                bench_cpu_t *cpu, peer_clock_t *c)
{
    double next_note = c->start + 5;

    c->first = c->end = -1;
    for (int tick = 0;; tick++) {
        double now = bench_now();
        c->done = bench_topic_messages(rk, topic, partitions, NULL);
        if (c->first < 0 && c->done > 0) {
            c->first = now;
            c->first_msgs = c->done;
        }
        long rss = bench_rss_kb(jvm);
        c->rss_max_kb = rss > c->rss_max_kb ? rss : c->rss_max_kb;
        if (tick % 2 == 0)
            bench_cpu_sample(cpu);
        if (c->done >= rows) {
            c->end = now;
            return;
        }
        if (now - c->start > timeout || kill(jvm, 0) != 0)
            return;
        if (now > next_note) {
            bench_note("peer-drain: %lld of %lld in Kafka", c->done, rows);
            next_note = now + 5;
        }
        bench_sleep(PEER_TICK_S);
    }
}

/* Partitions whose message count differs from the outbox rows placed there: a wrong partition mapping. */
static int
peer_partition_mismatches(PGconn *pg, const long long *in_kafka, int partitions)
{
    PGresult *r = PQexec(pg, "SELECT partition, count(*) FROM outboxd.outbox GROUP BY partition");
    long long want[4096] = { 0 };
    int       bad = 0;

    if (PQresultStatus(r) != PGRES_TUPLES_OK || partitions > 4096)
        bench_die("peer-drain: counting rows per partition: %s", PQresultErrorMessage(r));
    for (int i = 0; i < PQntuples(r); i++) {
        int p = atoi(PQgetvalue(r, i, 0));
        if (p >= 0 && p < partitions)
            want[p] = atoll(PQgetvalue(r, i, 1));
    }
    PQclear(r);
    for (int p = 0; p < partitions; p++)
        bad += want[p] != in_kafka[p];
    return bad;
}

/*
 * peer-drain --dsn D --brokers B --topic T --partitions P --rows N --pid JVM [--timeout S] [--kafka-pid K]
 * Run right after the backlog's one transaction committed, the peer
 * already streaming. The rate counts from the first message in Kafka, as
 * `drain` counts outboxd's from its first published batch; the wait for it
 * (PostgreSQL decoding the whole transaction first, for any logical
 * replication client) is shown apart.
 */
int
cmd_peer_drain(int argc, char **argv)
{
    const char  *dsn = bench_opt_req(argc, argv, "--dsn"), *topic = bench_opt_req(argc, argv, "--topic");
    int          partitions = (int) bench_opt_long(argc, argv, "--partitions", 12);
    long long    rows = bench_opt_long(argc, argv, "--rows", 1000000), per_part[4096];
    pid_t        jvm = (pid_t) bench_opt_long(argc, argv, "--pid", 0);
    rd_kafka_t  *rk = bench_producer(bench_opt_req(argc, argv, "--brokers"), 0, NULL);
    PGconn      *pg = bench_pg(dsn);
    bench_cpu_t *cpu = bench_cpu_start(NULL, dsn, NULL, (pid_t) bench_opt_long(argc, argv, "--kafka-pid", 0));
    peer_clock_t c = { .start = bench_now() };

    if (partitions < 1 || partitions > 4096)
        bench_die("peer-drain: --partitions 1..4096");
    bench_cpu_track(cpu, jvm, "connect");
    peer_drain_wait(rk, topic, partitions, rows, bench_opt_double(argc, argv, "--timeout", 600), jvm, cpu, &c);
    if (c.end < 0 && kill(jvm, 0) != 0)     /* a failure, not a lower bound */
        bench_die("peer-drain: the Connect worker exited with %lld of %lld in %s", c.done, rows, topic);
    if (c.first < 0)
        bench_die("peer-drain: nothing reached %s in time (see the Connect worker's log)", topic);
    int       timed_out = c.end < 0;
    double    end = timed_out ? bench_now() : c.end;
    long long counted = c.done - c.first_msgs;
    double    from = c.first;
    if (timed_out)
        bench_note("peer-drain: timed out with %lld of %lld in Kafka", c.done, rows);
    if (counted <= 0 || end <= from) {
        from = c.start;       /* all of it seen at once (tiny sizes): count from the commit */
        counted = c.done;
    }
    long long total = bench_topic_messages(rk, topic, partitions, per_part);
    json_t   *out = json_pack("{s:I, s:I, s:b, s:f, s:f, s:f, s:f, s:i}", "rows", (json_int_t) rows, "published",
                              (json_int_t) total, "timed_out", timed_out, "first_seconds", c.first - c.start, "seconds",
                              end - from, "events_per_s", (double) counted / (end - from), "events_per_s_from_commit",
                              (double) c.done / (end - c.start), "partition_mismatches",
                              peer_partition_mismatches(pg, per_part, partitions));
    json_object_set_new(out, "rss_kb", json_pack("{s:I}", "max", (json_int_t) c.rss_max_kb));
    json_object_set_new(out, "cpu", bench_cpu_end(cpu));
    bench_emit(out);
    rd_kafka_destroy(rk);
    PQfinish(pg);
    return 0;
}

/* ---- watch -------------------------------------------------------------------- */

static volatile sig_atomic_t peer_watch_stop;

static void
peer_watch_on_term(int sig)
{
    (void) sig;
    peer_watch_stop = 1;
}

/* peer-watch --pid JVM [--orders-dsn O --kafka-pid K]: RSS and CPU every 100 ms until TERM. */
int
cmd_peer_watch(int argc, char **argv)
{
    pid_t            jvm = (pid_t) bench_opt_long(argc, argv, "--pid", 0);
    double           t0 = bench_now();
    long             first = bench_rss_kb(jvm), max = first;
    struct sigaction sa = { .sa_handler = peer_watch_on_term };
    bench_cpu_t     *cpu = bench_cpu_from_opts(NULL, argc, argv);

    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    bench_cpu_track(cpu, jvm, "connect");
    while (!peer_watch_stop) {
        long rss = bench_rss_kb(jvm);
        max = rss > max ? rss : max;
        bench_cpu_sample(cpu);
        bench_sleep(0.1);
    }
    bench_emit(json_pack("{s:f, s:{s:I, s:I}, s:o}", "seconds", bench_now() - t0, "rss_kb", "first",
                         (json_int_t) first, "max", (json_int_t) max, "cpu", bench_cpu_end(cpu)));
    return 0;
}

/* ---- the backlog kept for the peers ------------------------------------------- */

/* backlog-save --dsn D --file F: outbox_backlog as binary COPY data. */
int
cmd_backlog_save(int argc, char **argv)
{
    PGconn     *pg = bench_pg(bench_opt_req(argc, argv, "--dsn"));
    const char *path = bench_opt_req(argc, argv, "--file");
    FILE       *f = fopen(path, "w");
    PGresult   *r = PQexec(pg, "COPY outbox_backlog TO STDOUT (FORMAT binary)");
    char       *buf;
    int         n;
    double      bytes = 0;

    if (f == NULL)
        bench_die("backlog-save: %s: %s", path, strerror(errno));
    if (PQresultStatus(r) != PGRES_COPY_OUT)
        bench_die("backlog-save: %s", PQresultErrorMessage(r));
    PQclear(r);
    while ((n = PQgetCopyData(pg, &buf, 0)) > 0) {
        if (fwrite(buf, 1, (size_t) n, f) != (size_t) n)
            bench_die("backlog-save: %s: %s", path, strerror(errno));
        bytes += n;
        PQfreemem(buf);
    }
    if (n == -2 || (r = PQgetResult(pg)) == NULL || PQresultStatus(r) != PGRES_COMMAND_OK)
        bench_die("backlog-save: %s", PQerrorMessage(pg));
    PQclear(r);
    if (fclose(f) != 0)
        bench_die("backlog-save: %s: %s", path, strerror(errno));
    bench_note("backlog-save: %.0f MB in %s", bytes / 1e6, path);
    PQfinish(pg);
    return 0;
}

static void
backlog_copy_in(PGconn *pg, FILE *f, const char *path)
{
    static char buf[1 << 20];
    size_t      n;
    PGresult   *r = PQexec(pg, "COPY outbox_backlog FROM STDIN (FORMAT binary)");

    if (PQresultStatus(r) != PGRES_COPY_IN)
        bench_die("backlog-load: %s", PQresultErrorMessage(r));
    PQclear(r);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        if (PQputCopyData(pg, buf, (int) n) != 1)
            bench_die("backlog-load: %s", PQerrorMessage(pg));
    if (ferror(f))
        bench_die("backlog-load: %s: read error", path);
    if (PQputCopyEnd(pg, NULL) != 1)
        bench_die("backlog-load: %s", PQerrorMessage(pg));
    while ((r = PQgetResult(pg)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            bench_die("backlog-load: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
}

/* backlog-load --dsn D --file F: (re)creates outbox_backlog from backlog-save's file. */
int
cmd_backlog_load(int argc, char **argv)
{
    PGconn     *pg = bench_pg(bench_opt_req(argc, argv, "--dsn"));
    const char *path = bench_opt_req(argc, argv, "--file");
    FILE       *f = fopen(path, "r");
    double      t0 = bench_now();

    if (f == NULL)
        bench_die("backlog-load: %s: %s", path, strerror(errno));
    bench_exec(pg, "DROP TABLE IF EXISTS outbox_backlog");
    bench_exec(pg, BENCH_BACKLOG_DDL);
    backlog_copy_in(pg, f, path);
    fclose(f);
    bench_exec(pg, "VACUUM ANALYZE outbox_backlog");
    long long rows = bench_scalar(pg, "SELECT count(*) FROM outbox_backlog");
    bench_note("backlog-load: %lld events in %.1f s", rows, bench_now() - t0);
    bench_emit(json_pack("{s:I, s:f}", "rows", (json_int_t) rows, "load_seconds", bench_now() - t0));
    PQfinish(pg);
    return 0;
}
