/*
 * tests/fault/test_ha.c: the production-topology tier, on a three-node
 * KRaft cluster (scripts/kafka_ha.sh: replication factor 3,
 * min.insync.replicas 2, unclean leader election off). `make chaos-ha`
 * brings the cluster up and runs suite fault_ha with OB_TEST_BROKERS set;
 * without it every scenario here skips, so `make chaos` passes over them.
 *
 * Each scenario runs the same clients and checker as the fault suite, in
 * both relay modes. A node is lost while orders flow; the scenario asserts
 * that publishing goes on while it is away (a lost node stops nothing),
 * brings it back, waits until every partition has three in-sync replicas
 * again, and then requires a clean run.
 *
 * Sleeps are never synchronisation here: leadership, ISR and progress are
 * polled.
 */
#include "tests/fault/fault.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static fx_t fx;
static char scenario[160];

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

static const fx_load_opts_t steady = { .clients = 4, .pace_ms = 15, .cancel_pct = 20, .timeout_ms = 5000, .retries = 8 };

#define WAL_MODE "[relay]\nmode = wal\n"

/* scripts/kafka_ha.sh with args; its first line of output into out (when given). */
static void
ha(const char *args, char *out, size_t outlen)
{
    char  cmd[160], line[128] = "";
    FILE *p;
    int   st;

    snprintf(cmd, sizeof(cmd), "bash scripts/kafka_ha.sh %s 2>&1", args);
    p = popen(cmd, "r");
    cr_assert_not_null(p, "%s", cmd);
    if (fgets(line, sizeof(line), p) != NULL)
        while (getc(p) != EOF)
            ;
    st = pclose(p);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s failed: %s", cmd, line);
    if (out != NULL) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(out, outlen, "%s", line);
    }
}

static void
need_cluster(void)
{
    if (getenv("OB_TEST_BROKERS") == NULL)
        cr_skip_test("no HA cluster (make chaos-ha sets OB_TEST_BROKERS)");
}

