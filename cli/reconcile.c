/*
 * cli/reconcile.c: `outboxd reconcile [--json] [--grace SECONDS]`.
 *
 * Proves, with one command, that every order reached the ledger and
 * nothing else did, and says so truthfully while traffic runs.
 *
 * The cut. orderdb is read inside one REPEATABLE READ snapshot taken at T
 * (orderdb's now(), once, at the start): the orders walk, their versions
 * and the order totals all come from it, so no order changes state halfway
 * through the run. The ledger is read later than T, and so holds everything
 * booked for the cut and possibly more: entries of events after the cut
 * (a seq above the order's version at T) are left out, except a credit note
 * for an order the cut shows not cancelled, which is looked up again in
 * orderdb outside the snapshot, after the ledger read: cancelled by then
 * is a cancel after the cut, still not cancelled is a phantom.
 *
 * Grace. An event is due in the ledger when its own outbox row was written
 * more than --grace seconds before T (orderdb's clock on both sides). Once
 * the janitor removed a published row, the order row's own stamps stand in
 * for it: created_at and updated_at are written by the same statement as
 * the create's and the cancel's outbox rows.
 *
 * Findings: missing (order, or its cancellation, not booked), phantom
 * (ledger entry without an order, or a credit note for an order not
 * cancelled), duplicate (more than one charge or credit note), mismatch
 * (a charge or credit note whose amount or currency is not the order's),
 * seq gap (events parked longer than the grace period), and per-currency
 * totals of the cut's due events on both sides, which must be equal.
 * Exit 0 when consistent, 1 otherwise, 2 when it could not finish.
 */
#include "cmd.h"
#include "reconcile.h"
#include "../common/money.h"
#include "../common/pg.h"
#include "../common/pgarr.h"
#include "../common/util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 5000

typedef struct {
    PGconn   *orders;        /* inside the cut's snapshot */
    PGconn   *fresh;         /* orderdb outside it: phantoms and cancels after the cut */
    PGconn   *ledger;
    int       grace_s;
    char      cut[64];       /* T, orderdb's clock */
    char      due[64];       /* T - grace: events older than this must be booked */
    long      checked, missing, phantom, duplicate, mismatch, gaps, totals_differ;
    PGresult *ledger_totals; /* (currency, sum) of the due events' entries so far */
    json_t   *findings;      /* array of {kind, order, detail} */
} recon_t;

/* ---- the verdict on one order (pure) ------------------------------------ */

const char *
ob_recon_kind_name(ob_recon_kind_t kind)
{
    static const char *names[] = { "missing", "phantom", "duplicate", "mismatch" };

    return names[kind];
}

static int
judge_add(ob_recon_finding_t *out, int n, ob_recon_kind_t kind, const char *fmt, ...)
{
    va_list ap;

    if (n >= OB_RECON_MAX_FINDINGS)
        return n;
    out[n].kind = kind;
    va_start(ap, fmt);
    vsnprintf(out[n].detail, sizeof(out[n].detail), fmt, ap);
    va_end(ap);
    return n + 1;
}

int
ob_recon_judge(const ob_recon_order_t *o, const ob_recon_ledger_t *l, ob_recon_finding_t *out, int *recheck)
{
    int n = 0;

    *recheck = 0;
    if (l == NULL || l->charges == 0)
        return o->create_settled ? judge_add(out, n, OB_RECON_MISSING, "order has no ledger charge") : 0;
    if (l->charges > 1 || l->credits > 1)
        n = judge_add(out, n, OB_RECON_DUPLICATE, "%d charges, %d credit notes", l->charges, l->credits);
    if (strcmp(l->charge_amount, o->amount) != 0 || strcmp(l->charge_currency, o->currency) != 0)
        n = judge_add(out, n, OB_RECON_MISMATCH, "order %s %s, ledger charge %s %s", o->amount, o->currency,
                      l->charge_amount, l->charge_currency);
    if (o->cancelled && l->credits == 0) {
        if (o->cancel_settled)
            n = judge_add(out, n, OB_RECON_MISSING, "cancelled order has no credit note");
    } else if (o->cancelled) {
        if (strcmp(l->credit_amount, o->amount) != 0 || strcmp(l->credit_currency, o->currency) != 0)
            n = judge_add(out, n, OB_RECON_MISMATCH, "order %s %s, ledger credit note -%s %s", o->amount,
                          o->currency, l->credit_amount, l->credit_currency);
    } else if (l->credits > 0) {
        n = judge_add(out, n, OB_RECON_PHANTOM, "credit note for an order that is not cancelled");
    } else if (l->later_credits > 0) {
        *recheck = 1;
    }
    return n;
}

