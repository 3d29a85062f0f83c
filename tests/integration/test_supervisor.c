/*
 * tests/integration/test_supervisor.c: the real binary, real processes.
 * kill -9 and SIGSTOP its workers, reload it, stop it, kill it.
 */
#include "tests/integration/fixture.h"
#include "common/murmur2.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>


static void
require_running(int kind, int count)
{
    for (int i = 0; i < count; i++)
        cr_assert_neq(obh_wait_worker(&h, kind, i, 0, obh_ms(20000)), 0, "%s %d never came up; see %s",
                      ob_kind_name(kind), i, h.log);
}

static void
status_text(char *out, size_t outlen)
{
    const char *args[] = { "status", "-c", h.conf, NULL };

    cr_assert_eq(obh_run(args, out, outlen), 0, "%s", out);
}

Test(supervisor, kill9_of_each_kind_is_respawned_within_a_second, .init = setup, .fini = teardown)
{
    static const int kinds[] = { OB_KIND_HTTP, OB_KIND_RELAY, OB_KIND_CONSUMER };
    char             out[16384], want[64];

    start_with("[workers]\nhttp = 2\nrelays = 2\nconsumers = 1\n", NULL);
    require_running(OB_KIND_HTTP, 2);
    require_running(OB_KIND_RELAY, 2);
    require_running(OB_KIND_CONSUMER, 1);
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        ob_shm_slot_t before, after;
        cr_assert_geq(obh_worker(&h, kinds[k], 0, &before), 0);
        int64_t t0 = ob_now_ms();
        cr_assert_eq(kill(before.pid, SIGKILL), 0);
        /* a new pid in the slot: forked, not yet necessarily initialised */
        pid_t now = 0;
        while (ob_now_ms() - t0 < obh_ms(1000)) {
            if (obh_worker(&h, kinds[k], 0, &after) >= 0 && after.pid != before.pid) {
                now = after.pid;
                break;
            }
            ob_sleep_ms(2);
        }
        cr_assert_neq(now, 0, "%s 0 not respawned within %d ms", ob_kind_name(kinds[k]), obh_ms(1000));
        cr_assert_eq(after.restarts, before.restarts + 1);
        cr_assert(!obh_alive(before.pid) || kill(before.pid, 0) != 0);
        status_text(out, sizeof(out));
        snprintf(want, sizeof(want), "%d", (int) now);
        cr_assert(strstr(out, want) != NULL, "status does not show new pid %d:\n%s", (int) now, out);
    }
    /* the other HTTP worker was never disturbed */
    cr_assert_geq(obh_worker(&h, OB_KIND_HTTP, 1, NULL), 0);
}

/* Kills consumer 0 each time it comes back; the gaps before respawns must grow. */
Test(supervisor, crash_loop_backs_off_and_others_stay_up, .init = setup, .fini = teardown)
{
    ob_shm_slot_t http0, s;
    int64_t       gaps[5];
    pid_t         pid = 0;
    char          out[16384];

    start_with("[workers]\nhttp = 1\nrelays = 1\nconsumers = 1\n", NULL);
    require_running(OB_KIND_HTTP, 1);
    require_running(OB_KIND_CONSUMER, 1);
    cr_assert_geq(obh_worker(&h, OB_KIND_HTTP, 0, &http0), 0);
    for (int i = 0; i < 5; i++) {
        cr_assert_geq(obh_worker(&h, OB_KIND_CONSUMER, 0, &s), 0);
        pid = s.pid;
        int64_t t0 = ob_now_ms();
        kill(pid, SIGKILL);
        pid_t next = 0;
        while (ob_now_ms() - t0 < obh_ms(10000) && next == 0) {
            if (obh_worker(&h, OB_KIND_CONSUMER, 0, &s) >= 0 && s.pid != pid)
                next = s.pid;
            else
                ob_sleep_ms(2);
        }
        cr_assert_neq(next, 0, "no respawn after kill %d", i);
        gaps[i] = ob_now_ms() - t0;
    }
    /* 100, 200, 400, 800, 1600 ms nominal: each gap clearly longer than the one before */
    for (int i = 1; i < 5; i++)
        cr_assert_gt(gaps[i], gaps[i - 1] + 50, "gap %d (%lld ms) not longer than gap %d (%lld ms)", i,
                     (long long) gaps[i], i - 1, (long long) gaps[i - 1]);
    cr_assert_geq(gaps[4], 1500);
    /* kill it once more and look at it while it waits: crashloop */
    cr_assert_geq(obh_worker(&h, OB_KIND_CONSUMER, 0, &s), 0);
    kill(s.pid, SIGKILL);
    int seen_crashloop = 0;
    for (int64_t t0 = ob_now_ms(); ob_now_ms() - t0 < 2000 && !seen_crashloop; ob_sleep_ms(5)) {
        for (int i = 0; i < OB_SHM_SLOTS; i++) {
            ob_shm_slot_t x;
            if (ob_shm_slot_snapshot(&h.shm->map->slots[i], &x) == 0 && x.kind == OB_KIND_CONSUMER &&
                x.state == OB_SLOT_CRASHLOOP)
                seen_crashloop = 1;
        }
    }
    cr_assert(seen_crashloop, "slot never showed crashloop");
    status_text(out, sizeof(out));
    cr_assert(strstr(out, "killed by signal 9") != NULL, "%s", out);
    /* bystanders untouched */
    cr_assert_geq(obh_worker(&h, OB_KIND_HTTP, 0, &s), 0);
    cr_assert_eq(s.pid, http0.pid);
    cr_assert_eq(s.restarts, 0);
}

