/*
 * tests/integration/test_reconcile.c: `outboxd reconcile` judges currencies
 * and per-currency totals, and gives no false positive while creates and
 * cancels run (a common cut, each event's own time for grace), yet still
 * catches corruption made under that traffic; the totals endpoints' contract.
 */
#include "tests/integration/fixture.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char out[1 << 16];

/* `reconcile --json --grace G`: its exit status, the report in *report (caller frees). */
static int
reconcile_json(const char *grace, json_t **report)
{
    const char *args[] = { "reconcile", "-c", h.conf, "--grace", grace, "--json", NULL };
    int         rc = obh_run(args, out, sizeof(out));
    const char *brace = strchr(out, '{');

    *report = brace ? json_loads(brace, 0, NULL) : NULL;
    cr_assert_not_null(*report, "reconcile printed no report (exit %d): %s", rc, out);
    return rc;
}

static long long
field(json_t *j, const char *name)
{
    return json_integer_value(json_object_get(j, name));
}

static const char *
total_of(json_t *j, const char *side, const char *currency)
{
    return json_string_value(json_object_get(json_object_get(j, side), currency));
}

/* An order straight into orderdb, an hour old (cancelled half an hour ago): no event, so nothing flows. */
static void
seed_order(const char *id, const char *amount, const char *currency, int cancelled)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "INSERT INTO orders (id, customer_id, amount, currency, status, version, created_at, updated_at)"
             " VALUES ('%s', 'rec', %s, '%s', '%s', %d, now() - interval '1 hour', now() - interval '30 minutes')",
             id, amount, currency, cancelled ? "cancelled" : "created", cancelled ? 2 : 1);
    obh_sql(h.orders_dsn, sql);
}

static void
seed_entry(const char *order, int seq, const char *amount, const char *currency)
{
    char sql[640];

    if (seq == 1)
        snprintf(sql, sizeof(sql),
                 "INSERT INTO ledger_entries (event_id, order_id, seq, kind, amount, currency)"
                 " VALUES (gen_random_uuid(), '%s', 1, 'charge', %s, '%s')",
                 order, amount, currency);
    else
        snprintf(sql, sizeof(sql),
                 "INSERT INTO ledger_entries (event_id, order_id, seq, kind, amount, currency, reverses_entry_id)"
                 " SELECT gen_random_uuid(), '%s', %d, 'credit_note', -%s, '%s', id FROM ledger_entries"
                 " WHERE order_id = '%s' AND kind = 'charge'",
                 order, seq, amount, currency, order);
    obh_sql(h.ledger_dsn, sql);
}

static int
has_finding(json_t *j, const char *kind, const char *order, const char *detail)
{
    json_t *f;
    size_t  i;

    json_array_foreach(json_object_get(j, "findings"), i, f) {
        if (strcmp(json_string_value(json_object_get(f, "kind")), kind) == 0 &&
            strcmp(json_string_value(json_object_get(f, "order")), order) == 0 &&
            strcmp(json_string_value(json_object_get(f, "detail")), detail) == 0)
            return 1;
    }
    return 0;
}

#define OK_USD   "0190a0a0-0000-7000-8000-0000000000a1"
#define EUR_CHG  "0190a0a0-0000-7000-8000-0000000000a2"
#define KWD_CRED "0190a0a0-0000-7000-8000-0000000000a3"
#define JPY_CRED "0190a0a0-0000-7000-8000-0000000000a4"
#define OK_EUR   "0190a0a0-0000-7000-8000-0000000000a5"
#define PHANTOM  "0190a0a0-0000-7000-8000-0000000000a6"

/*
 * Before: amounts were compared but not currencies (a USD order with an EUR
 * charge passed), credit notes not at all, and the verdict ignored the
 * per-currency totals it printed: this state was CONSISTENT, exit 0.
 */