/* ---- reading ------------------------------------------------------------ */

static void
recon_find(recon_t *rc, const char *kind, const char *order, const char *detail)
{
    if (json_array_size(rc->findings) < 1000)
        json_array_append_new(rc->findings, json_pack("{s:s, s:s, s:s}", "kind", kind, "order", order, "detail", detail));
}

static void
recon_count(recon_t *rc, ob_recon_kind_t kind, const char *order, const char *detail)
{
    long *counters[] = { &rc->missing, &rc->phantom, &rc->duplicate, &rc->mismatch };

    (*counters[kind])++;
    recon_find(rc, ob_recon_kind_name(kind), order, detail);
}

static PGresult *
recon_query(PGconn *pg, const char *sql, int n, const char *const *params)
{
    char      err[512];
    PGresult *r = ob_pg_query(pg, sql, n, params, NULL, err, sizeof(err));

    if (r == NULL)
        fprintf(stderr, "outboxd: reconcile: %s\n", err);
    return r;
}

static int
recon_command(PGconn *pg, const char *sql)
{
    char err[512];

    if (ob_pg_exec(pg, sql, err, sizeof(err)) == 0)
        return 0;
    fprintf(stderr, "outboxd: reconcile: %s\n", err);
    return -1;
}

static char *
recon_column(PGresult *r, int col)
{
    ob_pgarr_t a = { 0 };

    for (int i = 0; r != NULL && i < PQntuples(r); i++)
        ob_pgarr_add(&a, PQgetvalue(r, i, col));
    return ob_pgarr_end(&a);
}

/* Shared by the orders page and the order totals: when each event was written. */
#define RECON_ORDERS_FROM                                                                                          \
    " FROM orders o LEFT JOIN outboxd.outbox c"                                                                  \
    "   ON c.aggregate_type = 'order' AND c.aggregate_id = o.id::text AND c.seq = 1"                              \
    " LEFT JOIN outboxd.outbox x"                                                                                 \
    "   ON x.aggregate_type = 'order' AND x.aggregate_id = o.id::text AND x.seq = o.version AND o.version > 1"
#define RECON_CREATE_DUE "coalesce(c.created_at, o.created_at) < $1::timestamptz"
#define RECON_CANCEL_DUE "(o.status = 'cancelled' AND coalesce(x.created_at, o.updated_at) < $1::timestamptz)"

/* Ledger figures for one page of orders, as a lookup by order id. */
typedef struct {
    const char       *order;
    ob_recon_ledger_t l;
} ledger_row_t;

static int
recon_cmp(const void *a, const void *b)
{
    return strcmp(((const ledger_row_t *) a)->order, ((const ledger_row_t *) b)->order);
}

static const char *
value(PGresult *r, int i, int col)
{
    return PQgetisnull(r, i, col) ? "" : PQgetvalue(r, i, col);
}

static ledger_row_t *
recon_ledger_rows(PGresult *l)
{
    ledger_row_t *rows = calloc((size_t) PQntuples(l) + 1, sizeof(*rows));

    for (int i = 0; rows != NULL && i < PQntuples(l); i++)
        rows[i] = (ledger_row_t) { PQgetvalue(l, i, 0),
                                   { atoi(PQgetvalue(l, i, 1)), atoi(PQgetvalue(l, i, 2)), value(l, i, 4),
                                     value(l, i, 5), value(l, i, 6), value(l, i, 7), atoi(PQgetvalue(l, i, 3)) } };
    if (rows != NULL)
        qsort(rows, (size_t) PQntuples(l), sizeof(*rows), recon_cmp);
    return rows;
}

