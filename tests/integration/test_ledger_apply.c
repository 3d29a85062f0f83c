/*
 * tests/integration/test_ledger_apply.c: ledger_apply_events (sql/ledgerdb)
 * called directly on a migrated ledger, batch by batch, so each case shows
 * which path booked it: the set-based pass (ledger_apply_set says what it
 * did) or the per-event loop it declines to (ledger_apply_set gives NULL),
 * and that the rows out and the ledger are what the loop always gave.
 */
#include "tests/integration/fixture.h"
#include "common/uuid.h"

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *order;   /* one of the test's order ids */
    int         seq;
    const char *type;
    const char *event;   /* NULL: a new event id; else re-send this one */
} ev_t;

/* The nine parameters of either function, as array literals. */
typedef struct {
    char events[4096], orders[4096], seqs[512], types[2048], amounts[512], currs[512], parts[256], offs[512];
} batch_lits_t;

static void
lit_add(char *lit, size_t len, const char *v)
{
    size_t n = strlen(lit);

    snprintf(lit + n, len - n, "%s%s", n > 1 ? "," : "", v);
}

static void
lits_build(batch_lits_t *b, const ev_t *evs, int n, char (*ids)[37])
{
    char num[24];

    strcpy(b->events, "{"), strcpy(b->orders, "{"), strcpy(b->seqs, "{"), strcpy(b->types, "{");
    strcpy(b->amounts, "{"), strcpy(b->currs, "{"), strcpy(b->parts, "{"), strcpy(b->offs, "{");
    for (int i = 0; i < n; i++) {
        if (evs[i].event != NULL) {
            strcpy(ids[i], evs[i].event);
        } else {
            ob_uuid_t u;
            cr_assert_eq(ob_uuid_v7(&u), 0);
            ob_uuid_format(&u, ids[i]);
        }
        lit_add(b->events, sizeof(b->events), ids[i]);
        lit_add(b->orders, sizeof(b->orders), evs[i].order);
        snprintf(num, sizeof(num), "%d", evs[i].seq);
        lit_add(b->seqs, sizeof(b->seqs), num);
        lit_add(b->types, sizeof(b->types), evs[i].type);
        lit_add(b->amounts, sizeof(b->amounts), "12.5000");
        lit_add(b->currs, sizeof(b->currs), "USD");
        lit_add(b->parts, sizeof(b->parts), "0");
        snprintf(num, sizeof(num), "%d", i);
        lit_add(b->offs, sizeof(b->offs), num);
    }
    strcat(b->events, "}"), strcat(b->orders, "}"), strcat(b->seqs, "}"), strcat(b->types, "}");
    strcat(b->amounts, "}"), strcat(b->currs, "}"), strcat(b->parts, "}"), strcat(b->offs, "}");
}

/*
 * Applies the batch as the consumer does, in one transaction, after asking
 * ledger_apply_set (in a savepoint rolled back, so it decides nothing) what
 * it would do: "t"/"f" per event (duplicate or booked), or "declined".
 * Writes both answers: how = the set pass's, codes = the rows'
 * "code/state" joined by spaces.
 */
