/*
 * tests/fault/test_fault.c: the fault scenarios (README, "Proof under
 * faults", numbers them).
 *
 * Suite `fault` is the short tier `make test` runs: scenarios 1, 2, 4, 6, 7,
 * 10 and 15, the mode-wal runs (w04, w06, w10, w12, w15), the foreign
 * writers' scenario (e1, we1, at the end of the file) and one negative
 * control (nc1). Suite `fault_long` holds the rest, nc3 among them;
 * `make chaos` runs both with OB_CHAOS_LONG=1 (longer loads, more faults)
 * and writes var/chaos/report.md from the rows each scenario appends.
 *
 * Sleeps here are fault durations ("the database is down for 10 s"), never
 * synchronisation: progress is awaited by polling acknowledged requests,
 * worker slots and database counts.
 */
#include "tests/fault/fault.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static fx_t fx;

static void
setup(void)
{
    fx_setup(&fx, "?");
}

static void
teardown(void)
{
    fx_teardown(&fx);
}

/* Four clients, a cancel in five, retries as a careful client would. */
static const fx_load_opts_t steady = { .clients = 4, .pace_ms = 15, .cancel_pct = 20, .timeout_ms = 5000, .retries = 8 };

/* Waits for more acknowledged requests: four times as many in the long tier. */
static void
wait_acked(long more)
{
    more = fx.long_tier ? more * 4 : more;
    cr_assert(fx_wait_acked(&fx, more, obh_ms(60000)), "%s: %ld more requests not acknowledged in time; log %s",
              fx.scenario, more, fx.h.log);
}

static void
kill_loop(int kind, int workers, int kills)
{
    for (int k = 0; k < kills; k++) {
        int           idx = k % workers;
        ob_shm_slot_t s;
        pid_t         old = obh_wait_worker(&fx.h, kind, idx, 0, obh_ms(60000));
        cr_assert(old > 0, "worker %d/%d not running; log %s", kind, idx, fx.h.log);
        cr_assert_geq(obh_worker(&fx.h, kind, idx, &s), 0);
        kill(s.pid, SIGKILL);
        cr_assert(obh_wait_worker(&fx.h, kind, idx, s.pid, obh_ms(60000)) > 0, "kill %d: no successor; log %s", k,
                  fx.h.log);
        wait_acked(20);
    }
}

/* Scenario start: the instance, the clients, and some traffic through. */
static void
begin(const char *scenario, const char *extra, const fx_load_opts_t *o, long acked)
{
    fx.scenario = scenario;
    fx_start(&fx, extra);
    fx_load_start(&fx, o);
    wait_acked(acked);
}

/* Scenario end: the fault is healed now; optionally wait for traffic to flow
 * again, then converge, check, and require a clean run. */
static void
finish(long acked_after, int converge_ms)
{
    fx_healed(&fx);
    if (acked_after > 0)
        wait_acked(acked_after);
    fx_verify(&fx, obh_ms(converge_ms));
    fx_assert_clean(&fx);
}

/* kill -9 of the stack's broker; returns once it is gone. */
static void
kafka_kill(void)
{
    pid_t kafka = obh_kafka_pid();

    kill(kafka, SIGKILL);
    for (int64_t until = ob_now_ms() + 30000; obh_alive(kafka) && ob_now_ms() < until;)
        ob_sleep_ms(50);
    cr_assert(!obh_alive(kafka), "Kafka survived SIGKILL");
}

/* The negative controls' fault: events made while no broker is there, held
 * past delivery_timeout_ms (1500 ms in their config), then a broker again. */
static void
kafka_killed_past_delivery_timeout(void)
{
    kafka_kill();
    wait_acked(100);    /* these events meet no broker */
    ob_sleep_ms(3000);  /* past the delivery timeout */
    fx_kafka_restart();
    fx_healed(&fx);
    wait_acked(50);
}

