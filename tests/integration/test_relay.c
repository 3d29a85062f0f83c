/*
 * tests/integration/test_relay.c: outbox -> Kafka with the real binary, the
 * real PostgreSQL and the real broker; the log read back and checked.
 */
#include "tests/integration/fixture.h"
#include "common/murmur2.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static int
all_published(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0;
}

Test(relay, ten_thousand_events_in_order_in_their_partitions, .init = setup, .fini = teardown)
{
    static char ids[200][37];
    int         n;

    obh_insert_events(&h, 200, 50, ids);
    start_with("[workers]\nhttp = 0\nrelays = 3\nconsumers = 0\n", NULL);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(60000)), "backlog not drained; log %s", h.log);
    obh_msg_t *m = obh_kafka_read_all(&h, 10000, obh_ms(60000), &n);
    int dups = obh_check_log(&h, m, n, 10000);
    cr_assert_eq(dups, 0, "%d duplicates without any fault", dups);
    free(m);
    /* status shows what was produced */
    uint64_t produced = 0;
    for (int p = 0; p < h.partitions; p++)
        produced += atomic_load(&h.shm->map->parts[p].produced);
    cr_assert_eq(produced, 10000);
}

/* Our partition equals what librdkafka's murmur2_random partitioner picks for the key. */
static void
dr_partition(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void) rk;
    (void) opaque;
    *(int32_t *) m->_private = m->err ? -2 : m->partition;
}

/* The keepalive timer of the TCP socket ss(8) finds for filter, in ms; -1 when it has none. */
static int
keepalive_timer_ms(const char *filter)
{
    char  cmd[256], line[1024];
    FILE *f;
    int   ms = -1;

    snprintf(cmd, sizeof(cmd), "ss -tnoH state established '( %s )' 2>/dev/null", filter);
    cr_assert_not_null(f = popen(cmd, "r"));
    while (fgets(line, sizeof(line), f) != NULL) {
        char  *t = strstr(line, "timer:(keepalive,");
        double v;
        char   unit[8] = "";
        if (t != NULL && sscanf(t + strlen("timer:(keepalive,"), "%lf%7[a-z]", &v, unit) == 2)
            ms = (int) (strcmp(unit, "ms") == 0 ? v : strcmp(unit, "min") == 0 ? v * 60000 : v * 1000);
    }
    pclose(f);
    return ms;
}

/*
 * A host cut off from PostgreSQL must not hold its partitions for the
 * kernel's timeouts (2 h idle keepalive, 15 min of retransmissions): both
 * ends of the relay's session probe a silent peer within peer_timeout_s.
 */
Test(relay, both_ends_of_a_relay_session_probe_a_silent_peer_within_peer_timeout, .init = setup, .fini = teardown)
{
    char sql[256], filter[128];
    long port;
    int  client, server;

    start("[postgres]\npeer_timeout_s = 6\n[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n");
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 0, 0, obh_ms(20000)), 0, "no relay; log %s", h.log);
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(max(client_port), 0) FROM pg_stat_activity WHERE datname = '%s'"
             " AND application_name = 'outboxd relay 0'",
             h.orders_db);
    for (int64_t t0 = ob_now_ms(); (port = obh_scalar(h.orders_dsn, sql)) <= 0; ob_sleep_ms(50))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(20000), "the relay never connected; log %s", h.log);
    /* idle 3 s (half of 6), then 3 probes a second apart: the timer never shows more than the idle time. A
     * socket with data in flight shows its retransmission timer instead, and the server's end gets its setting
     * just after the session appears: poll */
    for (int64_t t0 = ob_now_ms();; ob_sleep_ms(20)) {
        snprintf(filter, sizeof(filter), "sport = :%ld", port);
        client = keepalive_timer_ms(filter);
        snprintf(filter, sizeof(filter), "dport = :%ld", port);     /* the server's end: its peer is the relay */
        server = keepalive_timer_ms(filter);
        if ((client > 0 && client <= 3000 && server > 0 && server <= 3000) || ob_now_ms() - t0 > obh_ms(5000))
            break;
    }
    cr_assert(client > 0 && client <= 3000, "client socket's keepalive timer %d ms, want 1..3000", client);
    cr_assert(server > 0 && server <= 3000, "server socket's keepalive timer %d ms, want 1..3000", server);
}

