/*
 * tests/fault/test_failover.c: the production-topology tier's orders
 * failover scenarios, on scripts/pg_ha.sh's pair (a primary and a streaming
 * standby, synchronous unless a scenario says otherwise). `make chaos-ha`
 * brings the pair up and sets OB_TEST_ORDERS_HOSTS; every outboxd here then
 * reaches orderdb by a multi-host DSN with target_session_attrs=read-write,
 * so it finds the promoted standby by itself. Without the pair every
 * scenario skips.
 *
 * Each scenario starts from a fresh pair (reset), runs the fault suite's
 * clients and checker, kills the primary and promotes the standby.
 * Convergence is measured from the promotion.
 */
#include "tests/fault/fault.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fx_t fx;
static char scenario[200];

/* scripts/pg_ha.sh with args; asserts it succeeded. */
static void
pair(const char *args)
{
    char cmd[160];
    int  st;

    snprintf(cmd, sizeof(cmd), "bash scripts/pg_ha.sh %s", args);
    st = obh_shell(cmd);
    cr_assert_eq(st, 0, "%s failed (status %d)", cmd, st);
}

static void
setup_sync(void)
{
    if (obh_orders_ha())
        pair("reset --sync");
    fx_setup(&fx, "?");
}

static void
setup_async(void)
{
    if (obh_orders_ha())
        pair("reset --async");
    fx_setup(&fx, "?");
}

static void
teardown(void)
{
    if (obh_orders_ha())
        pair("cont");     /* a scenario that failed with a node frozen must not leave it so */
    fx_teardown(&fx);
}

static const fx_load_opts_t steady = { .clients = 4, .pace_ms = 15, .cancel_pct = 20, .timeout_ms = 5000, .retries = 8 };
/* a few acknowledged orders, then nothing: the scenario's own request is the one that matters */
static const fx_load_opts_t few = { .clients = 1, .pace_ms = 5, .max_requests = 20, .timeout_ms = 5000, .retries = 8 };

#define WAL_MODE "[relay]\nmode = wal\n"

static void
need_pair(void)
{
    if (!obh_orders_ha())
        cr_skip_test("no orders pair (make chaos-ha sets OB_TEST_ORDERS_HOSTS)");
}

static uint64_t
relays_sum(int ctr)
{
    uint64_t s = 0;

    for (int i = 0; i < obh_count(&fx.h, OB_KIND_RELAY); i++)
        s += obh_relay_counter(&fx.h, i, ctr);
    return s;
}

static void
begin(const char *extra, const fx_load_opts_t *load)
{
    need_pair();
    fx.scenario = scenario;
    fx_start(&fx, extra);
    fx_load_start(&fx, load);
    if (load->max_requests > 0)
        fx_load_wait_done(&fx, obh_ms(60000));
    else
        cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: no traffic; log %s", fx.scenario, fx.h.log);
    if (strstr(extra, "wal") != NULL)
        obh_wait_streaming(&fx.h, obh_count(&fx.h, OB_KIND_RELAY));
}

/* kill -9 of the primary, then the standby promoted; returns the seconds from the kill to a serving primary. */
static double
fail_over(void)
{
    int64_t t0 = ob_now_ms();

    pair("kill-primary");
    pair("promote");
    fx_healed(&fx);
    return (double) (ob_now_ms() - t0) / 1000.0;
}

/* Mode wal: the slot is not on the promoted standby; the relays make it again and stream. */
static void
assert_streaming_again(void)
{
    obh_wait_streaming(&fx.h, obh_count(&fx.h, OB_KIND_RELAY));
    cr_assert_gt(relays_sum(OB_CTR_RELAY_SLOT_INVALIDATIONS), 0, "%s: no relay saw its slot gone; log %s",
                 fx.scenario, fx.h.log);
}

/* 4: kill -9 of the orders primary under load, synchronous standby promoted. */
static void
scenario_primary_killed(const char *mode, const char *extra)
{
    double   took, barrier_us;
    uint64_t published;

    snprintf(scenario, sizeof(scenario), "%spg 4 orders primary kill -9, sync standby promoted", mode);
    begin(extra, &steady);
    cr_assert_eq(relays_sum(OB_CTR_RELAY_BARRIER), (uint64_t) obh_count(&fx.h, OB_KIND_RELAY),
                 "%s: the barrier is not on with a synchronous standby; log %s", fx.scenario, fx.h.log);
    /* 100 acknowledged is not 100 published: measured before any was, the figure read 0 us per event */
    for (int64_t t0 = ob_now_ms(); (published = relays_sum(OB_CTR_RELAY_PUBLISHED) +
                                                relays_sum(OB_CTR_RELAY_STREAMED)) < 100;
         ob_sleep_ms(20))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(30000), "%s: %llu events published in 30 s; log %s", fx.scenario,
                     (unsigned long long) published, fx.h.log);
    barrier_us = (double) relays_sum(OB_CTR_RELAY_BARRIER_US) / (double) published;
    took = fail_over();
    cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: traffic did not resume on the new primary; log %s",
              fx.scenario, fx.h.log);
    if (strstr(extra, "wal") != NULL)
        assert_streaming_again();
    snprintf(scenario, sizeof(scenario),
             "%spg 4 orders primary kill -9, sync standby promoted (serving %.1f s after the kill; barrier %.0f us"
             " per event)",
             mode, took, barrier_us);
    cr_log_info("%s", scenario);
    fx_verify(&fx, obh_ms(60000));
    fx_assert_clean(&fx);
}

