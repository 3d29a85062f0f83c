/*
 * bench/stages.c: where an event's time went, stage by stage, from the
 * histograms the workers keep in shm (DESIGN §2, shm.h OB_STAGE_*).
 *
 * The same counters /metrics exposes as outboxd_stage_duration_seconds, so
 * the bench report and a dashboard on a live instance tell one story. Each
 * stage is summed over every worker of its kind: the pipeline is one
 * histogram per stage, whichever relay or consumer handled an event.
 *
 * The buckets are coarse (0.5 ms .. 1 s), so percentiles are estimates:
 * linear interpolation inside the bucket that holds the rank, as
 * Prometheus's histogram_quantile() does. The mean is exact (the workers
 * also sum the microseconds).
 */
#include "bench/obbench.h"
#include "common/util.h"

#include <stdio.h>
#include <string.h>

/* The stages in /metrics order, under /metrics' names. */
static const struct {
    const char *name;
    int         kind;
    int         stage;
} stage_defs[] = {
    { "commit_to_claim", OB_KIND_RELAY, OB_STAGE_RELAY_CLAIM },
    { "claim_to_ack", OB_KIND_RELAY, OB_STAGE_RELAY_ACK },
    { "produce_to_fetch", OB_KIND_CONSUMER, OB_STAGE_CONS_FETCH },
    { "fetch_to_ledger_commit", OB_KIND_CONSUMER, OB_STAGE_CONS_APPLY },
    { "occurred_to_ledger_commit", OB_KIND_CONSUMER, OB_STAGE_CONS_TOTAL },
};
#define STAGE_NDEFS (sizeof(stage_defs) / sizeof(stage_defs[0]))

static const double stage_pcts[] = { 50, 90, 99 };
#define STAGE_NPCTS (sizeof(stage_pcts) / sizeof(stage_pcts[0]))

typedef struct {
    uint64_t buckets[OB_STAGE_BUCKETS];   /* not cumulative; the last is +Inf */
    uint64_t sum_us;
    uint64_t count;
    int      workers;
} stage_hist_t;

/* Upper bound of bucket b (not the +Inf one), in ms. */
static double
stage_bound_ms(int b)
{
    return (double) ob_stage_bounds_us[b] / 1000.0;
}

/*
 * Kind and state of slot i. The supervisor rewrites a slot's identity under
 * its seqlock while starting or reaping a worker; after a settle nothing
 * should, so a slot that stays busy is an error rather than a slot skipped
 * (which would undercount without a word).
 */
static void
stage_slot(ob_shm_t *shm, int i, ob_shm_slot_t *out)
{
    for (int tries = 0; tries < 50; tries++) {
        if (ob_shm_slot_snapshot(&shm->map->slots[i], out) == 0)
            return;
        bench_sleep(0.02);
    }
    bench_die("stages: slot %d kept changing for a second", i);
}

/* Stage `stage` of every live worker of `kind`, summed into h. */
static void
stage_sum(ob_shm_t *shm, int kind, int stage, stage_hist_t *h)
{
    int base = OB_CTR_STAGE_BASE + stage * OB_STAGE_WIDTH;

    memset(h, 0, sizeof(*h));
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t s;
        stage_slot(shm, i, &s);
        /* live as /metrics counts it: a slot the supervisor has not freed */
        if (s.kind != kind || s.state == OB_SLOT_EMPTY)
            continue;
        for (int b = 0; b < OB_STAGE_BUCKETS; b++)
            h->buckets[b] += atomic_load(&s.counters[base + b]);
        h->sum_us += atomic_load(&s.counters[base + OB_STAGE_BUCKETS]);
        h->workers++;
    }
    for (int b = 0; b < OB_STAGE_BUCKETS; b++)
        h->count += h->buckets[b];
}

/*
 * The p-th percentile in ms: the bucket holding rank p/100 * count, then
 * linear interpolation between its bounds (the first bucket from 0). A rank
 * in the +Inf bucket has no upper bound to interpolate towards: the last
 * finite bound is returned and *beyond set, so it reads "> 1000 ms".
 */
