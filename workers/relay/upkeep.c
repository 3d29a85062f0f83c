/*
 * workers/relay/upkeep.c: the relay's state that every engine keeps up to
 * date, and the chores the loop runs beside them: the circuit breaker
 * (opened and closed by the polling cycle and the stream, probed by the
 * loop), backlog figures in shm, and the janitor.
 */
#include "relay_int.h"
#include "../../common/pg.h"
#include "../../common/pgarr.h"
#include "../../common/log.h"
#include "../../common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define BREAKER_MIN_MS 250
#define BREAKER_MAX_MS 10000
#define STATS_CAP      10000    /* pending counts stop at this ("at least"): counting costs the relay's session */
#define JANITOR_ROWS   "1000"

void
ob_relay_set_breaker(ob_relay_t *rl, ob_breaker_t b)
{
    uint32_t jitter;

    if (b == OB_BREAKER_OPEN) {
        /* doubling backoff with +-25% jitter, so relays do not probe in step */
        rl->breaker_backoff_ms = rl->breaker_backoff_ms ? rl->breaker_backoff_ms * 2 : BREAKER_MIN_MS;
        if (rl->breaker_backoff_ms > BREAKER_MAX_MS)
            rl->breaker_backoff_ms = BREAKER_MAX_MS;
        if (getrandom(&jitter, sizeof(jitter), 0) != sizeof(jitter))
            jitter = 0;
        rl->breaker_until_ms =
            ob_now_ms() + rl->breaker_backoff_ms * 3 / 4 + (int64_t) (jitter % (uint32_t) (rl->breaker_backoff_ms / 2 + 1));
    } else if (b == OB_BREAKER_CLOSED) {
        if (rl->breaker != OB_BREAKER_CLOSED)
            ob_log(OB_LOG_INFO, "Kafka answers again; circuit breaker closed");
        rl->breaker_backoff_ms = 0;
    }
    rl->breaker = b;
    for (int i = 0; i < rl->nparts; i++)
        atomic_store(&ob_shm->map->parts[rl->parts[i]].breaker, (int32_t) b);
    if (rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED && rl->index == 0)
        for (int p = 0; p < rl->cfg->kafka.partitions; p++)
            atomic_store(&ob_shm->map->parts[p].breaker, (int32_t) b);
}

char *
ob_relay_held_array(const ob_relay_t *rl, int *n)
{
    ob_pgarr_t a = { 0 };

    *n = 0;
    for (int i = 0; i < rl->nparts; i++)
        if (rl->held[rl->parts[i]])
            ob_pgarr_add_int(&a, rl->parts[i]), (*n)++;
    return ob_pgarr_end(&a);
}

/* Partitions whose stats and janitor work this relay does: its own in
 * partitioned mode; all of them for relay 0 in skip_locked mode. NULL when none. */
static char *
upkeep_scope_array(ob_relay_t *rl)
{
    ob_pgarr_t a = { 0 };
    int        n = 0;
    char      *s;

    if (rl->cfg->relay.mode != OB_RELAY_SKIP_LOCKED)
        s = ob_relay_held_array(rl, &n);
    else {
        for (int p = 0; rl->index == 0 && p < rl->cfg->kafka.partitions; p++)
            ob_pgarr_add_int(&a, p), n++;
        s = ob_pgarr_end(&a);
    }
    if (n == 0) {
        free(s);
        return NULL;
    }
    return s;
}

void
ob_relay_stats(ob_relay_t *rl)
{
    char       *held = upkeep_scope_array(rl), err[256];
    const char *params[1] = { held };
    PGresult   *r;

    if (held == NULL)
        return;
    r = PQexecParams(rl->pg,
                     "SELECT p.part,"
                     " (SELECT count(*) FROM (SELECT 1 FROM outboxd.outbox WHERE partition = p.part AND NOT published"
                     "   LIMIT " OB_STR(STATS_CAP) ") s),"
                     " (SELECT (extract(epoch FROM created_at) * 1000)::bigint FROM outboxd.outbox"
                     "   WHERE partition = p.part AND NOT published ORDER BY id LIMIT 1)"
                     " FROM unnest($1::int[]) AS p(part)",
                     1, NULL, params, NULL, NULL, 0);
    free(held);
    r = ob_pg_check(rl->pg, r, NULL, err, sizeof(err));
    if (r == NULL) {
        ob_log(OB_LOG_WARN, "stats: %s", err);
        return;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        int p = atoi(PQgetvalue(r, i, 0));
        if (p < 0 || p >= OB_SHM_PARTITIONS)
            continue;
        atomic_store(&ob_shm->map->parts[p].pending, (uint64_t) atoll(PQgetvalue(r, i, 1)));
        atomic_store(&ob_shm->map->parts[p].oldest_pending_ms,
                     PQgetisnull(r, i, 2) ? 0 : (int64_t) atoll(PQgetvalue(r, i, 2)));
    }
    PQclear(r);
}

void
ob_relay_janitor(ob_relay_t *rl)
{
    char       *held = upkeep_scope_array(rl), secs[16], err[256];
    const char *params[2] = { secs, held };

    if (held == NULL)
        return;
    snprintf(secs, sizeof(secs), "%d", rl->cfg->relay.retention_s);
    /* small batches keep each delete's locks short; a few per visit keeps up */
    for (int round = 0; round < 10; round++) {
        long deleted = ob_pg_command(rl->pg,
                                     "DELETE FROM outboxd.outbox WHERE id IN (SELECT id FROM outboxd.outbox WHERE published"
                                     " AND published_at < now() - make_interval(secs => $1::int)"
                                     " AND partition = ANY($2::int[]) LIMIT " JANITOR_ROWS ")",
                                     2, params, NULL, err, sizeof(err));
        if (deleted < 0)
            ob_log(OB_LOG_WARN, "janitor: %s", err);
        if (deleted < 1000)
            break;
        ob_shm_beat(rl->slot);
    }
    free(held);
}