Test(relay, partition_equals_the_java_compatible_partitioner, .init = setup, .fini = teardown)
{
    char             err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    static char      ids[50][37];
    int32_t          got[50];

    obh_kafka_create_topic(&h, 0);
    rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:59092", err, sizeof(err));
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", err, sizeof(err));
    rd_kafka_conf_set_dr_msg_cb(conf, dr_partition);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cr_assert_not_null(p, "%s", err);
    obh_insert_events(&h, 50, 1, ids);
    for (int i = 0; i < 50; i++) {
        got[i] = -1;
        cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(h.topic), RD_KAFKA_V_KEY(ids[i], 36),
                                       RD_KAFKA_V_VALUE("x", 1), RD_KAFKA_V_OPAQUE(&got[i]), RD_KAFKA_V_END),
                     0);
    }
    cr_assert_eq(rd_kafka_flush(p, 15000), 0);
    rd_kafka_destroy(p);
    for (int i = 0; i < 50; i++) {
        char sql[160];
        snprintf(sql, sizeof(sql), "SELECT partition FROM outboxd.outbox WHERE aggregate_id = '%s'", ids[i]);
        cr_assert_eq(obh_scalar(h.orders_dsn, sql), got[i], "order %s", ids[i]);
    }
}

/* Inserts events for a fixed set of orders, seq increasing, until stopped. */
typedef struct {
    atomic_int stop;
    int        inserted;
    char       ids[40][37];
} feeder_t;

static void *
feeder(void *arg)
{
    feeder_t *f = arg;
    PGconn   *pg = obh_pg(h.orders_dsn);
    int       seq = 0;

    while (!atomic_load(&f->stop)) {
        seq++;
        for (int i = 0; i < 40; i++) {
            char        part[16], s[16];
            const char *params[3] = { f->ids[i], part, s };
            snprintf(part, sizeof(part), "%d", ob_partition_for(f->ids[i], 36, h.partitions));
            snprintf(s, sizeof(s), "%d", seq);
            PGresult *r = PQexecParams(pg,
                                       "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq,"
                                       " event_type, partition, payload) VALUES (gen_random_uuid(), 'order', $1::text,"
                                       " $3::int, 'order.test', $2::int, '\\x00')",
                                       3, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(r) == PGRES_COMMAND_OK)
                f->inserted++;
            PQclear(r);
        }
        ob_sleep_ms(5);     /* pacing the load, not synchronisation */
    }
    PQfinish(pg);
    return NULL;
}

static void
feeder_start(feeder_t *f, pthread_t *th)
{
    memset(f, 0, sizeof(*f));
    obh_insert_events(&h, 40, 0, f->ids);
    pthread_create(th, NULL, feeder, f);
}

Test(relay, kill9_mid_batch_twenty_times_loses_and_reorders_nothing, .init = setup, .fini = teardown)
{
    feeder_t  f;
    pthread_t th;
    int       n;

    start_with("[workers]\nhttp = 0\nrelays = 4\nconsumers = 0\n[relay]\nbatch = 50\n", NULL);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 0, 0, obh_ms(20000)), 0);
    feeder_start(&f, &th);
    for (int k = 0; k < 20; k++) {
        ob_shm_slot_t s;
        int           idx = k % 4;
        pid_t         pid = obh_wait_worker(&h, OB_KIND_RELAY, idx, 0, obh_ms(20000));
        cr_assert_neq(pid, 0, "relay %d not running before kill %d", idx, k);
        /* kill it while it has published something, i.e. mid-stream */
        uint64_t before = obh_worker(&h, OB_KIND_RELAY, idx, &s) >= 0 ? s.counters[OB_CTR_RELAY_PUBLISHED] : 0;
        for (int64_t t0 = ob_now_ms(); ob_now_ms() - t0 < 2000; ob_sleep_ms(2))
            if (obh_worker(&h, OB_KIND_RELAY, idx, &s) >= 0 && s.counters[OB_CTR_RELAY_PUBLISHED] > before)
                break;
        kill(pid, SIGKILL);
    }
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(60000)), "backlog not drained after the kills");
    obh_msg_t *m = obh_kafka_read_all(&h, f.inserted, obh_ms(60000), &n);
    int dups = obh_check_log(&h, m, n, f.inserted);
    cr_log_info("%d events, %d re-sent after kills", f.inserted, dups);
    free(m);
}