static void
apply(PGconn *pg, const ev_t *evs, int n, char (*ids)[37], char *how, size_t howlen, char *codes, size_t codeslen)
{
    batch_lits_t b;
    PGresult    *r;

    lits_build(&b, evs, n, ids);
    const char *set[8] = { b.events, b.orders, b.seqs, b.types, b.amounts, b.currs, b.parts, b.offs };
    const char *all[9] = { b.events, b.orders, b.seqs, b.types, b.amounts, b.currs, "t", b.parts, b.offs };
    PQclear(PQexec(pg, "BEGIN"));
    PQclear(PQexec(pg, "SAVEPOINT probe"));
    r = PQexecParams(pg,
                     "SELECT coalesce(array_to_string(ledger_apply_set($1::uuid[], $2::uuid[], $3::int[], $4::text[],"
                     " $5::numeric[], $6::text[], $7::int[], $8::bigint[]), ' '), 'declined')",
                     8, NULL, set, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(pg));
    snprintf(how, howlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQclear(PQexec(pg, "ROLLBACK TO SAVEPOINT probe"));
    r = PQexecParams(pg,
                     "SELECT string_agg(code || '/' || coalesce(state, ''), ' ') FROM ledger_apply_events("
                     "$1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::numeric[], $6::text[], $7, $8::int[],"
                     " $9::bigint[])",
                     9, NULL, all, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(pg));
    snprintf(codes, codeslen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQclear(PQexec(pg, "COMMIT"));
}

static long long
ledger(const char *sql)
{
    return obh_scalar(h.ledger_dsn, sql);
}

Test(ledger_apply, a_clean_batch_is_booked_in_one_pass_and_the_rest_declined_to_the_loop, .init = setup,
     .fini = teardown)
{
    char    a[37], b[37], c[37], d[37], e[37], ids[8][37], first[8][37], how[256], codes[256];
    PGconn *pg = obh_pg(h.ledger_dsn);

    obh_new_uuid(a), obh_new_uuid(b), obh_new_uuid(c), obh_new_uuid(d), obh_new_uuid(e);

    /* creates of two orders and the cancel of one, in one batch: the cancel finds its charge */
    ev_t clean[] = { { a, 1, "order.created", NULL }, { b, 1, "order.created", NULL },
                     { a, 2, "order.cancelled", NULL } };
    apply(pg, clean, 3, first, how, sizeof(how), codes, sizeof(codes));
    cr_assert_str_eq(how, "f f f");
    cr_assert_str_eq(codes, "1/ 1/ 1/");
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_entries"), 3);
    cr_assert_eq(ledger("SELECT sum(amount) * 10 FROM ledger_entries"), 125);
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_entries n JOIN ledger_entries c ON n.reverses_entry_id = c.id"
                        " WHERE n.kind = 'credit_note' AND c.kind = 'charge' AND n.order_id = c.order_id"
                        " AND n.id > c.id AND n.seq = 2"),
                 1);
    cr_assert_eq(ledger("SELECT sum(last_seq) FROM ledger_orders"), 3);

    /* a re-sent batch with one new event: the re-sends are duplicates by id, the new one booked */
    ev_t again[] = { { a, 1, "order.created", first[0] }, { b, 1, "order.created", first[1] },
                     { a, 2, "order.cancelled", first[2] }, { c, 1, "order.created", NULL },
                     { b, 1, "order.created", NULL } };   /* a new id at a booked seq: a duplicate too */
    apply(pg, again, 5, ids, how, sizeof(how), codes, sizeof(codes));
    cr_assert_str_eq(how, "t t t f t");
    cr_assert_str_eq(codes, "-1/ -1/ -1/ 1/ -1/");
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_entries"), 4);

    /* a gap: the loop parks it; its predecessor then releases it, still by the loop */
    ev_t gap[] = { { d, 2, "order.cancelled", NULL } };
    apply(pg, gap, 1, ids, how, sizeof(how), codes, sizeof(codes));
    cr_assert_str_eq(how, "declined");
    cr_assert_str_eq(codes, "0/");
    ev_t fill[] = { { d, 1, "order.created", NULL } };
    apply(pg, fill, 1, ids, how, sizeof(how), codes, sizeof(codes));
    cr_assert_str_eq(how, "declined");
    cr_assert_str_eq(codes, "2/");
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_parked"), 0);
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_entries"), 6);

    /* in one batch, out of order: declined, and the loop parks then releases */
    ev_t swapped[] = { { e, 2, "order.cancelled", NULL }, { e, 1, "order.created", NULL } };
    apply(pg, swapped, 2, ids, how, sizeof(how), codes, sizeof(codes));
    cr_assert_str_eq(how, "declined");
    cr_assert_str_eq(codes, "0/ 2/");
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_entries"), 8);

    /* refusals beside a good event: the whole pass is undone and the loop refuses only them */
    char f[37], g[37];
    obh_new_uuid(f), obh_new_uuid(g);
    ev_t refused[] = { { f, 1, "order.created", NULL }, { g, 1, "order.refunded", NULL },
                       { c, 2, "order.created", NULL } };   /* a second charge for c */
    apply(pg, refused, 3, ids, how, sizeof(how), codes, sizeof(codes));
    cr_assert_str_eq(how, "declined");
    cr_assert_str_eq(codes, "1/ -2/22000 -2/23505");
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_entries"), 9);
    cr_assert_eq(ledger("SELECT last_seq FROM ledger_orders WHERE order_id = (SELECT order_id FROM ledger_entries"
                        " WHERE id = (SELECT max(id) FROM ledger_entries))"),
                 1);

    /* an event the same batch holds twice: declined, booked once by the loop */
    char k[37], dup[37];
    ob_uuid_t u;
    obh_new_uuid(k);
    cr_assert_eq(ob_uuid_v7(&u), 0);
    ob_uuid_format(&u, dup);
    ev_t twice[] = { { k, 1, "order.created", dup }, { k, 1, "order.created", dup } };
    apply(pg, twice, 2, ids, how, sizeof(how), codes, sizeof(codes));
    cr_assert_str_eq(how, "declined");
    cr_assert_str_eq(codes, "1/ -1/");
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_entries"), 10);
    PQfinish(pg);
}