Test(supervisor, sigstopped_worker_is_killed_by_the_watchdog, .init = setup, .fini = teardown)
{
    ob_shm_slot_t s;

    start_with("[supervisor]\nwatchdog_s = 2\n[workers]\nhttp = 1\nrelays = 2\nconsumers = 1\n", NULL);
    require_running(OB_KIND_RELAY, 2);
    cr_assert_geq(obh_worker(&h, OB_KIND_RELAY, 1, &s), 0);
    int64_t t0 = ob_now_ms();
    cr_assert_eq(kill(s.pid, SIGSTOP), 0);
    pid_t next = obh_wait_worker(&h, OB_KIND_RELAY, 1, s.pid, obh_ms(8000));
    int64_t took = ob_now_ms() - t0;
    cr_assert_neq(next, 0, "stopped relay not replaced");
    cr_assert_geq(took, 2000, "replaced before the watchdog could have fired (%lld ms)", (long long) took);
    /* the stopped process is gone, not left behind */
    cr_assert(kill(s.pid, 0) != 0);
}

/* Samples every slot's owned-partition bits, flags any partition held twice. */
typedef struct {
    obh_t      *h;
    atomic_int  stop;
    atomic_int  violations;
    atomic_long samples;
} owner_watch_t;

static void *
owner_watch(void *arg)
{
    owner_watch_t *w = arg;

    while (!atomic_load(&w->stop)) {
        int owners[OB_SHM_PARTITIONS] = { 0 };
        for (int i = 0; i < OB_SHM_SLOTS; i++) {
            ob_shm_slot_t *s = &w->h->shm->map->slots[i];
            for (int p = 0; p < OB_SHM_PARTITIONS; p++)
                if (ob_shm_is_owned(s, p))
                    owners[p]++;
        }
        for (int p = 0; p < OB_SHM_PARTITIONS; p++)
            if (owners[p] > 1)
                atomic_fetch_add(&w->violations, 1);
        atomic_fetch_add(&w->samples, 1);
    }
    return NULL;
}

typedef struct {
    int relays;
    uint64_t generation;
} relay_set_t;

/* The wanted relay set is up: right count, every partition owned, generation reached. */
static int
relay_set_ready(obh_t *hh, void *arg)
{
    relay_set_t *want = arg;
    int          owned = 0;

    if (atomic_load(&hh->shm->map->hdr.generation) != want->generation ||
        obh_count(hh, OB_KIND_RELAY) != want->relays)
        return 0;
    for (int i = 0; i < want->relays; i++)
        if (obh_worker(hh, OB_KIND_RELAY, i, NULL) < 0)
            return 0;
    for (int p = 0; p < hh->partitions; p++)
        for (int i = 0; i < OB_SHM_SLOTS; i++)
            if (ob_shm_is_owned(&hh->shm->map->slots[i], p)) {
                owned++;
                break;
            }
    return owned == hh->partitions;
}