static int
breaker_state(obh_t *hh, void *arg)
{
    int want = *(int *) arg;

    for (int p = 0; p < hh->partitions; p++)
        if (atomic_load(&hh->shm->map->parts[p].breaker) == want)
            return 1;
    return 0;
}

/* Kafka frozen (SIGSTOP) for 30 s while orders keep coming: breaker opens, nothing quarantined, all delivered. */
Test(relay, kafka_away_30s_opens_the_breaker_and_loses_nothing, .init = setup, .fini = teardown, .timeout = 240)
{
    feeder_t  f;
    pthread_t th;
    int       n, open = OB_BREAKER_OPEN, closed = OB_BREAKER_CLOSED;
    pid_t     kpid = obh_kafka_pid();

    start_with("[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n[relay]\ndelivery_timeout_ms = 5000\n", NULL);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 1, 0, obh_ms(20000)), 0);
    feeder_start(&f, &th);
    ob_sleep_ms(500);      /* let some flow first */
    cr_assert_eq(kill(kpid, SIGSTOP), 0);
    int64_t stopped = ob_now_ms();
    int     opened = obh_poll(breaker_state, &h, &open, 25000);
    /* the outage lasts 30 s: its length is the scenario, not a wait for a condition */
    ob_sleep_ms(30000 - (ob_now_ms() - stopped));
    kill(kpid, SIGCONT);
    cr_assert(opened, "breaker never opened while Kafka was away");
    int64_t back = ob_now_ms();
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "not delivered after Kafka came back");
    cr_log_info("delivered %lld ms after Kafka returned", (long long) (ob_now_ms() - back));
    cr_assert_lt(ob_now_ms() - back, obh_ms(20000));
    cr_assert(breaker_state(&h, &closed));
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine"), 0);
    obh_msg_t *m = obh_kafka_read_all(&h, f.inserted, obh_ms(60000), &n);
    obh_check_log(&h, m, n, f.inserted);
    free(m);
}

Test(relay, oversized_event_is_quarantined_its_order_parked_and_replay_delivers, .init = setup, .fini = teardown)
{
    static char ids[20][37];
    char        sql[512], out[1024];
    int         n;

    obh_kafka_create_topic(&h, 20000);
    obh_insert_events(&h, 20, 2, ids);
    /* make order 0's first event too large for the topic */
    snprintf(sql, sizeof(sql), "UPDATE outboxd.outbox SET payload = convert_to(repeat('x', 50000), 'UTF8') "
                               "WHERE aggregate_id = '%s' AND seq = 1", ids[0]);
    obh_sql(h.orders_dsn, sql);
    start_with("[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n", NULL);
    for (int64_t t0 = ob_now_ms();
         obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE published") < 38; ob_sleep_ms(20))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(30000), "other orders did not flow");
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine"), 1);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM outboxd.outbox_quarantine WHERE aggregate_id = '%s' AND seq = 1 "
                               "AND error LIKE '%%MSG_SIZE_TOO_LARGE%%max.message.bytes%%'", ids[0]);
    cr_assert_eq(obh_scalar(h.orders_dsn, sql), 1);
    /* its seq 2 stays parked, a while later still */
    ob_sleep_ms(1000);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM outboxd.outbox WHERE aggregate_id = '%s' AND NOT published",
             ids[0]);
    cr_assert_eq(obh_scalar(h.orders_dsn, sql), 1);
    /* the operator raises the limit and replays */
    obh_kafka_set_max_message_bytes(&h, 1000000);
    const char *args[] = { "replay", "-c", h.conf, "--quarantined", NULL };
    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "1 quarantined event(s) restored") != NULL, "%s", out);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "replayed events not delivered");
    obh_msg_t *m = obh_kafka_read_all(&h, 40, obh_ms(30000), &n);
    obh_check_log(&h, m, n, 40);     /* order 0: seq 1 then seq 2 */
    free(m);
}

