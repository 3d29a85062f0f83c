/*
 * bench/emit.c: foreign SQL writers calling outboxd.emit at a fixed rate.
 *
 * The writers a service brings are not our HTTP workers: they do not bump
 * the relays' shm wake word, so what they commit is found by the relay's
 * own poll (mode partitioned) or by the WAL stream (mode wal). To measure
 * that path the load must look like a service's: its own connections, one
 * autocommit `SELECT outboxd.emit(...)` per transaction, parameters only.
 *
 * Open loop like pace.c: request k is due at t0 + k/rate, whoever is free
 * takes the next one, and its latency counts from when it was due. libpq
 * blocks, so each connection has its own thread; a shared counter hands out
 * the requests, so one stalled connection delays only its own request.
 */
#include "bench/obbench.h"
#include "common/util.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EMIT_GRACE_S 15.0      /* after the last due time, requests not yet taken are dropped */
#define EMIT_SQL     "SELECT outboxd.emit($1, $2, $3, $4::jsonb)"

typedef struct {
    double          t0, rate, give_up;
    long            total, aggregates;
    atomic_long     next, sent, errors, late;
    double         *lat_ms;        /* by request; NAN for one never sent */
    pthread_mutex_t mu;            /* first_error */
    char            first_error[256];
} emit_t;

typedef struct {
    emit_t   *e;
    PGconn   *pg;
    int       index;
    pthread_t th;
} emit_conn_t;

/* Every connection before t0: a DSN that does not work fails here, before anything is measured. */
static PGconn *
emit_connect(const char *dsn, int index, int nconns)
{
    /* a statement stuck for good shows as one slow error, not as a bench that never ends */
    const char *keys[] = { "dbname", "application_name", "options", NULL };
    const char *vals[] = { dsn, "outboxd bench emit", "-c statement_timeout=15000", NULL };
    PGconn     *pg = PQconnectdbParams(keys, vals, 1);

    if (PQstatus(pg) != CONNECTION_OK)      /* the message names host and user, never the password */
        bench_die("emit-pace: connection %d of %d to the orders database failed: %s", index + 1, nconns,
                  PQerrorMessage(pg));
    return pg;
}

/*
 * About 240 bytes as jsonb prints it (", " and ": " included), the size of
 * every other event of the bench; the price is a string, as money is.
 */
static int
emit_payload(char *out, size_t outlen, long k, long aggregate)
{
    return snprintf(out, outlen,
                    "{\"sku\":\"SKU-%08ld\",\"name\":\"Product %ld\",\"price\":\"%ld.%02ld\",\"currency\":\"USD\","
                    "\"stock\":%ld,\"warehouse\":\"wh-%ld\",\"category\":\"bench\",\"revision\":%ld,"
                    "\"description\":\"a product of the bench whose price and stock a foreign SQL writer updates\"}",
                    aggregate, aggregate, 1 + k % 500, k % 100, k % 1000, k % 4, k);
}

static void
emit_error(emit_t *e, const char *msg)
{
    pthread_mutex_lock(&e->mu);
    if (atomic_fetch_add(&e->errors, 1) == 0) {
        snprintf(e->first_error, sizeof(e->first_error), "%s", msg);
        e->first_error[strcspn(e->first_error, "\n")] = '\0';
    }
    pthread_mutex_unlock(&e->mu);
}

/* Request k, one autocommit transaction. A broken connection ends the run: its figures would be wrong. */
static void
emit_one(emit_conn_t *c, long k)
{
    char        id[32], payload[512];
    long        aggregate = k % c->e->aggregates;
    const char *values[4] = { "product", id, "product.updated", payload };

    snprintf(id, sizeof(id), "%ld", aggregate);
    emit_payload(payload, sizeof(payload), k, aggregate);
    PGresult *r = PQexecParams(c->pg, EMIT_SQL, 4, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        if (PQstatus(c->pg) == CONNECTION_BAD)
            bench_die("emit-pace: connection %d to the orders database broke: %s", c->index + 1,
                      PQerrorMessage(c->pg));
        emit_error(c->e, PQresultErrorMessage(r));
    }
    PQclear(r);
}

