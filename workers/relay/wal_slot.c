/*
 * workers/relay/wal_slot.c: mode wal's publication, replication slot and
 * catch-up flag (relay_slots), on the relay's own orderdb session.
 *
 * Why the flag is set before the publication or slot changes it covers,
 * and who may change a publication, is in wal.c's notes; this file only
 * keeps to that order. It never touches the stream: when it finds the
 * slot lost it says so, and wal.c stops the stream.
 */
#include "wal_int.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/util.h"
#include "../../common/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed statement is logged and its result already cleared (ob_pg_check). */
static PGresult *
wal_checked(ob_relay_t *rl, PGresult *r, const char *what)
{
    char err[512];

    if ((r = ob_pg_check(rl->pg, r, NULL, err, sizeof(err))) == NULL)
        ob_log(OB_LOG_WARN, "wal: %s failed: %s", what, err);
    return r;
}

PGresult *
ob_wal_query(ob_relay_t *rl, const char *sql, int n, const char *const *params, const char *what)
{
    return wal_checked(rl, PQexecParams(rl->pg, sql, n, NULL, params, NULL, NULL, 0), what);
}

PGresult *
ob_wal_exec(ob_relay_t *rl, const char *sql, const char *what)
{
    return wal_checked(rl, PQexec(rl->pg, sql), what);
}

/* Runs one statement whose only parameter is the slot's name; 0 or -1 (logged). */
static int
wal_slot_sql(ob_relay_t *rl, const char *sql, const char *what)
{
    const char *p[1] = { rl->wal->slot };
    PGresult   *r = ob_wal_query(rl, sql, 1, p, what);

    PQclear(r);
    return r != NULL ? 0 : -1;
}

int
ob_wal_all_locks(ob_relay_t *rl)
{
    for (int i = 0; i < rl->nparts; i++)
        if (!rl->held[rl->parts[i]])
            return 0;
    return rl->nparts > 0;
}

void
ob_wal_counter(ob_relay_t *rl, int ctr, uint64_t v)
{
    atomic_store(&rl->slot->counters[ctr], v);
}

int
ob_wal_check_server(ob_relay_t *rl, char *err, size_t errlen)
{
    char      why[400];
    PGresult *r = ob_pg_check(rl->pg,
                              PQexec(rl->pg, "SELECT current_setting('wal_level'), current_setting('max_slot_wal_keep_size')"),
                              NULL, why, sizeof(why));
    int       rc = OB_EXIT_OK;

    if (r == NULL) {
        snprintf(err, errlen, "cannot read orderdb's settings: %s", why);
        return OB_EXIT_RETRY;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "logical") != 0) {
        snprintf(err, errlen,
                 "relay mode wal needs orderdb to run with wal_level = logical (it has %s): set it in "
                 "postgresql.conf and restart the server",
                 PQgetvalue(r, 0, 0));
        rc = OB_EXIT_FATAL;
    } else if (strcmp(PQgetvalue(r, 0, 1), "-1") == 0 && !rl->cfg->relay.allow_unbounded_slot) {
        snprintf(err, errlen,
                 "orderdb has max_slot_wal_keep_size = -1, so a stopped relay's replication slot would keep "
                 "write-ahead log without bound until the disk fills: set it (for example 2GB) or, knowingly, "
                 "[relay] allow_unbounded_slot = yes");
        rc = OB_EXIT_FATAL;
    }
    PQclear(r);
    return rc;
}

/*
 * Whether this relay may create or re-filter its publication now. Another
 * instance with another relay count (a rolling deploy) has the same
 * publication names: changing the filter under its stream would make it
 * stream, and confirm past, partitions it does not own. So only a relay
 * that holds the lock of every partition it owns may do it (no other relay
 * then streams any of them), and never while the slot is in use.
 */
