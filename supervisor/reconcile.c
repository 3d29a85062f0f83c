/*
 * supervisor/reconcile.c: `outboxd reconcile [--json] [--grace SECONDS]`.
 *
 * Proves, with one command, that every order reached the ledger and
 * nothing else did. It walks orderdb's orders in id order (keyset pages,
 * so it works on large tables and reports how far it got) and compares
 * each page with the ledger's entries for those ids; then it walks the
 * ledger's order ids looking for orders that do not exist (phantoms).
 * Orders younger than the grace period are not yet expected in the ledger.
 *
 * Findings: missing (order, or its cancellation, not booked), phantom
 * (ledger entry without an order, or a credit note for an order not
 * cancelled), duplicate (more than one charge or credit note), amount
 * mismatch, seq gap (events parked in the ledger waiting for a
 * predecessor), and totals per currency on both sides. Exit 0 when
 * consistent, 1 otherwise.
 */
#include "cmd.h"
#include "../common/money.h"
#include "../common/pg.h"
#include "../common/util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 5000

typedef struct {
    PGconn *orders, *ledger;
    int     grace_s;
    long    checked, missing, phantom, duplicate, mismatch, gaps;
    json_t *findings;         /* array of {kind, order, detail} */
    int     shown;
} recon_t;

static void
recon_find(recon_t *rc, const char *kind, const char *order, const char *detail)
{
    if (json_array_size(rc->findings) < 1000)
        json_array_append_new(rc->findings, json_pack("{s:s, s:s, s:s}", "kind", kind, "order", order, "detail", detail));
}

static PGresult *
recon_query(PGconn *pg, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "outboxd: reconcile: %s", PQresultErrorMessage(r));
        PQclear(r);
        return NULL;
    }
    return r;
}

/* Ledger figures for one page of orders, as a lookup by order id. */
typedef struct {
    const char *order;
    int         charges, credits;
    const char *charge_amount;
} ledger_row_t;

static int
recon_cmp(const void *a, const void *b)
{
    return strcmp(((const ledger_row_t *) a)->order, ((const ledger_row_t *) b)->order);
}

static void
recon_check_order(recon_t *rc, PGresult *o, int i, const ledger_row_t *l)
{
    const char *id = PQgetvalue(o, i, 0), *status = PQgetvalue(o, i, 1), *amount = PQgetvalue(o, i, 2);
    int         settled = strcmp(PQgetvalue(o, i, 4), "t") == 0;   /* older than the grace period */
    int         cancelled = strcmp(status, "cancelled") == 0;
    char        detail[160];

    rc->checked++;
    if (l == NULL || l->charges == 0) {
        if (settled) {
            rc->missing++;
            recon_find(rc, "missing", id, "order has no ledger charge");
        }
        return;
    }
    if (l->charges > 1 || l->credits > 1) {
        rc->duplicate++;
        snprintf(detail, sizeof(detail), "%d charges, %d credit notes", l->charges, l->credits);
        recon_find(rc, "duplicate", id, detail);
    }
    if (strcmp(l->charge_amount, amount) != 0) {
        rc->mismatch++;
        snprintf(detail, sizeof(detail), "order amount %s, ledger charge %s", amount, l->charge_amount);
        recon_find(rc, "mismatch", id, detail);
    }
    if (cancelled && l->credits == 0 && settled) {
        rc->missing++;
        recon_find(rc, "missing", id, "cancelled order has no credit note");
    } else if (!cancelled && l->credits > 0) {
        rc->phantom++;
        recon_find(rc, "phantom", id, "credit note for an order that is not cancelled");
    }
}

/* The first column of every row as a uuid[] literal: {a,b,c}. */
static char *
recon_id_array(PGresult *r)
{
    int    n = PQntuples(r);
    size_t cap = (size_t) n * 40 + 4, used = 1;
    char  *ids = malloc(cap);

    if (ids == NULL)
        return NULL;
    ids[0] = '{';
    for (int i = 0; i < n; i++)
        used += (size_t) snprintf(ids + used, cap - used, "%s%s", i ? "," : "", PQgetvalue(r, i, 0));
    snprintf(ids + used, cap - used, "}");
    return ids;
}