static long long
published(void)
{
    return obh_scalar(fx.h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE published");
}

/* While a node is away: acknowledged orders keep reaching Kafka. */
static void
assert_publishing(const char *while_what)
{
    long long before = published(), want = fx.long_tier ? 400 : 100;

    for (int64_t until = ob_now_ms() + obh_ms(60000); published() < before + want;) {
        cr_assert_lt(ob_now_ms(), until, "%s: fewer than %lld events published in 60 s while %s; log %s", fx.scenario,
                     want, while_what, fx.h.log);
        ob_sleep_ms(100);
    }
}

/* The node leading most of the topic's partitions (ties: the lowest id). */
static int
busiest_leader(int *count)
{
    int leads[4], isr, best = 1;

    for (int64_t until = ob_now_ms() + obh_ms(30000); obh_kafka_leaders(&fx.h, leads, &isr) != 0 || leads[0] > 0;) {
        cr_assert_lt(ob_now_ms(), until, "the topic never had a leader for every partition");
        ob_sleep_ms(200);
    }
    for (int b = 2; b <= 3; b++)
        if (leads[b] > leads[best])
            best = b;
    *count = leads[best];
    return best;
}

/* Polls until no partition is led by node gone (nor leaderless); returns the seconds it took from t0. */
static double
wait_leaders_moved(int gone, int64_t t0)
{
    int leads[4], isr;

    for (int64_t until = ob_now_ms() + obh_ms(60000);
         obh_kafka_leaders(&fx.h, leads, &isr) != 0 || leads[gone] > 0 || leads[0] > 0;) {
        cr_assert_lt(ob_now_ms(), until, "%s: leadership never left node %d", fx.scenario, gone);
        ob_sleep_ms(100);
    }
    return (double) (ob_now_ms() - t0) / 1000.0;
}

/* Polls until every partition has all three replicas in sync again. */
static void
wait_full_isr(void)
{
    int leads[4], isr = 0;

    for (int64_t until = ob_now_ms() + obh_ms(120000); obh_kafka_leaders(&fx.h, leads, &isr) != 0 || isr < 3;) {
        cr_assert_lt(ob_now_ms(), until, "%s: the ISR never grew back to 3 (least %d)", fx.scenario, isr);
        ob_sleep_ms(200);
    }
}

static void
kill_node(int n)
{
    pid_t pid = obh_kafka_node_pid(n);

    cr_assert_gt(pid, 0, "node %d is not running", n);
    kill(pid, SIGKILL);
    for (int64_t until = ob_now_ms() + 30000; obh_alive(pid) && ob_now_ms() < until;)
        ob_sleep_ms(50);
    cr_assert(!obh_alive(pid), "node %d survived SIGKILL", n);
}

/* The scenario's name is in `scenario`, and is rewritten with its figures before finish(). */
static void
begin(const char *extra)
{
    need_cluster();
    fx.scenario = scenario;
    fx_start(&fx, extra);
    fx_load_start(&fx, &steady);
    cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: no traffic; log %s", fx.scenario, fx.h.log);
    wait_full_isr();
    /* the fault meets the stream, not the polling pass before it (whose rows the stream sends again) */
    if (strstr(extra, "wal") != NULL)
        obh_wait_streaming(&fx.h, obh_count(&fx.h, OB_KIND_RELAY));
}

static void
finish(void)
{
    wait_full_isr();
    fx_healed(&fx);
    cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: traffic did not resume; log %s", fx.scenario, fx.h.log);
    fx_verify(&fx, obh_ms(60000));
    fx_assert_clean(&fx);
}

/* 1: kill -9 of the node leading most partitions, under load; restarted later. */
static void
scenario_leader_killed(const char *mode, const char *extra)
{
    int     n, led;
    double  moved;
    int64_t t0;

    snprintf(scenario, sizeof(scenario), "%sha 1 partition leader kill -9, restart", mode);
    begin(extra);
    n = busiest_leader(&led);
    t0 = ob_now_ms();
    kill_node(n);
    moved = wait_leaders_moved(n, t0);
    assert_publishing("a node is dead");
    ha("up", NULL, 0);
    snprintf(scenario, sizeof(scenario), "%sha 1 leader of %d/12 killed (moved in %.1f s), restart", mode, led, moved);
    cr_log_info("%s", scenario);
    finish();
}

Test(fault_ha, h1_partition_leader_killed, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_leader_killed("", "");
}

Test(fault_ha, wh1_wal_partition_leader_killed, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_leader_killed("wal ", WAL_MODE);
}

/* 2: each node in turn: controlled shutdown, publishing goes on, start, ISR full again. */
static void
scenario_rolling_restart(const char *mode, const char *extra)
{
    char arg[16];

    snprintf(scenario, sizeof(scenario), "%sha 2 rolling restart of 3 brokers", mode);
    begin(extra);
    for (int n = 1; n <= 3; n++) {
        snprintf(arg, sizeof(arg), "stop %d", n);
        ha(arg, NULL, 0);
        assert_publishing("a node is stopped");
        ha("up", NULL, 0);
        wait_full_isr();
    }
    finish();
}

Test(fault_ha, h2_rolling_restart, .init = setup, .fini = teardown, .timeout = 900)
{
    scenario_rolling_restart("", "");
}

Test(fault_ha, wh2_wal_rolling_restart, .init = setup, .fini = teardown, .timeout = 900)
{
    scenario_rolling_restart("wal ", WAL_MODE);
}

/* 3: kill -9 of the active KRaft controller (combined mode: a broker too). */
static void
scenario_controller_killed(const char *mode, const char *extra)
{
    char    was[16], now[16];
    int64_t t0;
    double  elected;

    snprintf(scenario, sizeof(scenario), "%sha 3 active controller kill -9, restart", mode);
    begin(extra);
    ha("controller", was, sizeof(was));
    cr_assert(atoi(was) >= 1 && atoi(was) <= 3, "no active controller: %s", was);
    t0 = ob_now_ms();
    kill_node(atoi(was));
    for (int64_t until = ob_now_ms() + obh_ms(60000);;) {
        ha("controller", now, sizeof(now));
        if (atoi(now) >= 1 && strcmp(now, was) != 0)
            break;
        cr_assert_lt(ob_now_ms(), until, "%s: no new controller after node %s died", fx.scenario, was);
    }
    elected = (double) (ob_now_ms() - t0) / 1000.0;
    wait_leaders_moved(atoi(was), t0);
    assert_publishing("the controller is dead");
    ha("up", NULL, 0);
    snprintf(scenario, sizeof(scenario), "%sha 3 controller %s killed (node %s elected in %.1f s), restart", mode, was,
             now, elected);
    cr_log_info("%s", scenario);
    finish();
}

Test(fault_ha, h3_controller_killed, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_controller_killed("", "");
}

Test(fault_ha, wh3_wal_controller_killed, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_controller_killed("wal ", WAL_MODE);
}
