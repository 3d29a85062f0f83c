/*
 * tests/fault/test_partition.c: the production-topology tier's network
 * partitions. Application hosts are network namespaces of
 * scripts/netns.sh (ob-h1, ob-h2, each its own address, reaching the stack
 * at the same 127.0.0.1 addresses); a cut is iptables DROP inside one, so
 * its established sessions go silent as with a pulled cable. `make chaos-ha`
 * brings the hosts up and sets OB_TEST_NETNS; without them every scenario
 * skips.
 *
 * Shape: the fixture's instance, in this namespace, serves the clients and
 * runs the consumers but no relay; host A (ob-h1) starts first and so holds
 * every partition; host B (ob-h2) runs the same relays and waits for the
 * locks. Scenario 9 serves the clients from A instead. Convergence is
 * measured from the heal.
 */
#include "tests/fault/fault.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fx_t  fx;
static obh_t host_a, host_b;
static char  scenario[240];

/* short enough to keep the scenarios short; the default is 10 */
#define PEER_TIMEOUT_S 6
#define HOST_RELAYS    "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n[postgres]\npeer_timeout_s = 6\n"
#define HOST_SERVING   "[workers]\nhttp = 2\nrelays = 2\nconsumers = 0\n[postgres]\npeer_timeout_s = 6\n"
#define WAL_MODE       "[relay]\nmode = wal\n"

static const fx_load_opts_t steady = { .clients = 4, .pace_ms = 15, .cancel_pct = 20, .timeout_ms = 5000, .retries = 8 };

static int
hosts_up(void)
{
    const char *v = getenv("OB_TEST_NETNS");

    return v != NULL && strcmp(v, "1") == 0;
}

/* scripts/netns.sh with args; asserts it succeeded. */
static void
netns(const char *args)
{
    char cmd[160];
    int  st;

    snprintf(cmd, sizeof(cmd), "bash scripts/netns.sh %s >/dev/null", args);
    st = obh_shell(cmd);
    cr_assert_eq(st, 0, "%s failed (status %d)", cmd, st);
}

static void
setup(void)
{
    int st;

    /* the orders pair, when in use, as the failover scenarios leave it is no pair: start from a fresh one, which
     * comes with its own pg_hba.conf, so let the hosts in again */
    if (obh_orders_ha() && (st = obh_shell("bash scripts/pg_ha.sh reset --sync >/dev/null")) != 0)
        cr_assert_fail("pg_ha.sh reset --sync failed (status %d)", st);
    if (hosts_up())
        netns("trust");
    fx_setup(&fx, "?");
    memset(&host_a, 0, sizeof(host_a));
    memset(&host_b, 0, sizeof(host_b));
}

static void
host_cleanup(obh_t *hh)
{
    if (hh->pid > 0)
        obh_stop(hh, obh_ms(20000));
    if (hh->shm != NULL)
        ob_shm_close(hh->shm, 0);
    hh->shm = NULL;
}

static void
teardown(void)
{
    if (hosts_up()) {
        netns("heal 1");    /* a failed scenario must not leave a host cut off */
        netns("heal 2");
    }
    host_cleanup(&host_a);
    host_cleanup(&host_b);
    fx_teardown(&fx);
}

/* Host n (1, 2) as a second instance on the fixture's databases and topic, in its namespace. */
static void
host_start(obh_t *hh, int n, const char *mode, const char *workers)
{
    char conf[512];
    FILE *f;

    obh_init_twin(hh, &fx.h);
    snprintf(hh->name, sizeof(hh->name), "%s-h%d", fx.h.name, n);
    snprintf(hh->conf, sizeof(hh->conf), "%s/h%d.conf", fx.h.dir, n);
    snprintf(hh->log, sizeof(hh->log), "%s/h%d.log", fx.h.dir, n);
    snprintf(hh->pidfile, sizeof(hh->pidfile), "%s/h%d.pid", fx.h.dir, n);
    snprintf(hh->netns, sizeof(hh->netns), "ob-h%d", n);
    snprintf(conf, sizeof(conf), "bash scripts/netns.sh addr %d", n);
    cr_assert_not_null(f = popen(conf, "r"));
    cr_assert_not_null(fgets(hh->listen_ip, sizeof(hh->listen_ip), f), "netns.sh addr %d said nothing", n);
    pclose(f);
    hh->listen_ip[strcspn(hh->listen_ip, "\n")] = '\0';
    snprintf(conf, sizeof(conf), "%s%s", mode, workers);
    obh_write_conf(hh, conf);
    obh_start(hh, NULL);
}

