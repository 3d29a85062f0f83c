/*
 * tests/integration/test_consumer.c: Kafka -> ledger with the real binary;
 * events produced by the test where a fault must be staged, by the whole
 * pipeline (HTTP -> outbox -> relay -> Kafka -> consumer) elsewhere.
 */
#include "tests/integration/fixture.h"
#include "common/event.h"
#include "common/murmur2.h"
#include "common/util.h"
#include "common/uuid.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Encodes an event for order `order` and produces it to the order's partition. */
static void
produce_event(const char *order, const char *type, int seq, const char *amount, char *event_id_out)
{
    ob_event_t ev;
    ob_uuid_t  u;
    char      *buf;
    size_t     len;

    memset(&ev, 0, sizeof(ev));
    cr_assert_eq(ob_uuid_v7(&u), 0);
    ob_uuid_format(&u, ev.id);
    strcpy(ev.type, type);
    strcpy(ev.aggregate_type, "order");
    strcpy(ev.aggregate_id, order);
    ev.seq = seq;
    ob_event_timestamp(ob_wall_ms(), ev.occurred_at);
    strcpy(ev.customer_id, "c-test");
    strcpy(ev.amount, amount);
    strcpy(ev.currency, "USD");
    strcpy(ev.status, strcmp(type, OB_EVENT_CREATED) == 0 ? "created" : "cancelled");
    cr_assert_eq(ob_event_encode(&ev, 0, &buf, &len), 0);
    obh_kafka_produce(&h, ob_partition_for(order, 36, h.partitions), order, buf, len, "application/msgpack");
    free(buf);
    if (event_id_out)
        strcpy(event_id_out, ev.id);
}

/* Waits until the ledger's sql reaches want. */
static void
wait_ledger(const char *sql, long long want, int timeout_ms)
{
    obh_wait_scalar(&h, h.ledger_dsn, sql, want, timeout_ms);
}

Test(consumer, the_same_event_three_times_books_once, .init = setup, .fini = teardown)
{
    char        order[37];
    ob_event_t  ev;
    ob_uuid_t   u;
    char       *buf;
    size_t      len;

    obh_kafka_create_topic(&h, 0);
    obh_new_uuid(order);
    memset(&ev, 0, sizeof(ev));
    ob_uuid_v7(&u);
    ob_uuid_format(&u, ev.id);
    strcpy(ev.type, OB_EVENT_CREATED);
    strcpy(ev.aggregate_type, "order");
    strcpy(ev.aggregate_id, order);
    ev.seq = 1;
    ob_event_timestamp(ob_wall_ms(), ev.occurred_at);
    strcpy(ev.customer_id, "c");
    strcpy(ev.amount, "10.00");
    strcpy(ev.currency, "USD");
    strcpy(ev.status, "created");
    ob_event_encode(&ev, 0, &buf, &len);
    for (int i = 0; i < 3; i++)
        obh_kafka_produce(&h, ob_partition_for(order, 36, h.partitions), order, buf, len, "application/msgpack");
    free(buf);
    start("[workers]\nhttp = 0\nrelays = 0\nconsumers = 1\n");
    /* all three read: duplicates counted, one booking */
    for (int64_t t0 = ob_now_ms();; ob_sleep_ms(20)) {
        ob_shm_slot_t s;
        if (obh_worker(&h, OB_KIND_CONSUMER, 0, &s) >= 0 &&
            s.counters[OB_CTR_CONS_APPLIED] + s.counters[OB_CTR_CONS_DUPLICATES] == 3) {
            cr_assert_eq(s.counters[OB_CTR_CONS_APPLIED], 1);
            cr_assert_eq(s.counters[OB_CTR_CONS_DUPLICATES], 2);
            break;
        }
        cr_assert_lt(ob_now_ms() - t0, obh_ms(30000), "events not consumed; log %s", h.log);
    }
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_entries"), 1);
}

