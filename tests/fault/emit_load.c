/*
 * tests/fault/emit_load.c: foreign writers and the verdict on their run.
 *
 * Each writer is a forked process with one libpq connection to the orders
 * database, as any service in any language would have, and a history file
 * of its own, one line per emit call once its transaction's outcome is known:
 *   outcome(C|R|U)  event-id  type  id  writer  n  begin-us  end-us  xid
 * An unknown outcome (COMMIT sent, no answer) is settled after the run by
 * txid_status() of the transaction's xid: by the database's own commit
 * log, never by what the relay under test left in the outbox.
 * The payload of call n is {"w": writer, "n": n}, so the checker can tell a
 * record that carries another call's payload. Times are CLOCK_MONOTONIC,
 * which every process of this machine shares.
 */
#include "tests/fault/fault.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EMIT_MAX_CALLS 3

_Static_assert(FX_MAX_CLIENTS <= OBE_MAX_WRITERS, "the checker numbers writers below OBE_MAX_WRITERS");

typedef struct {
    fx_t                 *fx;
    const fx_emit_opts_t *o;
    int                   index;
    long                  n;
    PGconn               *pg;
    FILE                 *hist;
} writer_t;

typedef struct {
    char        event_id[40];
    const char *type;
    long        n;
} pending_t;

static int64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Connected, or stopping: a writer outlives an outage by reconnecting. */
static int
writer_connect(writer_t *w)
{
    while (!atomic_load(&w->fx->sh->stop)) {
        if (w->pg != NULL && PQstatus(w->pg) == CONNECTION_OK)
            return 1;
        PQfinish(w->pg);
        w->pg = PQconnectdb(w->fx->h.orders_dsn);
        if (PQstatus(w->pg) != CONNECTION_OK)
            ob_sleep_ms(100);
    }
    return 0;
}

/* One statement without parameters; 1 when it returned `want`. */
static int
writer_exec(writer_t *w, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(w->pg, sql);
    int       ok = PQresultStatus(r) == want;

    PQclear(r);
    return ok;
}

/* The transaction's id, for txid_status() should its COMMIT go unanswered. */
static int
writer_xid(writer_t *w, char *out, size_t outlen)
{
    PGresult *r = PQexec(w->pg, "SELECT txid_current()");
    int       ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;

    if (ok)
        ob_strlcpy(out, PQgetvalue(r, 0, 0), outlen);
    PQclear(r);
    if (!ok)
        writer_exec(w, "ROLLBACK", PGRES_COMMAND_OK);
    return ok;
}

/* One emit call; 1 with its event id, 0 when the statement failed. */
static int
writer_emit(writer_t *w, const char *type, const char *id, pending_t *p)
{
    char        event_type[48], payload[64];
    const char *params[4] = { type, id, event_type, payload };

    p->type = type;
    p->n = ++w->n;
    snprintf(event_type, sizeof(event_type), "%s.changed", type);
    snprintf(payload, sizeof(payload), "{\"w\": %d, \"n\": %ld}", w->index, p->n);
    PGresult *r = PQexecParams(w->pg, "SELECT outboxd.emit($1, $2, $3, $4::jsonb)", 4, NULL, params, NULL, NULL, 0);
    int       ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        ob_strlcpy(p->event_id, PQgetvalue(r, 0, 0), sizeof(p->event_id));
    PQclear(r);
    return ok;
}

/* COMMIT answered with COMMIT (an aborted transaction answers ROLLBACK). */
static char
writer_commit(writer_t *w)
{
    PGresult *r = PQexec(w->pg, "COMMIT");
    char      out = 'R';

    if (PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0)
        out = 'C';
    else if (PQstatus(w->pg) != CONNECTION_OK)
        out = 'U';    /* the commit may have happened: the outbox will say */
    PQclear(r);
    return out;
}