static int
outbox_drained(obh_t *h, void *arg)
{
    (void) arg;
    return obh_scalar(h->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0;
}

/* ---- short tier --------------------------------------------------------- */

Test(fault, s01_seed_orders_db_flapping, .init = setup, .fini = teardown, .timeout = 600)
{
    fx_load_opts_t o = { .clients = 1, .pace_ms = 100, .max_requests = 10, .timeout_ms = 5000, .retries = 60 };

    fx.scenario = "1 seed: 10 orders, orders db flapping";
    fx_start(&fx, "");
    fx_load_start(&fx, &o);
    int64_t until = ob_now_ms() + obh_ms(60000);
    while (atomic_load(&fx.sh->done) < 1 && ob_now_ms() < until) {
        obh_db_allow(&fx.h, 0, 0);
        ob_sleep_ms(300);
        obh_db_allow(&fx.h, 0, 1);
        ob_sleep_ms(400);
    }
    fx_healed(&fx);
    fx_load_wait_done(&fx, obh_ms(30000));
    fx_verify(&fx, obh_ms(5000));
    fx_assert_clean(&fx);
    cr_assert_eq(fx.res.acked, 10, "the seed exercise's 10 orders: %ld acknowledged", fx.res.acked);
    cr_assert_gt(atomic_load(&fx.sh->attempts), 10, "no request ever met the failing database");
    cr_assert_leq(fx.converge_s, obh_ms(5000) / 1000.0, "totals equal after %.1f s", fx.converge_s);
}

Test(fault, s02_orders_db_down_10s, .init = setup, .fini = teardown, .timeout = 600)
{
    fx_load_opts_t o = steady;

    o.retries = 0;    /* every 503 is recorded as such */
    begin("2 orders db down 10 s", "", &o, 100);
    obh_db_allow(&fx.h, 0, 0);
    ob_sleep_ms(10000);
    obh_db_allow(&fx.h, 0, 1);
    finish(100, 30000);
    cr_assert_gt(fx.res.unavailable, 0, "the outage never reached a client");
}

static void
scenario_kafka_kill(const char *name, const char *extra)
{
    begin(name, extra, &steady, 100);
    kafka_kill();
    wait_acked(100);    /* intake goes on without Kafka */
    ob_sleep_ms(fx_n(&fx, 3000, 15000));
    fx_kafka_restart();
    finish(100, 90000);
}

Test(fault, s04_kafka_killed_and_restarted, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_kafka_kill("4 kafka kill -9, restart", "");
}

static void
scenario_kill_relays(const char *name, const char *extra)
{
    /* more workers in the long tier keep each one's crash backoff short */
    int  n = fx_n(&fx, 2, 4);
    char conf[128];

    snprintf(conf, sizeof(conf), "%s[workers]\nrelays = %d\n", extra, n);
    begin(name, conf, &steady, 50);
    kill_loop(OB_KIND_RELAY, n, fx_n(&fx, 8, 24));
    finish(0, 60000);
}

Test(fault, s06_kill_relay_loop, .init = setup, .fini = teardown, .timeout = 900)
{
    scenario_kill_relays("6 kill -9 relay, loop", "");
}

Test(fault, s07_kill_consumer_loop, .init = setup, .fini = teardown, .timeout = 900)
{
    int n = fx_n(&fx, 2, 4);

    begin("7 kill -9 consumer, loop", n == 2 ? "[workers]\nconsumers = 2\n" : "[workers]\nconsumers = 4\n",
          &steady, 50);
    kill_loop(OB_KIND_CONSUMER, n, fx_n(&fx, 8, 24));
    finish(0, 60000);
}

static int
relays_are(obh_t *h, void *arg)
{
    int want = *(int *) arg;

    if (obh_count(h, OB_KIND_RELAY) != want)
        return 0;
    for (int i = 0; i < want; i++) {
        ob_shm_slot_t s;
        if (obh_worker(h, OB_KIND_RELAY, i, &s) < 0 || s.state != OB_SLOT_RUNNING)
            return 0;
    }
    return 1;
}

static void
reload_relays(const char *extra, int n)
{
    char conf[128];

    snprintf(conf, sizeof(conf), "%s[workers]\nrelays = %d\n", extra, n);
    obh_write_conf(&fx.h, conf);
    kill(fx.h.pid, SIGHUP);
    cr_assert(obh_poll(relays_are, &fx.h, &n, obh_ms(60000)), "relays never became %d; log %s", n, fx.h.log);
    wait_acked(50);
}

static void
scenario_reload_relays(const char *name, const char *extra)
{
    char conf[128];

    snprintf(conf, sizeof(conf), "%s[workers]\nrelays = 2\n", extra);
    begin(name, conf, &steady, 50);
    for (int round = 0; round < fx_n(&fx, 1, 3); round++) {
        reload_relays(extra, 4);
        reload_relays(extra, 1);
        reload_relays(extra, 2);
    }
    finish(0, 60000);
}

Test(fault, s10_reload_relays_2_4_1, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_reload_relays("10 SIGHUP relays 2->4->1", "");
}

/*
 * Negative control: the relay marks rows published whatever Kafka said, and
 * Kafka is killed for longer than the delivery timeout. The events of that
 * window are marked published and never sent: the checker must say lost.
 * Killed, not stopped: a stopped broker keeps its connection open, requests
 * already in flight then wait for socket.timeout.ms (60 s) instead of
 * expiring, and the control missed once in that form.
 */
Test(fault, nc1_relay_marks_without_acks, .init = setup, .fini = teardown, .timeout = 600)
{
    setenv("OUTBOXD_UNSAFE_FAULTS", "1", 1);
    begin("negative: relay marks without acks, kafka killed",
          "[relay]\ndelivery_timeout_ms = 1500\n[debug]\nfault = relay_mark_before_ack\n", &steady, 50);
    unsetenv("OUTBOXD_UNSAFE_FAULTS");
    kafka_killed_past_delivery_timeout();
    fx_verify(&fx, obh_ms(15000));
    fx_assert_flagged(&fx, fx.res.lost, "lost events");
    cr_assert_lt(fx.converge_s, 0, "totals converged although events were dropped");
}

static void
scenario_orders_db_restart(const char *name, const char *extra)
{
    fx.scenario = name;
    fx_start(&fx, extra);
    fx_load_start(&fx, &steady);
    for (int k = 0; k < fx_n(&fx, 1, 3); k++) {
        wait_acked(200);
        fx_pg_restart("orders");
    }
    finish(100, 60000);
}

/* ---- the same faults with relay mode wal ---------------------------------- */

#define WAL_MODE "[relay]\nmode = wal\n"

static int
relays_streaming(obh_t *h, void *arg)
{
    int relays = obh_count(h, OB_KIND_RELAY);

    (void) arg;
    for (int i = 0; i < relays; i++) {
        ob_shm_slot_t s;
        if (obh_worker(h, OB_KIND_RELAY, i, &s) < 0 || atomic_load(&s.counters[OB_CTR_RELAY_STREAMING]) == 0)
            return 0;
    }
    return relays > 0;
}

/* The run used the stream, not only polling passes, and every relay is back on it. */
static void
assert_streamed(void)
{
    cr_assert_gt(obh_log_count(&fx.h, "wal: streaming from slot"), 0, "%s: no relay ever streamed; log %s",
                 fx.scenario, fx.h.log);
    cr_assert(obh_poll(relays_streaming, &fx.h, NULL, obh_ms(30000)), "%s: not every relay streams again; log %s",
              fx.scenario, fx.h.log);
    /* marks are asynchronous in mode wal, but every row must end marked */
    cr_assert(obh_poll(outbox_drained, &fx.h, NULL, obh_ms(30000)), "%s: %lld row(s) never marked published; log %s",
              fx.scenario, obh_scalar(fx.h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published"),
              fx.h.log);
}

Test(fault, w04_wal_kafka_killed_and_restarted, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_kafka_kill("wal 4 kafka kill -9, restart", WAL_MODE);
    assert_streamed();
}

Test(fault, w06_wal_kill_relay_loop, .init = setup, .fini = teardown, .timeout = 900)
{
    scenario_kill_relays("wal 6 kill -9 relay, loop", WAL_MODE);
    assert_streamed();
}

Test(fault, w10_wal_reload_relays_2_4_1, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_reload_relays("wal 10 SIGHUP relays 2->4->1", WAL_MODE);
    assert_streamed();
}

Test(fault, w12_wal_orders_db_restarted, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_orders_db_restart("wal 12 orders db fast restart mid-stream", WAL_MODE);
    assert_streamed();
}

/*
 * A rolling change of the relay count: the instance runs with 2 relays, a
 * second one starts beside it with 3 (same databases, topic and group;
 * clients on both), is rolled back (stops) and started again, then the
 * first stops. In mode wal both instances use the same publication names:
 * the second used to re-filter them under the first one's streams, which
 * then streamed, and confirmed past, partitions they did not own, so after
 * the rollback those rows stayed pending for ever.
 */
static obh_t rolled;

static void
rolled_start(const char *extra, fx_load_opts_t *o)
{
    char conf[128];
    int  three = 3;

    snprintf(conf, sizeof(conf), "%s[workers]\nrelays = 3\n", extra);
    obh_write_conf(&rolled, conf);
    obh_start(&rolled, NULL);
    o->port = rolled.orders_port;
    fx_load_start(&fx, o);
    cr_assert(obh_poll(relays_are, &rolled, &three, obh_ms(60000)), "second instance's relays not up; log %s",
              rolled.log);
    wait_acked(fx_n(&fx, 100, 400));
}

static void
scenario_rolling_relay_count(const char *name, const char *extra)
{
    fx_load_opts_t o = steady;
    char           conf[128];

    snprintf(conf, sizeof(conf), "%s[workers]\nrelays = 2\n", extra);
    o.clients = 2;
    fx.scenario = name;
    fx_start(&fx, conf);
    fx_load_start(&fx, &o);
    wait_acked(50);
    obh_init_twin(&rolled, &fx.h);
    rolled_start(extra, &o);
    cr_assert(obh_stop(&rolled, obh_ms(20000)) >= 0, "second instance did not stop");   /* rolled back */
    wait_acked(fx_n(&fx, 100, 400));
    rolled_start(extra, &o);
    cr_assert(obh_stop(&fx.h, obh_ms(20000)) >= 0, "first instance did not stop");
    wait_acked(fx_n(&fx, 100, 400));
}

/* The second instance owns everything, and in mode wal streams it. */
static void
rolled_finish(int wal)
{
    finish(0, 60000);
    if (wal) {
        cr_assert(obh_poll(relays_streaming, &rolled, NULL, obh_ms(30000)), "%s: the second instance's relays do not "
                                                                             "all stream; log %s",
                  fx.scenario, rolled.log);
        cr_assert_gt(obh_log_count(&rolled, "wal: streaming from slot"), 0);
    }
    cr_assert(obh_poll(outbox_drained, &rolled, NULL, obh_ms(30000)), "%s: %lld row(s) left pending; log %s",
              fx.scenario, obh_scalar(fx.h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published"),
              rolled.log);
    obh_stop(&rolled, obh_ms(20000));
    if (rolled.shm != NULL)
        ob_shm_close(rolled.shm, 0);
}

Test(fault, s15_rolling_relay_count, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_rolling_relay_count("15 rolling change: relays 2, beside it 3, rolled back, again, the first stops", "");
    rolled_finish(0);
}

Test(fault, w15_wal_rolling_relay_count, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_rolling_relay_count("wal 15 rolling change: relays 2, beside it 3, rolled back, again, the first stops",
                                 WAL_MODE);
    rolled_finish(1);
}

/* ---- long tier (make chaos) ------------------------------------------- */

Test(fault_long, s03_ledger_db_down_20s, .init = setup, .fini = teardown, .timeout = 600)
{
    begin("3 ledger db down 20 s", "", &steady, 100);
    obh_db_allow(&fx.h, 1, 0);
    ob_sleep_ms(20000);
    obh_db_allow(&fx.h, 1, 1);
    finish(100, 60000);
}

static void
scenario_kafka_stopped(const char *name, const char *extra)
{
    begin(name, extra, &steady, 100);
    pid_t kafka = obh_kafka_pid();
    kill(kafka, SIGSTOP);
    ob_sleep_ms(30000);
    kill(kafka, SIGCONT);
    finish(100, 90000);
}

Test(fault_long, s05_kafka_stopped_30s, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_kafka_stopped("5 kafka unreachable 30 s (SIGSTOP)", "");
}

/* Past the watchdog and past wal_sender_timeout's reach: the stream must stall, not die or lose. */
Test(fault_long, w05_wal_kafka_stopped_30s, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_kafka_stopped("wal 5 kafka unreachable 30 s (SIGSTOP)", WAL_MODE);
    assert_streamed();
}

Test(fault_long, s08_kill_http_loop, .init = setup, .fini = teardown, .timeout = 900)
{
    begin("8 kill -9 HTTP worker under load", "[workers]\nhttp = 3\n", &steady, 50);
    kill_loop(OB_KIND_HTTP, 3, fx_n(&fx, 8, 18));
    finish(0, 60000);
}

Test(fault_long, s09_relay_stopped_past_watchdog, .init = setup, .fini = teardown, .timeout = 600)
{
    begin("9 SIGSTOP relay past the watchdog", "[supervisor]\nwatchdog_s = 3\n[workers]\nrelays = 2\n", &steady, 50);
    for (int k = 0; k < fx_n(&fx, 1, 3); k++) {
        ob_shm_slot_t s;
        cr_assert(obh_wait_worker(&fx.h, OB_KIND_RELAY, 0, 0, obh_ms(60000)) > 0);
        cr_assert_geq(obh_worker(&fx.h, OB_KIND_RELAY, 0, &s), 0);
        kill(s.pid, SIGSTOP);
        /* the watchdog must notice the silence and replace it */
        cr_assert(obh_wait_worker(&fx.h, OB_KIND_RELAY, 0, s.pid, obh_ms(30000)) > 0, "stopped relay not replaced");
        wait_acked(50);
    }
    finish(0, 60000);
}

Test(fault_long, s11_supervisor_killed_and_restarted, .init = setup, .fini = teardown, .timeout = 600)
{
    fx_load_opts_t o = steady;

    o.retries = 40;    /* clients ride out the gap with the same keys */
    fx.scenario = "11 kill -9 supervisor, start again";
    fx_start(&fx, "");
    fx_load_start(&fx, &o);
    for (int k = 0; k < fx_n(&fx, 1, 3); k++) {
        pid_t workers[OB_SHM_SLOTS];
        int   n = 0;
        wait_acked(100);
        for (int i = 0; i < OB_SHM_SLOTS; i++) {
            pid_t p = fx.h.shm->map->slots[i].pid;
            if (p > 0)
                workers[n++] = p;
        }
        kill(fx.h.pid, SIGKILL);
        waitpid(fx.h.pid, NULL, 0);
        fx.h.pid = 0;
        for (int i = 0; i < n; i++)
            for (int64_t until = ob_now_ms() + 10000; obh_alive(workers[i]) && ob_now_ms() < until;)
                ob_sleep_ms(20);
        for (int i = 0; i < n; i++)
            cr_assert(!obh_alive(workers[i]), "worker %d outlived its supervisor", (int) workers[i]);
        obh_start(&fx.h, NULL);
    }
    finish(100, 60000);
}

Test(fault_long, s12_orders_db_restarted, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_orders_db_restart("12 orders db fast restart mid-batch", "");
}

static int
quarantined(obh_t *h, void *arg)
{
    (void) arg;
    return obh_scalar(h->orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine") == 1;
}

Test(fault_long, s13_poison_event, .init = setup, .fini = teardown, .timeout = 600)
{
    fx.scenario = "13 poison (oversized) event among traffic";
    fx_start(&fx, "");
    cr_assert(obh_wait_worker(&fx.h, OB_KIND_RELAY, 0, 0, obh_ms(20000)) > 0, "no relay (it creates the topic)");
    obh_kafka_set_max_message_bytes(&fx.h, 4096);
    fx_load_start(&fx, &steady);
    wait_acked(50);
    /* an event too large for the topic, for an order of its own */
    obh_sql(fx.h.orders_dsn,
            "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload) "
            "VALUES (gen_random_uuid(), 'order', gen_random_uuid()::text, 1, 'order.created', 5, "
            "decode(repeat('ab', 8000), 'hex'))");
    cr_assert(obh_poll(quarantined, &fx.h, NULL, obh_ms(60000)), "poison event not quarantined; log %s", fx.h.log);
    wait_acked(100);    /* traffic in its partition and the others goes on */
    finish(0, 60000);
}

/* Partitions held by the relays of one instance, from its shm. */
static int
owned(const obh_t *h)
{
    int n = 0;

    for (int p = 0; p < h->partitions; p++)
        n += atomic_load(&h->shm->map->parts[p].owner_slot) >= 0;
    return n;
}

static obh_t twin;

/* Relays of h holding partition p by their own bitmaps (a killed relay's partition row is not reset). */
static int
holders(const obh_t *h, int p)
{
    int n = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t *s = &h->shm->map->slots[i];
        n += s->kind == OB_KIND_RELAY && s->state == OB_SLOT_RUNNING && ob_shm_is_owned(s, p);
    }
    return n;
}

/* Every partition held by exactly one relay of the two instances, half by each (two relays each: they share). */
static int
covered_once(obh_t *h, void *arg)
{
    int here = 0;

    (void) arg;
    for (int p = 0; p < h->partitions; p++) {
        if (holders(h, p) + holders(&twin, p) != 1)
            return 0;
        here += holders(h, p);
    }
    return here == h->partitions / 2;
}

Test(fault_long, s14_second_instance, .init = setup, .fini = teardown, .timeout = 600)
{
    fx_load_opts_t o = steady;
    ob_shm_slot_t  s;

    fx.scenario = "14 second instance, same dbs and topic";
    fx_start(&fx, "[workers]\nrelays = 2\n");
    obh_init_twin(&twin, &fx.h);
    obh_write_conf(&twin, "[workers]\nrelays = 2\n");
    obh_start(&twin, NULL);
    cr_assert(obh_wait_worker(&twin, OB_KIND_RELAY, 1, 0, obh_ms(30000)) > 0, "second instance's relays not up");
    cr_assert(obh_poll(covered_once, &fx.h, NULL, obh_ms(30000)), "partitions not split: %d here, %d there",
              owned(&fx.h), owned(&twin));
    o.clients = 2;
    fx_load_start(&fx, &o);
    o.port = twin.orders_port;
    fx_load_start(&fx, &o);
    wait_acked(fx_n(&fx, 100, 500));
    /* a relay of the first dies: the other three share its partitions, never two at once, and it takes its share back */
    cr_assert_geq(obh_worker(&fx.h, OB_KIND_RELAY, 0, &s), 0);
    kill(s.pid, SIGKILL);
    cr_assert(obh_wait_worker(&fx.h, OB_KIND_RELAY, 0, s.pid, obh_ms(60000)) > 0, "no successor; log %s", fx.h.log);
    cr_assert(obh_poll(covered_once, &fx.h, NULL, obh_ms(60000)), "partitions not held once each: %d here, %d there",
              owned(&fx.h), owned(&twin));
    wait_acked(fx_n(&fx, 300, 1500));
    cr_assert(obh_stop(&twin, obh_ms(20000)) >= 0, "second instance did not stop");
    if (twin.shm != NULL)
        ob_shm_close(twin.shm, 0);
    finish(0, 60000);
}

/* Offsets the ledger group committed, summed over the partitions. */
static long
committed_sum(obh_t *h)
{
    char             err[256], group[128];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    long             sum = 0;

    snprintf(group, sizeof(group), "ledger-%s", h->tag);
    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(h->partitions);
    for (int p = 0; p < h->partitions; p++)
        rd_kafka_topic_partition_list_add(tp, h->topic, p);
    if (rd_kafka_committed(c, tp, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < tp->cnt; i++)
            sum += tp->elems[i].offset > 0 ? (long) tp->elems[i].offset : 0;
    rd_kafka_topic_partition_list_destroy(tp);
    rd_kafka_destroy(c);
    return sum;
}

static int
committed_ahead(obh_t *h, void *arg)
{
    ob_shm_slot_t s;

    (void) arg;
    if (obh_worker(h, OB_KIND_CONSUMER, 0, &s) < 0)
        return 0;
    return committed_sum(h) > (long) atomic_load(&s.counters[OB_CTR_CONS_APPLIED]);
}

/*
 * Negative control: the consumer commits offsets before applying. The
 * ledger goes away, the consumer holds a committed-but-unapplied batch, and
 * is killed: its successor starts after that batch, which is never booked.
 */
Test(fault_long, nc2_consumer_commits_before_apply, .init = setup, .fini = teardown, .timeout = 600)
{
    setenv("OUTBOXD_UNSAFE_FAULTS", "1", 1);
    begin("negative: consumer commits before apply, killed during ledger outage",
          "[workers]\nconsumers = 1\n[debug]\nfault = consumer_commit_before_apply\n", &steady, 50);
    unsetenv("OUTBOXD_UNSAFE_FAULTS");
    obh_db_allow(&fx.h, 1, 0);
    wait_acked(50);
    cr_assert(obh_poll(outbox_drained, &fx.h, NULL, obh_ms(30000)), "relay did not publish the outage's events");
    /* the bug's window: offsets committed past what the ledger booked */
    cr_assert(obh_poll(committed_ahead, &fx.h, NULL, obh_ms(30000)), "consumer never committed ahead of the ledger");
    pid_t old = fx_kill_worker(&fx, OB_KIND_CONSUMER, 0, SIGKILL);
    cr_assert(obh_wait_worker(&fx.h, OB_KIND_CONSUMER, 0, old, obh_ms(30000)) > 0);
    obh_db_allow(&fx.h, 1, 1);
    fx_healed(&fx);
    wait_acked(50);
    fx_verify(&fx, obh_ms(15000));
    fx_assert_flagged(&fx, fx.res.lost, "lost events");
}

/* ---- foreign writers: any service calling outboxd.emit ------------------------ */

/*
 * A relay-only instance (no orders API, no ledger) with [routes] sending
 * product and stock events to topics of their own and coupon, unrouted, to
 * [kafka] topic; four SQL clients emit all three types in transactions of
 * their own, a tenth rolled back, on twelve ids per type so they contend on
 * the same aggregates.
 */
static const char *const emit_types[] = { "product", "stock", "coupon" };
static const char *const emit_routed[] = { "product", "stock" };
static const fx_emit_opts_t emit_writers = { .writers = 4, .aggregates = 12, .rollback_pct = 10, .pace_ms = 5,
                                             .types = emit_types, .ntypes = 3 };
static char emit_topics[3][128];

static int
some_published(obh_t *h, void *arg)
{
    (void) arg;
    return obh_scalar(h->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE published") > 0;
}

static void
emit_begin(const char *name, const char *extra, int relays, int unsafe)
{
    char conf[768];

    fx.scenario = name;
    snprintf(emit_topics[0], sizeof(emit_topics[0]), "%s-product", fx.h.topic);
    snprintf(emit_topics[1], sizeof(emit_topics[1]), "%s-stock", fx.h.topic);
    snprintf(emit_topics[2], sizeof(emit_topics[2]), "%s", fx.h.topic);
    snprintf(conf, sizeof(conf), "%s[workers]\nhttp = 0\nconsumers = 0\nrelays = %d\n[routes]\nproduct = %s\nstock = %s\n",
             extra, relays, emit_topics[0], emit_topics[1]);
    obh_write_conf(&fx.h, conf);
    if (unsafe)
        setenv("OUTBOXD_UNSAFE_FAULTS", "1", 1);
    obh_start(&fx.h, NULL);
    unsetenv("OUTBOXD_UNSAFE_FAULTS");
    for (int i = 0; i < relays; i++)
        cr_assert(obh_wait_worker(&fx.h, OB_KIND_RELAY, i, 0, obh_ms(20000)) > 0, "relay %d never ran; log %s", i,
                  fx.h.log);
    fx_emit_start(&fx, &emit_writers);
    wait_acked(50);
    /* the writers' commits need no relay: the faults must meet relays that publish, not ones still starting */
    cr_assert(obh_poll(some_published, &fx.h, NULL, obh_ms(30000)), "%s: nothing published before the faults; log %s",
              fx.scenario, fx.h.log);
}

static long
emit_verify(obe_result_t *r, int converge_ms)
{
    const char *topics[3] = { emit_topics[0], emit_topics[1], emit_topics[2] };

    return fx_emit_verify(&fx, topics, emit_routed, 3, obh_ms(converge_ms), r);
}

/* kill -9 of relays in a loop, then of Kafka, while the writers go on. */
static void
scenario_emit(const char *name, const char *extra)
{
    int          relays = fx_n(&fx, 2, 4);
    obe_result_t r;

    emit_begin(name, extra, relays, 0);
    kill_loop(OB_KIND_RELAY, relays, fx_n(&fx, 6, 16));
    kafka_kill();
    wait_acked(100);    /* the writers' transactions need no broker */
    ob_sleep_ms(fx_n(&fx, 3000, 10000));
    fx_kafka_restart();
    kill_loop(OB_KIND_RELAY, relays, 2);    /* and relays killed again while they reconnect */
    fx_healed(&fx);
    emit_verify(&r, 90000);
    fx_emit_assert_clean(&fx, &r);
}

Test(fault, e1_emit_writers_kill_relays_and_kafka, .init = setup, .fini = teardown, .timeout = 900)
{
    scenario_emit("e1 emit writers: kill -9 relays, loop, then kafka", "");
}

Test(fault, we1_wal_emit_writers_kill_relays_and_kafka, .init = setup, .fini = teardown, .timeout = 900)
{
    scenario_emit("wal e1 emit writers: kill -9 relays, loop, then kafka", WAL_MODE);
    assert_streamed();
}

/* The checker of foreign writers sees a relay that marks without acks. */
Test(fault_long, nc3_emit_relay_marks_without_acks, .init = setup, .fini = teardown, .timeout = 600)
{
    obe_result_t r;

    emit_begin("negative: emit writers, relay marks without acks, kafka killed",
               "[relay]\ndelivery_timeout_ms = 1500\n[debug]\nfault = relay_mark_before_ack\n", 2, 1);
    kafka_killed_past_delivery_timeout();
    emit_verify(&r, 15000);
    fx_emit_assert_flagged(&fx, &r, r.lost, "lost events");
}