static double
stage_pct(const stage_hist_t *h, double p, int *beyond)
{
    double rank = p / 100.0 * (double) h->count, below = 0;

    *beyond = 0;
    for (int b = 0; b < OB_STAGE_BUCKETS - 1; b++) {
        double c = (double) h->buckets[b];
        if (c > 0 && below + c >= rank) {
            double lo = b == 0 ? 0 : stage_bound_ms(b - 1);
            return lo + (stage_bound_ms(b) - lo) * (rank - below) / c;
        }
        below += c;
    }
    *beyond = 1;
    return stage_bound_ms(OB_STAGE_BUCKETS - 2);
}

/* {kind, workers, count, mean_ms, p50_ms, p90_ms, p99_ms, beyond_last_bound, sum_us, buckets} */
static json_t *
stage_json(const stage_hist_t *h, int kind)
{
    json_t *j = json_object(), *beyond = json_array(), *buckets = json_array();
    char    key[16];

    json_object_set_new(j, "kind", json_string(ob_kind_name(kind)));
    json_object_set_new(j, "workers", json_integer(h->workers));
    json_object_set_new(j, "count", json_integer((json_int_t) h->count));
    json_object_set_new(j, "mean_ms",
                        h->count ? json_real((double) h->sum_us / (double) h->count / 1000.0) : json_null());
    for (size_t k = 0; k < STAGE_NPCTS; k++) {
        int over = 0;
        snprintf(key, sizeof(key), "p%.0f_ms", stage_pcts[k]);
        json_object_set_new(j, key, h->count ? json_real(stage_pct(h, stage_pcts[k], &over)) : json_null());
        if (over) {
            snprintf(key, sizeof(key), "p%.0f", stage_pcts[k]);
            json_array_append_new(beyond, json_string(key));
        }
    }
    json_object_set_new(j, "beyond_last_bound", beyond);
    json_object_set_new(j, "sum_us", json_integer((json_int_t) h->sum_us));
    for (int b = 0; b < OB_STAGE_BUCKETS; b++)
        json_array_append_new(buckets, json_integer((json_int_t) h->buckets[b]));
    json_object_set_new(j, "buckets", buckets);
    return j;
}

static json_t *
stage_bounds_json(void)
{
    json_t *a = json_array();

    for (int b = 0; b < OB_STAGE_BUCKETS - 1; b++)
        json_array_append_new(a, json_real(stage_bound_ms(b)));
    return a;
}

/*
 * stages --name N [--pid P]
 * Each stage's histogram summed over the live workers of its kind, with
 * estimated percentiles. Run once the pipeline has settled, before the stop:
 * a stopped instance's segment is gone.
 */
int
cmd_stages(int argc, char **argv)
{
    const char *name = bench_opt_req(argc, argv, "--name");
    int         pid = (int) bench_opt_long(argc, argv, "--pid", 0);
    ob_shm_t   *shm = bench_attach(name, pid, 5);
    json_t     *stages = json_object();

    for (size_t i = 0; i < STAGE_NDEFS; i++) {
        stage_hist_t h;
        stage_sum(shm, stage_defs[i].kind, stage_defs[i].stage, &h);
        json_object_set_new(stages, stage_defs[i].name, stage_json(&h, stage_defs[i].kind));
    }
    bench_emit(json_pack("{s:s, s:i, s:I, s:o, s:s, s:o}", "name", name, "pid", pid, "wall_ms",
                         (json_int_t) ob_wall_ms(), "bounds_ms", stage_bounds_json(), "estimate",
                         "buckets[] counts per bucket (not cumulative), upper bounds bounds_ms[] then +Inf; "
                         "percentiles interpolated linearly inside the bucket holding the rank (the first from 0), "
                         "as Prometheus's histogram_quantile; a percentile in the +Inf bucket is given as the last "
                         "bound and listed in beyond_last_bound (read: above it); mean_ms is exact (sum_us / count)",
                         "stages", stages));
    ob_shm_close(shm, 0);
    return 0;
}
