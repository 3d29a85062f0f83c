/*
 * bench/obbench.h: the C half of `make bench` (bench/run.sh is the other).
 *
 * obbench is one binary with small subcommands; run.sh starts and stops
 * outboxd, wrk and pgbench, and calls obbench for everything that needs
 * libpq, librdkafka, the shm segment or precise timing. Every measuring
 * subcommand prints one JSON object on stdout, which run.sh keeps in
 * var/bench/parts/<name>.json; `obbench report` turns the parts into
 * report.json, report.md and latency.svg.
 *
 * Errors are fatal (bench_die): a benchmark that half-worked must not
 * print a plausible number.
 */
#ifndef OB_BENCH_H
#define OB_BENCH_H

#include "shm/shm.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The tag of each RSS column: the supervisor, then the worker kinds. */
#define BENCH_PROCS OB_KIND_COUNT      /* index 0 (OB_KIND_NONE) = supervisor */

/* ---- util.c ------------------------------------------------------------ */

void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Monotonic seconds, and wall-clock milliseconds since the epoch. */
double  bench_now(void);
void    bench_sleep(double seconds);

/* "--key value" options: the value, or def when absent. */
const char *bench_opt(int argc, char **argv, const char *key, const char *def);
long        bench_opt_long(int argc, char **argv, const char *key, long def);
double      bench_opt_double(int argc, char **argv, const char *key, double def);
const char *bench_opt_req(int argc, char **argv, const char *key);

/* libpq: connect or die; run or die; first value of the first row. */
PGconn   *bench_pg(const char *dsn);
void      bench_exec(PGconn *pg, const char *sql);
long long bench_scalar(PGconn *pg, const char *sql);

/* Prints a JSON value on stdout (one line) and frees it. */
void bench_emit(json_t *j);

/*
 * Percentiles of n values (sorted in place): {n, p50, p90, p99, p999, max,
 * mean, curve: [[percentile, value], ...]} in the values' unit.
 */
json_t *bench_pct_json(double *v, size_t n);
double  bench_pct(const double *sorted, size_t n, double p);

/* Kafka producer with the relay's own settings (workers/relay/publish.c). */
rd_kafka_t *bench_producer(const char *brokers, int idempotent, rd_kafka_conf_t *conf);

/*
 * How many messages a topic holds: the sum of its partitions' high
 * watermarks (each one in per_part when given). More than were written
 * means re-sends (at-least-once); fewer means loss.
 */
long long bench_topic_messages(rd_kafka_t *rk, const char *topic, int partitions, long long *per_part);

/* ---- shm.c: the running instance seen through its segment --------------- */

typedef struct {
    long idle_kb[BENCH_PROCS];       /* first sample */
    long max_kb[BENCH_PROCS];        /* max over samples, of the largest process of the kind */
    int  samples;
} bench_rss_t;

ob_shm_t *bench_attach(const char *name, int pid, double timeout_s);
uint64_t  bench_counter_sum(ob_shm_t *shm, int kind, int counter);
int       bench_running(ob_shm_t *shm, int kind);
long      bench_rss_kb(pid_t pid);
void      bench_rss_sample(ob_shm_t *shm, bench_rss_t *rss);
json_t   *bench_rss_json(const bench_rss_t *rss);

/* ---- cpu.c: CPU used by each component during a measurement ------------- */

typedef struct bench_cpu bench_cpu_t;

/* Any of shm, the DSNs and kafka_pid may be absent (NULL / 0). */
bench_cpu_t *bench_cpu_start(ob_shm_t *shm, const char *orders_dsn, const char *ledger_dsn, pid_t kafka_pid);
/* Call often (reads /proc); finds new processes once a second. */
void         bench_cpu_sample(bench_cpu_t *c);
/* {"seconds", "cores": {component: CPU seconds per wall second}}; frees c. */
json_t      *bench_cpu_end(bench_cpu_t *c);
/* bench_cpu_start from the --orders-dsn, --ledger-dsn and --kafka-pid options. */
bench_cpu_t *bench_cpu_from_opts(ob_shm_t *shm, int argc, char **argv);
/* Also count the workers of another outboxd instance (up to 4 in all). */
void         bench_cpu_add_shm(bench_cpu_t *c, ob_shm_t *shm);
/* Also count pid (not outboxd's, not PostgreSQL's) under label, from now on. */
void         bench_cpu_track(bench_cpu_t *c, pid_t pid, const char *label);

int cmd_ready(int argc, char **argv);
int cmd_rss(int argc, char **argv);
int cmd_watch(int argc, char **argv);

/* ---- drain.c: backlog, relay drain, ceiling, naive poller ---------------- */

/* The side table the backlog waits in: outbox's column types, no indexes (loading is not what is timed). */
#define BENCH_BACKLOG_DDL                                                                                     \
    "CREATE TABLE outbox_backlog (event_id uuid, aggregate_type text, aggregate_id text, seq int,"             \
    " event_type text, partition int, payload bytea)"

int cmd_backlog(int argc, char **argv);
int cmd_fill(int argc, char **argv);
int cmd_drain(int argc, char **argv);
int cmd_ceiling(int argc, char **argv);
int cmd_naive(int argc, char **argv);

/* ---- apply.c: ledger apply, settle ---------------------------------------- */

int cmd_apply(int argc, char **argv);
int cmd_settle(int argc, char **argv);

/* ---- pace.c: open-loop paced POST /orders --------------------------------- */

int cmd_pace(int argc, char **argv);

/* ---- emit.c: open-loop paced outboxd.emit from foreign SQL connections ----- */

int cmd_emit_pace(int argc, char **argv);

/* ---- latency.c: commit->Kafka / commit->ledger from the databases; pgbench logs */

int cmd_latency(int argc, char **argv);
int cmd_pgbench_log(int argc, char **argv);

/* ---- stages.c: the workers' stage histograms (shm), summed, with percentiles */

int cmd_stages(int argc, char **argv);

/* ---- peers.c: a peer publisher (Kafka Connect + Debezium) beside outboxd -- */

int cmd_peer_ready(int argc, char **argv);
int cmd_peer_drain(int argc, char **argv);
int cmd_peer_watch(int argc, char **argv);
int cmd_backlog_save(int argc, char **argv);
int cmd_backlog_load(int argc, char **argv);

/* ---- peer_read.c: a peer's records read back and checked against the outbox */

int cmd_peer_read(int argc, char **argv);

/* ---- report.c: report.json, report.md, latency.svg ---------------------- */

int cmd_report(int argc, char **argv);

#endif
