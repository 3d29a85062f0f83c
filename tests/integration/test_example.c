/*
 * tests/integration/test_example.c: the Python product/stock service of
 * examples/product-stock, run as written (python3 and psycopg) against the
 * real binary with its routes: what it commits arrives on the topic of its
 * aggregate type, in the partition and with the key Kafka's partitioner
 * gives, each aggregate's events in commit order; what it rolls back never
 * appears anywhere.
 */
#include "tests/integration/fixture.h"
#include "common/murmur2.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 64

typedef struct {
    char type[16], id[64], event_id[40];
    int  committed;
} tried_t;

typedef struct {
    char    topic[128], type[16], key[64], event_id[40], seq[16];
    int32_t partition;
    int64_t offset;
} got_t;

typedef struct {
    got_t       recs[MAX_EVENTS];
    int         n;
    const char *topic;
} gots_t;

static void
collect(const rd_kafka_message_t *m, void *arg)
{
    gots_t *g = arg;
    got_t  *r;

    cr_assert_lt(g->n, MAX_EVENTS, "more records than the service committed");
    r = &g->recs[g->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->topic, sizeof(r->topic), "%s", g->topic);
    snprintf(r->key, sizeof(r->key), "%.*s", (int) m->key_len, (const char *) m->key);
    r->partition = m->partition;
    r->offset = m->offset;
    obh_header(m, "event-id", r->event_id, sizeof(r->event_id));
    obh_header(m, "aggregate-type", r->type, sizeof(r->type));
    obh_header(m, "aggregate-seq", r->seq, sizeof(r->seq));
}

/* Runs the example's demo; returns the events it tried, in the order it committed or rolled them back. */
static int
run_demo(tried_t *out)
{
    char  cmd[1024], line[512];
    int   n = 0;
    FILE *p;

    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 examples/product-stock/service.py --dsn '%s' demo 2>&1",
             h.orders_dsn);
    cr_assert_not_null(p = popen(cmd, "r"));
    while (fgets(line, sizeof(line), p) != NULL) {
        json_error_t e;
        json_t      *j = json_loads(line, 0, &e);
        const char  *type, *id, *ev;
        int          committed;
        cr_assert(j != NULL && json_unpack(j, "{s:s, s:s, s:s, s:b}", "aggregate_type", &type, "aggregate_id", &id,
                                           "event_id", &ev, "committed", &committed) == 0,
                  "the example printed: %s", line);
        cr_assert_lt(n, MAX_EVENTS);
        snprintf(out[n].type, sizeof(out[n].type), "%s", type);
        snprintf(out[n].id, sizeof(out[n].id), "%s", id);
        snprintf(out[n].event_id, sizeof(out[n].event_id), "%s", ev);
        out[n++].committed = committed;
        json_decref(j);
    }
    cr_assert_eq(pclose(p), 0, "the example failed");
    return n;
}

static int
routing_synced(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.routing WHERE strict_routes") == 1;
}

static int
all_published(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0;
}

static const got_t *
find_event(const gots_t *g, const char *event_id)
{
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->recs[i].event_id, event_id) == 0)
            return &g->recs[i];
    return NULL;
}

/* The committed events of (type, id), in the demo's commit order, must be seq 1.. at rising offsets. */
static void
check_aggregate_order(const tried_t *t, int n, const gots_t *g, const char *type, const char *id)
{
    int     want_seq = 1;
    int64_t last = -1;

    for (int i = 0; i < n; i++) {
        if (!t[i].committed || strcmp(t[i].type, type) != 0 || strcmp(t[i].id, id) != 0)
            continue;
        const got_t *r = find_event(g, t[i].event_id);
        cr_assert_not_null(r, "%s %s: committed event %s not on %s", type, id, t[i].event_id, g->topic);
        cr_assert_eq(atoi(r->seq), want_seq, "%s %s: seq %s where %d was due", type, id, r->seq, want_seq);
        cr_assert_gt(r->offset, last, "%s %s: seq %d is behind its predecessor in the log", type, id, want_seq);
        last = r->offset;
        want_seq++;
    }
    cr_assert_gt(want_seq, 1, "%s %s: no committed event", type, id);
}

Test(example, python_product_stock_service_routes_committed_events_and_never_rolled_back_ones, .init = setup,
     .fini = teardown)
{
    char    extra[768], product[96], stock[96];
    tried_t tried[MAX_EVENTS];
    gots_t  gp = { .n = 0, .topic = product }, gs = { .n = 0, .topic = stock };
    int     n, committed = 0, rolled_back = 0;

    snprintf(product, sizeof(product), "%s-product-events", h.topic);
    snprintf(stock, sizeof(stock), "%s-stock-events", h.topic);
    snprintf(extra, sizeof(extra),
             "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n[relay]\nmode = wal\n[kafka]\nstrict_routes = yes\n"
             "[routes]\nproduct = %s\nstock = %s\n",
             product, stock);
    start(extra);
    cr_assert(obh_poll(routing_synced, &h, NULL, obh_ms(30000)), "relay 0 never synced the routes; log %s", h.log);

    n = run_demo(tried);
    for (int i = 0; i < n; i++) {
        committed += tried[i].committed;
        rolled_back += !tried[i].committed;
    }
    cr_assert(committed >= 8 && rolled_back >= 2, "the demo committed %d and rolled back %d events", committed,
              rolled_back);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "not published; log %s", h.log);
    obh_kafka_each(&h, product, h.partitions, committed / 2, obh_ms(20000), collect, &gp);
    obh_kafka_each(&h, stock, h.partitions, committed / 2, obh_ms(20000), collect, &gs);
    cr_assert_eq(gp.n + gs.n, committed, "%d + %d records for %d committed events", gp.n, gs.n, committed);
    for (int i = 0; i < n; i++) {
        const gots_t *mine = strcmp(tried[i].type, "product") == 0 ? &gp : &gs;
        const gots_t *other = mine == &gp ? &gs : &gp;
        const got_t  *r = find_event(mine, tried[i].event_id);
        cr_assert_null(find_event(other, tried[i].event_id), "event %s on the wrong topic", tried[i].event_id);
        if (!tried[i].committed) {
            cr_assert_null(r, "rolled-back event %s was published", tried[i].event_id);
            continue;
        }
        cr_assert_not_null(r, "committed %s event %s missing from %s", tried[i].type, tried[i].event_id, mine->topic);
        cr_assert_str_eq(r->type, tried[i].type);
        cr_assert_str_eq(r->key, tried[i].id);
        cr_assert_eq(r->partition, ob_partition_for(tried[i].id, strlen(tried[i].id), h.partitions),
                     "%s: not the Java partitioner's partition", tried[i].id);
    }
    check_aggregate_order(tried, n, &gp, "product", "sku-1");
    check_aggregate_order(tried, n, &gp, "product", "sku-2");
    check_aggregate_order(tried, n, &gs, "stock", "sku-1");
    check_aggregate_order(tried, n, &gs, "stock", "sku-2");
    printf("example: %d events committed (%d on %s, %d on %s), %d rolled back and absent\n", committed, gp.n,
           product, gs.n, stock, rolled_back);
}
