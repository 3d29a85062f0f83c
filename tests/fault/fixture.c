/*
 * tests/fault/fixture.c: scenario life cycle, convergence, gathering the
 * four views for the checker, and the report row.
 */
#include "tests/fault/fault.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

void
fx_setup(fx_t *fx, const char *scenario)
{
    const char *tier = getenv("OB_CHAOS_LONG");

    memset(fx, 0, sizeof(*fx));
    fx->scenario = scenario;
    fx->long_tier = tier != NULL && strcmp(tier, "1") == 0;
    fx->sh = fx_shared_new();
    fx->converge_s = -1;
    obh_init(&fx->h, 1);
}

void
fx_start(fx_t *fx, const char *extra)
{
    obh_write_conf(&fx->h, extra);
    obh_start(&fx->h, NULL);
    cr_assert(obh_wait_worker(&fx->h, OB_KIND_HTTP, 0, 0, obh_ms(10000)) > 0, "no HTTP worker; log %s", fx->h.log);
}

void
fx_teardown(fx_t *fx)
{
    atomic_store(&fx->sh->stop, 1);
    for (int i = 0; i < fx->nclients; i++)
        if (fx->clients[i] > 0) {
            kill(fx->clients[i], SIGKILL);
            waitpid(fx->clients[i], NULL, 0);
        }
    obh_cleanup(&fx->h);
    munmap(fx->sh, sizeof(*fx->sh));
}

int
fx_n(const fx_t *fx, int short_n, int long_n)
{
    return fx->long_tier ? long_n : short_n;
}

void
fx_healed(fx_t *fx)
{
    fx->healed_ms = ob_now_ms();
}

/* ---- convergence ------------------------------------------------------- */

/* First value of sql as text, without asserting: the database may still be
 * coming back. Returns 0 on success. */
static int
fx_text(const char *dsn, const char *sql, char *out, size_t outlen)
{
    PGconn *pg = PQconnectdb(dsn);
    int     rc = -1;

    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *r = PQexec(pg, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            ob_strlcpy(out, PQgetvalue(r, 0, 0), outlen);
            rc = 0;
        }
        PQclear(r);
    }
    PQfinish(pg);
    return rc;
}

/* Orders, cancellations and money per currency on both sides, nothing
 * pending or parked. One sum over every currency could match by accident. */
static int
fx_converged(fx_t *fx)
{
    char       o[1024], l[1024];
    long long  on, oc, pending, ln, lc, parked;
    char       osum[512], lsum[512];
    const char *osql = "SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'cancelled') || ' ' || "
                       "coalesce((SELECT string_agg(currency || '=' || s, ',' ORDER BY currency) FROM "
                       "(SELECT currency, sum(amount) AS s FROM orders GROUP BY currency) t), '-') || ' ' || "
                       "(SELECT count(*) FROM outboxd.outbox WHERE NOT published) FROM orders";
    const char *lsql = "SELECT count(*) FILTER (WHERE kind = 'charge') || ' ' || "
                       "count(*) FILTER (WHERE kind = 'credit_note') || ' ' || "
                       "coalesce((SELECT string_agg(currency || '=' || s, ',' ORDER BY currency) FROM "
                       "(SELECT currency, sum(amount) AS s FROM ledger_entries WHERE kind = 'charge' "
                       "GROUP BY currency) t), '-') || ' ' || "
                       "(SELECT count(*) FROM ledger_parked) FROM ledger_entries";

    if (fx_text(fx->h.orders_dsn, osql, o, sizeof(o)) != 0 || fx_text(fx->h.ledger_dsn, lsql, l, sizeof(l)) != 0)
        return 0;
    if (sscanf(o, "%lld %lld %511s %lld", &on, &oc, osum, &pending) != 4 ||
        sscanf(l, "%lld %lld %511s %lld", &ln, &lc, lsum, &parked) != 4)
        return 0;
    return on == ln && oc == lc && strcmp(osum, lsum) == 0 && pending == 0 && parked == 0;
}

void
fx_wait_until(fx_t *fx, int (*done)(fx_t *), int timeout_ms)
{
    int64_t deadline = ob_now_ms() + timeout_ms;

    if (fx->healed_ms == 0)
        fx_healed(fx);
    for (;;) {
        if (done(fx)) {
            fx->converge_s = (double) (ob_now_ms() - fx->healed_ms) / 1000.0;
            return;
        }
        if (ob_now_ms() > deadline)
            return;
        ob_sleep_ms(100);
    }
}