Test(supervisor, reload_changes_relay_set_without_double_ownership, .init = setup, .fini = teardown)
{
    const char   *args[] = { "--relays", "3", NULL };
    owner_watch_t w = { .h = &h };
    pthread_t     th;
    relay_set_t   want = { 3, 0 };
    char          out[16384];

    start_with("[workers]\nhttp = 1\nrelays = 2\nconsumers = 0\n", args);
    cr_assert(obh_poll(relay_set_ready, &h, &want, obh_ms(30000)), "3 relays never owned all partitions");
    pthread_create(&th, NULL, owner_watch, &w);

    obh_write_conf(&h, "[workers]\nhttp = 1\nrelays = 5\nconsumers = 0\n");
    kill(h.pid, SIGHUP);
    want = (relay_set_t) { 5, 1 };
    cr_assert(obh_poll(relay_set_ready, &h, &want, obh_ms(30000)), "5 relays never owned all partitions");
    status_text(out, sizeof(out));
    cr_assert(strstr(out, "generation: 1") != NULL, "%s", out);
    cr_assert(strstr(out, "last_reload: ok") != NULL, "%s", out);

    obh_write_conf(&h, "[workers]\nhttp = 1\nrelays = 1\nconsumers = 0\n");
    kill(h.pid, SIGHUP);
    want = (relay_set_t) { 1, 2 };
    cr_assert(obh_poll(relay_set_ready, &h, &want, obh_ms(30000)), "1 relay never owned all partitions");

    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    cr_assert_gt(atomic_load(&w.samples), 100);
    cr_assert_eq(atomic_load(&w.violations), 0, "a partition had two owners in %d samples",
                 atomic_load(&w.violations));
    /* PostgreSQL agrees: one relay session holds all 12 advisory locks */
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM pg_locks WHERE " OBH_PART_LOCKS " AND granted"),
                 12);
    cr_assert_eq(obh_scalar(h.orders_dsn,
                            "SELECT count(DISTINCT pid) FROM pg_locks WHERE " OBH_PART_LOCKS " AND granted"),
                 1);
}

/* Clients that create orders back to back, each on a new connection, through reloads. */
typedef struct {
    int        port;
    atomic_int stop;
    atomic_int created;
    atomic_int failed;
    atomic_int last_status;
} clients_t;

enum { RELOAD_CLIENTS = 4, RELOADS = 3 };

static void *
create_loop(void *arg)
{
    clients_t *c = arg;
    char       resp[1024];

    while (!atomic_load(&c->stop)) {
        int st = obh_http(c->port, "POST", "/orders", NULL, "{\"customerId\":\"reload\",\"amount\":3,\"currency\":\"USD\"}",
                          resp, sizeof(resp), NULL, 0);
        atomic_fetch_add(st == 201 ? &c->created : &c->failed, 1);
        if (st != 201)
            atomic_store(&c->last_status, st);
    }
    return NULL;
}

/*
 * A reload replaces the HTTP workers one by one on the shared accept queue,
 * so no client may see it. civetweb's mg_stop dropped the connections its
 * master thread had accepted but no thread had taken yet: reset unread.
 */
Test(supervisor, a_reload_under_steady_traffic_refuses_no_request, .init = setup, .fini = teardown)
{
    static clients_t c;
    pthread_t        th[RELOAD_CLIENTS];
    int64_t          t0;

    start("[workers]\nhttp = 2\nrelays = 0\nconsumers = 0\n");
    require_running(OB_KIND_HTTP, 2);
    c.port = h.orders_port;
    for (int i = 0; i < RELOAD_CLIENTS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, create_loop, &c), 0);
    for (int r = 1; r <= RELOADS; r++) {
        int before = atomic_load(&c.created);
        kill(h.pid, SIGHUP);
        /* both workers of this generation replaced, the last one stopped, and traffic went on */
        for (t0 = ob_now_ms(); obh_log_count(&h, "http 0 stopped") < r || obh_log_count(&h, "http 1 stopped") < r ||
                               atomic_load(&c.created) < before + 50;
             ob_sleep_ms(20))
            cr_assert_lt(ob_now_ms() - t0, obh_ms(30000), "reload %d: workers not replaced; log %s", r, h.log);
    }
    atomic_store(&c.stop, 1);
    for (int i = 0; i < RELOAD_CLIENTS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&c.failed), 0, "%d of %d requests failed across %d reloads, the last with %d; log %s",
                 atomic_load(&c.failed), atomic_load(&c.failed) + atomic_load(&c.created), RELOADS,
                 atomic_load(&c.last_status), h.log);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM orders"), atomic_load(&c.created));
}