Test(fault_ha, p4_orders_primary_killed_sync_standby_promoted, .init = setup_sync, .fini = teardown, .timeout = 600)
{
    scenario_primary_killed("", "");
}

Test(fault_ha, wp4_wal_orders_primary_killed_sync_standby_promoted, .init = setup_sync, .fini = teardown,
     .timeout = 600)
{
    scenario_primary_killed("wal ", WAL_MODE);
}

/* The create the scenario makes while the standby is cut off (the only EUR one: the clients use USD). */
typedef struct {
    int port;
    int status;
} create_t;

static void *
create_one(void *arg)
{
    create_t *c = arg;
    char      resp[1024];

    c->status = obh_http(c->port, "POST", "/orders", NULL, "{\"customerId\":\"pg4\",\"amount\":7,\"currency\":\"EUR\"}",
                         resp, sizeof(resp), NULL, 0);
    return NULL;
}

/* Cancels the wait of an HTTP worker's backend waiting for the standby (as a client giving up would; the
 * relays' own waits are left alone); 1 once one was. */
static int
cancel_sync_wait(obh_t *hh, void *arg)
{
    char sql[256], admin[256];

    (void) arg;
    obh_orders_dsn(admin, sizeof(admin), "postgres");
    snprintf(sql, sizeof(sql),
             "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE datname = '%s' AND wait_event = 'SyncRep'"
             " AND application_name LIKE 'outboxd http%%'",
             hh->orders_db);
    return obh_scalar(admin, sql) > 0;
}

/* The create's wait cancelled: answered 503, and on the primary alone. */
static void
unconfirmed_answered(pthread_t th, const create_t *c)
{
    cr_assert(obh_poll(cancel_sync_wait, &fx.h, NULL, obh_ms(20000)), "%s: the create never waited for the standby",
              fx.scenario);
    pthread_join(th, NULL);
    cr_assert_eq(c->status, 503, "%s: a create the standby never confirmed was answered %d", fx.scenario, c->status);
    cr_assert_eq(obh_scalar(fx.h.orders_dsn, "SELECT count(*) FROM orders WHERE currency = 'EUR'"), 1,
                 "%s: the create is not on the primary", fx.scenario);
}

static int
barrier_waited(obh_t *hh, void *arg)
{
    (void) hh;
    return relays_sum(OB_CTR_RELAY_BARRIER_TIMEOUTS) >= *(uint64_t *) arg;
}

/*
 * 4b: the standby cut off, so it confirms nothing; one create. Polling: its
 * wait is cancelled, so it is visible on the primary alone (answered 503).
 * Stream: the walsender sends it once flushed locally, while its client
 * still waits. Either way only the barrier keeps it out of Kafka; then the
 * primary dies and the standby, without it, is promoted. With the barrier
 * off (the negative control) the ledger books an order orderdb no longer
 * has: the checker must flag the phantom.
 */
static void
scenario_unconfirmed(const char *mode, const char *extra, int barrier)
{
    char      conf[160];
    create_t  c = { .port = fx.h.orders_port, .status = 0 };
    pthread_t th;
    int       wal = strstr(extra, "wal") != NULL;

    snprintf(scenario, sizeof(scenario), "%spg 4b standby never confirms a create, primary lost: barrier %s%s", mode,
             barrier ? "on" : "off", barrier ? "" : " (negative control)");
    snprintf(conf, sizeof(conf), "%s%s", extra, barrier ? "" : wal ? "standby_barrier = off\n" : "[relay]\nstandby_barrier = off\n");
    begin(conf, &few);
    pair("detach-standby");
    pthread_create(&th, NULL, create_one, &c);
    /* polling: invisible until its wait is cancelled; stream: sent while its client still waits */
    if (!wal)
        unconfirmed_answered(th, &c);
    if (barrier) {
        uint64_t want = relays_sum(OB_CTR_RELAY_BARRIER_TIMEOUTS) + 2;
        cr_assert(obh_poll(barrier_waited, &fx.h, &want, obh_ms(20000)), "%s: the barrier never waited; log %s",
                  fx.scenario, fx.h.log);
        cr_assert_eq(obh_scalar(fx.h.ledger_dsn, "SELECT count(*) FROM ledger_entries WHERE currency = 'EUR'"), 0,
                     "%s: booked what the standby lacks; log %s", fx.scenario, fx.h.log);
    } else
        obh_wait_scalar(&fx.h, fx.h.ledger_dsn, "SELECT count(*) FROM ledger_entries WHERE currency = 'EUR'", 1,
                        obh_ms(20000));
    if (wal)
        unconfirmed_answered(th, &c);
    fail_over();
    fx_verify(&fx, obh_ms(barrier ? 60000 : 15000));
    if (barrier)
        fx_assert_clean(&fx);
    else
        fx_assert_flagged(&fx, fx.res.phantom, "phantom");
}