/* ---- gathering ---------------------------------------------------------- */

void
fx_grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (*v != NULL && n < *cap)
        return;
    *cap = *cap ? *cap * 2 : 1024;
    *v = realloc(*v, (*cap + 1) * size);
    cr_assert_not_null(*v);
}

PGresult *
fx_rows(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);

    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    return r;
}

void *
fx_alloc(size_t n, size_t size)
{
    void *p = calloc(n + 1, size);

    cr_assert_not_null(p);
    return p;
}

static int64_t
fx_amount(const char *s)
{
    int64_t v = 0;

    cr_assert_eq(obc_parse_amount(s, &v), 0, "amount %s", s);
    return v;
}

static void
fx_gather_orders(fx_t *fx, obc_input_t *in)
{
    PGconn   *pg = obh_pg(fx->h.orders_dsn);
    PGresult *r = fx_rows(pg, "SELECT id, coalesce(idempotency_key, ''), amount, status = 'cancelled' FROM orders");
    int       n = PQntuples(r);

    obc_order_t *o = fx_alloc((size_t) n, sizeof(*o));
    for (int i = 0; i < n; i++) {
        ob_strlcpy(o[i].id, PQgetvalue(r, i, 0), sizeof(o[i].id));
        ob_strlcpy(o[i].key, PQgetvalue(r, i, 1), sizeof(o[i].key));
        o[i].amount = fx_amount(PQgetvalue(r, i, 2));
        o[i].cancelled = PQgetvalue(r, i, 3)[0] == 't';
    }
    in->orders = o;
    in->norders = (size_t) n;
    PQclear(r);

    r = fx_rows(pg, "SELECT event_id, aggregate_id, seq, published, partition, coalesce(kafka_offset, -1)"
                    " FROM outboxd.outbox");
    n = PQntuples(r);
    obc_outbox_t *ob = fx_alloc((size_t) n, sizeof(*ob));
    for (int i = 0; i < n; i++) {
        ob_strlcpy(ob[i].event_id, PQgetvalue(r, i, 0), sizeof(ob[i].event_id));
        ob_strlcpy(ob[i].order, PQgetvalue(r, i, 1), sizeof(ob[i].order));
        ob[i].seq = atoi(PQgetvalue(r, i, 2));
        ob[i].published = PQgetvalue(r, i, 3)[0] == 't';
        ob[i].partition = atoi(PQgetvalue(r, i, 4));
        ob[i].offset = atoll(PQgetvalue(r, i, 5));
    }
    in->outbox = ob;
    in->noutbox = (size_t) n;
    PQclear(r);

    r = fx_rows(pg, "SELECT DISTINCT aggregate_id FROM outboxd.outbox_quarantine");
    n = PQntuples(r);
    char(*q)[40] = fx_alloc((size_t) n, sizeof(*q));
    for (int i = 0; i < n; i++)
        ob_strlcpy(q[i], PQgetvalue(r, i, 0), sizeof(q[i]));
    in->quarantined = (const char(*)[40]) q;
    in->nquarantined = (size_t) n;
    PQclear(r);
    PQfinish(pg);
}

static void
fx_gather_ledger(fx_t *fx, obc_input_t *in)
{
    PGconn   *pg = obh_pg(fx->h.ledger_dsn);
    PGresult *r = fx_rows(pg, "SELECT id, event_id, order_id, seq, kind = 'charge', amount FROM ledger_entries");
    int       n = PQntuples(r);

    obc_entry_t *e = fx_alloc((size_t) n, sizeof(*e));
    for (int i = 0; i < n; i++) {
        e[i].id = atoll(PQgetvalue(r, i, 0));
        ob_strlcpy(e[i].event_id, PQgetvalue(r, i, 1), sizeof(e[i].event_id));
        ob_strlcpy(e[i].order, PQgetvalue(r, i, 2), sizeof(e[i].order));
        e[i].seq = atoi(PQgetvalue(r, i, 3));
        e[i].kind = PQgetvalue(r, i, 4)[0] == 't' ? OBC_CHARGE : OBC_CREDIT_NOTE;
        e[i].amount = fx_amount(PQgetvalue(r, i, 5));
    }
    in->entries = e;
    in->nentries = (size_t) n;
    PQclear(r);
    PQfinish(pg);
}