/* Partitions held by h's running relays, by their own bitmaps. */
static int
held(const obh_t *h)
{
    return obh_held(h);
}

static int
holds_all(obh_t *h, void *arg)
{
    (void) arg;
    return held(h) == h->partitions;
}

static int
relays_stream(obh_t *h, void *arg)
{
    int relays = obh_count(h, OB_KIND_RELAY);

    (void) arg;
    for (int i = 0; i < relays; i++)
        if (obh_relay_counter(h, i, OB_CTR_RELAY_STREAMING) == 0)
            return 0;
    return relays > 0;
}

static uint64_t
published_by(obh_t *h)
{
    uint64_t s = 0;

    for (int i = 0; i < obh_count(h, OB_KIND_RELAY); i++)
        s += obh_relay_counter(h, i, OB_CTR_RELAY_PUBLISHED) + obh_relay_counter(h, i, OB_CTR_RELAY_STREAMED);
    return s;
}

/* The breaker of every partition h holds not closed: each relay has ended the cycle that failed, its marks committed. */
static int
breakers_open(obh_t *h, void *arg)
{
    (void) arg;
    for (int p = 0; p < h->partitions; p++)
        if (atomic_load(&h->shm->map->parts[p].owner_slot) >= 0 &&
            atomic_load(&h->shm->map->parts[p].breaker) == OB_BREAKER_CLOSED)
            return 0;
    return held(h) > 0;
}

/* Both hosts hold half of the partitions each (two relays each: the relays of both share them). */
static int
shared_halves(obh_t *h, void *arg)
{
    obh_t *other = arg;

    return held(h) == h->partitions / 2 && held(other) == h->partitions / 2;
}

static int
published_more(obh_t *h, void *arg)
{
    return published_by(h) > *(uint64_t *) arg;
}

/* Events marked published in the partitions h holds. */
static long
marked(const obh_t *h)
{
    char sql[512];
    int  k = snprintf(sql, sizeof(sql), "SELECT count(*) FROM outboxd.outbox WHERE published AND partition IN (-1");

    for (int p = 0; p < h->partitions; p++)
        if (atomic_load(&h->shm->map->parts[p].owner_slot) >= 0)
            k += snprintf(sql + k, sizeof(sql) - (size_t) k, ",%d", p);
    snprintf(sql + k, sizeof(sql) - (size_t) k, ")");
    return obh_scalar(fx.h.orders_dsn, sql);
}

/*
 * A holds everything (streams it in mode wal), then B joins with the same
 * relays and the two share the partitions, half each; the clients on the fixture's HTTP, or on A's when it serves.
 */
static void
begin(const char *mode, const char *a_workers, const fx_load_opts_t *load)
{
    fx_load_opts_t o = *load;

    if (!hosts_up())
        cr_skip_test("no hosts (make chaos-ha runs scripts/netns.sh up and sets OB_TEST_NETNS=1)");
    fx.scenario = scenario;
    fx_start(&fx, "[workers]\nrelays = 0\n");
    host_start(&host_a, 1, mode, a_workers);
    cr_assert(obh_poll(holds_all, &host_a, NULL, obh_ms(30000)), "%s: host A never held every partition; log %s",
              fx.scenario, host_a.log);
    if (mode[0] != '\0')
        cr_assert(obh_poll(relays_stream, &host_a, NULL, obh_ms(30000)), "%s: host A does not stream; log %s",
                  fx.scenario, host_a.log);
    host_start(&host_b, 2, mode, HOST_RELAYS);
    cr_assert(obh_wait_worker(&host_b, OB_KIND_RELAY, 1, 0, obh_ms(30000)) > 0, "host B's relays not up; log %s",
              host_b.log);
    cr_assert(obh_poll(shared_halves, &host_a, &host_b, obh_ms(30000)), "%s: hosts hold %d and %d; logs %s %s",
              fx.scenario, held(&host_a), held(&host_b), host_a.log, host_b.log);
    if (mode[0] != '\0')
        cr_assert(obh_poll(relays_stream, &host_b, NULL, obh_ms(30000)), "%s: host B does not stream; log %s",
                  fx.scenario, host_b.log);
    if (strcmp(a_workers, HOST_SERVING) == 0) {
        o.addr = host_a.listen_ip;
        o.port = host_a.orders_port;
    }
    fx_load_start(&fx, &o);
    cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: no traffic; log %s", fx.scenario, fx.h.log);
}