Test(reconcile, currencies_of_charges_and_credit_notes_and_totals_decide_the_verdict, .init = setup, .fini = teardown)
{
    json_t *j;

    obh_write_conf(&h, "");
    seed_order(OK_USD, "2.50", "USD", 0);
    seed_entry(OK_USD, 1, "2.50", "USD");
    seed_order(OK_EUR, "4.00", "EUR", 1);
    seed_entry(OK_EUR, 1, "4.00", "EUR");
    seed_entry(OK_EUR, 2, "4.00", "EUR");
    cr_assert_eq(reconcile_json("0", &j), 0, "%s", out);
    cr_assert_eq(field(j, "totals_differ"), 0, "%s", out);
    json_decref(j);

    seed_order(EUR_CHG, "2.50", "USD", 0);
    seed_entry(EUR_CHG, 1, "2.50", "EUR");              /* same amount, another currency */
    seed_order(KWD_CRED, "1.250", "KWD", 1);
    seed_entry(KWD_CRED, 1, "1.250", "KWD");
    seed_entry(KWD_CRED, 2, "1.000", "KWD");            /* reverses less than was charged */
    seed_order(JPY_CRED, "700", "JPY", 1);
    seed_entry(JPY_CRED, 1, "700", "JPY");
    seed_entry(JPY_CRED, 2, "700", "USD");              /* reverses in another currency */
    cr_assert_eq(reconcile_json("0", &j), 1, "%s", out);
    cr_assert(json_is_false(json_object_get(j, "consistent")), "%s", out);
    cr_assert_eq(field(j, "mismatch"), 3, "%s", out);
    cr_assert_eq(field(j, "missing") + field(j, "phantom") + field(j, "duplicate") + field(j, "seq_gaps"), 0, "%s", out);
    cr_assert(has_finding(j, "mismatch", EUR_CHG, "order 2.5000 USD, ledger charge 2.5000 EUR"), "%s", out);
    cr_assert(has_finding(j, "mismatch", KWD_CRED, "order 1.2500 KWD, ledger credit note -1.0000 KWD"), "%s", out);
    cr_assert(has_finding(j, "mismatch", JPY_CRED, "order 700.0000 JPY, ledger credit note -700.0000 USD"), "%s", out);
    /* the totals of the due events, per currency, at each currency's scale */
    cr_assert_str_eq(total_of(j, "orders_totals", "USD"), "5.00", "%s", out);
    cr_assert_str_eq(total_of(j, "orders_totals", "KWD"), "0.000", "%s", out);
    cr_assert_str_eq(total_of(j, "orders_totals", "JPY"), "0", "%s", out);
    cr_assert_str_eq(total_of(j, "orders_totals", "EUR"), "0.00", "%s", out);
    cr_assert_str_eq(total_of(j, "ledger_totals", "USD"), "-697.50", "%s", out);
    cr_assert_str_eq(total_of(j, "ledger_totals", "KWD"), "0.250", "%s", out);
    cr_assert_str_eq(total_of(j, "ledger_totals", "JPY"), "700", "%s", out);
    cr_assert_str_eq(total_of(j, "ledger_totals", "EUR"), "2.50", "%s", out);
    cr_assert_eq(field(j, "totals_differ"), 4, "%s", out);
    json_decref(j);

    /* a credit note the cut cannot explain, for an order still not cancelled: a phantom */
    seed_order(PHANTOM, "1.00", "USD", 0);
    seed_entry(PHANTOM, 1, "1.00", "USD");
    seed_entry(PHANTOM, 2, "1.00", "USD");
    cr_assert_eq(reconcile_json("0", &j), 1, "%s", out);
    cr_assert_eq(field(j, "phantom"), 1, "%s", out);
    cr_assert(has_finding(j, "phantom", PHANTOM, "credit note for an order that is not cancelled"), "%s", out);
    json_decref(j);
}

/* ---- under traffic ------------------------------------------------------- */

static const char *pipeline = "[workers]\nhttp = 2\nrelays = 2\nconsumers = 1\n";

#define POOL 120

typedef struct {
    atomic_int  stop;
    atomic_long creates, cancels, pool_cancelled, errors;
    char        (*pool)[37];
    int         pool_next;
} load_t;

/* POST /orders; the new id in id (NULL: not needed); returns the status. */
static int
post_order(const char *currency, const char *amount, char *id)
{
    char body[160], resp[1024];
    int  st;

    snprintf(body, sizeof(body), "{\"customerId\":\"rec\",\"amount\":\"%s\",\"currency\":\"%s\"}", amount, currency);
    st = obh_http(h.orders_port, "POST", "/orders", NULL, body, resp, sizeof(resp), NULL, 0);
    if (st == 201 && id) {
        json_t *j = json_loads(resp, 0, NULL);
        ob_strlcpy(id, json_string_value(json_object_get(j, "id")), 37);
        json_decref(j);
    }
    return st;
}