/* Credit notes the cut cannot explain: phantoms unless orderdb shows the
 * order cancelled now, read after the ledger was. */
static int
recon_recheck(recon_t *rc, ob_pgarr_t *ids)
{
    char *lit = ob_pgarr_end(ids);

    if (lit == NULL)
        return -1;
    const char *p[1] = { lit };
    PGresult   *r = recon_query(rc->fresh,
                                "SELECT x::text FROM unnest($1::uuid[]) x WHERE NOT EXISTS"
                                " (SELECT 1 FROM orders WHERE id = x AND status = 'cancelled')",
                                1, p);
    free(lit);
    if (r == NULL)
        return -1;
    for (int i = 0; i < PQntuples(r); i++)
        recon_count(rc, OB_RECON_PHANTOM, PQgetvalue(r, i, 0), "credit note for an order that is not cancelled");
    PQclear(r);
    return 0;
}

/* Judges every order of page o against the ledger rows l. */
static int
recon_judge_page(recon_t *rc, PGresult *o, PGresult *l)
{
    ledger_row_t      *rows = recon_ledger_rows(l);
    ob_pgarr_t      again = { 0 };
    ob_recon_finding_t f[OB_RECON_MAX_FINDINGS];

    if (rows == NULL)
        return -1;
    for (int i = 0; i < PQntuples(o); i++) {
        ob_recon_order_t ord = { PQgetvalue(o, i, 0), PQgetvalue(o, i, 2), PQgetvalue(o, i, 3),
                                 strcmp(PQgetvalue(o, i, 1), "cancelled") == 0, strcmp(PQgetvalue(o, i, 5), "t") == 0,
                                 strcmp(PQgetvalue(o, i, 6), "t") == 0 };
        ledger_row_t     key = { .order = ord.id }, *hit;
        int              recheck;

        hit = bsearch(&key, rows, (size_t) PQntuples(l), sizeof(*rows), recon_cmp);
        rc->checked++;
        int n = ob_recon_judge(&ord, hit ? &hit->l : NULL, f, &recheck);
        for (int k = 0; k < n; k++)
            recon_count(rc, f[k].kind, ord.id, f[k].detail);
        if (recheck)
            ob_pgarr_add(&again, ord.id);
    }
    free(rows);
    if (again.n == 0) {
        free(again.s);
        return again.failed ? -1 : 0;
    }
    return recon_recheck(rc, &again);
}

/* Adds the ledger entries of the page's due events to the running totals,
 * in SQL, so money stays NUMERIC. */
static int
recon_ledger_totals(recon_t *rc, const char *ids, const char *seqs)
{
    char       *cur = recon_column(rc->ledger_totals, 0), *sum = recon_column(rc->ledger_totals, 1);
    const char *p[4] = { ids, seqs, cur, sum };
    PGresult   *r = NULL;

    if (cur != NULL && sum != NULL)
        r = recon_query(rc->ledger,
                        "SELECT c, sum(a)::text FROM (SELECT e.currency::text, e.amount"
                        " FROM unnest($1::uuid[], $2::int[]) AS s(o, q)"
                        " JOIN ledger_entries e ON e.order_id = s.o AND e.seq = s.q"
                        " UNION ALL SELECT * FROM unnest($3::text[], $4::numeric[])) AS t(c, a)"
                        " GROUP BY c ORDER BY c",
                        4, p);
    free(cur);
    free(sum);
    if (r == NULL)
        return -1;
    PQclear(rc->ledger_totals);
    rc->ledger_totals = r;
    return 0;
}

