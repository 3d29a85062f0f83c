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

/* The first value of a statement that must succeed, into out. */
static void
value(PGconn *pg, const char *sql, int n, const char *const *params, char *out, size_t outlen)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);

    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pg));
    snprintf(out, outlen, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* Every ledger table as text, identities left out (they are not in event order, DESIGN §5). */
static void
ledger_digest(PGconn *pg, char *out, size_t outlen)
{
    value(pg,
          "SELECT concat_ws(' | ',"
          " (SELECT string_agg(concat_ws('/', e.event_id, e.order_id, e.seq, e.kind, e.amount, e.currency,"
          "   c.event_id, e.kafka_partition, e.kafka_offset), ',' ORDER BY e.event_id)"
          "  FROM ledger_entries e LEFT JOIN ledger_entries c ON c.id = e.reverses_entry_id),"
          " (SELECT string_agg(concat_ws('/', order_id, last_seq), ',' ORDER BY order_id) FROM ledger_orders),"
          " (SELECT string_agg(concat_ws('/', event_id, order_id, seq, event_type, amount), ',' ORDER BY event_id)"
          "  FROM ledger_parked),"
          " (SELECT string_agg(concat_ws('/', kafka_partition, kafka_offset, sqlstate, error), ','"
          "   ORDER BY kafka_offset) FROM ledger_dead_letter))",
          0, NULL, out, outlen);
}

/* What version 3's loop alone gives: each event through ledger_apply_event, in order. */
static void
apply_by_loop(PGconn *pg, const ev_t *evs, int n, char (*ids)[37], char *codes, size_t codeslen)
{
    char one[64], seq[16], off[16];

    codes[0] = '\0';
    for (int i = 0; i < n; i++) {
        snprintf(seq, sizeof(seq), "%d", evs[i].seq);
        snprintf(off, sizeof(off), "%d", i);
        const char *p[9] = { ids[i], evs[i].order, seq, evs[i].type, "12.5000", "USD", "t", "0", off };
        value(pg,
              "SELECT o_code || '/' || coalesce(o_state, '') || '/' || o_late FROM ledger_apply_event($1::uuid,"
              " $2::uuid, $3::int, $4, $5::numeric, $6, $7, $8::int, $9::bigint)",
              9, p, one, sizeof(one));
        snprintf(codes + strlen(codes), codeslen - strlen(codes), "%s%s", i ? " " : "", one);
    }
}

/*
 * Applies the batch as the consumer does, in one transaction, after asking
 * ledger_apply_set what it would do ("t"/"f" per event, duplicate or booked,
 * or "declined") and what the loop alone would give, both in a savepoint
 * rolled back, so neither decides anything. Asserts that the batch left the
 * rows and the tables the loop leaves; writes how = the set pass's answer,
 * codes = the rows' "code/state" joined by spaces.
 */
static void
apply(PGconn *pg, const ev_t *evs, int n, char (*ids)[37], char *how, size_t howlen, char *codes, size_t codeslen)
{
    batch_lits_t b;
    char         loop[512], loop_digest[8192], digest[8192], full[512];

    lits_build(&b, evs, n, ids);
    const char *set[8] = { b.events, b.orders, b.seqs, b.types, b.amounts, b.currs, b.parts, b.offs };
    const char *all[9] = { b.events, b.orders, b.seqs, b.types, b.amounts, b.currs, "t", b.parts, b.offs };
    PQclear(PQexec(pg, "BEGIN"));
    PQclear(PQexec(pg, "SAVEPOINT probe"));
    value(pg,
          "SELECT coalesce(array_to_string(ledger_apply_set($1::uuid[], $2::uuid[], $3::int[], $4::text[],"
          " $5::numeric[], $6::text[], $7::int[], $8::bigint[]), ' '), 'declined')",
          8, set, how, howlen);
    PQclear(PQexec(pg, "ROLLBACK TO SAVEPOINT probe"));
    apply_by_loop(pg, evs, n, ids, loop, sizeof(loop));
    ledger_digest(pg, loop_digest, sizeof(loop_digest));
    PQclear(PQexec(pg, "ROLLBACK TO SAVEPOINT probe"));
    value(pg,
          "SELECT string_agg(code || '/' || coalesce(state, '') || '/' || late, ' ') FROM ledger_apply_events("
          "$1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::numeric[], $6::text[], $7, $8::int[], $9::bigint[])",
          9, all, full, sizeof(full));
    ledger_digest(pg, digest, sizeof(digest));
    PQclear(PQexec(pg, "COMMIT"));
    cr_assert_str_eq(full, loop, "the rows out differ from the loop's (%s)", how);
    cr_assert_str_eq(digest, loop_digest, "the ledger differs from what the loop leaves (%s)", how);
    /* the explicit expectations below read code/state only */
    codes[0] = '\0';
    for (char *tok = strtok(full, " "); tok != NULL; tok = strtok(NULL, " ")) {
        *strrchr(tok, '/') = '\0';
        snprintf(codes + strlen(codes), codeslen - strlen(codes), "%s%s", codes[0] ? " " : "", tok);
    }
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

/*
 * The pass inserts a batch's charges before its credit notes; the loop
 * books in event order. So the identities of this batch say which of them
 * ledger_apply_events ran: the pass, as it must for a clean batch.
 */
Test(ledger_apply, ledger_apply_events_books_a_clean_batch_by_the_set_pass, .init = setup, .fini = teardown)
{
    char    a[37], b[37], ids[3][37], how[64], codes[64], sql[512];
    PGconn *pg = obh_pg(h.ledger_dsn);

    obh_new_uuid(a), obh_new_uuid(b);
    ev_t batch[] = { { a, 1, "order.created", NULL }, { a, 2, "order.cancelled", NULL },
                     { b, 1, "order.created", NULL } };
    apply(pg, batch, 3, ids, how, sizeof(how), codes, sizeof(codes));
    cr_assert_str_eq(how, "f f f");
    snprintf(sql, sizeof(sql),
             "SELECT ((SELECT id FROM ledger_entries WHERE event_id = '%s') > (SELECT id FROM ledger_entries"
             " WHERE event_id = '%s'))::int",
             ids[1], ids[2]);
    cr_assert_eq(ledger(sql), 1, "the cancel was inserted after the later create: the set pass booked the batch");
    PQfinish(pg);
}

/* What the consumer never sends is the loop's to judge, never booked by the pass. */
Test(ledger_apply, a_null_seq_or_short_arrays_are_declined_to_the_loop, .init = setup, .fini = teardown)
{
    PGconn     *pg = obh_pg(h.ledger_dsn);
    char        out[256], ev[37], order[37];
    const char *p[2] = { ev, order };

    obh_new_uuid(ev), obh_new_uuid(order);
    value(pg,
          "SELECT string_agg(code || '/' || coalesce(state, ''), ' ') FROM ledger_apply_events(ARRAY[$1::uuid],"
          " ARRAY[$2::uuid], '{NULL}', '{order.created}', '{10}', '{USD}', 't', '{0}', '{1}')",
          2, p, out, sizeof(out));
    cr_assert_str_eq(out, "-2/23502", "a NULL seq is refused, not reported booked");
    value(pg,
          "SELECT coalesce(array_to_string(ledger_apply_set(ARRAY[$1::uuid], ARRAY[$2::uuid], '{1,1}',"
          " '{order.created}', '{10}', '{USD}', '{0}', '{1}'), ' '), 'declined')",
          2, p, out, sizeof(out));
    cr_assert_str_eq(out, "declined");
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_entries"), 0);
    PQfinish(pg);
}

typedef struct {
    PGconn *pg, *blocker;
} waiter_t;

/* True once the session's backend waits for a lock the blocker's holds. */
static int
waits_for_lock(obh_t *hh, void *arg)
{
    const waiter_t *w = arg;
    char            sql[160];

    snprintf(sql, sizeof(sql), "SELECT count(*) WHERE %d = ANY (pg_blocking_pids(%d))", PQbackendPID(w->blocker),
             PQbackendPID(w->pg));
    return obh_scalar(hh->ledger_dsn, sql) == 1;
}

/* Runs sql (no rows wanted) on pg; asserts it succeeded. */
static void
run(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);

    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
              PQerrorMessage(pg));
    PQclear(r);
}

