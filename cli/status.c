/*
 * cli/status.c: `outboxd status [--json]`, read-only from shm.
 *
 * Reads nothing but the segment, so it answers while PostgreSQL and Kafka
 * are down. Snapshots are taken under the seqlocks and never block writers.
 */
#include "cmd.h"
#include "../common/status.h"
#include "../shm/shm.h"
#include "../common/util.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* Relays in mode wal: stream state and slot safety, loud when a slot was lost. */
static void
status_wal(const ob_status_t *v)
{
    int header = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        uint64_t             c[OB_SHM_COUNTERS];
        if (s->state == OB_SLOT_EMPTY || s->kind != OB_KIND_RELAY)
            continue;
        for (int k = 0; k < OB_SHM_COUNTERS; k++)
            c[k] = atomic_load(&s->counters[k]);
        if (!c[OB_CTR_RELAY_STREAMING] && !c[OB_CTR_RELAY_CATCHUP] && !c[OB_CTR_RELAY_STREAMED] &&
            !c[OB_CTR_RELAY_SLOT_INVALIDATIONS])
            continue;     /* not mode wal */
        if (!header++)
            printf("\n# wal streams\n%-7s %-12s %10s %15s %12s %13s  %s\n", "relay", "state", "streamed",
                   "slot_lag_bytes", "slot_lag_ms", "invalidations", "note");
        printf("relay%-2d %-12s %10llu %15llu %12llu %13llu  %s\n", s->index,
               c[OB_CTR_RELAY_STREAMING] ? "streaming" : c[OB_CTR_RELAY_CATCHUP] ? "polling pass" : "waiting",
               (unsigned long long) c[OB_CTR_RELAY_STREAMED], (unsigned long long) c[OB_CTR_RELAY_SLOT_LAG_BYTES],
               (unsigned long long) c[OB_CTR_RELAY_SLOT_LAG_MS], (unsigned long long) c[OB_CTR_RELAY_SLOT_INVALIDATIONS],
               c[OB_CTR_RELAY_SLOT_INVALIDATIONS] ? "SLOT LOST AND RECREATED: see the log" : s->note);
    }
}

/* Consumers: progress, dead letters, loud when stalled. */
static void
status_consumers(const ob_status_t *v)
{
    int header = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        uint64_t             c[OB_SHM_COUNTERS];
        if (s->state == OB_SLOT_EMPTY || s->kind != OB_KIND_CONSUMER)
            continue;
        for (int k = 0; k < OB_SHM_COUNTERS; k++)
            c[k] = atomic_load(&s->counters[k]);
        if (!header++)
            printf("\n# consumers\n%-9s %10s %12s %10s %9s  %s\n", "consumer", "applied", "dead_letters", "lag",
                   "parked", "progress");
        printf("consumer%-1d %10llu %12llu %10llu %9llu  ", s->index, (unsigned long long) c[OB_CTR_CONS_APPLIED],
               (unsigned long long) c[OB_CTR_CONS_DEAD_LETTERS], (unsigned long long) c[OB_CTR_CONS_LAG],
               (unsigned long long) c[OB_CTR_CONS_PARKED]);
        if (s->pid > 0 && c[OB_CTR_CONS_STALLED])
            printf("STALLED: nothing applied for %llu s while events wait; see the log\n",
                   (unsigned long long) (c[OB_CTR_CONS_NO_PROGRESS_MS] / 1000));
        else
            printf("ok\n");
    }
}

static void
status_print_text(const ob_status_t *v)
{
    int64_t now = v->now_wall_ms;

    printf("# supervisor\n");
    printf("name: %s\npid: %d\nuptime_s: %lld\ngeneration: %llu\nconfig: %s\nconfig_digest: %016llx\n",
           v->hdr.name, (int) v->hdr.sup_pid, (long long) ((now - v->hdr.start_wall_ms) / 1000),
           (unsigned long long) v->hdr.generation, v->hdr.cfg_path, (unsigned long long) v->hdr.cfg_digest);
    if (v->hdr.reload_ok < 0)
        printf("last_reload: never\n");
    else
        printf("last_reload: %s, %lld s ago: %s\n", v->hdr.reload_ok ? "ok" : "FAILED",
               (long long) ((now - v->hdr.reload_wall_ms) / 1000), v->hdr.reload_msg);
    printf("\n# workers\n%-9s %5s %8s %-10s %8s %8s %9s  %s\n", "kind", "index", "pid", "state", "uptime_s",
           "restarts", "beat_age", "note");
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        const ob_shm_slot_t *s = &v->slots[i];
        if (s->state == OB_SLOT_EMPTY)
            continue;
        printf("%-9s %5d %8d %-10s %8lld %8u %9.1f  %s\n", ob_kind_name(s->kind), s->index, s->pid,
               ob_slot_state_name(s->state), s->pid ? (long long) ((now - s->started_wall_ms) / 1000) : 0LL,
               s->restarts, ob_status_beat_age(v, s), s->reason);
    }
    status_wal(v);
    status_consumers(v);
    printf("\n# partitions\n%9s %8s %9s %9s %9s %9s\n", "partition", "owner", "committed", "produced", "pending",
           "breaker");
    for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++) {
        ob_shm_part_t *pt = (ob_shm_part_t *) &v->parts[p];
        char           owner[32];
        int            br = atomic_load(&pt->breaker);
        if (v->owner[p] == -1)
            snprintf(owner, sizeof(owner), "-");
        else if (v->owner[p] == -2)
            snprintf(owner, sizeof(owner), "SEVERAL");
        else
            snprintf(owner, sizeof(owner), "relay%d", v->slots[v->owner[p]].index);
        printf("%9d %8s %9llu %9llu %9llu %9s\n", p, owner, (unsigned long long) atomic_load(&pt->committed),
               (unsigned long long) atomic_load(&pt->produced), (unsigned long long) atomic_load(&pt->pending),
               br == OB_BREAKER_CLOSED ? "closed" : br == OB_BREAKER_OPEN ? "open" : "half-open");
    }
    printf("\n# topics\n%-40s %9s\n", "topic", "produced");
    for (int t = 0; t < v->ntopics; t++)
        printf("%-40s %9llu\n", v->topics[t].name, (unsigned long long) ob_status_topic_produced(v, t));
}

int
ob_cmd_status(const ob_cfg_t *cfg, int json)
{
    static ob_status_t v;
    char                 err[256];
    ob_shm_t            *shm = ob_shm_attach(cfg->supervisor.name, err, sizeof(err));

    if (shm == NULL) {
        fprintf(stderr, "outboxd: %s\n", err);
        return 1;
    }
    ob_status_collect(shm, &v);
    if (v.hdr.sup_pid <= 0 || (kill(v.hdr.sup_pid, 0) != 0 && errno == ESRCH)) {
        fprintf(stderr, "outboxd: no outboxd instance \"%s\" is running (segment left by dead pid %d)\n",
                cfg->supervisor.name, (int) v.hdr.sup_pid);
        ob_shm_close(shm, 0);
        return 1;
    }
    if (json) {
        json_t *j = ob_status_json(&v);
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(j);
    } else {
        status_print_text(&v);
    }
    ob_shm_close(shm, 0);
    return 0;
}