Test(consumer, garbage_and_unknown_types_are_dead_lettered_and_the_rest_applied, .init = setup, .fini = teardown)
{
    char order[37], other[37];

    obh_kafka_create_topic(&h, 0);
    obh_new_uuid(order);
    obh_new_uuid(other);
    int p = ob_partition_for(order, 36, h.partitions);
    obh_kafka_produce(&h, p, order, "\xc1\xff garbage", 10, "application/msgpack");
    obh_kafka_produce(&h, p, order, "{\"not\":\"an event\"}", 18, "application/json");
    produce_event(order, "order.refunded", 1, "5.00", NULL);
    produce_event(order, OB_EVENT_CREATED, 1, "5.00", NULL);
    produce_event(other, OB_EVENT_CREATED, 1, "7.00", NULL);
    start("[workers]\nhttp = 0\nrelays = 0\nconsumers = 1\n");
    wait_ledger("SELECT count(*) FROM ledger_entries", 2, 30000);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter"), 3);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter WHERE error LIKE "
                                          "'unknown event type \"order.refunded\"%'"),
                 1);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter WHERE kafka_value IS NOT NULL "
                                          "AND kafka_offset >= 0"),
                 3);
}

Test(consumer, cancel_before_create_is_parked_then_both_applied_in_order, .init = setup, .fini = teardown)
{
    char order[37], sql[512];

    obh_kafka_create_topic(&h, 0);
    obh_new_uuid(order);
    produce_event(order, OB_EVENT_CANCELLED, 2, "12.00", NULL);
    start("[workers]\nhttp = 0\nrelays = 0\nconsumers = 1\n");
    wait_ledger("SELECT count(*) FROM ledger_parked", 1, 30000);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_entries"), 0);
    produce_event(order, OB_EVENT_CREATED, 1, "12.00", NULL);
    wait_ledger("SELECT count(*) FROM ledger_entries", 2, 30000);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_parked"), 0);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM ledger_entries c JOIN ledger_entries n ON n.reverses_entry_id = c.id "
             "WHERE c.order_id = '%s' AND c.kind = 'charge' AND c.seq = 1 AND n.kind = 'credit_note' AND n.seq = 2 "
             "AND n.amount = -c.amount AND n.id > c.id", order);
    cr_assert_eq(obh_scalar(h.ledger_dsn, sql), 1);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT sum(amount) FROM ledger_entries"), 0);
}

/* ---- the whole pipeline ---- */

typedef struct {
    atomic_int stop, created, cancelled, failed;
    int        port;
} client_t;

static void *
client(void *arg)
{
    client_t *c = arg;
    char      resp[1024], path[128];

    for (int i = 0; !atomic_load(&c->stop); i++) {
        int st = obh_http(c->port, "POST", "/orders", NULL,
                          "{\"customerId\":\"load\",\"amount\":\"3.50\",\"currency\":\"USD\"}", resp, sizeof(resp),
                          NULL, 0);
        if (st != 201) {
            atomic_fetch_add(&c->failed, 1);
            continue;
        }
        atomic_fetch_add(&c->created, 1);
        if (i % 4 == 0) {
            json_t *j = json_loads(resp, 0, NULL);
            snprintf(path, sizeof(path), "/orders/%s/cancel", json_string_value(json_object_get(j, "id")));
            json_decref(j);
            if (obh_http(c->port, "POST", path, NULL, NULL, resp, sizeof(resp), NULL, 0) == 200)
                atomic_fetch_add(&c->cancelled, 1);
        }
        ob_sleep_ms(2);     /* pacing, so the test bounds its own load */
    }
    return NULL;
}

/* "total/count" of a totals endpoint, or "" when it did not answer 200. */
static void
ledger_totals(const char *path, int port, char *total, size_t len)
{
    char resp[2048];

    total[0] = '\0';
    if (obh_http(port, "GET", path, NULL, NULL, resp, sizeof(resp), NULL, 0) != 200)
        return;
    json_t *j = json_loads(resp, 0, NULL);
    snprintf(total, len, "%s/%lld", json_string_value(json_object_get(j, "total")),
             (long long) json_integer_value(json_object_get(j, "count")));
    json_decref(j);
}

static int
totals_match(obh_t *hh, void *arg)
{
    char a[128], b[128];

    (void) arg;
    ledger_totals("/orders/total", hh->orders_port, a, sizeof(a));
    ledger_totals("/ledger/total", hh->ledger_port, b, sizeof(b));
    return a[0] != '\0' && strcmp(a, b) == 0;
}