/* The page's due events as (order, seq) pairs, and then their ledger totals. */
static int
recon_due_events(recon_t *rc, PGresult *o)
{
    ob_pgarr_t ids = { 0 }, seqs = { 0 };

    for (int i = 0; i < PQntuples(o); i++) {
        if (strcmp(PQgetvalue(o, i, 5), "t") == 0)
            ob_pgarr_add(&ids, PQgetvalue(o, i, 0)), ob_pgarr_add(&seqs, "1");
        if (strcmp(PQgetvalue(o, i, 6), "t") == 0)
            ob_pgarr_add(&ids, PQgetvalue(o, i, 0)), ob_pgarr_add(&seqs, PQgetvalue(o, i, 4));
    }
    char *a = ob_pgarr_end(&ids), *b = ob_pgarr_end(&seqs);
    int   rv = a && b ? recon_ledger_totals(rc, a, b) : -1;

    free(a);
    free(b);
    return rv;
}

/* One page of orders after `after`; returns rows seen, -1 on error. */
static int
recon_orders_page(recon_t *rc, char *after)
{
    const char *p1[2] = { rc->due, after };
    PGresult   *o, *l;
    int         n, rv;

    o = recon_query(rc->orders,
                    "SELECT o.id::text, o.status, o.amount::text, o.currency::text, o.version, " RECON_CREATE_DUE
                    ", " RECON_CANCEL_DUE RECON_ORDERS_FROM " WHERE o.id > $2::uuid ORDER BY o.id LIMIT " OB_STR(PAGE),
                    2, p1);
    if (o == NULL)
        return -1;
    n = PQntuples(o);
    if (n == 0) {
        PQclear(o);
        return 0;
    }
    ob_pgarr_t vs = { 0 };
    for (int i = 0; i < n; i++)
        ob_pgarr_add(&vs, PQgetvalue(o, i, 4));
    char       *ids = recon_column(o, 0), *versions = ob_pgarr_end(&vs);
    const char *p2[2] = { ids, versions };
    l = ids && versions
            ? recon_query(rc->ledger,
                          "SELECT s.o::text, count(*) FILTER (WHERE e.kind = 'charge'),"
                          " count(*) FILTER (WHERE e.kind = 'credit_note' AND e.seq <= s.v),"
                          " count(*) FILTER (WHERE e.kind = 'credit_note' AND e.seq > s.v),"
                          " max(e.amount) FILTER (WHERE e.kind = 'charge')::text,"
                          " max(e.currency) FILTER (WHERE e.kind = 'charge')::text,"
                          " max(-e.amount) FILTER (WHERE e.kind = 'credit_note' AND e.seq <= s.v)::text,"
                          " max(e.currency) FILTER (WHERE e.kind = 'credit_note' AND e.seq <= s.v)::text"
                          " FROM unnest($1::uuid[], $2::int[]) AS s(o, v) JOIN ledger_entries e ON e.order_id = s.o"
                          " GROUP BY s.o",
                          2, p2)
            : NULL;
    free(ids);
    free(versions);
    rv = l != NULL && recon_judge_page(rc, o, l) == 0 && recon_due_events(rc, o) == 0 ? n : -1;
    if (rv > 0)
        ob_strlcpy(after, PQgetvalue(o, n - 1, 0), 37);
    PQclear(l);
    PQclear(o);
    return rv;
}

/* Ledger order ids with no order: phantoms. Asked of orderdb after the
 * ledger, outside the snapshot: an order booked is committed by then. */
static int
recon_phantom_page(recon_t *rc, char *after)
{
    const char *p1[1] = { after };
    PGresult   *l = recon_query(rc->ledger,
                                "SELECT DISTINCT order_id::text FROM ledger_entries WHERE order_id > $1::uuid"
                                " ORDER BY 1 LIMIT " OB_STR(PAGE),
                                1, p1);
    int         n;

    if (l == NULL)
        return -1;
    n = PQntuples(l);
    if (n == 0) {
        PQclear(l);
        return 0;
    }
    char *ids = recon_column(l, 0);
    const char *p2[1] = { ids };
    PGresult   *o = ids ? recon_query(rc->fresh,
                                      "SELECT x::text FROM unnest($1::uuid[]) x WHERE NOT EXISTS"
                                      " (SELECT 1 FROM orders WHERE id = x)",
                                      1, p2)
                        : NULL;
    free(ids);
    if (o == NULL) {
        PQclear(l);
        return -1;
    }
    for (int i = 0; i < PQntuples(o); i++)
        recon_count(rc, OB_RECON_PHANTOM, PQgetvalue(o, i, 0), "ledger entry for an order that does not exist");
    ob_strlcpy(after, PQgetvalue(l, n - 1, 0), 37);
    PQclear(o);
    PQclear(l);
    return n;
}