static int
wal_may_change_publication(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    PGresult        *r;
    int              active;

    if (!ob_wal_all_locks(rl)) {
        if (!w->pub_wait_logged++)
            ob_log(OB_LOG_INFO, "wal: publication %s waits until this relay holds all its partitions", w->pub);
        return 0;
    }
    r = ob_wal_query(rl, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", 1,
                     (const char *const[]) { w->slot }, "read the slot");
    active = r == NULL || strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    PQclear(r);
    if (active && !w->pub_wait_logged++)
        ob_log(OB_LOG_WARN, "wal: slot %s is in use by another process; its publication %s is left as it is", w->slot,
               w->pub);
    if (!active)
        w->pub_wait_logged = 0;
    return !active;
}

/* Inside the transaction: whether the publication exists and its recorded filter is ours. 0, or -1. */
static int
wal_publication_state(ob_relay_t *rl, int *exists, int *same)
{
    struct ob_wal_s *w = rl->wal;
    PGresult        *r;

    r = ob_wal_query(rl, "SELECT row_filter FROM outboxd.relay_slots WHERE slot_name = $1 FOR UPDATE", 1,
                     (const char *const[]) { w->slot }, "read relay_slots");
    if (r == NULL)
        return -1;
    *same = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), w->filter) == 0;
    PQclear(r);
    r = ob_wal_query(rl, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, (const char *const[]) { w->pub },
                     "read pg_publication");
    if (r == NULL)
        return -1;
    *exists = PQntuples(r) == 1;
    PQclear(r);
    return 0;
}

/* Inside the transaction: the publication made to carry our filter, and the flag set with it. 0, or -1. */
static int
wal_publication_change(ob_relay_t *rl, int exists)
{
    struct ob_wal_s *w = rl->wal;
    const char      *p3[3] = { w->slot, w->pub, w->filter };
    char             ddl[512];
    PGresult        *r;

    /* names come from the validated [a-z0-9_] prefix and numbers: nothing to quote */
    if (exists)
        snprintf(ddl, sizeof(ddl), "ALTER PUBLICATION %s SET TABLE outboxd.outbox WHERE (%s)", w->pub, w->filter);
    else
        snprintf(ddl, sizeof(ddl), "CREATE PUBLICATION %s FOR TABLE outboxd.outbox WHERE (%s) WITH (publish = 'insert')",
                 w->pub, w->filter);
    if ((r = ob_wal_exec(rl, ddl, ddl)) == NULL)
        return -1;
    PQclear(r);
    r = ob_wal_query(rl,
                     "INSERT INTO outboxd.relay_slots (slot_name, publication, row_filter, catchup_needed) VALUES ($1, $2, $3, true)"
                     " ON CONFLICT (slot_name) DO UPDATE SET publication = EXCLUDED.publication,"
                     "   row_filter = EXCLUDED.row_filter, catchup_needed = true, updated_at = now()",
                     3, p3, "record the row filter");
    if (r == NULL)
        return -1;
    PQclear(r);
    ob_log(OB_LOG_INFO, "wal: publication %s now carries outbox rows WHERE (%s); a polling pass runs first", w->pub,
           w->filter);
    return 0;
}

/*
 * Creates the publication, or changes its row filter when the relay count
 * changed; either way catchup_needed is set in the same transaction, so no
 * crash can leave a changed filter without the polling pass that covers it.
 * 0 done, 1 not now (see wal_may_change_publication), -1 error.
 */
static int
wal_setup_publication(ob_relay_t *rl)
{
    PGresult *r;
    int       exists = 0, same = 0, ok;

    if ((r = ob_wal_exec(rl, "BEGIN", "BEGIN")) == NULL)
        return -1;
    PQclear(r);
    ok = wal_publication_state(rl, &exists, &same) == 0;
    if (ok && !(exists && same) && !wal_may_change_publication(rl)) {
        PQclear(ob_wal_exec(rl, "ROLLBACK", "ROLLBACK"));
        return 1;
    }
    if (ok && !(exists && same))
        ok = wal_publication_change(rl, exists) == 0;
    r = ob_wal_exec(rl, ok ? "COMMIT" : "ROLLBACK", "COMMIT");
    ok = r != NULL && ok;
    PQclear(r);
    return ok ? 0 : -1;
}

