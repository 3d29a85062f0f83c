/*
 * bench/main.c: obbench subcommands (see obbench.h and bench/README.md).
 * The small housekeeping ones live here: free ports, databases, SQL,
 * topics, machine facts.
 */
#include "bench/obbench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

/* free-ports N: N ports the kernel says are free, held together while choosing. */
static int
cmd_free_ports(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1, fds[16];

    if (n < 1 || n > 16)
        bench_die("free-ports: 1..16");
    for (int i = 0; i < n; i++) {
        struct sockaddr_in sa = { .sin_family = AF_INET };
        socklen_t          len = sizeof(sa);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *) &sa, sizeof(sa)) != 0 ||
            getsockname(fds[i], (struct sockaddr *) &sa, &len) != 0)
            bench_die("free-ports: no port");
        printf("%s%d", i ? " " : "", ntohs(sa.sin_port));
    }
    printf("\n");
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return 0;
}

/* db create|drop SERVER_DSN NAME: a database of the bench's own, on the stack's cluster. */
static int
cmd_db(int argc, char **argv)
{
    char sql[256];

    if (argc != 4)
        bench_die("usage: db create|drop SERVER_DSN NAME");
    for (const char *p = argv[3]; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            bench_die("db: refusing the name %s", argv[3]);     /* it goes into SQL unquoted */
    if (strcmp(argv[1], "create") == 0)
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s OWNER outboxd", argv[3]);
    else if (strcmp(argv[1], "drop") == 0)
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", argv[3]);
    else
        bench_die("db: create or drop, not %s", argv[1]);
    PGconn *pg = bench_pg(argv[2]);
    bench_exec(pg, sql);
    PQfinish(pg);
    return 0;
}

/* sql DSN STATEMENT...: each statement on its own, in order (TRUNCATE, CHECKPOINT, ...). */
static int
cmd_sql(int argc, char **argv)
{
    if (argc < 3)
        bench_die("usage: sql DSN STATEMENT...");
    PGconn *pg = bench_pg(argv[1]);
    for (int i = 2; i < argc; i++)
        bench_exec(pg, argv[i]);
    PQfinish(pg);
    return 0;
}

static void
topic_admin_result(rd_kafka_event_t *ev, const char *what, const char *name)
{
    const rd_kafka_topic_result_t **tr;
    size_t                          cnt = 0;

    if (ev == NULL)
        bench_die("topic %s %s: no answer from Kafka", what, name);
    if (rd_kafka_event_error(ev))
        bench_die("topic %s %s: %s", what, name, rd_kafka_event_error_string(ev));
    if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_CREATETOPICS_RESULT)
        tr = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    else
        tr = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &cnt);
    if (cnt == 1 && rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        bench_die("topic %s %s: %s", what, name, rd_kafka_topic_result_error_string(tr[0]));
    rd_kafka_event_destroy(ev);
}

/* topic create|delete BROKERS NAME [PARTITIONS [CONFIG=VALUE...]] */
static int
cmd_topic(int argc, char **argv)
{
    char              err[256];
    rd_kafka_t       *rk;
    rd_kafka_queue_t *q;

    if (argc < 4)
        bench_die("usage: topic create|delete BROKERS NAME [PARTITIONS [CONFIG=VALUE...]]");
    rk = bench_producer(argv[2], 0, NULL);
    q = rd_kafka_queue_new(rk);
    if (strcmp(argv[1], "create") == 0) {
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(argv[3], argc > 4 ? atoi(argv[4]) : 12, 1, err, sizeof(err));
        if (nt == NULL)
            bench_die("topic create %s: %s", argv[3], err);
        for (int i = 5; i < argc; i++) {
            char *eq = strchr(argv[i], '=');
            if (eq == NULL)
                bench_die("topic create %s: %s is not CONFIG=VALUE", argv[3], argv[i]);
            *eq = '\0';
            if (rd_kafka_NewTopic_set_config(nt, argv[i], eq + 1) != RD_KAFKA_RESP_ERR_NO_ERROR)
                bench_die("topic create %s: cannot set %s", argv[3], argv[i]);
        }
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
        topic_admin_result(rd_kafka_queue_poll(q, 30000), "create", argv[3]);
        rd_kafka_NewTopic_destroy(nt);
    } else if (strcmp(argv[1], "delete") == 0) {
        rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(argv[3]);
        rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
        topic_admin_result(rd_kafka_queue_poll(q, 30000), "delete", argv[3]);
        rd_kafka_DeleteTopic_destroy(dt);
    } else {
        bench_die("topic: create or delete, not %s", argv[1]);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return 0;
}

static void
machine_cpu_model(char *out, size_t outlen)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char  line[512];

    snprintf(out, outlen, "unknown");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "model name", 10) == 0 && strchr(line, ':') != NULL) {
            snprintf(out, outlen, "%s", strchr(line, ':') + 2);
            out[strcspn(out, "\n")] = '\0';
            break;
        }
    if (f != NULL)
        fclose(f);
}