static void
writer_tx(writer_t *w)
{
    const fx_emit_opts_t *o = w->o;
    pending_t             p[EMIT_MAX_CALLS];
    char                  id[16], xid[24] = "0";
    int                   k = 1 + (int) (random() % EMIT_MAX_CALLS), made = 0;
    char                  outcome = 'R';

    snprintf(id, sizeof(id), "%ld", random() % o->aggregates);
    int64_t begin = now_us();
    if (writer_exec(w, "BEGIN", PGRES_COMMAND_OK) && writer_xid(w, xid, sizeof(xid))) {
        while (made < k && writer_emit(w, o->types[random() % o->ntypes], id, &p[made]))
            made++;
        if (made == k && random() % 100 >= o->rollback_pct)
            outcome = writer_commit(w);
        else
            writer_exec(w, "ROLLBACK", PGRES_COMMAND_OK);
    }
    int64_t end = now_us();
    for (int i = 0; i < made; i++)
        if (fprintf(w->hist, "%c %s %s %s %d %ld %lld %lld %s\n", outcome, p[i].event_id, p[i].type, id, w->index,
                    p[i].n, (long long) begin, (long long) end, xid) < 0)
            _exit(4);    /* a short history would read as phantoms: fail the client, and so the run */
    if (outcome == 'C')
        atomic_fetch_add(&w->fx->sh->acked, 1);
    atomic_fetch_add(&w->fx->sh->attempts, 1);
}

static void
writer_main(writer_t *w)
{
    w->hist = fx_client_history(w->fx, "emit", w->index);
    while (writer_connect(w)) {
        writer_tx(w);
        if (w->o->pace_ms > 0)
            ob_sleep_ms(w->o->pace_ms);
    }
    PQfinish(w->pg);
    _exit(fclose(w->hist) == 0 ? 0 : 4);
}

void
fx_emit_start(fx_t *fx, const fx_emit_opts_t *o)
{
    static fx_emit_opts_t opts;    /* the children read it after fork */

    opts = *o;
    cr_assert(opts.writers > 0 && fx->nclients + opts.writers <= FX_MAX_CLIENTS && opts.aggregates > 0 &&
              opts.ntypes > 0);
    atomic_store(&fx->sh->stop, 0);
    for (int i = 0; i < opts.writers; i++) {
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            writer_t w = { .fx = fx, .o = &opts, .index = fx->nclients + i };
            writer_main(&w);
        }
        fx->clients[fx->nclients + i] = pid;
    }
    fx->nclients += opts.writers;
}

static int
emit_parse(const char *line, obe_call_t *c, char *xid, size_t xidlen)
{
    char      outcome, x[24];
    long long begin, end;

    memset(c, 0, sizeof(*c));
    if (sscanf(line, "%c %39s %23s %39s %d %ld %lld %lld %23s", &outcome, c->event_id, c->type, c->id, &c->writer,
               &c->n, &begin, &end, x) != 9 || strchr("CRU", outcome) == NULL)
        return -1;
    c->begin_us = begin;
    c->end_us = end;
    c->outcome = outcome == 'C' ? OBE_COMMITTED : outcome == 'U' ? OBE_UNKNOWN : OBE_ROLLED_BACK;
    ob_strlcpy(xid, x, xidlen);
    return 0;
}

/* What the database's commit log says of a transaction whose COMMIT went
 * unanswered: 1 when it committed. */
static int
emit_settle(PGconn *pg, const char *xid)
{
    const char *params[1] = { xid };
    PGresult   *r = PQexecParams(pg, "SELECT txid_status($1::bigint)", 1, NULL, params, NULL, NULL, 0);

    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "txid_status(%s): %s", xid, PQresultErrorMessage(r));
    int committed = strcmp(PQgetvalue(r, 0, 0), "committed") == 0;
    PQclear(r);
    return committed;
}