Test(fault_ha, p4b_unconfirmed_create_barrier_on, .init = setup_sync, .fini = teardown, .timeout = 300)
{
    scenario_unconfirmed("", "", 1);
}

Test(fault_ha, p4n_unconfirmed_create_barrier_off_negative_control, .init = setup_sync, .fini = teardown,
     .timeout = 300)
{
    scenario_unconfirmed("", "", 0);
}

Test(fault_ha, wp4b_wal_unconfirmed_create_barrier_on, .init = setup_sync, .fini = teardown, .timeout = 300)
{
    scenario_unconfirmed("wal ", WAL_MODE, 1);
}

Test(fault_ha, wp4n_wal_unconfirmed_create_barrier_off_negative_control, .init = setup_sync, .fini = teardown,
     .timeout = 300)
{
    scenario_unconfirmed("wal ", WAL_MODE, 0);
}

/*
 * 5: an asynchronous standby, the documented negative control. It is cut
 * off while orders are acknowledged (a lagging standby, made certain),
 * then the primary dies and it is promoted: the orders acknowledged since
 * are gone, and the checker must say so.
 */
Test(fault_ha, p5_async_standby_loses_acknowledged_orders_negative_control, .init = setup_async, .fini = teardown,
     .timeout = 300)
{
    snprintf(scenario, sizeof(scenario), "pg 5 async standby lagging, primary lost (negative control)");
    begin("", &steady);
    pair("detach-standby");
    cr_assert(fx_wait_acked(&fx, 50, obh_ms(30000)), "%s: nothing acknowledged with the standby cut off", fx.scenario);
    fail_over();
    fx_verify(&fx, obh_ms(15000));
    fx_assert_flagged(&fx, fx.res.lost, "lost acknowledged order");
}

static int
all_relays_waited(obh_t *hh, void *arg)
{
    (void) hh;
    return relays_sum(OB_CTR_RELAY_BARRIER_TIMEOUTS) >= *(uint64_t *) arg;
}

/*
 * 6: split brain. The primary is stopped, not killed (SIGSTOP), the standby
 * promoted, and the old primary resumed: two primaries. Workers still
 * connected to the old one carry on there; its commits wait for a standby
 * that now follows someone else, and the relays on it, their barrier
 * unconfirmed, publish nothing it has. Then the old primary is killed, and
 * every worker finds the new one.
 */
static void
scenario_split_brain(const char *mode, const char *extra)
{
    uint64_t want;
    int64_t  t0;
    double   took;

    snprintf(scenario, sizeof(scenario), "%spg 6 old primary stopped, standby promoted, old resumed (split brain)",
             mode);
    begin(extra, &steady);
    pair("stop-primary");
    t0 = ob_now_ms();
    pair("promote");
    took = (double) (ob_now_ms() - t0) / 1000.0;
    want = relays_sum(OB_CTR_RELAY_BARRIER_TIMEOUTS) + 2 * (uint64_t) obh_count(&fx.h, OB_KIND_RELAY);
    pair("cont");
    /* the relays still on the old primary wait at the barrier while clients keep writing */
    cr_assert(obh_poll(all_relays_waited, &fx.h, &want, obh_ms(30000)),
              "%s: no relay waited on the old primary; log %s", fx.scenario, fx.h.log);
    pair("kill-old");
    fx_healed(&fx);
    cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: traffic did not resume on the new primary; log %s",
              fx.scenario, fx.h.log);
    if (strstr(extra, "wal") != NULL)
        assert_streaming_again();
    snprintf(scenario, sizeof(scenario),
             "%spg 6 old primary stopped, standby promoted in %.1f s, old resumed (split brain), then killed", mode,
             took);
    cr_log_info("%s", scenario);
    fx_verify(&fx, obh_ms(60000));
    fx_assert_clean(&fx);
}

Test(fault_ha, p6_split_brain_old_primary_resumed, .init = setup_sync, .fini = teardown, .timeout = 600)
{
    scenario_split_brain("", "");
}

Test(fault_ha, wp6_wal_split_brain_old_primary_resumed, .init = setup_sync, .fini = teardown, .timeout = 600)
{
    scenario_split_brain("wal ", WAL_MODE);
}