static int
host_a_back(obh_t *h, void *arg)
{
    (void) arg;
    return obh_log_count(h, "orderdb connection restored") >= obh_count(h, OB_KIND_RELAY);
}

/* After the heal: A's relays back on orderdb and holding their half again, B the other (both streaming in mode
 * wal), traffic flowing. */
static void
after_heal(const char *mode)
{
    uint64_t b_before;

    fx_healed(&fx);
    cr_assert(obh_poll(host_a_back, &host_a, NULL, obh_ms(30000)), "%s: host A's relays did not reconnect; log %s",
              fx.scenario, host_a.log);
    b_before = published_by(&host_b);
    cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: traffic did not resume; log %s", fx.scenario, fx.h.log);
    cr_assert(obh_poll(published_more, &host_b, &b_before, obh_ms(30000)), "%s: host B publishes nothing after the "
                                                                          "heal; log %s",
              fx.scenario, host_b.log);
    cr_assert(obh_poll(shared_halves, &host_a, &host_b, obh_ms(30000)), "%s: hosts hold %d and %d after the heal",
              fx.scenario, held(&host_a), held(&host_b));
    if (mode[0] != '\0')
        cr_assert(obh_poll(relays_stream, &host_a, NULL, obh_ms(30000)), "%s: host A does not stream; log %s",
                  fx.scenario, host_a.log);
}

/* 7: cut off from PostgreSQL only; B takes A's half once PostgreSQL ends A's sessions. */
static void
scenario_pg_cut(const char *name, const char *mode)
{
    int64_t t0;
    double  took;

    snprintf(scenario, sizeof(scenario), "%snet 7 host cut off from PostgreSQL, partitions shared with a second", name);
    begin(mode, HOST_RELAYS, &steady);
    netns("cut 1 pg");
    t0 = ob_now_ms();
    cr_assert(obh_poll(holds_all, &host_b, NULL, obh_ms(60000)), "%s: host B never took the partitions; log %s",
              fx.scenario, host_b.log);
    took = (double) (ob_now_ms() - t0) / 1000.0;
    /* the sessions end within peer_timeout_s, then B's relays retry their locks once a second */
    cr_assert_leq(took, PEER_TIMEOUT_S + 6, "%s: the partitions moved after %.1f s", fx.scenario, took);
    cr_assert_eq(held(&host_b), host_b.partitions);
    uint64_t b0 = published_by(&host_b);
    cr_assert(obh_poll(published_more, &host_b, &b0, obh_ms(30000)), "%s: host B publishes nothing; log %s",
              fx.scenario, host_b.log);
    netns("heal 1");
    after_heal(mode);
    snprintf(scenario, sizeof(scenario), "%snet 7 host cut off from PostgreSQL, partitions moved in %.1f s", name,
             took);
    cr_log_info("%s", scenario);
    fx_verify(&fx, obh_ms(60000));
    fx_assert_clean(&fx);
}

Test(fault_ha, n7_host_cut_off_from_postgresql, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_pg_cut("", "");
}

Test(fault_ha, wn7_wal_host_cut_off_from_postgresql, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_pg_cut("wal ", WAL_MODE);
}

/* 8: cut off from Kafka only; A keeps its half with the breaker open, and marks nothing; B goes on with its own. */
static void
scenario_kafka_cut(const char *name, const char *mode)
{
    long     before, after;
    uint64_t b_published;
    int      b_restarts;

    snprintf(scenario, sizeof(scenario), "%snet 8 host cut off from Kafka only", name);
    begin(mode, HOST_RELAYS, &steady);
    netns("cut 1 kafka");
    cr_assert(obh_poll(breakers_open, &host_a, NULL, obh_ms(60000)), "%s: host A's breakers never all opened; log %s",
              fx.scenario, host_a.log);
    /* what Kafka acknowledged before the cut is marked by now; from here nothing may be */
    before = marked(&host_a);
    b_published = published_by(&host_b);
    b_restarts = obh_log_count(&host_b, "exited") + obh_log_count(&host_b, "killed by");
    cr_assert(fx_wait_acked(&fx, 150, obh_ms(60000)), "%s: the order service stopped taking orders", fx.scenario);
    after = marked(&host_a);
    cr_assert_eq(after, before, "%s: %ld event(s) marked published while their relay could not reach Kafka",
                 fx.scenario, after - before);
    cr_assert(breakers_open(&host_a, NULL), "%s: a breaker closed while Kafka was cut off", fx.scenario);
    cr_assert(shared_halves(&host_a, &host_b), "%s: partitions moved (A holds %d, B %d; A can still reach PostgreSQL)",
              fx.scenario, held(&host_a), held(&host_b));
    cr_assert_gt(published_by(&host_b), b_published, "%s: host B stopped publishing its half", fx.scenario);
    cr_assert_eq(obh_log_count(&host_b, "exited") + obh_log_count(&host_b, "killed by"), b_restarts,
                 "%s: host B's workers restarted; log %s", fx.scenario, host_b.log);
    netns("heal 1");
    fx_healed(&fx);
    uint64_t a0 = published_by(&host_a);
    cr_assert(obh_poll(published_more, &host_a, &a0, obh_ms(60000)), "%s: host A did not resume; log %s",
              fx.scenario, host_a.log);
    cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: traffic did not resume", fx.scenario);
    cr_log_info("%s: %ld marked before the cut, none during it", fx.scenario, before);
    fx_verify(&fx, obh_ms(60000));
    fx_assert_clean(&fx);
}