/* One event of its own order (a fresh uuid, so every key is as long) with a payload of `bytes`. */
static void
insert_sized(char id[37], int bytes)
{
    char sql[512];

    obh_new_uuid(id);
    snprintf(sql, sizeof(sql),
             "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload)"
             " VALUES (gen_random_uuid(), 'order', '%s', 1, 'order.created', 0, convert_to(repeat('x', %d), 'UTF8'))",
             id, bytes);
    obh_sql(h.orders_dsn, sql);
}

static long long
quarantined_size(const char *id)
{
    char sql[256];

    snprintf(sql, sizeof(sql), "SELECT coalesce(substring(error FROM 'a record of ([0-9]+) bytes')::int, -1)"
                               " FROM outboxd.outbox_quarantine WHERE aggregate_id = '%s'", id);
    return obh_scalar(h.orders_dsn, sql);
}

static int
one_pending(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0 &&
           obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine") == 2;
}

/*
 * The relay sizes a record as the broker will (DESIGN G5): one of exactly
 * max.message.bytes by its count is accepted by Kafka, one byte more is
 * refused before it leaves, with both sizes in the quarantine's error.
 */
Test(relay, a_record_of_exactly_max_message_bytes_is_sent_and_one_byte_more_is_refused_before_it_leaves,
     .init = setup, .fini = teardown)
{
    char      a[37], b[37], c[37], sql[256];
    long long size;

    obh_kafka_create_topic(&h, 20000);
    start_with("[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n", NULL);
    insert_sized(a, 30000);
    obh_wait_scalar(&h, h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine", 1, obh_ms(30000));
    size = quarantined_size(a);
    cr_assert_gt(size, 30000, "no size in the error; log %s", h.log);
    insert_sized(b, 30000 - (int) (size - 20000));
    insert_sized(c, 30000 - (int) (size - 20000) + 1);
    cr_assert(obh_poll(one_pending, &h, NULL, obh_ms(30000)), "the record at the limit not sent; log %s", h.log);
    cr_assert_eq(quarantined_size(c), 20001);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM outboxd.outbox WHERE published AND kafka_offset >= 0"
                               " AND aggregate_id = '%s'", b);
    cr_assert_eq(obh_scalar(h.orders_dsn, sql), 1, "Kafka did not take the record of exactly 20000 bytes");
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine"
                                          " WHERE error LIKE 'MSG_SIZE_TOO_LARGE: a record of % bytes, topic % allows"
                                          " 20000 (max.message.bytes)'"),
                 2);
    /*
     * And Kafka agrees that one byte more is too large: a relay that read a
     * higher limit at its start sends the refused record, and the broker
     * rejects it itself.
     */
    ob_shm_slot_t w;
    obh_kafka_set_max_message_bytes(&h, 1000000);
    cr_assert(obh_worker(&h, OB_KIND_RELAY, 0, &w) >= 0);
    long long killed_us = obh_scalar(h.orders_dsn, "SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::int8");
    cr_assert_eq(kill(w.pid, SIGKILL), 0);
    /* its successor read the limit before it took its partitions' locks */
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                               " WHERE l." OBH_PART_LOCKS " AND l.granted AND a.backend_start >"
                               " to_timestamp(%lld / 1e6)", killed_us);
    obh_wait_scalar(&h, h.orders_dsn, sql, h.partitions, obh_ms(30000));
    obh_kafka_set_max_message_bytes(&h, 20000);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM outboxd.outbox_quarantine WHERE aggregate_id = '%s'"
                               " AND error LIKE 'MSG_SIZE_TOO_LARGE: Broker:%%'", c);
    const char *args[] = { "replay", "-c", h.conf, "--order", c, NULL };
    char        out[1024];
    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    obh_wait_scalar(&h, h.orders_dsn, sql, 1, obh_ms(30000));
}