static void
emit_sleep_until(double due)
{
    struct timespec ts = { (time_t) due, (long) ((due - floor(due)) * 1e9) };

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void *
emit_worker(void *arg)
{
    emit_conn_t *c = arg;
    emit_t      *e = c->e;
    long         k;

    while ((k = atomic_fetch_add(&e->next, 1)) < e->total) {
        double due = e->t0 + (double) k / e->rate;
        emit_sleep_until(due);
        double start = bench_now();
        if (start > e->give_up)
            break;
        if (start - due > 0.001)
            atomic_fetch_add(&e->late, 1);
        emit_one(c, k);
        e->lat_ms[k] = (bench_now() - due) * 1000.0;
        atomic_fetch_add(&e->sent, 1);
    }
    return NULL;
}

/* The latencies of the requests sent, in order, moved to the front; returns how many. */
static size_t
emit_compact(double *v, long total)
{
    size_t n = 0;

    for (long k = 0; k < total; k++)
        if (!isnan(v[k]))
            v[n++] = v[k];
    return n;
}

static void
emit_report(emit_t *e, int nconns, double seconds, int64_t wall0)
{
    double  secs = bench_now() - e->t0;
    size_t  n = emit_compact(e->lat_ms, e->total);
    long    sent = atomic_load(&e->sent), errors = atomic_load(&e->errors);
    json_t *out = json_pack("{s:f, s:f, s:i, s:I, s:I, s:I, s:I}", "rate", e->rate, "seconds", seconds, "conns",
                            nconns, "aggregates", (json_int_t) e->aggregates, "sent", (json_int_t) sent, "unsent",
                            (json_int_t) (e->total - sent), "errors", (json_int_t) errors);

    json_object_set_new(out, "first_error", e->first_error[0] ? json_string(e->first_error) : json_null());
    json_object_set_new(out, "late", json_integer((json_int_t) atomic_load(&e->late)));
    json_object_set_new(out, "achieved_rate", json_real((double) n / secs));
    json_object_set_new(out, "start_wall_ms", json_integer((json_int_t) wall0));
    json_object_set_new(out, "end_wall_ms", json_integer((json_int_t) ob_wall_ms()));
    json_object_set_new(out, "latency_ms", bench_pct_json(e->lat_ms, n));
    bench_note("emit-pace: %ld sent at %.0f/s over %d connections, %ld errors, %ld not sent", sent, e->rate, nconns,
               errors, e->total - sent);
    bench_emit(out);
}

/* emit-pace --dsn DSN --rate R --seconds S [--conns C] [--aggregates N] */
int
cmd_emit_pace(int argc, char **argv)
{
    const char  *dsn = bench_opt_req(argc, argv, "--dsn");
    double       seconds = bench_opt_double(argc, argv, "--seconds", 20);
    int          nconns = (int) bench_opt_long(argc, argv, "--conns", 8);
    emit_t       e = { .rate = bench_opt_double(argc, argv, "--rate", 500),
                       .aggregates = bench_opt_long(argc, argv, "--aggregates", 1000) };
    emit_conn_t *conns;

    e.total = (long) (e.rate * seconds);
    if (e.rate <= 0 || e.total < 1 || nconns < 1 || e.aggregates < 1)
        bench_die("emit-pace: --rate, --seconds, --conns and --aggregates must be positive");
    conns = calloc((size_t) nconns, sizeof(*conns));
    e.lat_ms = malloc((size_t) e.total * sizeof(*e.lat_ms));
    if (conns == NULL || e.lat_ms == NULL)
        bench_die("emit-pace: out of memory");
    for (long k = 0; k < e.total; k++)
        e.lat_ms[k] = NAN;
    pthread_mutex_init(&e.mu, NULL);
    for (int i = 0; i < nconns; i++)
        conns[i] = (emit_conn_t) { .e = &e, .pg = emit_connect(dsn, i, nconns), .index = i };

    e.t0 = bench_now() + 0.05;
    e.give_up = e.t0 + seconds + EMIT_GRACE_S;
    int64_t wall0 = ob_wall_ms() + 50;
    for (int i = 0; i < nconns; i++)
        if (pthread_create(&conns[i].th, NULL, emit_worker, &conns[i]) != 0)
            bench_die("emit-pace: cannot start thread %d", i + 1);
    for (int i = 0; i < nconns; i++)
        pthread_join(conns[i].th, NULL);
    emit_report(&e, nconns, seconds, wall0);
    for (int i = 0; i < nconns; i++)
        PQfinish(conns[i].pg);
    pthread_mutex_destroy(&e.mu);
    free(conns);
    free(e.lat_ms);
    return 0;
}