size_t
fx_emit_history(fx_t *fx, obe_call_t **out)
{
    size_t      n = 0, cap = 0;
    obe_call_t *v = NULL;

    fx_grow((void **) &v, &cap, 0, sizeof(*v));
    PGconn *pg = obh_pg(fx->h.orders_dsn);
    for (int i = 0; i < fx->nclients; i++) {
        char path[256], line[512], xid[24];
        snprintf(path, sizeof(path), "%s/emit.%d", fx->h.dir, i);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "history %s missing", path);
        while (fgets(line, sizeof(line), f) != NULL) {
            fx_grow((void **) &v, &cap, n, sizeof(*v));
            cr_assert_eq(emit_parse(line, &v[n], xid, sizeof(xid)), 0, "bad history line in %s: %s", path, line);
            if (v[n].outcome == OBE_UNKNOWN)
                v[n].committed_in_log = emit_settle(pg, xid);
            n++;
        }
        fclose(f);
    }
    PQfinish(pg);
    *out = v;
    return n;
}

/* ---- the verdict ------------------------------------------------------------ */

static int
emit_drained(fx_t *fx)
{
    return obh_scalar(fx->h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0;
}

static void
emit_gather_outbox(fx_t *fx, obe_input_t *in)
{
    PGconn   *pg = obh_pg(fx->h.orders_dsn);
    PGresult *r = fx_rows(pg, "SELECT event_id, aggregate_type, aggregate_id, published, partition,"
                              " coalesce(kafka_offset, -1) FROM outboxd.outbox");
    int       n = PQntuples(r);

    obe_row_t *rows = fx_alloc((size_t) n, sizeof(*rows));
    for (int i = 0; i < n; i++) {
        ob_strlcpy(rows[i].event_id, PQgetvalue(r, i, 0), sizeof(rows[i].event_id));
        ob_strlcpy(rows[i].type, PQgetvalue(r, i, 1), sizeof(rows[i].type));
        ob_strlcpy(rows[i].id, PQgetvalue(r, i, 2), sizeof(rows[i].id));
        rows[i].published = PQgetvalue(r, i, 3)[0] == 't';
        rows[i].partition = atoi(PQgetvalue(r, i, 4));
        rows[i].offset = atoll(PQgetvalue(r, i, 5));
    }
    in->rows = rows;
    in->nrows = (size_t) n;
    PQclear(r);
    r = fx_rows(pg, "SELECT DISTINCT aggregate_type, aggregate_id FROM outboxd.outbox_quarantine");
    n = PQntuples(r);
    obe_agg_t *q = fx_alloc((size_t) n, sizeof(*q));
    for (int i = 0; i < n; i++) {
        ob_strlcpy(q[i].type, PQgetvalue(r, i, 0), sizeof(q[i].type));
        ob_strlcpy(q[i].id, PQgetvalue(r, i, 1), sizeof(q[i].id));
    }
    in->quarantined = q;
    in->nquarantined = (size_t) n;
    PQclear(r);
    PQfinish(pg);
}

typedef struct {
    obe_kmsg_t *v;
    size_t      n, cap;
    int         topic;
} emit_kmsgs_t;

/* The writer and call number out of {"w": W, "n": N}, as PostgreSQL
 * normalised it; -1 when the payload is not that. */
static void
emit_payload(const rd_kafka_message_t *m, obe_kmsg_t *o)
{
    char text[128];

    snprintf(text, sizeof(text), "%.*s", (int) (m->len < 127 ? m->len : 127), (const char *) m->payload);
    if (sscanf(text, "{\"n\": %ld, \"w\": %d}", &o->n, &o->writer) != 2) {
        o->writer = -1;
        o->n = -1;
    }
}

static void
emit_take_kmsg(const rd_kafka_message_t *m, void *arg)
{
    emit_kmsgs_t *k = arg;
    char          seq[16];

    fx_grow((void **) &k->v, &k->cap, k->n, sizeof(*k->v));
    obe_kmsg_t *o = &k->v[k->n++];
    memset(o, 0, sizeof(*o));
    o->topic = k->topic;
    o->partition = m->partition;
    o->offset = m->offset;
    snprintf(o->id, sizeof(o->id), "%.*s", (int) (m->key_len < 39 ? m->key_len : 39), (const char *) m->key);
    obh_header(m, "event-id", o->event_id, sizeof(o->event_id));
    obh_header(m, "aggregate-type", o->type, sizeof(o->type));
    obh_header(m, "aggregate-seq", seq, sizeof(seq));
    o->seq = atoi(seq);
    emit_payload(m, o);
}

static void
emit_report(fx_t *fx, const obe_result_t *r, const char *verdict)
{
    long     faults = r->lost + r->phantom + r->duplicate + r->violations + r->mismatch;
    /* columns: transactions, emit calls, committed calls, calls with an unknown outcome, settled both ways */
    fx_row_t row = { atomic_load(&fx->sh->attempts), r->calls, r->committed, r->unknown, r->unknown_committed,
                     r->unknown_absent, 0, r->lost, r->phantom, r->duplicate, r->violations,
                     r->mismatch };

    fprintf(stderr,
            "chaos %s: transactions=%ld calls=%ld committed=%ld rolled_back=%ld unknown=%ld (committed %ld, aborted %ld)"
            " kafka=%ld resends=%ld lost=%ld phantom=%ld duplicate=%ld violations=%ld mismatch=%ld quarantined=%ld"
            " converged=%.1fs faults=%ld %s%s%s\n",
            fx->scenario, atomic_load(&fx->sh->attempts), r->calls, r->committed, r->rolled_back,
            r->unknown, r->unknown_committed, r->unknown_absent, r->kmsgs, r->kafka_resends, r->lost, r->phantom, r->duplicate,
            r->violations, r->mismatch, r->quarantined, fx->converge_s, faults, verdict, r->first[0] ? ": " : "",
            r->first);
    fx_report_append(fx, &row, verdict);
}

long
fx_emit_verify(fx_t *fx, const char *const *topics, const char *const *route_types, int ntopics, int converge_ms,
               obe_result_t *res)
{
    obe_input_t  in = { .partitions = fx->h.partitions, .route_types = route_types, .ntopics = ntopics };
    obe_call_t  *calls;
    emit_kmsgs_t k = { 0 };
    long         faults;

    if (fx->nclients > 0)
        fx_load_stop(fx);
    fx_wait_until(fx, emit_drained, converge_ms);
    in.ncalls = fx_emit_history(fx, &calls);
    in.calls = calls;
    emit_gather_outbox(fx, &in);
    for (k.topic = 0; k.topic < ntopics; k.topic++)
        fx_read_topic(fx, topics[k.topic], emit_take_kmsg, &k);
    in.kmsgs = k.v != NULL ? k.v : fx_alloc(0, sizeof(*k.v));
    in.nkmsgs = k.n;
    faults = obe_check(&in, res);
    free(calls);
    free((void *) in.rows);
    free((void *) in.quarantined);
    free((void *) in.kmsgs);
    return faults;
}

void
fx_emit_assert_clean(fx_t *fx, const obe_result_t *res)
{
    long faults = res->lost + res->phantom + res->duplicate + res->violations + res->mismatch;
    int  clean = faults == 0 && fx->converge_s >= 0 && res->committed > 0 && res->rolled_back > 0 && res->quarantined == 0;

    emit_report(fx, res, clean ? "pass" : "FAIL");
    cr_assert_eq(faults, 0, "%s: %ld faults: %s", fx->scenario, faults, res->first);
    cr_assert_geq(fx->converge_s, 0, "%s: the outbox never drained; log %s", fx->scenario, fx->h.log);
    cr_assert_gt(res->committed, 0, "%s: no writer committed anything", fx->scenario);
    cr_assert_gt(res->rolled_back, 0, "%s: no writer rolled back: the rollback half went unproven", fx->scenario);
    cr_assert_eq(res->quarantined, 0, "%s: %ld committed events held in quarantine; log %s", fx->scenario,
                 res->quarantined, fx->h.log);
}

void
fx_emit_assert_flagged(fx_t *fx, const obe_result_t *res, long count, const char *what)
{
    emit_report(fx, res, count > 0 ? "flagged (negative control)" : "MISSED (negative control)");
    cr_assert_gt(count, 0, "%s: the broken mode ran and the checker saw no %s; log %s", fx->scenario, what, fx->h.log);
}