/* {"USD": "12.00", ...} of rows (currency, sum text), at each currency's scale. */
static json_t *
recon_totals_json(PGresult *r)
{
    json_t *out = json_object();
    char    buf[64];

    for (int i = 0; r != NULL && i < PQntuples(r); i++) {
        const ob_currency_t *cur = ob_currency_find(PQgetvalue(r, i, 0));
        if (cur == NULL || ob_decimal_rescale(PQgetvalue(r, i, 1), cur->digits, buf, sizeof(buf)) != 0)
            ob_strlcpy(buf, PQgetvalue(r, i, 1), sizeof(buf));
        json_object_set_new(out, PQgetvalue(r, i, 0), json_string(buf));
    }
    return out;
}

/* Currencies whose totals differ between the two sides (either side missing one counts). */
static long
recon_totals_differ(json_t *a, json_t *b)
{
    const char *k;
    json_t     *v;
    long        n = 0;

    json_object_foreach(a, k, v) n += !json_equal(v, json_object_get(b, k));
    json_object_foreach(b, k, v) n += json_object_get(a, k) == NULL;
    return n;
}

static int
recon_walk(recon_t *rc, int (*page)(recon_t *, char *), const char *what)
{
    char after[37] = "00000000-0000-0000-0000-000000000000";
    long seen = 0;
    int  n;

    while ((n = page(rc, after)) > 0) {
        seen += n;
        if (seen % (PAGE * 20) == 0)
            fprintf(stderr, "reconcile: %ld %s checked (up to %s)\n", seen, what, after);
    }
    if (n < 0)
        fprintf(stderr, "reconcile: stopped after %ld %s (up to %s)\n", seen, what, after);
    return n;
}