static int
wal_create_slot(ob_relay_t *rl)
{
    /* the flag first: a crash after the creation must still poll */
    if (ob_wal_update_flag(rl, 1) != 0 ||
        wal_slot_sql(rl, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", "create replication slot") != 0)
        return -1;
    ob_log(OB_LOG_INFO, "wal: replication slot %s created", rl->wal->slot);
    return 0;
}

/* A slot that existed is lost or gone: events may be missing from any stream. */
static int
wal_slot_lost(ob_relay_t *rl, const char *how, int drop)
{
    struct ob_wal_s *w = rl->wal;

    ob_log(OB_LOG_ERROR,
           "wal: replication slot %s was %s; events not yet marked published are sent by polling, then the slot is "
           "recreated",
           w->slot, how);
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_SLOT_INVALIDATIONS], 1);
    ob_worker_note(rl->slot, "slot %s was %s; recreated, its gap sent by polling", w->slot, how);
    if (wal_slot_sql(rl,
                     "UPDATE outboxd.relay_slots SET catchup_needed = true, invalidations = invalidations + 1,"
                     " updated_at = now() WHERE slot_name = $1",
                     "record the lost slot") != 0)
        return -1;
    w->catchup = 1;
    return drop ? wal_slot_sql(rl, "SELECT pg_drop_replication_slot($1)", "drop the lost slot") : 0;
}

/* Makes sure the slot exists and is usable; 1 ready, 0 not now, -1 error. */
static int
wal_setup_slot(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    const char      *p[1] = { w->slot };
    PGresult        *r;
    int              found, lost, active, had_row;

    r = ob_wal_query(rl,
                  "SELECT s.wal_status, s.active, (SELECT count(*) FROM outboxd.relay_slots WHERE slot_name = $1 AND NOT"
                  " catchup_needed) FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
                  1, p, "read the slot");
    if (r == NULL)
        return -1;
    found = !PQgetisnull(r, 0, 1);
    lost = found && strcmp(PQgetvalue(r, 0, 0), "lost") == 0;
    active = found && strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    had_row = strcmp(PQgetvalue(r, 0, 2), "1") == 0;   /* a slot was streaming before */
    PQclear(r);
    if (active) {
        if (!w->slot_busy_logged++)
            ob_log(OB_LOG_WARN, "wal: slot %s is in use by another process; polling what this relay holds", w->slot);
        return 0;
    }
    w->slot_busy_logged = 0;
    if (lost && wal_slot_lost(rl, "invalidated (it fell behind max_slot_wal_keep_size)", 1) != 0)
        return -1;
    if (!found && had_row && wal_slot_lost(rl, "dropped", 0) != 0)
        return -1;
    if ((lost || !found) && wal_create_slot(rl) != 0)
        return -1;
    return 1;
}

int
ob_wal_setup(ob_relay_t *rl)
{
    int rc = wal_setup_publication(rl);

    return rc == 0 ? wal_setup_slot(rl) : rc > 0 ? 0 : -1;
}

int
ob_wal_read_flag(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    const char      *p[1] = { w->slot };
    PGresult        *r = ob_wal_query(rl, "SELECT catchup_needed, row_filter FROM outboxd.relay_slots WHERE slot_name = $1", 1, p,
                                      "read the catch-up flag");
    int              ok = r != NULL && PQntuples(r) == 1;

    w->foreign_filter[0] = '\0';
    if (ok) {
        w->catchup = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        if (strcmp(PQgetvalue(r, 0, 1), w->filter) != 0)
            ob_strlcpy(w->foreign_filter, PQgetvalue(r, 0, 1), sizeof(w->foreign_filter));
    }
    PQclear(r);
    return ok ? 0 : -1;
}

