/*
 * bench/shm.c: the outboxd instance under test, seen through its shm segment.
 *
 * Progress is read from the workers' own counters (relay "published",
 * consumer "applied", both bumped after the database COMMIT) instead of
 * polling count(*) every few milliseconds: on two cores, a count over a
 * million-row table that often would steal the CPU from what is measured.
 * The counters only say when to look; the databases have the last word.
 */
#include "bench/obbench.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The segment of instance `name`, and when pid > 0 only once that pid owns it
 * (a stopped predecessor's segment may linger for a moment). */
ob_shm_t *
bench_attach(const char *name, int pid, double timeout_s)
{
    double deadline = bench_now() + timeout_s;
    char   err[256] = "";

    for (;;) {
        ob_shm_t *shm = ob_shm_attach(name, err, sizeof(err));
        if (shm != NULL && (pid <= 0 || atomic_load(&shm->map->hdr.sup_pid) == pid))
            return shm;
        if (shm != NULL) {
            snprintf(err, sizeof(err), "segment belongs to pid %d, not %d", atomic_load(&shm->map->hdr.sup_pid), pid);
            ob_shm_close(shm, 0);
        }
        if (pid > 0 && kill(pid, 0) != 0)
            bench_die("outboxd (pid %d) exited while starting", pid);
        if (bench_now() > deadline)
            bench_die("attach %s: %s", name, err);
        bench_sleep(0.02);
    }
}

uint64_t
bench_counter_sum(ob_shm_t *shm, int kind, int counter)
{
    uint64_t sum = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t *s = &shm->map->slots[i];
        if (s->kind == kind && s->pid > 0)
            sum += atomic_load(&s->counters[counter]);
    }
    return sum;
}

/* Workers of a kind that run and have beaten their heart at least once. */
int
bench_running(ob_shm_t *shm, int kind)
{
    int n = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t s;
        if (ob_shm_slot_snapshot(&shm->map->slots[i], &s) != 0)
            continue;
        n += s.kind == kind && s.pid > 0 && s.state == OB_SLOT_RUNNING &&
             atomic_load(&shm->map->slots[i].heartbeat_ms) != 0;
    }
    return n;
}

long
bench_rss_kb(pid_t pid)
{
    char  path[64], line[256];
    long  kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atol(line + 6);
            break;
        }
    fclose(f);
    return kb;
}

/* One sample: the supervisor, and per kind its largest worker. */
void
bench_rss_sample(ob_shm_t *shm, bench_rss_t *rss)
{
    long now[BENCH_PROCS];

    for (int k = 0; k < BENCH_PROCS; k++)
        now[k] = -1;
    now[0] = bench_rss_kb(atomic_load(&shm->map->hdr.sup_pid));
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t *s = &shm->map->slots[i];
        int            kind = s->kind;
        if (s->pid <= 0 || kind <= OB_KIND_NONE || kind >= OB_KIND_COUNT)
            continue;
        long kb = bench_rss_kb(s->pid);
        if (kb > now[kind])
            now[kind] = kb;
    }
    for (int k = 0; k < BENCH_PROCS; k++) {
        if (rss->samples == 0)
            rss->idle_kb[k] = now[k];
        if (now[k] > rss->max_kb[k])
            rss->max_kb[k] = now[k];
    }
    rss->samples++;
}

json_t *
bench_rss_json(const bench_rss_t *rss)
{
    json_t *j = json_object();

    for (int k = 0; k < BENCH_PROCS; k++) {
        if (rss->max_kb[k] <= 0)
            continue;
        json_object_set_new(j, k == 0 ? "supervisor" : ob_kind_name(k),
                            json_pack("{s:I, s:I}", "first_kb", (json_int_t) rss->idle_kb[k], "max_kb",
                                      (json_int_t) rss->max_kb[k]));
    }
    return j;
}

/*
 * ready --name N --pid P [--http H] [--relays R] [--consumers C]
 *       [--partitions P] [--mode partitioned|skip_locked] [--timeout S]
 * Waits until the instance runs every worker asked for and is ready to
 * work: relays hold all partition locks (partitioned mode), consumers have
 * all partitions assigned. Then a measurement starts from a warm system.
 */
