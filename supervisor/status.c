/*
 * supervisor/status.c: `outboxd status [--json]`, read-only from shm.
 *
 * Reads nothing but the segment, so it answers while PostgreSQL and Kafka
 * are down. Snapshots are taken under the seqlocks and never block writers.
 */
#include "cmd.h"
#include "../shm/shm.h"
#include "../common/util.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    ob_shm_hdr_t  hdr;
    ob_shm_slot_t slots[OB_SHM_SLOTS];
    int           owner[OB_SHM_PARTITIONS];   /* slot index holding the partition, -1 none, -2 several */
} status_view_t;

static void
status_collect(ob_shm_t *shm, status_view_t *v)
{
    ob_shm_hdr_snapshot(&shm->map->hdr, &v->hdr);
    for (int p = 0; p < OB_SHM_PARTITIONS; p++)
        v->owner[p] = -1;
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_snapshot(&shm->map->slots[i], &v->slots[i]);
        if (v->slots[i].state == OB_SLOT_EMPTY)
            continue;
        for (int p = 0; p < OB_SHM_PARTITIONS; p++)
            if (ob_shm_is_owned(&v->slots[i], p))
                v->owner[p] = v->owner[p] == -1 ? i : -2;
    }
}

static double
status_age_s(int64_t beat_ms)
{
    return beat_ms ? (double) (ob_now_ms() - beat_ms) / 1000.0 : -1.0;
}

static void
status_print_text(ob_shm_t *shm, const status_view_t *v)
{
    int64_t now = ob_wall_ms();

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
               s->restarts, status_age_s(s->heartbeat_ms), s->reason);
    }
    printf("\n# partitions\n%9s %6s %9s %9s %9s %8s\n", "partition", "owner", "committed", "produced", "pending",
           "breaker");
    for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++) {
        ob_shm_part_t *pt = &shm->map->parts[p];
        char           owner[32];
        if (v->owner[p] == -1)
            snprintf(owner, sizeof(owner), "-");
        else if (v->owner[p] == -2)
            snprintf(owner, sizeof(owner), "SEVERAL");
        else
            snprintf(owner, sizeof(owner), "relay%d", v->slots[v->owner[p]].index);
        printf("%9d %6s %9llu %9llu %9llu %8s\n", p, owner, (unsigned long long) atomic_load(&pt->committed),
               (unsigned long long) atomic_load(&pt->produced), (unsigned long long) atomic_load(&pt->pending),
               atomic_load(&pt->breaker) == 0 ? "closed" : atomic_load(&pt->breaker) == 1 ? "open" : "half-open");
    }
}

static json_t *
status_slot_json(const ob_shm_slot_t *s, int slot, int64_t now)
{
    json_t *owned = json_array();

    for (int p = 0; p < OB_SHM_PARTITIONS; p++)
        if (ob_shm_is_owned(s, p))
            json_array_append_new(owned, json_integer(p));
    return json_pack("{s:i, s:s, s:i, s:i, s:s, s:I, s:i, s:f, s:i, s:s, s:o}", "slot", slot, "kind",
                     ob_kind_name(s->kind), "index", s->index, "pid", s->pid, "state", ob_slot_state_name(s->state),
                     "uptime_s", (json_int_t) (s->pid ? (now - s->started_wall_ms) / 1000 : 0), "restarts",
                     (int) s->restarts, "heartbeat_age_s", status_age_s(s->heartbeat_ms), "generation",
                     (int) s->generation, "reason", s->reason, "partitions", owned);
}

static void
status_print_json(ob_shm_t *shm, const status_view_t *v)
{
    int64_t now = ob_wall_ms();
    json_t *workers = json_array(), *parts = json_array(), *root;

    for (int i = 0; i < OB_SHM_SLOTS; i++)
        if (v->slots[i].state != OB_SLOT_EMPTY)
            json_array_append_new(workers, status_slot_json(&v->slots[i], i, now));
    for (int p = 0; p < v->hdr.partitions && p < OB_SHM_PARTITIONS; p++) {
        ob_shm_part_t *pt = &shm->map->parts[p];
        json_array_append_new(
            parts, json_pack("{s:i, s:i, s:I, s:I, s:I, s:i}", "partition", p, "owner_slot", v->owner[p],
                             "committed", (json_int_t) atomic_load(&pt->committed), "produced",
                             (json_int_t) atomic_load(&pt->produced), "pending",
                             (json_int_t) atomic_load(&pt->pending), "breaker", (int) atomic_load(&pt->breaker)));
    }
    root = json_pack("{s:{s:s, s:i, s:I, s:I, s:s, s:s, s:o, s:s}, s:o, s:o}", "supervisor", "name", v->hdr.name,
                     "pid", (int) v->hdr.sup_pid, "uptime_s", (json_int_t) ((now - v->hdr.start_wall_ms) / 1000),
                     "generation", (json_int_t) v->hdr.generation, "config", v->hdr.cfg_path, "last_reload",
                     v->hdr.reload_ok < 0 ? "never" : v->hdr.reload_ok ? "ok" : "failed", "last_reload_at_ms",
                     v->hdr.reload_ok < 0 ? json_null() : json_integer(v->hdr.reload_wall_ms), "last_reload_message",
                     v->hdr.reload_msg, "workers", workers, "partitions", parts);
    json_dumpf(root, stdout, JSON_INDENT(2));
    putchar('\n');
    json_decref(root);
}

int
ob_cmd_status(const ob_cfg_t *cfg, int json)
{
    static status_view_t v;
    char                 err[256];
    ob_shm_t            *shm = ob_shm_attach(cfg->supervisor.name, err, sizeof(err));

    if (shm == NULL) {
        fprintf(stderr, "outboxd: %s\n", err);
        return 1;
    }
    status_collect(shm, &v);
    if (v.hdr.sup_pid <= 0 || (kill(v.hdr.sup_pid, 0) != 0 && errno == ESRCH)) {
        fprintf(stderr, "outboxd: no outboxd instance \"%s\" is running (segment left by dead pid %d)\n",
                cfg->supervisor.name, (int) v.hdr.sup_pid);
        ob_shm_close(shm, 0);
        return 1;
    }
    if (json)
        status_print_json(shm, &v);
    else
        status_print_text(shm, &v);
    ob_shm_close(shm, 0);
    return 0;
}