Test(supervisor, broken_reload_changes_nothing_and_shows_why, .init = setup, .fini = teardown)
{
    ob_shm_slot_t r0, after;
    char          out[16384];

    start_with("[workers]\nhttp = 1\nrelays = 2\nconsumers = 1\n", NULL);
    require_running(OB_KIND_RELAY, 2);
    cr_assert_geq(obh_worker(&h, OB_KIND_RELAY, 0, &r0), 0);
    obh_write_conf(&h, "[workers]\nhttp = 1\nrelays = lots\n");
    kill(h.pid, SIGHUP);
    int64_t t0 = ob_now_ms();
    int     failed = 0;
    while (!failed && ob_now_ms() - t0 < obh_ms(5000)) {
        ob_shm_hdr_t hdr;
        ob_shm_hdr_snapshot(&h.shm->map->hdr, &hdr);
        failed = hdr.reload_ok == 0;
        ob_sleep_ms(10);
    }
    cr_assert(failed, "reload failure never shown");
    status_text(out, sizeof(out));
    cr_assert(strstr(out, "last_reload: FAILED") != NULL, "%s", out);
    cr_assert(strstr(out, "outboxd.conf:") != NULL && strstr(out, ": [workers] relays: not an integer") != NULL,
              "%s", out);
    cr_assert(strstr(out, "generation: 0") != NULL, "%s", out);
    cr_assert_geq(obh_worker(&h, OB_KIND_RELAY, 0, &after), 0);
    cr_assert_eq(after.pid, r0.pid);
    cr_assert_geq(obh_worker(&h, OB_KIND_RELAY, 1, NULL), 0);
    cr_assert_geq(obh_worker(&h, OB_KIND_CONSUMER, 0, NULL), 0);
}

static void
collect_pids(pid_t *pids, int *n)
{
    *n = 0;
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t s;
        if (ob_shm_slot_snapshot(&h.shm->map->slots[i], &s) == 0 && s.pid > 0)
            pids[(*n)++] = s.pid;
    }
}

Test(supervisor, term_stops_everything_and_cleans_up, .init = setup, .fini = teardown)
{
    pid_t pids[OB_SHM_SLOTS];
    int   n;
    char  seg[128];

    start_with("[workers]\nhttp = 2\nrelays = 2\nconsumers = 2\n", NULL);
    require_running(OB_KIND_HTTP, 2);
    require_running(OB_KIND_RELAY, 2);
    require_running(OB_KIND_CONSUMER, 2);
    collect_pids(pids, &n);
    cr_assert_eq(n, 6);
    cr_assert(obh_exists(h.pidfile));
    int st = obh_stop(&h, obh_ms(10000));
    cr_assert_neq(st, -1, "supervisor did not exit within the shutdown timeout");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x", st);
    for (int i = 0; i < n; i++)
        cr_assert(!obh_alive(pids[i]), "worker %d survived", (int) pids[i]);
    snprintf(seg, sizeof(seg), "/dev/shm/outboxd-%s", h.name);
    cr_assert(!obh_exists(seg), "segment left behind");
    cr_assert(!obh_exists(h.pidfile), "pidfile left behind");
}

static int
all_gone(obh_t *hh, void *arg)
{
    (void) hh;
    pid_t *pids = arg;

    for (int i = 0; pids[i] != 0; i++)
        if (obh_alive(pids[i]))
            return 0;
    return 1;
}