/* One page of orders after `after`; returns rows seen, -1 on error. */
static int
recon_orders_page(recon_t *rc, char *after)
{
    char        grace[16];
    const char *p1[2] = { after, grace };
    PGresult   *o, *l;
    int         n;

    snprintf(grace, sizeof(grace), "%d", rc->grace_s);
    o = recon_query(rc->orders,
                    "SELECT id, status, amount::text, currency, created_at < now() - make_interval(secs => $2::int)"
                    " FROM orders WHERE id > $1::uuid ORDER BY id LIMIT " OB_STR(PAGE),
                    2, p1);
    if (o == NULL)
        return -1;
    n = PQntuples(o);
    if (n == 0) {
        PQclear(o);
        return 0;
    }
    char *ids = recon_id_array(o);
    const char *p2[1] = { ids };
    l = recon_query(rc->ledger,
                    "SELECT order_id::text, count(*) FILTER (WHERE kind = 'charge'),"
                    " count(*) FILTER (WHERE kind = 'credit_note'), max(amount) FILTER (WHERE kind = 'charge')::text"
                    " FROM ledger_entries WHERE order_id = ANY($1::uuid[]) GROUP BY order_id",
                    1, p2);
    free(ids);
    if (l == NULL) {
        PQclear(o);
        return -1;
    }
    ledger_row_t *rows = calloc((size_t) PQntuples(l) + 1, sizeof(*rows));
    for (int i = 0; i < PQntuples(l); i++)
        rows[i] = (ledger_row_t) { PQgetvalue(l, i, 0), atoi(PQgetvalue(l, i, 1)), atoi(PQgetvalue(l, i, 2)),
                                   PQgetisnull(l, i, 3) ? "" : PQgetvalue(l, i, 3) };
    qsort(rows, (size_t) PQntuples(l), sizeof(*rows), recon_cmp);
    for (int i = 0; i < n; i++) {
        ledger_row_t key = { .order = PQgetvalue(o, i, 0) };
        recon_check_order(rc, o, i, bsearch(&key, rows, (size_t) PQntuples(l), sizeof(*rows), recon_cmp));
    }
    ob_strlcpy(after, PQgetvalue(o, n - 1, 0), 37);
    free(rows);
    PQclear(l);
    PQclear(o);
    return n;
}

/* Ledger order ids with no order: phantoms. */
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
    char *ids = recon_id_array(l);
    const char *p2[1] = { ids };
    PGresult   *o = recon_query(rc->orders,
                                "SELECT x::text FROM unnest($1::uuid[]) x WHERE NOT EXISTS"
                                " (SELECT 1 FROM orders WHERE id = x)",
                                1, p2);
    free(ids);
    if (o == NULL) {
        PQclear(l);
        return -1;
    }
    for (int i = 0; i < PQntuples(o); i++) {
        rc->phantom++;
        recon_find(rc, "phantom", PQgetvalue(o, i, 0), "ledger entry for an order that does not exist");
    }
    ob_strlcpy(after, PQgetvalue(l, n - 1, 0), 37);
    PQclear(o);
    PQclear(l);
    return n;
}