Test(relay, reload_two_to_three_relays_under_load_keeps_order, .init = setup, .fini = teardown)
{
    feeder_t  f;
    pthread_t th;
    int       n;

    start_with("[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n", NULL);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 1, 0, obh_ms(20000)), 0);
    feeder_start(&f, &th);
    ob_sleep_ms(300);
    obh_write_conf(&h, "[workers]\nhttp = 0\nrelays = 3\nconsumers = 0\n");
    kill(h.pid, SIGHUP);
    /* sample pg_locks during the change: no partition lock is ever held twice */
    PGconn *pg = obh_pg(h.orders_dsn);
    for (int64_t t0 = ob_now_ms(); ob_now_ms() - t0 < 3000; ob_sleep_ms(20)) {
        PGresult *r = PQexec(pg, "SELECT count(*) FROM (SELECT objid FROM pg_locks WHERE " OBH_PART_LOCKS
                                 " AND granted GROUP BY objid HAVING count(*) > 1) d");
        cr_assert_eq(atoi(PQgetvalue(r, 0, 0)), 0, "a partition lock held by two sessions");
        PQclear(r);
    }
    PQfinish(pg);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 2, 0, obh_ms(20000)), 0, "third relay never started");
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(60000)));
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM pg_locks WHERE " OBH_PART_LOCKS " AND granted"),
                 h.partitions);
    obh_msg_t *m = obh_kafka_read_all(&h, f.inserted, obh_ms(60000), &n);
    obh_check_log(&h, m, n, f.inserted);
    free(m);
}

Test(relay, skip_locked_mode_delivers_everything, .init = setup, .fini = teardown)
{
    static char ids[50][37];
    int         n;

    obh_insert_events(&h, 50, 4, ids);
    start_with("[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n[relay]\nmode = skip_locked\nbatch = 20\n", NULL);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(60000)), "backlog not drained; log %s", h.log);
    obh_msg_t *m = obh_kafka_read_all(&h, 200, obh_ms(30000), &n);
    cr_assert_eq(n, 200);
    free(m);
    /* no advisory locks in this mode */
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
}

Test(relay, janitor_deletes_published_rows_past_retention, .init = setup, .fini = teardown)
{
    static char ids[10][37];

    obh_insert_events(&h, 10, 3, ids);
    start_with("[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n[relay]\nretention = 60s\n", NULL);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)));
    /* age half of them past retention; the janitor (every 10 s) removes exactly those */
    obh_sql(h.orders_dsn, "UPDATE outboxd.outbox SET published_at = now() - interval '2 minutes' WHERE seq <= 2");
    for (int64_t t0 = ob_now_ms(); obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox") != 10;
         ob_sleep_ms(100))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(25000), "janitor did not run");
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE seq = 3"), 10);
}

static int
barrier_gave_up_twice(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_relay_counter(hh, 0, OB_CTR_RELAY_BARRIER_TIMEOUTS) >= 2;
}

static void
name_standby(const char *names)
{
    char sql[128];

    snprintf(sql, sizeof(sql), "ALTER SYSTEM SET synchronous_standby_names = '%s'", names);
    obh_sql(STACK_ORDERS "postgres", sql);
    obh_sql(STACK_ORDERS "postgres", "SELECT pg_reload_conf()");
}

/* The stack's orders server is every test's: no standby named once this one ends (DROP DATABASE would wait). */
static void
teardown_no_standby(void)
{
    name_standby("");
    teardown();
}

static int
barrier_off(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_relay_counter(hh, 0, OB_CTR_RELAY_BARRIER) == 0;
}

/*
 * A synchronous standby is named that never confirms (it does not exist),
 * as when the only standby is down: the rows committed before are visible,
 * yet none may be produced, since a failover to a standby without them
 * would take them back. The relay says why and counts its waits. With no
 * standby named (auto: off) everything goes.
 */
static void
barrier_holds_without_confirmation(const char *mode)
{
    static char ids[5][37];
    char        conf[256];

    obh_insert_events(&h, 5, 4, ids);
    name_standby("nobody");
    snprintf(conf, sizeof(conf), "[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n[relay]\nmode = %s\n", mode);
    start(conf);
    cr_assert(obh_poll(barrier_gave_up_twice, &h, NULL, obh_ms(30000)), "the barrier never waited; log %s", h.log);
    cr_assert_eq(obh_relay_counter(&h, 0, OB_CTR_RELAY_BARRIER), 1, "barrier not shown as on");
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE published"), 0,
                 "published with no standby to have it; log %s", h.log);
    int        n;
    obh_msg_t *m = obh_kafka_read_all(&h, 0, obh_ms(10000), &n);
    free(m);
    cr_assert_eq(n, 0, "%d records reached Kafka past the barrier", n);
    cr_assert_gt(obh_log_count(&h, "no synchronous standby confirmed"), 0, "no sentence says why; log %s", h.log);
    name_standby("");
    cr_assert(obh_poll(barrier_off, &h, NULL, obh_ms(15000)), "auto kept the barrier on; log %s", h.log);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(60000)), "not drained once no standby was named; log %s", h.log);
}