Test(supervisor, kill9_of_supervisor_leaves_no_orphans_and_name_is_reusable, .init = setup, .fini = teardown)
{
    pid_t pids[OB_SHM_SLOTS + 1];
    int   n, st;

    start_with("[workers]\nhttp = 2\nrelays = 2\nconsumers = 1\n", NULL);
    require_running(OB_KIND_HTTP, 2);
    require_running(OB_KIND_RELAY, 2);
    require_running(OB_KIND_CONSUMER, 1);
    collect_pids(pids, &n);
    pids[n] = 0;
    kill(h.pid, SIGKILL);
    waitpid(h.pid, &st, 0);
    h.pid = 0;
    cr_assert(obh_poll(all_gone, &h, pids, obh_ms(3000)), "orphaned workers survived the supervisor");
    /* the dead supervisor's segment is stale: a new start replaces it */
    obh_start(&h, NULL);
    require_running(OB_KIND_RELAY, 2);
    require_running(OB_KIND_HTTP, 2);
}

Test(supervisor, exit_2_is_fatal_until_reload, .init = setup, .fini = teardown)
{
    char          out[16384];
    ob_shm_slot_t s;

    /* the topic exists with 3 partitions, the config says 4 */
    h.partitions = 3;
    start_with("[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n", NULL);
    require_running(OB_KIND_RELAY, 1);
    obh_stop(&h, obh_ms(10000));
    h.partitions = 4;
    start_with("[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n", NULL);
    int fatal_slot = -1;
    for (int64_t t0 = ob_now_ms(); ob_now_ms() - t0 < obh_ms(15000) && fatal_slot < 0; ob_sleep_ms(10))
        for (int i = 0; i < OB_SHM_SLOTS && fatal_slot < 0; i++)
            if (ob_shm_slot_snapshot(&h.shm->map->slots[i], &s) == 0 && s.kind == OB_KIND_RELAY &&
                s.state == OB_SLOT_FATAL)
                fatal_slot = i;
    cr_assert_geq(fatal_slot, 0, "relay never went fatal");
    cr_assert(strstr(s.reason, "has 3 partitions but [kafka] partitions = 4") != NULL, "reason: %s", s.reason);
    /* no respawn loop: still fatal, no restart counted, a while later */
    int64_t t0 = ob_now_ms();
    while (ob_now_ms() - t0 < 1500) {
        ob_shm_slot_snapshot(&h.shm->map->slots[fatal_slot], &s);
        cr_assert_eq(s.state, OB_SLOT_FATAL);
        cr_assert_eq(s.pid, 0);
        ob_sleep_ms(50);
    }
    cr_assert_eq(s.restarts, 0);
    status_text(out, sizeof(out));
    cr_assert(strstr(out, "fatal") != NULL && strstr(out, "has 3 partitions") != NULL, "%s", out);
    /* the operator fixes the cause (grows the topic to the configured 4) and reloads: the relay comes back */
    obh_kafka_grow_topic(&h, 4);
    kill(h.pid, SIGHUP);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 0, 0, obh_ms(15000)), 0, "relay not back after reload");
}

static int
partition_of(const char *id)
{
    char sql[160];

    snprintf(sql, sizeof(sql), "SELECT partition FROM outboxd.outbox WHERE aggregate_id = '%s'", id);
    return (int) obh_scalar(h.orders_dsn, sql);
}

/*
 * [kafka] partitions reloaded to a value the topic does not have. Before:
 * the relays went fatal while HTTP went on writing rows for partitions the
 * topic lacks, which no relay owned after the value was reverted. Now the
 * key is restart-only (from the key table): the reload says so and keeps it.
 */