int
cmd_ready(int argc, char **argv)
{
    const char *name = bench_opt_req(argc, argv, "--name");
    int         pid = (int) bench_opt_long(argc, argv, "--pid", 0);
    int         want[OB_KIND_COUNT] = { 0 };
    int         parts = (int) bench_opt_long(argc, argv, "--partitions", 12);
    const char *mode = bench_opt(argc, argv, "--mode", "partitioned");
    int         partitioned = strcmp(mode, "skip_locked") != 0, wal = strcmp(mode, "wal") == 0;
    double      deadline = bench_now() + bench_opt_double(argc, argv, "--timeout", 60);
    ob_shm_t   *shm;

    want[OB_KIND_HTTP] = (int) bench_opt_long(argc, argv, "--http", 0);
    want[OB_KIND_RELAY] = (int) bench_opt_long(argc, argv, "--relays", 0);
    want[OB_KIND_CONSUMER] = (int) bench_opt_long(argc, argv, "--consumers", 0);
    shm = bench_attach(name, pid, deadline - bench_now());
    for (;;) {
        if (pid > 0 && kill(pid, 0) != 0)
            bench_die("outboxd (pid %d) exited while starting", pid);
        int ok = 1;
        for (int k = OB_KIND_HTTP; k < OB_KIND_COUNT; k++)
            ok &= bench_running(shm, k) >= want[k];
        if (want[OB_KIND_RELAY] > 0 && partitioned)
            ok &= bench_counter_sum(shm, OB_KIND_RELAY, OB_CTR_RELAY_LOCKS_HELD) >= (uint64_t) parts;
        if (want[OB_KIND_RELAY] > 0 && wal)    /* slots made, polling pass done: events from now on are streamed */
            ok &= bench_counter_sum(shm, OB_KIND_RELAY, OB_CTR_RELAY_STREAMING) >= (uint64_t) want[OB_KIND_RELAY];
        if (want[OB_KIND_CONSUMER] > 0)
            ok &= bench_counter_sum(shm, OB_KIND_CONSUMER, OB_CTR_CONS_ASSIGNED) >= (uint64_t) parts;
        if (ok)
            break;
        if (bench_now() > deadline)
            bench_die("instance %s not ready in time (http %d/%d relays %d/%d consumers %d/%d)", name,
                      bench_running(shm, OB_KIND_HTTP), want[OB_KIND_HTTP], bench_running(shm, OB_KIND_RELAY),
                      want[OB_KIND_RELAY], bench_running(shm, OB_KIND_CONSUMER), want[OB_KIND_CONSUMER]);
        bench_sleep(0.05);
    }
    ob_shm_close(shm, 0);
    return 0;
}

/* rss --name N: one sample of every process of the instance. */
int
cmd_rss(int argc, char **argv)
{
    ob_shm_t   *shm = bench_attach(bench_opt_req(argc, argv, "--name"), 0, 5);
    bench_rss_t rss = { 0 };

    bench_rss_sample(shm, &rss);
    bench_emit(json_pack("{s:o}", "rss", bench_rss_json(&rss)));
    ob_shm_close(shm, 0);
    return 0;
}

static volatile sig_atomic_t watch_stop;

static void
watch_on_term(int sig)
{
    (void) sig;
    watch_stop = 1;
}

/*
 * watch --name N [--seconds S] [--orders-dsn O --ledger-dsn L --kafka-pid K]
 * RSS and CPU every 100 ms until S elapse or TERM arrives.
 */
int
cmd_watch(int argc, char **argv)
{
    ob_shm_t        *shm = bench_attach(bench_opt_req(argc, argv, "--name"), 0, 5);
    double           t0 = bench_now(), limit = bench_opt_double(argc, argv, "--seconds", 3600);
    bench_rss_t      rss = { 0 };
    struct sigaction sa = { .sa_handler = watch_on_term };

    bench_cpu_t     *cpu = bench_cpu_from_opts(shm, argc, argv);

    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (!watch_stop && bench_now() - t0 < limit) {
        bench_rss_sample(shm, &rss);
        bench_cpu_sample(cpu);
        bench_sleep(0.1);
    }
    bench_emit(json_pack("{s:f, s:i, s:o, s:o}", "seconds", bench_now() - t0, "samples", rss.samples, "rss",
                         bench_rss_json(&rss), "cpu", bench_cpu_end(cpu)));
    ob_shm_close(shm, 0);
    return 0;
}
