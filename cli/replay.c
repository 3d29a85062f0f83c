/*
 * cli/replay.c: `outboxd replay (--order ID | --event ID | --since TS
 * | --quarantined) [--dry-run]`.
 *
 * Re-enqueues events: published rows are marked pending again; quarantined
 * rows go back into the outbox under their original ids, so they are sent
 * before the later events of their order that were parked behind them.
 * Safe because consumers apply each event id once. Relays in mode wal are
 * told to run a polling pass (relay_slots.catchup_needed). --dry-run does the same
 * inside a transaction it rolls back, and prints what it would have done.
 */
#include "cmd.h"
#include "../common/log.h"
#include "../common/pg.h"
#include "../common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *unquarantine_sql =
    "WITH moved AS (DELETE FROM outboxd.outbox_quarantine WHERE %s RETURNING *)"
    " INSERT INTO outboxd.outbox (id, event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload,"
    "   content_type, headers, created_at) OVERRIDING SYSTEM VALUE"
    " SELECT id, event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload, content_type, headers,"
    "   created_at"
    " FROM moved";

static const char *catchup_sql = "UPDATE outboxd.relay_slots SET catchup_needed = true, updated_at = now() WHERE %s";

static const char *repend_sql =
    "UPDATE outboxd.outbox SET published = false, published_at = NULL, kafka_offset = NULL WHERE published AND %s";

/* Runs one replay statement with an optional parameter; returns rows touched or -1. */
static long
replay_exec(PGconn *pg, const char *fmt, const char *where, const char *param, char *err, size_t errlen)
{
    char        sql[1024];
    const char *params[1] = { param };

    snprintf(sql, sizeof(sql), fmt, where);
    return ob_pg_command(pg, sql, param ? 1 : 0, param ? params : NULL, NULL, err, errlen);
}

int
ob_cmd_replay(const ob_cfg_t *cfg, const char *what, const char *value, int dry_run)
{
    const char *where_q = NULL, *where_o = NULL;
    char        err[1024];
    long        requeued = 0, restored = 0;
    PGconn     *pg = ob_pg_connect(cfg->orders.dsn, "outboxd replay", err, sizeof(err));

    if (pg == NULL) {
        fprintf(stderr, "outboxd: replay: %s\n", err);
        return 1;
    }
    if (strcmp(what, "quarantined") == 0) {
        where_q = "true";
    } else if (strcmp(what, "order") == 0) {
        where_q = where_o = "aggregate_type = 'order' AND aggregate_id = $1::uuid::text";
    } else if (strcmp(what, "event") == 0) {
        where_q = where_o = "event_id = $1::uuid";
    } else {
        where_o = "created_at >= $1::timestamptz";
    }
    if (ob_pg_exec(pg, "BEGIN", err, sizeof(err)) != 0)
        goto fail;
    if (where_q != NULL &&
        (restored = replay_exec(pg, unquarantine_sql, where_q, where_o ? value : NULL, err, sizeof(err))) < 0)
        goto fail;
    if (where_o != NULL && (requeued = replay_exec(pg, repend_sql, where_o, value, err, sizeof(err))) < 0)
        goto fail;
    /* relay mode wal streams inserts only: re-pended rows need its polling pass */
    if (restored + requeued > 0 && replay_exec(pg, catchup_sql, "true", NULL, err, sizeof(err)) < 0)
        goto fail;
    if (ob_pg_exec(pg, dry_run ? "ROLLBACK" : "COMMIT", err, sizeof(err)) != 0)
        goto fail;
    printf("%s%ld quarantined event(s) restored to the outbox, %ld published event(s) marked pending again\n",
           dry_run ? "dry run (nothing changed): " : "", restored, requeued);
    PQfinish(pg);
    return 0;
fail:
    fprintf(stderr, "outboxd: replay failed, nothing changed: %s", err);
    PQfinish(pg);
    return 1;
}