Test(fault_ha, n8_host_cut_off_from_kafka, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_kafka_cut("", "");
}

Test(fault_ha, wn8_wal_host_cut_off_from_kafka, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_kafka_cut("wal ", WAL_MODE);
}

/*
 * 9: cut off from both while it serves the clients. They see 503 or time
 * out; what they could not see (a commit whose reply was lost in the cut)
 * the checker resolves against orderdb, and B publishes A's partitions.
 */
static void
scenario_both_cut(const char *name, const char *mode)
{
    fx_load_opts_t o = steady;
    long           acked_cut, acked_heal, tried_cut, tried_heal;
    int64_t        t0;

    snprintf(scenario, sizeof(scenario), "%snet 9 serving host cut off from PostgreSQL and Kafka", name);
    o.timeout_ms = 3000;
    begin(mode, HOST_SERVING, &o);
    netns("cut 1 all");
    t0 = ob_now_ms();
    acked_cut = atomic_load(&fx.sh->acked);   /* once the rules are in: the script itself takes a while */
    tried_cut = atomic_load(&fx.sh->attempts);
    cr_assert(obh_poll(holds_all, &host_b, NULL, obh_ms(60000)), "%s: host B never took the partitions; log %s",
              fx.scenario, host_b.log);
    double took = (double) (ob_now_ms() - t0) / 1000.0;
    acked_heal = atomic_load(&fx.sh->acked);
    tried_heal = atomic_load(&fx.sh->attempts);
    /* a client's request whose commit was answered just before the cut may still be acknowledged: one each */
    cr_assert_leq(acked_heal - acked_cut, o.clients, "%s: %ld order(s) acknowledged by a host that could reach no"
                                                     " database",
                  fx.scenario, acked_heal - acked_cut);
    /* the clients kept trying, and were told 503 or timed out */
    cr_assert_gt(tried_heal - tried_cut, acked_heal - acked_cut, "%s: no client tried during the cut", fx.scenario);
    netns("heal 1");
    fx_healed(&fx);
    cr_assert(fx_wait_acked(&fx, 100, obh_ms(60000)), "%s: host A's clients did not recover; log %s", fx.scenario,
              host_a.log);
    cr_assert(obh_poll(host_a_back, &host_a, NULL, obh_ms(30000)), "%s: host A's relays did not reconnect; log %s",
              fx.scenario, host_a.log);
    cr_assert(obh_poll(shared_halves, &host_a, &host_b, obh_ms(30000)), "%s: hosts hold %d and %d after the heal",
              fx.scenario, held(&host_a), held(&host_b));
    snprintf(scenario, sizeof(scenario), "%snet 9 serving host cut off from PostgreSQL and Kafka, partitions moved in"
             " %.1f s, %ld attempts unanswered or 503 during the cut", name, took, tried_heal - tried_cut - (acked_heal - acked_cut));
    cr_log_info("%s", scenario);
    fx_verify(&fx, obh_ms(60000));
    fx_assert_clean(&fx);
}

Test(fault_ha, n9_serving_host_cut_off_from_both, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_both_cut("", "");
}

Test(fault_ha, wn9_wal_serving_host_cut_off_from_both, .init = setup, .fini = teardown, .timeout = 600)
{
    scenario_both_cut("wal ", WAL_MODE);
}