int
ob_wal_update_flag(ob_relay_t *rl, int needed)
{
    struct ob_wal_s *w = rl->wal;
    const char      *p[2] = { w->slot, needed ? "true" : "false" };
    PGresult        *r = ob_wal_query(rl,
                                   "UPDATE outboxd.relay_slots SET catchup_needed = $2::boolean, updated_at = now()"
                                   " WHERE slot_name = $1",
                                   2, p, "update the catch-up flag");
    int              ok = r != NULL;

    PQclear(r);
    if (ok)
        w->catchup = needed;
    return ok ? 0 : -1;
}

/*
 * The relay in seat 0 drops the slots of seats no relay has held for
 * WAL_STALE_MS: an unused slot would hold WAL until it is invalidated.
 * The grace spares a relay restarting, or moving seats, its slot; the
 * partitions of a dropped one had new owners, who ran a polling pass when
 * their filters changed.
 */
void
ob_wal_drop_stale_slots(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    char             pattern[96], cls[16];
    const char      *p[2] = { pattern, cls };
    unsigned char    seen[OB_RELAY_SEATS_MAX] = { 0 };
    int64_t          now = ob_now_ms();
    PGresult        *r;

    snprintf(pattern, sizeof(pattern), "^%s_([0-9]+)$", rl->cfg->relay.slot_prefix);
    snprintf(cls, sizeof(cls), "%d", OB_RELAY_SEAT_CLASS);
    r = ob_wal_query(rl,
                  "SELECT slot_name, (substring(slot_name FROM $1))::int FROM pg_replication_slots s"
                  " WHERE database = current_database() AND NOT active AND slot_name ~ $1"
                  " AND length(substring(slot_name FROM $1)) < 5 AND NOT EXISTS (SELECT 1 FROM pg_locks l"
                  "   WHERE l.locktype = 'advisory' AND l.classid = $2::int::oid AND l.objsubid = 2 AND l.granted"
                  "   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                  "   AND l.objid = (substring(s.slot_name FROM $1))::int::oid)",
                  2, p, "list stale slots");
    if (r == NULL)
        return;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *name[1] = { PQgetvalue(r, i, 0) };
        int         seat = atoi(PQgetvalue(r, i, 1));
        if (seat < 0 || seat >= OB_RELAY_SEATS_MAX)
            continue;
        seen[seat] = 1;
        if (w->stale_since[seat] == 0)
            w->stale_since[seat] = now;
        if (now - w->stale_since[seat] < WAL_STALE_MS)
            continue;
        PGresult *d = ob_wal_query(rl,
                                   "WITH gone AS (DELETE FROM outboxd.relay_slots WHERE slot_name = $1)"
                                   " SELECT pg_drop_replication_slot($1)",
                                   1, name, "drop a stale slot");
        if (d != NULL)
            ob_log(OB_LOG_INFO, "wal: dropped slot %s, whose seat no relay has held for %d s", name[0],
                   WAL_STALE_MS / 1000);
        PQclear(d);
    }
    PQclear(r);
    for (int s = 0; s < OB_RELAY_SEATS_MAX; s++)
        if (!seen[s])
            w->stale_since[s] = 0;
}

/* Slot lag in bytes from the server, into shm. */
int
ob_wal_slot_lag(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    const char      *p[1] = { w->slot };
    PGresult        *r = ob_wal_query(rl,
                                   "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint,"
                                   " wal_status FROM pg_replication_slots WHERE slot_name = $1",
                                   1, p, "slot lag");
    int              gone = 0;

    if (r == NULL)
        return 0;
    if (PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, 1), "lost") == 0)
        gone = 1;
    else
        ob_wal_counter(rl, OB_CTR_RELAY_SLOT_LAG_BYTES, (uint64_t) atoll(PQgetvalue(r, 0, 0)));
    PQclear(r);
    return gone;
}
