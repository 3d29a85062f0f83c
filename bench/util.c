/* bench/util.c: small helpers shared by the obbench subcommands; see obbench.h. */
#include "bench/obbench.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void
bench_die(const char *fmt, ...)
{
    va_list ap;

    fputs("obbench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* Progress goes to stderr so stdout stays one JSON object. */
void
bench_note(const char *fmt, ...)
{
    va_list ap;

    fputs("obbench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

double
bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

void
bench_sleep(double seconds)
{
    struct timespec ts = { (time_t) seconds, (long) ((seconds - (double) (time_t) seconds) * 1e9) };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

const char *
bench_opt(int argc, char **argv, const char *key, const char *def)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], key) == 0)
            return argv[i + 1];
    return def;
}

const char *
bench_opt_req(int argc, char **argv, const char *key)
{
    const char *v = bench_opt(argc, argv, key, NULL);

    if (v == NULL)
        bench_die("%s: missing option %s", argv[0], key);
    return v;
}

long
bench_opt_long(int argc, char **argv, const char *key, long def)
{
    const char *v = bench_opt(argc, argv, key, NULL);
    char       *end;
    long        n;

    if (v == NULL)
        return def;
    n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0')
        bench_die("%s %s: not an integer: %s", argv[0], key, v);
    return n;
}

double
bench_opt_double(int argc, char **argv, const char *key, double def)
{
    const char *v = bench_opt(argc, argv, key, NULL);
    char       *end;
    double      d;

    if (v == NULL)
        return def;
    d = strtod(v, &end);
    if (*v == '\0' || *end != '\0')
        bench_die("%s %s: not a number: %s", argv[0], key, v);
    return d;
}

/* NOTICEs ("database ... does not exist, skipping") are expected here, not news. */
static void
bench_quiet(void *arg, const char *message)
{
    (void) arg;
    (void) message;
}

PGconn *
bench_pg(const char *dsn)
{
    const char *keys[] = { "dbname", "application_name", NULL };
    const char *vals[] = { dsn, "outboxd bench", NULL };
    PGconn     *pg = PQconnectdbParams(keys, vals, 1);

    if (PQstatus(pg) != CONNECTION_OK)
        bench_die("connect %s: %s", dsn, PQerrorMessage(pg));
    PQsetNoticeProcessor(pg, bench_quiet, NULL);
    return pg;
}

void
bench_exec(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);

    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        bench_die("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

long long
bench_scalar(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    long long v;

    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        bench_die("%s: %s", sql, PQresultErrorMessage(r));
    v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

void
bench_emit(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));

    if (s == NULL)
        bench_die("cannot serialise the result");
    puts(s);
    fflush(stdout);
    free(s);
    json_decref(j);
}

static int
bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile (p in 0..100) of sorted values: always a value that occurred. */
double
bench_pct(const double *sorted, size_t n, double p)
{
    size_t rank;

    if (n == 0)
        return NAN;
    rank = (size_t) ceil(p / 100.0 * (double) n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1];
}

/* Points of the percentile curve drawn in latency.svg (HdrHistogram style). */
static const double curve_points[] = { 0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100 };

json_t *
bench_pct_json(double *v, size_t n)
{
    json_t *j = json_object(), *curve = json_array();
    double  sum = 0;

    qsort(v, n, sizeof(*v), bench_cmp_double);
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    json_object_set_new(j, "n", json_integer((json_int_t) n));
    if (n == 0) {
        json_decref(curve);
        return j;
    }
    json_object_set_new(j, "mean", json_real(sum / (double) n));
    json_object_set_new(j, "p50", json_real(bench_pct(v, n, 50)));
    json_object_set_new(j, "p90", json_real(bench_pct(v, n, 90)));
    json_object_set_new(j, "p99", json_real(bench_pct(v, n, 99)));
    json_object_set_new(j, "p999", json_real(bench_pct(v, n, 99.9)));
    json_object_set_new(j, "max", json_real(v[n - 1]));
    for (size_t i = 0; i < sizeof(curve_points) / sizeof(curve_points[0]); i++)
        json_array_append_new(curve, json_pack("[f,f]", curve_points[i], bench_pct(v, n, curve_points[i])));
    json_object_set_new(j, "curve", curve);
    return j;
}

/*
 * A producer configured like the relay's (producer.c ob_relay_producer_new),
 * so the ceiling and the naive poller differ from outboxd only in what they
 * do around Kafka, not in how they talk to it. Takes conf (may be NULL).
 */
rd_kafka_t *
bench_producer(const char *brokers, int idempotent, rd_kafka_conf_t *conf)
{
    char err[512];
    struct {
        const char *k, *v;
    } kv[] = {
        { "bootstrap.servers", brokers },
        { "enable.idempotence", idempotent ? "true" : "false" },
        { "linger.ms", "1" },                       /* [relay] linger_ms default */
        { "message.timeout.ms", "10000" },          /* [relay] delivery_timeout_ms default */
        { "queue.buffering.max.messages", "1000000" },
        { "batch.num.messages", "10000" },
        { "client.id", "outboxd-bench" },
    };

    if (conf == NULL)
        conf = rd_kafka_conf_new();
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        if (rd_kafka_conf_set(conf, kv[i].k, kv[i].v, err, sizeof(err)) != RD_KAFKA_CONF_OK)
            bench_die("producer %s: %s", kv[i].k, err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL)
        bench_die("producer: %s", err);
    return rk;
}

long long
bench_topic_messages(rd_kafka_t *rk, const char *topic, int partitions, long long *per_part)
{
    long long sum = 0;

    for (int p = 0; p < partitions; p++) {
        int64_t             lo, hi;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            bench_die("watermarks %s/%d: %s", topic, p, rd_kafka_err2str(e));
        sum += hi;
        if (per_part != NULL)
            per_part[p] = hi;
    }
    return sum;
}