/* {"USD": "12.00", ...} of a totals query (currency, sum text). */
static json_t *
recon_totals(PGconn *pg, const char *sql)
{
    PGresult *r = recon_query(pg, sql, 0, NULL);
    json_t   *out = json_object();
    char      buf[64];

    for (int i = 0; r != NULL && i < PQntuples(r); i++) {
        const ob_currency_t *cur = ob_currency_find(PQgetvalue(r, i, 0));
        if (cur == NULL || ob_decimal_rescale(PQgetvalue(r, i, 1), cur->digits, buf, sizeof(buf)) != 0)
            ob_strlcpy(buf, PQgetvalue(r, i, 1), sizeof(buf));
        json_object_set_new(out, PQgetvalue(r, i, 0), json_string(buf));
    }
    PQclear(r);
    return out;
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

int
ob_cmd_reconcile(const ob_cfg_t *cfg, int json, int grace_s)
{
    recon_t rc = { .grace_s = grace_s };
    char    err[512];
    int     ok;

    rc.orders = ob_pg_connect(cfg->orders.dsn, "outboxd reconcile", err, sizeof(err));
    rc.ledger = rc.orders ? ob_pg_connect(cfg->ledger.dsn, "outboxd reconcile", err, sizeof(err)) : NULL;
    if (rc.orders == NULL || rc.ledger == NULL) {
        fprintf(stderr, "outboxd: reconcile: %s\n", err);
        PQfinish(rc.orders);
        return 2;
    }
    rc.findings = json_array();
    if (recon_walk(&rc, recon_orders_page, "orders") < 0 || recon_walk(&rc, recon_phantom_page, "ledger orders") < 0) {
        json_decref(rc.findings);
        PQfinish(rc.orders);
        PQfinish(rc.ledger);
        return 2;
    }
    PGresult *g = recon_query(rc.ledger, "SELECT count(*) FROM ledger_parked", 0, NULL);
    rc.gaps = g ? atol(PQgetvalue(g, 0, 0)) : 0;
    PQclear(g);
    json_t *ot = recon_totals(rc.orders, "SELECT currency, sum(amount)::text FROM orders WHERE status <> 'cancelled'"
                                         " GROUP BY currency ORDER BY currency");
    json_t *lt = recon_totals(rc.ledger, "SELECT currency, sum(amount)::text FROM ledger_entries GROUP BY currency"
                                         " HAVING sum(amount) <> 0 OR count(*) FILTER (WHERE kind = 'charge') >"
                                         " count(*) FILTER (WHERE kind = 'credit_note') ORDER BY currency");
    ok = rc.missing == 0 && rc.phantom == 0 && rc.duplicate == 0 && rc.mismatch == 0 && rc.gaps == 0;
    if (json) {
        json_t *out = json_pack("{s:b, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "consistent", ok,
                                "grace_s", grace_s, "orders_checked", (json_int_t) rc.checked, "missing",
                                (json_int_t) rc.missing, "phantom", (json_int_t) rc.phantom, "duplicate",
                                (json_int_t) rc.duplicate, "mismatch", (json_int_t) rc.mismatch, "seq_gaps",
                                (json_int_t) rc.gaps, "orders_totals", ot, "ledger_totals", lt, "findings",
                                rc.findings);
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(out);
    } else {
        printf("%s: %ld orders checked (grace %d s)\n", ok ? "CONSISTENT" : "INCONSISTENT", rc.checked, grace_s);
        printf("missing: %ld\nphantom: %ld\nduplicate: %ld\nmismatch: %ld\nseq_gaps: %ld\n", rc.missing, rc.phantom,
               rc.duplicate, rc.mismatch, rc.gaps);
        char *a = json_dumps(ot, JSON_COMPACT), *b = json_dumps(lt, JSON_COMPACT);
        printf("orders totals: %s\nledger totals: %s\n", a, b);
        free(a);
        free(b);
        for (size_t i = 0; i < json_array_size(rc.findings); i++) {
            json_t *f = json_array_get(rc.findings, i);
            printf("  %-9s %s  %s\n", json_string_value(json_object_get(f, "kind")),
                   json_string_value(json_object_get(f, "order")), json_string_value(json_object_get(f, "detail")));
        }
        json_decref(ot);
        json_decref(lt);
        json_decref(rc.findings);
    }
    PQfinish(rc.orders);
    PQfinish(rc.ledger);
    return ok ? 0 : 1;
}