static int
cancel_order(const char *id)
{
    char path[96], resp[1024];

    snprintf(path, sizeof(path), "/orders/%s/cancel", id);
    return obh_http(h.orders_port, "POST", path, NULL, NULL, resp, sizeof(resp), NULL, 0);
}

/* Creates in four currencies, every other one cancelled at once, and every
 * other turn a cancel of an old pool order: old orders, young cancels. */
static void *
load(void *arg)
{
    static const char *cur[][2] = { { "USD", "3.10" }, { "JPY", "700" }, { "KWD", "1.250" }, { "EUR", "4.00" } };
    load_t            *l = arg;
    char               id[37];

    for (long i = 0; !atomic_load(&l->stop); i++) {
        if (post_order(cur[i % 4][0], cur[i % 4][1], id) != 201) {
            atomic_fetch_add(&l->errors, 1);
            continue;
        }
        atomic_fetch_add(&l->creates, 1);
        if (i % 2 == 0) {
            atomic_fetch_add(&l->errors, cancel_order(id) != 200);
            atomic_fetch_add(&l->cancels, 1);
        }
        if (i % 2 == 1 && l->pool_next < POOL) {
            atomic_fetch_add(&l->errors, cancel_order(l->pool[l->pool_next++]) != 200);
            atomic_fetch_add(&l->pool_cancelled, 1);
        }
    }
    return NULL;
}

static int
ledger_count_is(obh_t *hh, void *arg)
{
    return obh_scalar(hh->ledger_dsn, "SELECT count(*) FROM ledger_entries") == *(long long *) arg;
}

static int
older_than_grace(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM orders WHERE created_at > now() - interval '1 second'") == 0;
}

static json_t *
get_totals(int port, const char *path)
{
    char resp[4096];

    if (obh_http(port, "GET", path, NULL, NULL, resp, sizeof(resp), NULL, 0) != 200)
        return NULL;
    return json_loads(resp, 0, NULL);
}

/* The two totals endpoints agree, by currency and count, and nothing waits in the outbox. */
static int
totals_agree(obh_t *hh, void *arg)
{
    json_t *o = get_totals(hh->orders_port, "/orders/total"), *l = get_totals(hh->ledger_port, "/ledger/total");
    int     ok = o && l && json_equal(json_object_get(o, "byCurrency"), json_object_get(l, "byCurrency")) &&
             json_equal(json_object_get(o, "count"), json_object_get(l, "count")) &&
             obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0;

    (void) arg;
    json_decref(o);
    json_decref(l);
    return ok;
}

static void
start_load(load_t *l, pthread_t *th)
{
    atomic_store(&l->stop, 0);
    cr_assert_eq(pthread_create(th, NULL, load, l), 0);
}

static void
stop_load(load_t *l, pthread_t th)
{
    atomic_store(&l->stop, 1);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&l->errors), 0, "%ld requests of the load failed", atomic_load(&l->errors));
}

/* Asserts the single-currency view: total and currency, equal on both endpoints. */
static void
assert_single_currency_totals(void)
{
    const char *paths[2] = { "/orders/total", "/ledger/total" };
    int         ports[2] = { h.orders_port, h.ledger_port };

    for (int i = 0; i < 2; i++) {
        json_t *t = get_totals(ports[i], paths[i]);
        cr_assert_not_null(t, "%s", paths[i]);
        cr_assert_str_eq(json_string_value(json_object_get(t, "total")), "2.50", "%s", paths[i]);
        cr_assert_str_eq(json_string_value(json_object_get(t, "currency")), "USD", "%s", paths[i]);
        cr_assert_eq(json_integer_value(json_object_get(t, "count")), 1, "%s", paths[i]);
        json_decref(t);
    }
}

/* Both endpoints after mixed traffic: no total across currencies, byCurrency the same. */
static void
assert_mixed_currency_totals(void)
{
    json_t *o = get_totals(h.orders_port, "/orders/total"), *l = get_totals(h.ledger_port, "/ledger/total");

    cr_assert(o && l);
    cr_assert_null(json_object_get(o, "total"), "a total across currencies");
    cr_assert_null(json_object_get(l, "total"), "a total across currencies");
    cr_assert_null(json_object_get(l, "currency"));
    /* every CHF and KWD order was cancelled: those currencies are gone from both sides, not "0.00" on one */
    cr_assert_null(json_object_get(json_object_get(l, "byCurrency"), "CHF"));
    cr_assert_null(json_object_get(json_object_get(l, "byCurrency"), "KWD"));
    cr_assert_eq(json_object_size(json_object_get(o, "byCurrency")), 3, "USD, JPY, EUR");
    char *a = json_dumps(o, JSON_COMPACT), *b = json_dumps(l, JSON_COMPACT);
    cr_log_info("totals: orders %s, ledger %s", a, b);
    free(a);
    free(b);
    json_decref(o);
    json_decref(l);
}