/* Opens the snapshot and takes T once. */
static int
recon_cut(recon_t *rc)
{
    char        grace[16];
    const char *p[1] = { grace };

    snprintf(grace, sizeof(grace), "%d", rc->grace_s);
    if (recon_command(rc->orders, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") != 0)
        return -1;
    PGresult *r = recon_query(rc->orders, "SELECT now()::text, (now() - make_interval(secs => $1::int))::text", 1, p);
    if (r == NULL)
        return -1;
    ob_strlcpy(rc->cut, PQgetvalue(r, 0, 0), sizeof(rc->cut));
    ob_strlcpy(rc->due, PQgetvalue(r, 0, 1), sizeof(rc->due));
    PQclear(r);
    return 0;
}

/* Everything that needs the databases; fills *ot and *lt. -1 when it could not finish. */
static int
recon_run(recon_t *rc, json_t **ot, json_t **lt)
{
    const char *p[1] = { rc->due };
    char        grace[16];
    const char *pg[1] = { grace };

    if (recon_cut(rc) != 0 || recon_walk(rc, recon_orders_page, "orders") < 0)
        return -1;
    PGresult *o = recon_query(rc->orders,
                              "SELECT o.currency::text, sum(CASE WHEN " RECON_CREATE_DUE " THEN o.amount ELSE 0 END"
                              " - CASE WHEN " RECON_CANCEL_DUE " THEN o.amount ELSE 0 END)::text" RECON_ORDERS_FROM
                              " WHERE " RECON_CREATE_DUE " OR " RECON_CANCEL_DUE " GROUP BY 1 ORDER BY 1",
                              1, p);
    if (o == NULL || recon_command(rc->orders, "COMMIT") != 0) {
        PQclear(o);
        return -1;
    }
    *ot = recon_totals_json(o);
    *lt = recon_totals_json(rc->ledger_totals);
    PQclear(o);
    rc->totals_differ = recon_totals_differ(*ot, *lt);
    if (recon_walk(rc, recon_phantom_page, "ledger orders") < 0)
        return -1;
    snprintf(grace, sizeof(grace), "%d", rc->grace_s);
    PGresult *g = recon_query(rc->ledger,
                              "SELECT count(*) FROM ledger_parked WHERE parked_at < now() - make_interval(secs => $1::int)",
                              1, pg);
    if (g == NULL)
        return -1;
    rc->gaps = atol(PQgetvalue(g, 0, 0));
    PQclear(g);
    return 0;
}

static void
recon_print(recon_t *rc, int ok, json_t *ot, json_t *lt)
{
    printf("%s: %ld orders checked (cut %s, grace %d s)\n", ok ? "CONSISTENT" : "INCONSISTENT", rc->checked, rc->cut,
           rc->grace_s);
    printf("missing: %ld\nphantom: %ld\nduplicate: %ld\nmismatch: %ld\nseq_gaps: %ld\ntotals_differ: %ld\n",
           rc->missing, rc->phantom, rc->duplicate, rc->mismatch, rc->gaps, rc->totals_differ);
    char *a = json_dumps(ot, JSON_COMPACT), *b = json_dumps(lt, JSON_COMPACT);
    printf("orders totals: %s\nledger totals: %s\n", a, b);
    free(a);
    free(b);
    for (size_t i = 0; i < json_array_size(rc->findings); i++) {
        json_t *f = json_array_get(rc->findings, i);
        printf("  %-9s %s  %s\n", json_string_value(json_object_get(f, "kind")),
               json_string_value(json_object_get(f, "order")), json_string_value(json_object_get(f, "detail")));
    }
}

static void
recon_print_json(recon_t *rc, int ok, json_t *ot, json_t *lt)
{
    json_t *out = json_pack("{s:b, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O, s:O, s:O}", "consistent", ok,
                            "cut", rc->cut, "grace_s", rc->grace_s, "orders_checked", (json_int_t) rc->checked,
                            "missing", (json_int_t) rc->missing, "phantom", (json_int_t) rc->phantom, "duplicate",
                            (json_int_t) rc->duplicate, "mismatch", (json_int_t) rc->mismatch, "seq_gaps",
                            (json_int_t) rc->gaps, "totals_differ", (json_int_t) rc->totals_differ, "orders_totals",
                            ot, "ledger_totals", lt, "findings", rc->findings);

    json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
    json_decref(out);
}

int
ob_cmd_reconcile(const ob_cfg_t *cfg, int json, int grace_s)
{
    recon_t rc = { .grace_s = grace_s };
    json_t *ot = NULL, *lt = NULL;
    char    err[512];
    int     ok = -1;

    rc.orders = ob_pg_connect(cfg->orders.dsn, "outboxd reconcile", err, sizeof(err));
    rc.fresh = rc.orders ? ob_pg_connect(cfg->orders.dsn, "outboxd reconcile", err, sizeof(err)) : NULL;
    rc.ledger = rc.fresh ? ob_pg_connect(cfg->ledger.dsn, "outboxd reconcile", err, sizeof(err)) : NULL;
    rc.findings = json_array();
    if (rc.ledger == NULL)
        fprintf(stderr, "outboxd: reconcile: %s\n", err);
    else if (recon_run(&rc, &ot, &lt) == 0)
        ok = rc.missing == 0 && rc.phantom == 0 && rc.duplicate == 0 && rc.mismatch == 0 && rc.gaps == 0 &&
             rc.totals_differ == 0;
    if (ok >= 0 && json)
        recon_print_json(&rc, ok, ot, lt);
    else if (ok >= 0)
        recon_print(&rc, ok, ot, lt);
    json_decref(ot);
    json_decref(lt);
    json_decref(rc.findings);
    PQclear(rc.ledger_totals);
    PQfinish(rc.orders);
    PQfinish(rc.fresh);
    PQfinish(rc.ledger);
    return ok < 0 ? 2 : ok ? 0 : 1;
}