/*
 * A whole topic: each partition read from the beginning up to the high
 * watermark queried first, so the read ends exactly when everything that
 * was in the log has been seen. each() gets the records per partition in
 * offset order; returns how many it got.
 */
size_t
fx_read_topic(fx_t *fx, const char *topic, void (*each)(const rd_kafka_message_t *m, void *arg), void *arg)
{
    char             err[256], group[160];
    int              P = fx->h.partitions;
    int64_t          hi[OB_SHM_PARTITIONS], lo, next[OB_SHM_PARTITIONS];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int64_t          deadline = ob_now_ms() + obh_ms(60000);
    size_t           got = 0;

    snprintf(group, sizeof(group), "%s-%s", fx->h.tag, topic);
    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    for (int p = 0; p < P; p++) {
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(c, topic, p, &lo, &hi[p], 10000);
        cr_assert_eq(e, 0, "watermarks of %s/%d: %s", topic, p, rd_kafka_err2str(e));
        next[p] = lo;
    }
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(P);
    for (int p = 0; p < P; p++)
        rd_kafka_topic_partition_list_add(tp, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(c, tp), 0);
    rd_kafka_topic_partition_list_destroy(tp);
    for (;;) {
        int behind = 0;
        for (int p = 0; p < P; p++)
            behind += next[p] < hi[p];
        if (behind == 0)
            break;
        cr_assert(ob_now_ms() < deadline, "reading %s back: %d partitions short of their high watermark", topic, behind);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m == NULL)
            continue;
        if (m->err == 0 && m->offset < hi[m->partition]) {
            each(m, arg);
            got++;
        }
        if (m->err == 0)
            next[m->partition] = m->offset + 1;
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return got;
}

typedef struct {
    obc_kmsg_t *v;
    size_t      n, cap;
} kmsgs_t;

static void
fx_take_kmsg(const rd_kafka_message_t *m, void *arg)
{
    kmsgs_t *k = arg;
    char     seq[16];

    fx_grow((void **) &k->v, &k->cap, k->n, sizeof(*k->v));
    obc_kmsg_t *o = &k->v[k->n++];
    memset(o, 0, sizeof(*o));
    o->partition = m->partition;
    o->offset = m->offset;
    snprintf(o->order, sizeof(o->order), "%.*s", (int) (m->key_len < 39 ? m->key_len : 39), (const char *) m->key);
    obh_header(m, "event-id", o->event_id, sizeof(o->event_id));
    obh_header(m, "aggregate-seq", seq, sizeof(seq));
    o->seq = atoi(seq);
}

static void
fx_gather_kafka(fx_t *fx, obc_input_t *in)
{
    kmsgs_t k = { 0 };

    fx_read_topic(fx, fx->h.topic, fx_take_kmsg, &k);
    in->kmsgs = k.v != NULL ? k.v : fx_alloc(0, sizeof(*k.v));    /* per partition in offset order: what the checker walks */
    in->nkmsgs = k.n;
}

/* ---- verdict ------------------------------------------------------------ */

static void
fx_report_row(fx_t *fx, long faults, const char *verdict)
{
    obc_result_t *r = &fx->res;

    fprintf(stderr,
            "chaos %s: attempts=%ld requests=%ld acked=%ld unavailable=%ld (committed %ld, absent %ld) bad=%ld orders=%ld "
            "kafka=%ld resends=%ld entries=%ld lost=%ld phantom=%ld duplicate=%ld violations=%ld mismatch=%ld "
            "quarantined=%ld converged=%.1fs faults=%ld %s%s%s\n",
            fx->scenario, atomic_load(&fx->sh->attempts), r->requests, r->acked, r->unavailable,
            r->unknown_committed, r->unknown_absent, r->bad_status, r->orders, r->kmsgs, r->kafka_resends, r->entries, r->lost, r->phantom, r->duplicate,
            r->violations, r->mismatch, r->quarantined, fx->converge_s, faults, verdict, r->first[0] ? ": " : "",
            r->first);
    fx_row_t row = { atomic_load(&fx->sh->attempts), r->requests, r->acked, r->unavailable, r->unknown_committed,
                     r->unknown_absent, r->bad_status, r->lost, r->phantom, r->duplicate, r->violations, r->mismatch };
    fx_report_append(fx, &row, verdict);
}