Test(relay, a_synchronous_standby_that_never_confirms_holds_every_event_back, .init = setup, .fini = teardown_no_standby)
{
    barrier_holds_without_confirmation("partitioned");
}

Test(relay, wal_a_synchronous_standby_that_never_confirms_holds_every_event_back, .init = setup,
     .fini = teardown_no_standby)
{
    barrier_holds_without_confirmation("wal");
}

static int
barrier_on(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_relay_counter(hh, 0, OB_CTR_RELAY_BARRIER) == 1;
}

static int
barrier_waited_more(obh_t *hh, void *arg)
{
    return obh_relay_counter(hh, 0, OB_CTR_RELAY_BARRIER_TIMEOUTS) >= *(uint64_t *) arg;
}

/*
 * The stream's side: the walsender sends a transaction once it is flushed
 * here, before any standby has it. While no synchronous standby confirms,
 * a one-event transaction (held until its Commit) and a 100-event one
 * (more than the stream holds, so it waits at once) are produced by
 * nobody; once no standby is named each event arrives, in order. (A
 * polling cycle between two stream sessions may send them first and the
 * stream again: re-sends are allowed, G4.)
 */
Test(relay, wal_streamed_transactions_wait_for_the_standby_then_arrive_in_order, .init = setup,
     .fini = teardown_no_standby)
{
    static char one[1][37], many[1][37];
    char        sql[256];
    uint64_t    want;
    int         n;

    start("[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n[relay]\nmode = wal\n");
    obh_wait_streaming(&h, 1);
    /* the test's own writes must not wait for a standby that never answers: local, so flushed here, and streamed */
    snprintf(sql, sizeof(sql), "ALTER DATABASE %s SET synchronous_commit = local", h.orders_db);
    obh_sql(STACK_ORDERS "postgres", sql);
    name_standby("nobody");
    cr_assert(obh_poll(barrier_on, &h, NULL, obh_ms(15000)), "auto never turned the barrier on; log %s", h.log);
    want = obh_relay_counter(&h, 0, OB_CTR_RELAY_BARRIER_TIMEOUTS) + 2;
    obh_insert_events_ex(&h, 1, 1, one, 1, 0);
    obh_insert_events_ex(&h, 1, 100, many, 1, 0);
    cr_assert(obh_poll(barrier_waited_more, &h, &want, obh_ms(30000)), "the stream never waited; log %s", h.log);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE published"), 0,
                 "published what no standby has; log %s", h.log);
    obh_msg_t *m = obh_kafka_read_all(&h, 0, obh_ms(10000), &n);
    free(m);
    cr_assert_eq(n, 0, "%d records reached Kafka past the barrier", n);
    name_standby("");
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(60000)), "not sent once no standby was named; log %s", h.log);
    m = obh_kafka_read_all(&h, 101, obh_ms(30000), &n);
    obh_check_log(&h, m, n, 101);     /* asserts every event there, in order */
    free(m);
}

/* ---- relays of several instances share the partitions ------------------------ */

static obh_t peers[2];

static void
peers_teardown(void)
{
    for (int i = 0; i < 2; i++) {
        if (peers[i].pid > 0)
            obh_stop(&peers[i], obh_ms(20000));
        if (peers[i].shm != NULL)
            ob_shm_close(peers[i].shm, 0);
        peers[i].shm = NULL;
        peers[i].pid = 0;
    }
    teardown();
}

typedef struct {
    obh_t *inst[3];
    int    n;
    int    twice;     /* samples that found a partition in the bitmaps of two instances */
} share_t;