/* Per order: exactly one charge; a credit note iff cancelled; amounts equal. */
static void
assert_ledger_equals_orders(void)
{
    PGconn   *o = obh_pg(h.orders_dsn), *l = obh_pg(h.ledger_dsn);
    PGresult *ro = PQexec(o, "SELECT id, status, amount::text FROM orders ORDER BY id");
    PGresult *rl = PQexec(l, "SELECT order_id, count(*) FILTER (WHERE kind = 'charge'),"
                             " count(*) FILTER (WHERE kind = 'credit_note'),"
                             " max(amount) FILTER (WHERE kind = 'charge')::text FROM ledger_entries"
                             " GROUP BY order_id ORDER BY order_id");

    cr_assert_eq(PQntuples(ro), PQntuples(rl), "%d orders, %d ledger orders", PQntuples(ro), PQntuples(rl));
    for (int i = 0; i < PQntuples(ro); i++) {
        cr_assert_str_eq(PQgetvalue(ro, i, 0), PQgetvalue(rl, i, 0));
        cr_assert_str_eq(PQgetvalue(rl, i, 1), "1", "order %s: %s charges", PQgetvalue(ro, i, 0), PQgetvalue(rl, i, 1));
        cr_assert_str_eq(PQgetvalue(rl, i, 2), strcmp(PQgetvalue(ro, i, 1), "cancelled") == 0 ? "1" : "0",
                         "order %s (%s): %s credit notes", PQgetvalue(ro, i, 0), PQgetvalue(ro, i, 1),
                         PQgetvalue(rl, i, 2));
        cr_assert_str_eq(PQgetvalue(ro, i, 2), PQgetvalue(rl, i, 3));
    }
    PQclear(ro);
    PQclear(rl);
    PQfinish(o);
    PQfinish(l);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter"), 0);
}

static const char *pipeline_conf = "[workers]\nhttp = 2\nrelays = 2\nconsumers = 2\n";

Test(consumer, kill9_mid_batch_twenty_times_books_everything_once, .init = setup, .fini = teardown)
{
    client_t  c = { .port = 0 };
    pthread_t th[3];

    start(pipeline_conf);
    c.port = h.orders_port;
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_CONSUMER, 1, 0, obh_ms(20000)), 0);
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, client, &c);
    pid_t killed[2] = { 0, 0 };
    for (int k = 0; k < 20; k++) {
        ob_shm_slot_t s;
        int           idx = k % 2;
        /* the successor of the one killed last, never its not-yet-reaped slot: every kill is real. The tenth
         * kill of a consumer follows nine quick failures, whose backoff is 25.6 s (ob_sup_backoff_ms). */
        pid_t         pid = obh_wait_worker(&h, OB_KIND_CONSUMER, idx, killed[idx], obh_ms(40000));
        cr_assert_neq(pid, 0, "consumer %d not back before kill %d", idx, k);
        killed[idx] = pid;
        uint64_t before = obh_worker(&h, OB_KIND_CONSUMER, idx, &s) >= 0 ? s.counters[OB_CTR_CONS_APPLIED] : 0;
        for (int64_t t0 = ob_now_ms(); ob_now_ms() - t0 < 3000; ob_sleep_ms(2))
            if (obh_worker(&h, OB_KIND_CONSUMER, idx, &s) >= 0 && s.counters[OB_CTR_CONS_APPLIED] > before)
                break;
        kill(pid, SIGKILL);
    }
    atomic_store(&c.stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    cr_assert(obh_poll(totals_match, &h, NULL, obh_ms(60000)), "totals never matched; log %s", h.log);
    assert_ledger_equals_orders();
    cr_log_info("%d orders, %d cancelled, through 20 consumer kills", atomic_load(&c.created),
                atomic_load(&c.cancelled));
}


Test(consumer, ledger_database_down_20s_loses_and_doubles_nothing, .init = setup, .fini = teardown, .timeout = 180)
{
    client_t  c = { .port = 0 };
    pthread_t th[2];

    start(pipeline_conf);
    c.port = h.orders_port;
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_CONSUMER, 1, 0, obh_ms(20000)), 0);
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, client, &c);
    ob_sleep_ms(1000);
    obh_db_allow(&h, 1, 0);
    ob_sleep_ms(20000);    /* the outage: its length is the scenario */
    obh_db_allow(&h, 1, 1);
    atomic_store(&c.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    cr_assert_gt(atomic_load(&c.created), 100);
    cr_assert(obh_poll(totals_match, &h, NULL, obh_ms(60000)), "totals never matched; log %s", h.log);
    assert_ledger_equals_orders();
}