void
fx_report_append(fx_t *fx, const fx_row_t *r, const char *verdict)
{
    const char *path = getenv("OB_CHAOS_REPORT");
    char        conv[16] = "never";

    if (path == NULL)
        return;
    if (fx->converge_s >= 0)
        snprintf(conv, sizeof(conv), "%.1f", fx->converge_s);
    FILE *f = fopen(path, "a");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fprintf(f, "%s\t%ld\t%ld\t%ld\t%ld\t%ld/%ld\t%ld\t%ld\t%ld\t%ld\t%ld\t%ld\t%s\t%s\n", fx->scenario, r->attempts,
            r->requests, r->acked, r->unavailable, r->unknown_committed, r->unknown_absent, r->bad, r->lost, r->phantom,
            r->duplicate, r->violations, r->mismatch, conv, verdict);
    fclose(f);
}

long
fx_verify(fx_t *fx, int converge_timeout_ms)
{
    obc_input_t in = { 0 };
    obc_req_t  *reqs;
    long        faults;

    if (fx->nclients > 0)
        fx_load_stop(fx);
    fx_wait_until(fx, fx_converged, converge_timeout_ms);
    in.nreqs = fx_history(fx, &reqs);
    in.reqs = reqs;
    fx_gather_orders(fx, &in);
    fx_gather_kafka(fx, &in);
    fx_gather_ledger(fx, &in);
    faults = obc_check(&in, &fx->res);
    free(reqs);
    free((void *) in.orders);
    free((void *) in.outbox);
    free((void *) in.quarantined);
    free((void *) in.kmsgs);
    free((void *) in.entries);
    return faults;
}

void
fx_assert_clean(fx_t *fx)
{
    long faults = fx->res.lost + fx->res.phantom + fx->res.duplicate + fx->res.violations + fx->res.mismatch;
    int  clean = faults == 0 && fx->res.bad_status == 0 && fx->converge_s >= 0;

    fx_report_row(fx, faults, clean ? "pass" : "FAIL");
    cr_assert_eq(faults, 0, "%s: %ld faults: %s", fx->scenario, faults, fx->res.first);
    cr_assert_eq(fx->res.bad_status, 0, "%s: %ld requests answered 500-class other than 503", fx->scenario,
                 fx->res.bad_status);
    cr_assert_geq(fx->converge_s, 0, "%s: totals did not converge; log %s", fx->scenario, fx->h.log);
    cr_assert_gt(fx->res.acked, 0, "%s: no request was acknowledged at all", fx->scenario);
}

/* ---- fault helpers ---------------------------------------------------------- */

static void
fx_system(const char *cmd)
{
    int st = system(cmd);

    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed (status %d)", cmd, st);
}

void
fx_kafka_restart(void)
{
    fx_system("bash scripts/stack.sh up >/dev/null");
}

void
fx_pg_restart(const char *which)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "bash scripts/stack.sh restart-pg %s >/dev/null", which);
    fx_system(cmd);
}

pid_t
fx_kill_worker(fx_t *fx, int kind, int index, int sig)
{
    ob_shm_slot_t s;

    cr_assert(obh_wait_worker(&fx->h, kind, index, 0, obh_ms(20000)) > 0, "worker %d/%d never ran; log %s", kind,
              index, fx->h.log);
    cr_assert_geq(obh_worker(&fx->h, kind, index, &s), 0);
    kill(s.pid, sig);
    return s.pid;
}

void
fx_assert_flagged(fx_t *fx, long count, const char *what)
{
    long faults = fx->res.lost + fx->res.phantom + fx->res.duplicate + fx->res.violations + fx->res.mismatch;

    fx_report_row(fx, faults, count > 0 ? "flagged (negative control)" : "MISSED (negative control)");
    cr_assert_gt(count, 0, "%s: the broken mode ran and the checker saw no %s; log %s", fx->scenario, what, fx->h.log);
}