static long
machine_mem_mb(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char  line[256];
    long  kb = 0;

    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "MemTotal: %ld kB", &kb) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kb / 1024;
}

static json_t *
machine_pg(const char *dsn)
{
    PGconn   *pg = bench_pg(dsn);
    PGresult *r = PQexec(pg, "SELECT version(), current_setting('shared_buffers'),"
                             " current_setting('synchronous_commit'), current_setting('max_connections')");
    json_t   *j;

    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        bench_die("machine: %s", PQresultErrorMessage(r));
    j = json_pack("{s:s, s:s, s:s, s:s}", "version", PQgetvalue(r, 0, 0), "shared_buffers", PQgetvalue(r, 0, 1),
                  "synchronous_commit", PQgetvalue(r, 0, 2), "max_connections", PQgetvalue(r, 0, 3));
    PQclear(r);
    PQfinish(pg);
    return j;
}

/* machine --orders-dsn O --ledger-dsn L [--kafka V] [--wrk V] [--pgbench V] */
static int
cmd_machine(int argc, char **argv)
{
    struct utsname u;
    char           cpu[256];

    uname(&u);
    machine_cpu_model(cpu, sizeof(cpu));
    bench_emit(json_pack("{s:i, s:s, s:I, s:s, s:o, s:o, s:s, s:i, s:s, s:s, s:s}", "nproc",
                         (int) sysconf(_SC_NPROCESSORS_ONLN), "cpu", cpu, "mem_mb", (json_int_t) machine_mem_mb(),
                         "kernel", u.release, "pg_orders", machine_pg(bench_opt_req(argc, argv, "--orders-dsn")),
                         "pg_ledger", machine_pg(bench_opt_req(argc, argv, "--ledger-dsn")), "librdkafka",
                         rd_kafka_version_str(), "libpq", PQlibVersion(), "kafka",
                         bench_opt(argc, argv, "--kafka", "?"), "wrk", bench_opt(argc, argv, "--wrk", "?"), "pgbench",
                         bench_opt(argc, argv, "--pgbench", "?")));
    return 0;
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *usage;
} commands[] = {
    { "free-ports", cmd_free_ports, "N" },
    { "db", cmd_db, "create|drop SERVER_DSN NAME" },
    { "sql", cmd_sql, "DSN STATEMENT..." },
    { "topic", cmd_topic, "create|delete BROKERS NAME [PARTITIONS [CONFIG=VALUE...]]" },
    { "machine", cmd_machine, "--orders-dsn O --ledger-dsn L [--kafka V --wrk V --pgbench V]" },
    { "ready", cmd_ready, "--name N --pid P [--http H --relays R --consumers C --partitions P --mode M]" },
    { "rss", cmd_rss, "--name N" },
    { "watch", cmd_watch, "--name N [--seconds S]" },
    { "backlog", cmd_backlog, "--dsn D --rows N [--partitions P]" },
    { "fill", cmd_fill, "--dsn D" },
    { "drain", cmd_drain, "--name N --pid P --dsn D --rows N [--timeout S --brokers B --topic T --partitions P]" },
    { "ceiling", cmd_ceiling, "--dsn D --brokers B --topic T" },
    { "naive", cmd_naive, "--dsn D --brokers B --topic T --seconds S [--interval-ms 1000 --limit 10]" },
    { "apply", cmd_apply, "--name N --pid P --dsn LEDGER --rows N [--consumers C --partitions P --timeout S]" },
    { "settle", cmd_settle, "--orders-dsn O [--ledger-dsn L] [--timeout S]" },
    { "pace", cmd_pace, "--port P --rate R --seconds S [--conns C]" },
    { "emit-pace", cmd_emit_pace, "--dsn D --rate R --seconds S [--conns 8 --aggregates 1000]" },
    { "latency", cmd_latency, "--orders-dsn O [--ledger-dsn L] [--until-ms W]" },
    { "pgbench-log", cmd_pgbench_log, "FILE..." },
    { "stages", cmd_stages, "--name N [--pid P]" },
    { "backlog-save", cmd_backlog_save, "--dsn D --file F" },
    { "backlog-load", cmd_backlog_load, "--dsn D --file F" },
    { "peer-ready", cmd_peer_ready, "--dsn D --slot S --pid JVM --rest-port P --connector C --launched EPOCH_S" },
    { "peer-drain", cmd_peer_drain, "--dsn D --brokers B --topic T --partitions P --rows N --pid JVM [--timeout S]" },
    { "peer-watch", cmd_peer_watch, "--pid JVM [--orders-dsn O --kafka-pid K]" },
    { "peer-read", cmd_peer_read, "--dsn D --brokers B --topic T --partitions P [--per-partition K --settle-timeout S]" },
    { "report", cmd_report, "--dir DIR" },
};

int
main(int argc, char **argv)
{
    if (argc >= 2)
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
            if (strcmp(argv[1], commands[i].name) == 0)
                return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "usage: obbench COMMAND ...\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(stderr, "  obbench %s %s\n", commands[i].name, commands[i].usage);
    return 2;
}
