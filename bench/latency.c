/*
 * bench/latency.c: end-to-end latency read back from the databases, and
 * pgbench's per-transaction logs turned into percentiles.
 *
 * "Commit" is orders.created_at / outbox.created_at, both now() of the
 * order's one-statement transaction: its start, a statement's duration
 * before the commit. "Kafka" is outbox.published_at, now() of the relay's
 * mark transaction, which begins after the broker acknowledged the batch.
 * "Ledger" is ledger_entries.created_at, now() of the consumer's apply
 * transaction. Both clusters run on this machine, so they share a clock.
 */
#include "bench/obbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Per second of commits: [second, n, p50, p99, max] of commit -> Kafka, so
 * a stall of a few seconds is told apart from a uniformly slow run.
 */
static json_t *
latency_series(const double *created_ms, const double *lat, size_t n)
{
    json_t *out = json_array();
    double  t0 = n ? created_ms[0] : 0, *bucket = malloc((n + 1) * sizeof(*bucket));
    size_t  i = 0;

    for (size_t k = 0; k < n; k++)
        t0 = created_ms[k] < t0 ? created_ms[k] : t0;
    for (long sec = 0; i < n; sec++) {
        size_t m = 0;
        for (size_t k = 0; k < n; k++)      /* n is tens of thousands: a pass per second is fine */
            if ((long) ((created_ms[k] - t0) / 1000) == sec)
                bucket[m++] = lat[k];
        i += m;
        json_t *p = bench_pct_json(bucket, m);
        if (m > 0)
            json_array_append_new(out, json_pack("[I, I, f, f, f]", (json_int_t) sec, (json_int_t) m,
                                                 json_real_value(json_object_get(p, "p50")),
                                                 json_real_value(json_object_get(p, "p99")),
                                                 json_real_value(json_object_get(p, "max"))));
        json_decref(p);
    }
    free(bucket);
    return out;
}

/*
 * commit -> Kafka for every outbox row. A row still pending is counted with
 * the time it had waited by until_ms (a lower bound); censored says how
 * many. Without until_ms pending rows are only counted.
 */
static json_t *
latency_kafka(PGconn *pg, const char *until_ms)
{
    const char *params[1] = { until_ms ? until_ms : "0" };
    PGresult   *r = PQexecParams(pg,
                                 "SELECT (extract(epoch FROM coalesce(published_at, to_timestamp($1::float8 / 1000))"
                                 " - created_at) * 1000)::float8, published,"
                                 " (extract(epoch FROM created_at) * 1000)::float8 FROM outboxd.outbox",
                                 1, NULL, params, NULL, NULL, 0);
    size_t      n = 0, censored = 0, rows = (size_t) PQntuples(r);
    double     *v, *created;

    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        bench_die("latency: %s", PQresultErrorMessage(r));
    v = malloc((rows + 1) * sizeof(*v));
    created = malloc((rows + 1) * sizeof(*created));
    for (size_t i = 0; i < rows; i++) {
        int published = PQgetvalue(r, (int) i, 1)[0] == 't';
        censored += !published;
        if (published || until_ms != NULL) {
            created[n] = atof(PQgetvalue(r, (int) i, 2));
            v[n++] = atof(PQgetvalue(r, (int) i, 0));
        }
    }
    json_t *series = latency_series(created, v, n);
    json_t *j = bench_pct_json(v, n);
    json_object_set_new(j, until_ms ? "censored" : "pending", json_integer((json_int_t) censored));
    json_object_set_new(j, "by_second", series);
    PQclear(r);
    free(v);
    free(created);
    return j;
}

static PGresult *
latency_times(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);

    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        bench_die("latency: %s: %s", sql, PQresultErrorMessage(r));
    return r;
}

/*
 * commit -> ledger: orders from one cluster, charges from the other, both
 * sorted by order id (text order of a canonical UUID is its byte order, so
 * both sides agree), joined by one merge pass.
 */
static json_t *
latency_ledger(PGconn *orders, PGconn *ledger)
{
    PGresult *o = latency_times(orders, "SELECT id::text, (extract(epoch FROM created_at) * 1000)::float8"
                                        " FROM orders ORDER BY id");
    PGresult *l = latency_times(ledger, "SELECT order_id::text, (extract(epoch FROM created_at) * 1000)::float8"
                                        " FROM ledger_entries WHERE kind = 'charge' ORDER BY order_id");
    int       no = PQntuples(o), nl = PQntuples(l), i = 0, k = 0;
    double   *v = malloc(((size_t) no + 1) * sizeof(*v));
    size_t    n = 0;

    while (i < no && k < nl) {
        int c = strcmp(PQgetvalue(o, i, 0), PQgetvalue(l, k, 0));
        if (c == 0)
            v[n++] = atof(PQgetvalue(l, k++, 1)) - atof(PQgetvalue(o, i++, 1));
        else if (c < 0)
            i++;        /* an order without its charge: counted below */
        else
            k++;        /* a charge without an order: cannot happen in a fresh database */
    }
    json_t *j = bench_pct_json(v, n);
    json_object_set_new(j, "missing", json_integer(no - (json_int_t) n));
    PQclear(o);
    PQclear(l);
    free(v);
    return j;
}

/* latency --orders-dsn O [--ledger-dsn L] [--until-ms W] */
int
cmd_latency(int argc, char **argv)
{
    PGconn     *orders = bench_pg(bench_opt_req(argc, argv, "--orders-dsn"));
    const char *ldsn = bench_opt(argc, argv, "--ledger-dsn", NULL);
    json_t     *out = json_object();

    json_object_set_new(out, "kafka_ms", latency_kafka(orders, bench_opt(argc, argv, "--until-ms", NULL)));
    if (ldsn != NULL) {
        PGconn *ledger = bench_pg(ldsn);
        json_object_set_new(out, "ledger_ms", latency_ledger(orders, ledger));
        PQfinish(ledger);
    }
    bench_emit(out);
    PQfinish(orders);
    return 0;
}

/*
 * pgbench-log FILE...: pgbench -l writes one line per transaction,
 * "client_id transaction_no time_us script_no epoch epoch_us".
 */
int
cmd_pgbench_log(int argc, char **argv)
{
    size_t  n = 0, cap = 1 << 16;
    double *v = malloc(cap * sizeof(*v));
    char    line[256];

    for (int a = 1; a < argc; a++) {
        FILE *f = fopen(argv[a], "r");
        if (f == NULL)
            bench_die("pgbench-log: %s: cannot open", argv[a]);
        while (fgets(line, sizeof(line), f) != NULL) {
            long client, txn, us;
            if (sscanf(line, "%ld %ld %ld", &client, &txn, &us) != 3)
                continue;
            if (n == cap)
                v = realloc(v, (cap *= 2) * sizeof(*v));
            v[n++] = (double) us / 1000.0;
        }
        fclose(f);
    }
    if (v == NULL)
        bench_die("out of memory");
    bench_emit(json_pack("{s:o}", "latency_ms", bench_pct_json(v, n)));
    free(v);
    return 0;
}