Test(supervisor, reload_keeps_kafka_partitions_and_says_it_needs_a_restart, .init = setup, .fini = teardown)
{
    char resp[1024], id[37];

    start_with("[workers]\nhttp = 1\nrelays = 1\nconsumers = 0\n", NULL);
    pid_t relay = obh_wait_worker(&h, OB_KIND_RELAY, 0, 0, obh_ms(15000));
    cr_assert_neq(relay, 0);
    int right = h.partitions;
    h.partitions = right + 5;
    obh_write_conf(&h, "[workers]\nhttp = 1\nrelays = 1\nconsumers = 0\n");
    h.partitions = right;
    kill(h.pid, SIGHUP);
    for (int64_t t0 = ob_now_ms(); obh_log_count(&h, "[kafka] partitions changed; these take effect only after a "
                                                     "restart") == 0;
         ob_sleep_ms(10))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(10000), "the reload did not say partitions needs a restart");
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_HTTP, 0, 0, obh_ms(10000)), 0);
    for (int i = 0; i < 8; i++) {
        int st = obh_http(h.orders_port, "POST", "/orders", NULL, "{\"customerId\":\"c\",\"amount\":1,\"currency\":\"USD\"}",
                          resp, sizeof(resp), NULL, 0);
        cr_assert_eq(st, 201, "%d %s", st, resp);
        json_t *j = json_loads(resp, 0, NULL);
        ob_strlcpy(id, json_string_value(json_object_get(j, "id")), sizeof(id));
        json_decref(j);
        cr_assert_eq(partition_of(id), ob_partition_for(id, 36, right), "order %s written for another partition count",
                     id);
    }
    ob_shm_slot_t s;
    cr_assert_geq(obh_worker(&h, OB_KIND_RELAY, 0, &s), 0, "relay not running");
    cr_assert_eq(s.pid, relay, "the relay was restarted or went fatal");
    cr_assert_eq(obh_log_count(&h, "fatal"), 0);
    /* checks that relate keys see the running partitions: 15 relays for 12 is refused
     * (found in review: it was validated against the file's 17, then ran with 12) */
    h.partitions = right + 5;
    obh_write_conf(&h, "[workers]\nhttp = 1\nrelays = 15\nconsumers = 0\n");
    h.partitions = right;
    kill(h.pid, SIGHUP);
    char refusal[96];
    snprintf(refusal, sizeof(refusal), "relays = 15 exceeds [kafka] partitions = %d", right);
    for (int64_t t0 = ob_now_ms(); obh_log_count(&h, refusal) == 0; ob_sleep_ms(10))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(10000), "a reload to more relays than running partitions was taken");
    cr_assert_eq(obh_count(&h, OB_KIND_RELAY), 1);
}

/*
 * [debug] fault reloaded in. It is restart-only, so the reload says so and
 * the workers it starts, and any respawned after a crash, keep the running
 * value: here, HTTP workers still answer their writes.
 */
Test(supervisor, reload_keeps_debug_fault_for_respawned_workers, .init = setup, .fini = teardown)
{
    const char *order = "{\"customerId\":\"c\",\"amount\":1,\"currency\":\"USD\"}";
    char        resp[1024];

    setenv("OUTBOXD_UNSAFE_FAULTS", "1", 1);
    start_with("[workers]\nhttp = 1\nrelays = 0\nconsumers = 0\n", NULL);
    pid_t http = obh_wait_worker(&h, OB_KIND_HTTP, 0, 0, obh_ms(15000));
    cr_assert_neq(http, 0);
    obh_write_conf(&h, "[workers]\nhttp = 1\nrelays = 0\nconsumers = 0\n[debug]\nfault = http_lose_write_reply\n");
    kill(h.pid, SIGHUP);
    for (int64_t t0 = ob_now_ms(); obh_log_count(&h, "[debug] fault changed; these take effect only after a restart") == 0;
         ob_sleep_ms(10))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(10000), "the reload did not say [debug] fault needs a restart");
    /* the reload replaces HTTP workers; then a crash makes another */
    pid_t next = obh_wait_worker(&h, OB_KIND_HTTP, 0, http, obh_ms(15000));
    cr_assert_neq(next, 0, "the reload did not replace the HTTP worker");
    cr_assert_eq(obh_http(h.orders_port, "POST", "/orders", NULL, order, resp, sizeof(resp), NULL, 0), 201,
                 "%s", resp);
    /* the fault loses the database's reply and the worker retries: a 201 alone would not show it */
    cr_assert_eq(obh_log_count(&h, "connection lost during create"), 0, "the reloaded worker took the restart-only fault");
    kill(next, SIGKILL);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_HTTP, 0, next, obh_ms(15000)), 0);
    cr_assert_eq(obh_http(h.orders_port, "POST", "/orders", NULL, order, resp, sizeof(resp), NULL, 0), 201,
                 "%s", resp);
    cr_assert_eq(obh_log_count(&h, "connection lost during create"), 0, "the respawned worker took the restart-only fault");
    unsetenv("OUTBOXD_UNSAFE_FAULTS");
}