/* Every partition held once, and each instance holding as many as the others. */
static int
shared_fairly(obh_t *hh, void *arg)
{
    share_t *s = arg;
    int      total = 0, lo = 1 << 30, hi = 0;

    (void) hh;
    for (int p = 0; p < h.partitions; p++) {
        int holders = 0;
        for (int i = 0; i < s->n; i++)
            for (int k = 0; k < OB_SHM_SLOTS; k++) {
                ob_shm_slot_t *sl = &s->inst[i]->shm->map->slots[k];
                holders += sl->kind == OB_KIND_RELAY && sl->state == OB_SLOT_RUNNING && ob_shm_is_owned(sl, p);
            }
        s->twice += holders > 1;
    }
    for (int i = 0; i < s->n; i++) {
        int k = obh_held(s->inst[i]);
        total += k;
        lo = k < lo ? k : lo;
        hi = k > hi ? k : hi;
    }
    return total == h.partitions && lo == hi;
}

/* How long the instances took to share fairly, in ms; fails past 15 s. */
static int64_t
wait_shared(share_t *s, const char *what)
{
    int64_t t0 = ob_now_ms();

    cr_assert(obh_poll(shared_fairly, &h, s, obh_ms(15000)), "%s: partitions not shared fairly (%d, %d, %d held)",
              what, obh_held(s->inst[0]), obh_held(s->inst[1]), s->n > 2 ? obh_held(s->inst[2]) : -1);
    return ob_now_ms() - t0;
}

static void
peer_start(int i, const char *suffix, const char *conf)
{
    obh_init_peer(&peers[i], &h, suffix);
    obh_write_conf(&peers[i], conf);
    obh_start(&peers[i], NULL);
    cr_assert(obh_wait_worker(&peers[i], OB_KIND_RELAY, 1, 0, obh_ms(30000)) > 0, "%s: relays not up; log %s",
              suffix, peers[i].log);
}

/*
 * Three instances of two relays each on one orderdb and topic, under a
 * steady writer: a second joins (6 and 6), a third (4, 4, 4), the second
 * leaves (6 and 6). Each step within 15 s, no partition in two instances'
 * hands at any sample, and the topic read back whole and in order.
 */
static void
share_scenario(const char *extra)
{
    char      conf[512];
    feeder_t  f;
    pthread_t th;
    share_t   s = { { &h, &peers[0], &peers[1] }, 1, 0 };
    int64_t   join2, join3, leave;
    int       n;

    snprintf(conf, sizeof(conf), "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n%s", extra);
    start_with(conf, NULL);
    cr_assert(obh_wait_worker(&h, OB_KIND_RELAY, 1, 0, obh_ms(30000)) > 0);
    wait_shared(&s, "one instance");
    feeder_start(&f, &th);
    peer_start(0, "b", conf);
    s.n = 2;
    join2 = wait_shared(&s, "second instance joined");
    peer_start(1, "c", conf);
    s.n = 3;
    join3 = wait_shared(&s, "third instance joined");
    cr_assert(obh_stop(&peers[0], obh_ms(20000)) >= 0, "second instance did not stop");
    s.inst[1] = &peers[1];
    s.n = 2;
    leave = wait_shared(&s, "second instance left");
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(60000)), "backlog not drained; logs %s %s", h.log,
              peers[1].log);
    cr_assert_eq(s.twice, 0, "a partition was in two instances' hands in %d samples", s.twice);
    cr_log_info("shared fairly: second joined in %lld ms, third in %lld ms, second left in %lld ms; %d events",
                (long long) join2, (long long) join3, (long long) leave, f.inserted);
    obh_msg_t *m = obh_kafka_read_all(&h, f.inserted, obh_ms(60000), &n);
    obh_check_log(&h, m, n, f.inserted);
    free(m);
}

Test(relay, three_instances_share_the_partitions_fairly_as_they_join_and_leave, .init = setup,
     .fini = peers_teardown, .timeout = 240)
{
    share_scenario("");
}

Test(relay, wal_three_instances_share_the_partitions_fairly_as_they_join_and_leave, .init = setup,
     .fini = peers_teardown, .timeout = 240)
{
    share_scenario("[relay]\nmode = wal\n");
}