/* ledger_apply_events of one batch as a statement string (test values only: uuids and small ints). */
static void
batch_sql(char *out, size_t outlen, const ev_t *evs, int n, char (*ids)[37])
{
    batch_lits_t b;

    lits_build(&b, evs, n, ids);
    snprintf(out, outlen,
             "SELECT count(*) FROM ledger_apply_events('%s', '%s', '%s', '%s', '%s', '%s', 't', '%s', '%s')",
             b.events, b.orders, b.seqs, b.types, b.amounts, b.currs, b.parts, b.offs);
}

/*
 * Four bookers of one order at once (a rebalance with a zombie consumer, a
 * replay beside the consumers). A's lock statement waits on x; meanwhile B
 * creates order o and C parks o's seq 3. When A's lock is granted, o exists
 * but A does not hold its lock: booking o's seq 2 by the pass would leave
 * C's seq 3 parked for ever beside last_seq 2. The pass must decline it,
 * and the loop, which locks o, then books 2 and releases 3.
 */
Test(ledger_apply, an_order_created_after_the_lock_is_left_to_the_loop, .init = setup, .fini = teardown)
{
    char     x[37], o[37], ids[4][37], how[64], codes[64], sql[4096];
    PGconn  *a = obh_pg(h.ledger_dsn), *b = obh_pg(h.ledger_dsn), *c = obh_pg(h.ledger_dsn),
            *d = obh_pg(h.ledger_dsn);
    waiter_t on_d = { a, d }, on_c = { a, c };

    obh_new_uuid(x), obh_new_uuid(o);
    ev_t xs[] = { { x, 1, "order.created", NULL } };
    apply(b, xs, 1, ids, how, sizeof(how), codes, sizeof(codes));
    char x1[37];
    strcpy(x1, ids[0]);

    run(d, "BEGIN");
    snprintf(sql, sizeof(sql), "SELECT 1 FROM ledger_orders WHERE order_id = '%s' FOR UPDATE", x);
    run(d, sql);
    ev_t as[] = { { x, 1, "order.created", x1 }, { o, 2, "order.cancelled", NULL } };
    batch_sql(sql, sizeof(sql), as, 2, ids);
    run(a, "BEGIN");
    cr_assert_eq(PQsendQuery(a, sql), 1);
    cr_assert(obh_poll(waits_for_lock, &h, &on_d, obh_ms(10000)), "A never waited for x's lock");

    ev_t bs[] = { { o, 1, "order.created", NULL } };
    batch_sql(sql, sizeof(sql), bs, 1, ids);
    run(b, sql);
    ev_t cs[] = { { o, 3, "order.cancelled", NULL } };
    batch_sql(sql, sizeof(sql), cs, 1, ids);
    run(c, "BEGIN");
    run(c, sql);        /* parked: o's last_seq is 1; C holds o's lock */
    run(d, "COMMIT");
    cr_assert(obh_poll(waits_for_lock, &h, &on_c, obh_ms(10000)), "A never waited for o's lock");
    run(c, "COMMIT");
    PGresult *r;
    while ((r = PQgetResult(a)) != NULL) {
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "A: %s", PQerrorMessage(a));
        PQclear(r);
    }
    run(a, "COMMIT");

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM ledger_parked p JOIN ledger_orders l USING (order_id)"
             " WHERE l.order_id = '%s' AND p.seq = l.last_seq + 1", o);
    cr_assert_eq(ledger(sql), 0, "a successor is stranded beside its predecessor");
    cr_assert_eq(ledger("SELECT count(*) FROM ledger_parked"), 0, "the loop released (or refused) seq 3");
    snprintf(sql, sizeof(sql), "SELECT last_seq FROM ledger_orders WHERE order_id = '%s'", o);
    cr_assert_geq(ledger(sql), 2);
    PQfinish(a), PQfinish(b), PQfinish(c), PQfinish(d);
}