/* Receives one datagram on the fake NOTIFY_SOCKET, or "" after timeout. */
static void
notify_recv(int fd, char *buf, size_t len, int timeout_ms)
{
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    ssize_t        n;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    n = recv(fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
}

Test(supervisor, sd_notify_ready_reloading_stopping, .init = setup, .fini = teardown)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char               buf[256];
    int                fd = socket(AF_UNIX, SOCK_DGRAM, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify.sock", h.dir);
    cr_assert_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    start_with("[workers]\nhttp = 1\nrelays = 0\nconsumers = 0\n", NULL);
    unsetenv("NOTIFY_SOCKET");
    notify_recv(fd, buf, sizeof(buf), obh_ms(5000));
    cr_assert_str_eq(buf, "READY=1");
    kill(h.pid, SIGHUP);
    notify_recv(fd, buf, sizeof(buf), obh_ms(5000));
    cr_assert(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0, "got %s", buf);
    notify_recv(fd, buf, sizeof(buf), obh_ms(5000));
    cr_assert_str_eq(buf, "READY=1");
    kill(h.pid, SIGTERM);
    notify_recv(fd, buf, sizeof(buf), obh_ms(5000));
    cr_assert_str_eq(buf, "STOPPING=1");
    close(fd);
}

Test(supervisor, status_without_instance_and_bad_config_are_sentences, .init = setup, .fini = teardown)
{
    char        out[4096], bad[256];
    const char *st[] = { "status", "-c", h.conf, NULL };

    cr_assert_eq(obh_run(st, out, sizeof(out)), 1);
    cr_assert(strstr(out, "is running") != NULL, "%s", out);
    snprintf(bad, sizeof(bad), "%s/bad.conf", h.dir);
    FILE *f = fopen(bad, "w");
    fprintf(f, "[workers]\nrelays = 3\nhttp = -1\n");
    fclose(f);
    const char *t[] = { "-t", "-c", bad, NULL };
    cr_assert_eq(obh_run(t, out, sizeof(out)), 1);
    cr_assert(strstr(out, "bad.conf:3: [workers] http: out of range") != NULL, "%s", out);
    const char *ok[] = { "-t", "-c", h.conf, NULL };
    cr_assert_eq(obh_run(ok, out, sizeof(out)), 0, "%s", out);
    const char *flags[] = { "-t", "-c", h.conf, "--relays", "13", NULL };
    cr_assert_eq(obh_run(flags, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "relays = 13 exceeds") != NULL, "%s", out);
}

static int
file_has(obh_t *hh, void *arg)
{
    const char **w = arg;
    char         buf[65536];
    FILE        *f = fopen(w[0], "r");
    size_t       n;

    (void) hh;
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strstr(buf, w[1]) != NULL;
}

Test(supervisor, logs_name_the_process_hide_passwords_and_reopen_on_usr1, .init = setup, .fini = teardown)
{
    char        rotated[256], line[512];
    const char *want_masked[2] = { h.log, "cannot connect to postgresql://outboxd:***@127.0.0.1:1/nowhere" };

    start_with("[ledger]\ndsn = postgresql://outboxd:hunter2@127.0.0.1:1/nowhere\n"
               "[workers]\nhttp = 1\nrelays = 0\nconsumers = 1\n",
               NULL);
    cr_assert(obh_poll(file_has, &h, want_masked, obh_ms(10000)), "no masked connection error in %s", h.log);
    FILE *f = fopen(h.log, "r");
    int   lines = 0;
    while (fgets(line, sizeof(line), f)) {
        cr_assert(strstr(line, "hunter2") == NULL, "password in the log: %s", line);
        cr_assert(strncmp(line, "ts=", 3) == 0 && strstr(line, " level=") && strstr(line, " kind=") &&
                      strstr(line, " index=") && strstr(line, " pid="),
                  "not a logfmt line with identity: %s", line);
        lines++;
    }
    fclose(f);
    cr_assert_gt(lines, 2);
    /* logrotate: move the file away, USR1, new lines land in a new file */
    snprintf(rotated, sizeof(rotated), "%s.1", h.log);
    cr_assert_eq(rename(h.log, rotated), 0);
    kill(h.pid, SIGUSR1);
    kill(h.pid, SIGHUP);     /* something for the supervisor to log after reopening */
    const char *want_reopened[2] = { h.log, "config reloaded" };
    cr_assert(obh_poll(file_has, &h, want_reopened, obh_ms(10000)), "supervisor did not reopen its log");
}