/* The seed exercise: orders while orderdb fails on and off; then the totals agree. */
typedef struct {
    atomic_int stop;
} flapper_t;

static void *
flapper(void *arg)
{
    flapper_t *f = arg;

    for (int i = 0; !atomic_load(&f->stop); i++) {
        obh_db_allow(&h, 0, i % 2);
        ob_sleep_ms(150);    /* the failure rhythm */
    }
    obh_db_allow(&h, 0, 1);
    return NULL;
}

Test(consumer, seed_exercise_totals_agree_after_intermittent_orderdb_failures, .init = setup, .fini = teardown)
{
    flapper_t f = { 0 };
    pthread_t th;
    char      resp[1024], a[128], b[128];
    int       ok = 0, unavailable = 0;

    start(pipeline_conf);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_CONSUMER, 1, 0, obh_ms(20000)), 0);
    pthread_create(&th, NULL, flapper, &f);
    for (int i = 0; i < 10; i++) {
        int st = obh_http(h.orders_port, "POST", "/orders", NULL,
                          "{\"customerId\":\"seed\",\"amount\":\"19.99\",\"currency\":\"USD\"}", resp, sizeof(resp),
                          NULL, 0);
        cr_assert(st == 201 || st == 503, "POST answered %d (never a 500): %s", st, resp);
        ok += st == 201;
        unavailable += st == 503;
        ob_sleep_ms(60);
    }
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    int64_t t0 = ob_now_ms();
    cr_assert(obh_poll(totals_match, &h, NULL, obh_ms(5000)), "totals differ 5 s later");
    ledger_totals("/orders/total", h.orders_port, a, sizeof(a));
    ledger_totals("/ledger/total", h.ledger_port, b, sizeof(b));
    cr_log_info("seed: %d created, %d refused with 503; totals %s = %s after %lld ms", ok, unavailable, a, b,
                (long long) (ob_now_ms() - t0));
    assert_ledger_equals_orders();
}

Test(consumer, ledger_api_shows_an_orders_entries, .init = setup, .fini = teardown)
{
    char resp[4096], path[128];

    start(pipeline_conf);
    cr_assert_eq(obh_http(h.orders_port, "POST", "/orders", NULL,
                          "{\"customerId\":\"api\",\"amount\":\"8.25\",\"currency\":\"EUR\"}", resp, sizeof(resp), NULL, 0),
                 201);
    json_t *j = json_loads(resp, 0, NULL);
    char    id[37];
    ob_strlcpy(id, json_string_value(json_object_get(j, "id")), sizeof(id));
    json_decref(j);
    snprintf(path, sizeof(path), "/orders/%s/cancel", id);
    cr_assert_eq(obh_http(h.orders_port, "POST", path, NULL, NULL, resp, sizeof(resp), NULL, 0), 200);
    snprintf(path, sizeof(path), "/ledger/orders/%s", id);
    int64_t t0 = ob_now_ms();
    while (obh_http(h.ledger_port, "GET", path, NULL, NULL, resp, sizeof(resp), NULL, 0) != 200 ||
           strstr(resp, "credit_note") == NULL) {
        cr_assert_lt(ob_now_ms() - t0, obh_ms(20000), "entries never appeared: %s", resp);
        ob_sleep_ms(20);
    }
    cr_assert(strstr(resp, "\"kind\":\"charge\",\"amount\":\"8.25\"") != NULL, "%s", resp);
    cr_assert(strstr(resp, "\"kind\":\"credit_note\",\"amount\":\"-8.25\"") != NULL, "%s", resp);
    cr_assert_eq(obh_http(h.ledger_port, "GET", "/ledger/total", NULL, NULL, resp, sizeof(resp), NULL, 0), 200);
    cr_assert(strstr(resp, "\"total\":\"0.00\",\"count\":0") != NULL, "%s", resp);
    cr_assert_eq(obh_http(h.ledger_port, "GET", "/healthcheck", NULL, NULL, resp, sizeof(resp), NULL, 0), 200);
    cr_assert_eq(obh_http(h.ledger_port, "POST", "/ledger/total", NULL, NULL, resp, sizeof(resp), NULL, 0), 405);
}