/*
 * Before: reconcile read orderdb and the ledger at different moments and
 * took an order's created_at as the grace clock of its cancel, so an old
 * order cancelled a moment ago was "missing" its credit note.
 */
Test(reconcile, no_false_positive_while_creates_and_cancels_run_yet_corruption_is_caught, .init = setup,
     .fini = teardown)
{
    static char pool[POOL][37];
    char        first[37];
    load_t      l = { .pool = pool };
    pthread_t   th;
    json_t     *j;
    long long   want = 1;
    int         runs = 0;
    long        checked = 0;

    start_http(pipeline);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_CONSUMER, 0, 0, obh_ms(20000)), 0);
    cr_assert_eq(post_order("USD", "2.50", first), 201);
    cr_assert(obh_poll(ledger_count_is, &h, &want, obh_ms(20000)), "first order never booked");
    assert_single_currency_totals();

    for (int i = 0; i < POOL; i++)
        cr_assert_eq(post_order(i % 3 ? "USD" : "CHF", "9.90", pool[i]), 201);
    want = POOL + 1;
    cr_assert(obh_poll(ledger_count_is, &h, &want, obh_ms(20000)), "pool never booked");
    cr_assert(obh_poll(older_than_grace, &h, NULL, obh_ms(5000)));

    start_load(&l, &th);
    while (runs < 10 || atomic_load(&l.pool_cancelled) < POOL) {
        int rc = reconcile_json("1", &j);
        cr_assert_eq(rc, 0, "run %d under load (%ld creates, %ld cancels so far): %s", runs,
                     atomic_load(&l.creates), atomic_load(&l.cancels) + atomic_load(&l.pool_cancelled), out);
        checked = field(j, "orders_checked");
        json_decref(j);
        runs++;
        cr_assert_lt(runs, 400, "the load never got through its pool");
    }
    stop_load(&l, th);
    cr_log_info("%d reconciles consistent under load: %ld creates, %ld cancels (%ld of old orders); last checked %ld",
                runs, atomic_load(&l.creates), atomic_load(&l.cancels) + POOL, (long) POOL, checked);
    cr_assert(obh_poll(totals_agree, &h, NULL, obh_ms(20000)), "totals never agreed by currency");
    assert_mixed_currency_totals();
    cr_assert_eq(reconcile_json("0", &j), 0, "at rest: %s", out);
    json_decref(j);

    /* corruption under traffic: a charge in the wrong currency, a cancel that emitted no event */
    start_load(&l, &th);
    seed_order(EUR_CHG, "5.00", "USD", 0);
    seed_entry(EUR_CHG, 1, "5.00", "EUR");
    char sql[256];
    snprintf(sql, sizeof(sql),
             "UPDATE orders SET status = 'cancelled', version = 2, updated_at = now() WHERE id = '%s'", first);
    obh_sql(h.orders_dsn, sql);
    int64_t t0 = ob_now_ms();
    for (;;) {
        cr_assert_eq(reconcile_json("1", &j), 1, "%s", out);
        cr_assert_eq(field(j, "mismatch"), 1, "%s", out);
        cr_assert(has_finding(j, "mismatch", EUR_CHG, "order 5.0000 USD, ledger charge 5.0000 EUR"), "%s", out);
        cr_assert_eq(field(j, "phantom") + field(j, "duplicate") + field(j, "seq_gaps"), 0, "%s", out);
        cr_assert_geq(field(j, "totals_differ"), 1, "%s", out);
        long long missing = field(j, "missing");
        int       found = has_finding(j, "missing", first, "cancelled order has no credit note");
        json_decref(j);
        cr_assert(missing == found, "only the injected loss may be missing: %s", out);
        if (found)
            break;
        cr_assert_lt(ob_now_ms() - t0, obh_ms(10000), "the cancel without an event was never reported");
    }
    cr_log_info("corruption caught %lld ms after it was made, under load", (long long) (ob_now_ms() - t0));
    stop_load(&l, th);
}
