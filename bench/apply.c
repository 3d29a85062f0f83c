/*
 * bench/apply.c: consumers applying a full topic to the ledger, and
 * "settle", which waits for the pipeline to catch up after a load.
 */
#include "bench/obbench.h"

#include <stdio.h>
#include <stdlib.h>

/*
 * Whether the group has settled: every consumer holds partitions, all of
 * them are assigned. Members join one after the other, so at first one
 * consumer owns everything until a rebalance shares the partitions out.
 */
static int
apply_settled(ob_shm_t *shm, int consumers, int partitions)
{
    int holding = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t *s = &shm->map->slots[i];
        holding += s->kind == OB_KIND_CONSUMER && s->pid > 0 && atomic_load(&s->counters[OB_CTR_CONS_ASSIGNED]) > 0;
    }
    return holding >= consumers &&
           bench_counter_sum(shm, OB_KIND_CONSUMER, OB_CTR_CONS_ASSIGNED) >= (uint64_t) partitions;
}

/*
 * apply --name N --pid P --dsn LEDGER --rows R [--consumers C --partitions P] [--timeout S] [--kafka-pid K]
 * Run right after starting outboxd with consumers only, on a topic that
 * already holds at least R events and a group that has never read it.
 * The clock starts once the group has settled (every consumer assigned its
 * share) and some event was booked, so the join and its first rebalance
 * (nothing to do with apply speed) are reported apart.
 */
int
cmd_apply(int argc, char **argv)
{
    const char  *dsn = bench_opt_req(argc, argv, "--dsn");
    ob_shm_t    *shm = bench_attach(bench_opt_req(argc, argv, "--name"), (int) bench_opt_long(argc, argv, "--pid", 0), 10);
    PGconn      *pg = bench_pg(dsn);
    long         rows = bench_opt_long(argc, argv, "--rows", 1000000);
    double       timeout = bench_opt_double(argc, argv, "--timeout", 900);
    double       start = bench_now(), t0 = 0, t1 = -1, next_note = start + 5;
    uint64_t     a0 = 0, applied = 0;
    bench_rss_t  rss = { 0 };
    bench_cpu_t *cpu = bench_cpu_start(shm, NULL, dsn, (pid_t) bench_opt_long(argc, argv, "--kafka-pid", 0));
    int          consumers = (int) bench_opt_long(argc, argv, "--consumers", 1);
    int          partitions = (int) bench_opt_long(argc, argv, "--partitions", 12);

    for (int tick = 0; bench_now() - start < timeout; tick++) {
        double now = bench_now();
        applied = bench_counter_sum(shm, OB_KIND_CONSUMER, OB_CTR_CONS_APPLIED);
        if (t0 == 0 && applied > 0 && apply_settled(shm, consumers, partitions)) {
            t0 = now;
            a0 = applied;
        }
        if (tick % 2 == 0) {
            bench_rss_sample(shm, &rss);
            bench_cpu_sample(cpu);
        }
        if (applied >= (uint64_t) rows && bench_scalar(pg, "SELECT count(*) FROM ledger_entries") >= rows) {
            t1 = now;
            break;
        }
        if (now > next_note) {
            bench_note("apply: %llu of %ld booked", (unsigned long long) applied, rows);
            next_note = now + 5;
        }
        bench_sleep(applied >= (uint64_t) rows ? 0.25 : 0.05);
    }
    int timed_out = t1 < 0;
    if (timed_out) {
        t1 = bench_now();
        bench_note("apply: timed out with %llu of %ld booked", (unsigned long long) applied, rows);
    }
    if (t0 == 0) {
        /* all booked before the group settled (tiny sizes): count from the start */
        t0 = start;
        a0 = 0;
    }
    /* events booked since the clock started, over the time since */
    uint64_t counted = timed_out ? applied - a0 : (uint64_t) rows > a0 ? (uint64_t) rows - a0 : 0;
    double   secs = t1 - t0, rate = (double) counted / secs;
    if (counted == 0 || secs <= 0) {
        /* everything came before the clock started (tiny sizes): count from the start */
        secs = t1 - start;
        rate = (double) rows / secs;
    }
    bench_emit(json_pack("{s:I, s:I, s:f, s:f, s:f, s:b, s:I, s:I, s:I, s:o, s:o}", "rows", (json_int_t) rows, "applied",
                         (json_int_t) applied, "join_seconds", t0 - start, "seconds", secs, "events_per_s", rate,
                         "timed_out", timed_out, "duplicates",
                         (json_int_t) bench_counter_sum(shm, OB_KIND_CONSUMER, OB_CTR_CONS_DUPLICATES), "parked",
                         (json_int_t) bench_counter_sum(shm, OB_KIND_CONSUMER, OB_CTR_CONS_PARKED), "dead_letters",
                         (json_int_t) bench_counter_sum(shm, OB_KIND_CONSUMER, OB_CTR_CONS_DEAD_LETTERS), "rss",
                         bench_rss_json(&rss), "cpu", bench_cpu_end(cpu)));
    PQfinish(pg);
    ob_shm_close(shm, 0);
    return 0;
}

/*
 * settle --orders-dsn O [--ledger-dsn L] [--timeout S]
 * Waits until no outbox row is pending and (with a ledger) every order has
 * its charge: the pipeline has caught up with what was written.
 */
int
cmd_settle(int argc, char **argv)
{
    PGconn     *orders = bench_pg(bench_opt_req(argc, argv, "--orders-dsn"));
    const char *ldsn = bench_opt(argc, argv, "--ledger-dsn", NULL);
    PGconn     *ledger = ldsn ? bench_pg(ldsn) : NULL;
    double      t0 = bench_now(), timeout = bench_opt_double(argc, argv, "--timeout", 120);
    long long   n_orders = bench_scalar(orders, "SELECT count(*) FROM orders"), pending, booked = 0;
    long long   first_pending = -1, first_behind = -1;
    int         settled;

    do {
        pending = bench_scalar(orders, "SELECT count(*) FROM outboxd.outbox WHERE NOT published");
        if (ledger != NULL)
            booked = bench_scalar(ledger, "SELECT count(*) FROM ledger_entries WHERE kind = 'charge'");
        settled = pending == 0 && (ledger == NULL || booked >= n_orders);
        if (first_pending < 0) {     /* how far behind the pipeline was when the load stopped */
            first_pending = pending;
            first_behind = ledger != NULL ? n_orders - booked : pending;
        }
        if (!settled)
            bench_sleep(0.2);
    } while (!settled && bench_now() - t0 < timeout);
    if (!settled)
        bench_note("settle: not caught up after %.0f s: %lld pending, %lld of %lld booked", timeout, pending,
                   booked, n_orders);
    json_t *out = json_pack("{s:f, s:b, s:I, s:I, s:I}", "seconds", bench_now() - t0, "settled", settled, "orders",
                            (json_int_t) n_orders, "pending_at_start", (json_int_t) first_pending,
                            "unbooked_at_start", (json_int_t) first_behind);
    if (ledger != NULL)
        json_object_set_new(out, "booked", json_integer(booked));
    bench_emit(out);
    PQfinish(orders);
    if (ledger != NULL)
        PQfinish(ledger);
    return 0;
}
