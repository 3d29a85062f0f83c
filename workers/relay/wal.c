/*
 * workers/relay/wal.c: relay mode wal, change data capture from orderdb's
 * write-ahead log instead of polling the outbox.
 *
 * NOTES
 *   Shape: relay i of R owns the logical replication slot <prefix>_i and
 *   the publication <prefix>_i of inserts into outbox WHERE (partition % R
 *   = i) (a PostgreSQL 15 row filter). It streams with pgoutput protocol 1
 *   in binary, produces each insert exactly as the polling mode does, and
 *   confirms a transaction's end LSN to the server only when Kafka has
 *   acknowledged every event of it and of every earlier transaction and
 *   those events are marked published in orderdb. Marking is asynchronous
 *   (one UPDATE per WAL_MARK_BATCH events or WAL_MARK_MS), so reconcile,
 *   replay, the janitor and the backlog figures work in both modes.
 *
 *   Why marks come before the confirmation: a confirmed transaction is
 *   never streamed again, so a row confirmed but unmarked would stay
 *   pending for ever. With marks first, a crash between the two only
 *   re-sends (the consumer drops duplicates).
 *
 *   What the stream cannot see, polling sends: rows committed before the
 *   slot existed (first start, slot invalidated or dropped) and rows of
 *   partitions that changed hands when the relay count changed (the row
 *   filter is read as of each change's LSN, so a re-split leaves a gap for
 *   moved partitions). Each time the publication's filter changes or the
 *   slot is (re)created, relay_slots.catchup_needed is set first (in the
 *   same transaction as the filter change); the relay then runs the
 *   ordinary polling cycle over its partitions until one finds nothing,
 *   clears the flag, and only then starts the stream. Coverage: the slot
 *   exists before that last polling snapshot, so every commit is either in
 *   the snapshot (polled) or after the slot's position (streamed); a few
 *   may be both, which is a duplicate, never a gap. `outboxd replay` also
 *   sets the flag, since re-pending rows is an UPDATE the stream ignores.
 *
 *   Ownership: the stream runs only while the relay holds the advisory
 *   lock of every partition it owns; otherwise it polls what it holds, as
 *   the partitioned mode does. Events of partitions the relay does not own
 *   (old filter, before a re-split's LSN) are skipped in C.
 *
 *   Memory: at most WAL_WINDOW events are in flight; past that the relay
 *   stops reading the socket (the server holds the rest, spilling large
 *   transactions to disk itself), so a 1 000 000-row transaction costs
 *   what 16 384 events do.
 *
 *   Slot safety: the relay refuses to start when max_slot_wal_keep_size is
 *   unbounded (unless [relay] allow_unbounded_slot); the slot's lag is in
 *   shm and /metrics; a slot found lost (invalidated) or missing is logged
 *   as an error, counted, recreated, and the catch-up pass sends what it
 *   lost.
 */
#include "relay_int.h"
#include "pgoutput.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAL_WINDOW     16384     /* events produced and not yet settled */
#define WAL_MARK_BATCH 5000
#define WAL_MARK_MS    200
#define WAL_MARK_TRIES 50        /* x WAL_MARK_MS: how long a row may stay invisible */
#define WAL_STATUS_MS  1000      /* far inside wal_sender_timeout (60 s by default) */
#define WAL_CONFIRM_MS 20        /* least gap between two confirmations */
#define WAL_STEP_MS    100
#define WAL_RETRY_MS   1000

typedef enum { EV_PENDING = 0, EV_OK, EV_RETRY, EV_REJECTED } ev_state_t;

typedef struct {
    int64_t             id;
    int64_t             offset;
    int64_t             acked_ms;
    int32_t             partition;
    ev_state_t          state;
    rd_kafka_resp_err_t err;
} wal_ev_t;

typedef struct {
    uint64_t end_lsn;
    uint64_t upto;               /* events numbered below this belong to it or earlier */
    int64_t  recv_ms;
} wal_commit_t;

struct ob_wal_s {
    char         slot[64], pub[64], filter[96];
    char         foreign_filter[96]; /* relay_slots' filter when another instance set it, else "" */
    int          ready;          /* publication and slot are as configured */
    int          catchup;        /* a polling pass must find nothing before streaming */
    int          slot_busy_logged;
    int          pub_wait_logged;
    int64_t      retry_at_ms;
    PGconn      *repl;
    int          streaming;
    int64_t      stopped_ms;     /* when the stream last stopped (lag while polling) */
    int          pipe[2];        /* librdkafka writes a byte when a delivery report is queued */
    rd_kafka_t  *pipe_rk;        /* the producer the pipe is attached to */

    /* events of this stream session: numbers in [done, next) are in flight */
    uint64_t     base, done, next, marked;
    wal_ev_t    *ring;
    wal_commit_t *commits;       /* ring of commits not yet confirmed */
    uint64_t     chead, ctail;
    int          in_txn;
    ob_pgo_outbox_map_t map;
    int          have_map;
    uint64_t     received, target, confirmed;
    int64_t      last_confirm_ms, next_status_ms;
    int64_t      last_ack_ms;    /* last acknowledgement, or the stream's start */
    int          stalled;

    ob_relay_mark_t marks[WAL_MARK_BATCH];
    uint64_t     mark_n[WAL_MARK_BATCH];      /* each mark's event number (the confirmation gate) */
    uint8_t      mark_tries[WAL_MARK_BATCH];
    unsigned char missing[WAL_MARK_BATCH];
    int          nmark;
    int64_t      mark_due_ms;

    char       (*quar)[37];      /* orders with a quarantined event, sorted: their events wait */
    int          nquar;
};

static int wal_update_flag(ob_relay_t *rl, int needed);

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */
/* ------------------------------------------------------------------------ */

static PGresult *
wal_query(ob_relay_t *rl, const char *sql, int n, const char *const *params)
{
    return PQexecParams(rl->pg, sql, n, NULL, params, NULL, NULL, 0);
}

static int
wal_ok(PGresult *r, const char *what)
{
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        ob_log(OB_LOG_WARN, "wal: %s failed: %s", what, PQresultErrorMessage(r));
    return ok;
}

/* Runs one statement whose only parameter is the slot's name; 0 or -1 (logged). */
static int
wal_slot_sql(ob_relay_t *rl, const char *sql, const char *what)
{
    const char *p[1] = { rl->wal->slot };
    PGresult   *r = wal_query(rl, sql, 1, p);
    int         ok = wal_ok(r, what);

    PQclear(r);
    return ok ? 0 : -1;
}

static int
wal_all_locks(ob_relay_t *rl)
{
    for (int i = 0; i < rl->nparts; i++)
        if (!rl->held[rl->parts[i]])
            return 0;
    return rl->nparts > 0;
}

static void
wal_counter(ob_relay_t *rl, int ctr, uint64_t v)
{
    atomic_store(&rl->slot->counters[ctr], v);
}

/* ------------------------------------------------------------------------ */
/* start-up checks and set-up of publication and slot                         */
/* ------------------------------------------------------------------------ */

static int
wal_check_server(ob_relay_t *rl, char *err, size_t errlen)
{
    PGresult *r = wal_query(rl, "SELECT current_setting('wal_level'), current_setting('max_slot_wal_keep_size')",
                            0, NULL);
    int       rc = OB_EXIT_OK;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "cannot read orderdb's settings: %s", PQresultErrorMessage(r));
        rc = OB_EXIT_RETRY;
    } else if (strcmp(PQgetvalue(r, 0, 0), "logical") != 0) {
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

int
ob_wal_init(ob_relay_t *rl, char *err, size_t errlen)
{
    struct ob_wal_s *w = calloc(1, sizeof(*w));
    int              rc;

    if (w == NULL || (w->ring = calloc(WAL_WINDOW, sizeof(*w->ring))) == NULL ||
        (w->commits = calloc(WAL_WINDOW, sizeof(*w->commits))) == NULL) {
        if (w != NULL)
            free(w->ring);
        free(w);
        snprintf(err, errlen, "out of memory for the wal stream");
        return OB_EXIT_RETRY;
    }
    w->pipe[0] = w->pipe[1] = -1;
    rl->wal = w;
    snprintf(w->slot, sizeof(w->slot), "%s_%d", rl->cfg->relay.slot_prefix, rl->index);
    snprintf(w->pub, sizeof(w->pub), "%s_%d", rl->cfg->relay.slot_prefix, rl->index);
    snprintf(w->filter, sizeof(w->filter), "partition %% %d = %d", rl->cfg->workers.relays, rl->index);
    w->stopped_ms = ob_now_ms();
    rc = wal_check_server(rl, err, errlen);
    if (rc != OB_EXIT_OK)
        return rc;
    if (pipe2(w->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return OB_EXIT_RETRY;
    }
    return OB_EXIT_OK;
}

void
ob_wal_free(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;

    if (w == NULL)
        return;
    PQfinish(w->repl);
    for (int i = 0; i < 2; i++)
        if (w->pipe[i] >= 0)
            close(w->pipe[i]);
    free(w->quar);
    free(w->commits);
    free(w->ring);
    free(w);
    rl->wal = NULL;
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

    if (!wal_all_locks(rl)) {
        if (!w->pub_wait_logged++)
            ob_log(OB_LOG_INFO, "wal: publication %s waits until this relay holds all its partitions", w->pub);
        return 0;
    }
    r = wal_query(rl, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active", 1,
                  (const char *const[]) { w->slot });
    active = !wal_ok(r, "read the slot") || strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    PQclear(r);
    if (active && !w->pub_wait_logged++)
        ob_log(OB_LOG_WARN, "wal: slot %s is in use by another process; its publication %s is left as it is", w->slot,
               w->pub);
    if (!active)
        w->pub_wait_logged = 0;
    return !active;
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
    struct ob_wal_s *w = rl->wal;
    const char      *p1[1] = { w->slot }, *p3[3] = { w->slot, w->pub, w->filter };
    char             ddl[512];
    PGresult        *r;
    int              exists, same, ok;

    if (!wal_ok(r = PQexec(rl->pg, "BEGIN"), "BEGIN")) {
        PQclear(r);
        return -1;
    }
    PQclear(r);
    r = wal_query(rl, "SELECT row_filter FROM relay_slots WHERE slot_name = $1 FOR UPDATE", 1, p1);
    ok = wal_ok(r, "read relay_slots");
    same = ok && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), w->filter) == 0;
    PQclear(r);
    r = wal_query(rl, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, (const char *const[]) { w->pub });
    ok = ok && wal_ok(r, "read pg_publication");
    exists = ok && PQntuples(r) == 1;
    PQclear(r);
    if (ok && !(exists && same) && !wal_may_change_publication(rl)) {
        r = PQexec(rl->pg, "ROLLBACK");
        PQclear(r);
        return 1;
    }
    if (ok && !(exists && same)) {
        /* names come from the validated [a-z0-9_] prefix and numbers: nothing to quote */
        if (exists)
            snprintf(ddl, sizeof(ddl), "ALTER PUBLICATION %s SET TABLE outbox WHERE (%s)", w->pub, w->filter);
        else
            snprintf(ddl, sizeof(ddl), "CREATE PUBLICATION %s FOR TABLE outbox WHERE (%s) WITH (publish = 'insert')",
                     w->pub, w->filter);
        ok = wal_ok(r = PQexec(rl->pg, ddl), ddl);
        PQclear(r);
        r = wal_query(rl,
                      "INSERT INTO relay_slots (slot_name, publication, row_filter, catchup_needed) VALUES ($1, $2, $3, true)"
                      " ON CONFLICT (slot_name) DO UPDATE SET publication = EXCLUDED.publication,"
                      "   row_filter = EXCLUDED.row_filter, catchup_needed = true, updated_at = now()",
                      3, p3);
        ok = ok && wal_ok(r, "record the row filter");
        PQclear(r);
        if (ok)
            ob_log(OB_LOG_INFO, "wal: publication %s now carries outbox rows WHERE (%s); a polling pass runs first",
                   w->pub, w->filter);
    }
    r = PQexec(rl->pg, ok ? "COMMIT" : "ROLLBACK");
    ok = wal_ok(r, "COMMIT") && ok;
    PQclear(r);
    return ok ? 0 : -1;
}

static int
wal_create_slot(ob_relay_t *rl)
{
    /* the flag first: a crash after the creation must still poll */
    if (wal_update_flag(rl, 1) != 0 ||
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
                     "UPDATE relay_slots SET catchup_needed = true, invalidations = invalidations + 1,"
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

    r = wal_query(rl,
                  "SELECT s.wal_status, s.active, (SELECT count(*) FROM relay_slots WHERE slot_name = $1 AND NOT"
                  " catchup_needed) FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
                  1, p);
    if (!wal_ok(r, "read the slot")) {
        PQclear(r);
        return -1;
    }
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

static int
wal_read_flag(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    const char      *p[1] = { w->slot };
    PGresult        *r = wal_query(rl, "SELECT catchup_needed, row_filter FROM relay_slots WHERE slot_name = $1", 1, p);
    int              ok = wal_ok(r, "read the catch-up flag") && PQntuples(r) == 1;

    w->foreign_filter[0] = '\0';
    if (ok) {
        w->catchup = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        if (strcmp(PQgetvalue(r, 0, 1), w->filter) != 0)
            ob_strlcpy(w->foreign_filter, PQgetvalue(r, 0, 1), sizeof(w->foreign_filter));
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static int
wal_update_flag(ob_relay_t *rl, int needed)
{
    struct ob_wal_s *w = rl->wal;
    const char      *p[2] = { w->slot, needed ? "true" : "false" };
    PGresult        *r = wal_query(rl,
                                   "UPDATE relay_slots SET catchup_needed = $2::boolean, updated_at = now()"
                                   " WHERE slot_name = $1",
                                   2, p);
    int              ok = wal_ok(r, "update the catch-up flag");

    PQclear(r);
    if (ok)
        w->catchup = needed;
    return ok ? 0 : -1;
}

/*
 * Relay 0 drops the slots of relay indexes the current count no longer
 * has: an unused slot would hold WAL until it is invalidated. Their
 * partitions' new owners ran a polling pass when their filters changed.
 */
static void
wal_drop_stale_slots(ob_relay_t *rl)
{
    char        pattern[96], count[16];
    const char *p[2] = { pattern, count };
    PGresult   *r;

    snprintf(pattern, sizeof(pattern), "^%s_([0-9]+)$", rl->cfg->relay.slot_prefix);
    snprintf(count, sizeof(count), "%d", rl->cfg->workers.relays);
    r = wal_query(rl,
                  "SELECT slot_name FROM pg_replication_slots WHERE database = current_database() AND NOT active"
                  " AND slot_name ~ $1 AND (substring(slot_name FROM $1))::int >= $2::int",
                  2, p);
    if (!wal_ok(r, "list stale slots")) {
        PQclear(r);
        return;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *name[1] = { PQgetvalue(r, i, 0) };
        PGresult   *d = wal_query(rl,
                                  "WITH gone AS (DELETE FROM relay_slots WHERE slot_name = $1)"
                                  " SELECT pg_drop_replication_slot($1)",
                                  1, name);
        if (wal_ok(d, "drop a stale slot"))
            ob_log(OB_LOG_INFO, "wal: dropped slot %s, which no relay of %s uses", name[0], count);
        PQclear(d);
    }
    PQclear(r);
}

/* Slot lag in bytes from the server; a lost or missing slot sends us back to set-up. */
static void
wal_slot_stats(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    const char      *p[1] = { w->slot };
    PGresult        *r = wal_query(rl,
                                   "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint,"
                                   " wal_status FROM pg_replication_slots WHERE slot_name = $1",
                                   1, p);

    if (!wal_ok(r, "slot lag")) {
        PQclear(r);
        return;
    }
    if (PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, 1), "lost") == 0) {
        if (w->streaming)
            ob_wal_stop(rl, 0);
        w->ready = 0;     /* set-up finds out what happened and says so */
    } else {
        wal_counter(rl, OB_CTR_RELAY_SLOT_LAG_BYTES, (uint64_t) atoll(PQgetvalue(r, 0, 0)));
    }
    PQclear(r);
}

void
ob_wal_tick(ob_relay_t *rl, int stats_due)
{
    struct ob_wal_s *w = rl->wal;
    int64_t          now = ob_now_ms();

    if (w == NULL || rl->pg == NULL)
        return;
    if (!w->ready && !w->streaming && now >= w->retry_at_ms) {
        int rc = wal_setup_publication(rl);
        rc = rc == 0 ? wal_setup_slot(rl) : rc > 0 ? 0 : -1;
        w->ready = rc == 1;
        if (rc != 1)
            w->retry_at_ms = now + WAL_RETRY_MS;
    }
    if (w->ready && wal_read_flag(rl) == 0 && w->streaming) {
        if (w->foreign_filter[0] != '\0') {
            ob_log(OB_LOG_WARN, "wal: publication %s was set to WHERE (%s), not this relay's (%s), by another "
                                "instance; stream stopped, polling until it is this relay's again",
                   w->pub, w->foreign_filter, w->filter);
            ob_wal_stop(rl, 1);
            w->ready = 0;
        } else if (!wal_all_locks(rl)) {
            ob_log(OB_LOG_WARN, "wal: lost a partition lock; stream stopped, polling what this relay holds");
            ob_wal_stop(rl, 1);
            w->ready = 0;
        } else if (w->catchup) {
            ob_log(OB_LOG_INFO, "wal: a polling pass was asked for (replay?); stream paused");
            ob_wal_stop(rl, 1);
        }
    }
    if (stats_due) {
        wal_slot_stats(rl);
        if (rl->index == 0)
            wal_drop_stale_slots(rl);
    }
    wal_counter(rl, OB_CTR_RELAY_STREAMING, (uint64_t) w->streaming);
    wal_counter(rl, OB_CTR_RELAY_CATCHUP, (uint64_t) (w->catchup || !w->ready));
    wal_counter(rl, OB_CTR_RELAY_SLOT_LAG_MS,
                (uint64_t) (w->streaming ? (w->chead < w->ctail ? now - w->commits[w->chead % WAL_WINDOW].recv_ms : 0)
                                         : now - w->stopped_ms));
}

/* ------------------------------------------------------------------------ */
/* polling passes                                                            */
/* ------------------------------------------------------------------------ */

int
ob_wal_poll_cycle(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    /* only a pass whose snapshot follows the slot's creation and the filter change counts */
    int              counts = w->ready && w->catchup && wal_all_locks(rl);
    int              n = ob_relay_cycle(rl);

    if (n == 0 && counts && !rl->more && rl->breaker == OB_BREAKER_CLOSED && wal_all_locks(rl) &&
        wal_update_flag(rl, 0) == 0)
        ob_log(OB_LOG_INFO, "wal: polling pass complete; streaming from slot %s", w->slot);
    return n;
}

/* ------------------------------------------------------------------------ */
/* the stream                                                                */
/* ------------------------------------------------------------------------ */

int
ob_wal_streams(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;

    return w != NULL && (w->streaming || (w->ready && !w->catchup && wal_all_locks(rl) &&
                                          rl->breaker != OB_BREAKER_OPEN && ob_now_ms() >= w->retry_at_ms));
}

static int
wal_quar_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Orders parked behind a quarantined event: the stream leaves their events to polling after a replay. */
static int
wal_load_quarantine(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    PGresult        *r = wal_query(rl, "SELECT DISTINCT aggregate_id::text FROM outbox_quarantine", 0, NULL);
    int              n;

    if (!wal_ok(r, "read quarantine")) {
        PQclear(r);
        return -1;
    }
    n = PQntuples(r);
    free(w->quar);
    w->quar = n ? calloc((size_t) n, sizeof(*w->quar)) : NULL;
    w->nquar = w->quar ? n : 0;
    for (int i = 0; i < w->nquar; i++)
        ob_strlcpy(w->quar[i], PQgetvalue(r, i, 0), sizeof(w->quar[i]));
    if (w->nquar > 0)     /* qsort's array must not be NULL, even when empty */
        qsort(w->quar, (size_t) w->nquar, sizeof(*w->quar), wal_quar_cmp);
    PQclear(r);
    return 0;
}

static void
wal_attach_pipe(ob_relay_t *rl)
{
    struct ob_wal_s  *w = rl->wal;
    rd_kafka_queue_t *q;

    if (w->pipe_rk == rl->rk)
        return;
    q = rd_kafka_queue_get_main(rl->rk);
    rd_kafka_queue_io_event_enable(q, w->pipe[1], "r", 1);
    rd_kafka_queue_destroy(q);
    w->pipe_rk = rl->rk;
}

static void
wal_start(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    char             err[512], app[64], cmd[512];
    PGresult        *r;

    w->retry_at_ms = ob_now_ms() + WAL_RETRY_MS;
    if (wal_load_quarantine(rl) != 0)
        return;
    snprintf(app, sizeof(app), "outboxd relay %d wal", rl->index);
    w->repl = ob_pg_connect_replication(ob_cfg_relay_dsn(rl->cfg), app, err, sizeof(err));
    if (w->repl == NULL) {
        ob_log(OB_LOG_WARN, "wal: %s", err);
        return;
    }
    snprintf(cmd, sizeof(cmd),
             "START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', publication_names '%s', binary 'true')",
             w->slot, w->pub);
    r = PQexec(w->repl, cmd);
    if (PQresultStatus(r) != PGRES_COPY_BOTH) {
        ob_log(OB_LOG_WARN, "wal: cannot stream from slot %s: %s", w->slot, PQresultErrorMessage(r));
        PQclear(r);
        PQfinish(w->repl);
        w->repl = NULL;
        w->ready = 0;      /* set-up looks at the slot again: invalidated? dropped? */
        return;
    }
    PQclear(r);
    wal_attach_pipe(rl);
    w->streaming = 1;
    w->base = w->done = w->marked = w->next;
    w->chead = w->ctail = 0;
    w->in_txn = w->have_map = 0;
    w->nmark = 0;
    w->received = w->target = w->confirmed = 0;
    w->next_status_ms = ob_now_ms() + WAL_STATUS_MS;
    w->last_ack_ms = ob_now_ms();
    ob_log(OB_LOG_INFO, "wal: streaming from slot %s (publication %s, %s)", w->slot, w->pub, w->filter);
}

void
ob_wal_dr(ob_relay_t *rl, uint64_t n, rd_kafka_resp_err_t err, int64_t offset)
{
    struct ob_wal_s *w = rl->wal;
    wal_ev_t        *ev;

    if (w == NULL || n < w->base || n >= w->next)
        return;     /* a stream we stopped: its rows are streamed again */
    ev = &w->ring[n % WAL_WINDOW];
    ev->offset = offset;
    ev->acked_ms = ob_wall_ms();
    ev->err = err;
    /* no offset: not verifiable (see publish_record), so streamed again */
    ev->state = err == RD_KAFKA_RESP_ERR_NO_ERROR ? (offset >= 0 ? EV_OK : EV_RETRY)
                : ob_relay_permanent(err)         ? EV_REJECTED
                                                  : EV_RETRY;
}

/*
 * A streamed row can be invisible to the mark for a moment: the walsender
 * sends a transaction once its commit record is flushed, and the committing
 * backend leaves the proc array (becomes visible) just after. On two busy
 * cores Kafka's acknowledgement sometimes won that race and the UPDATE
 * found nothing; since the row was then confirmed it stayed pending for
 * ever (the bench's settle step caught it). Rows the UPDATE did not find
 * are kept and tried again, and nothing past them is confirmed.
 */
static int
wal_flush_marks(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    int64_t          t0 = ob_now_us();
    int              kept = 0;

    if (w->nmark == 0)
        return 0;
    if (ob_relay_mark_rows(rl, w->marks, w->nmark, w->missing) != 0)
        return -1;
    for (int i = 0; i < w->nmark; i++) {
        if (!w->missing[i])
            continue;
        if (++w->mark_tries[i] > WAL_MARK_TRIES) {
            /* visible within seconds if it exists: it was deleted (quarantine, janitor) */
            ob_log(OB_LOG_WARN, "wal: outbox row %lld not found to mark after %d tries; assumed deleted",
                   (long long) w->marks[i].id, WAL_MARK_TRIES);
            continue;
        }
        w->marks[kept] = w->marks[i];
        w->mark_n[kept] = w->mark_n[i];
        w->mark_tries[kept++] = w->mark_tries[i];
    }
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_PUBLISHED], (uint64_t) (w->nmark - kept));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_MARK_US], (uint64_t) (ob_now_us() - t0));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_BATCHES], 1);
    w->nmark = kept;
    w->marked = kept ? w->mark_n[0] : w->done;
    w->mark_due_ms = ob_now_ms() + WAL_MARK_MS;
    return 0;
}

/* Marked before confirmed: a confirmed transaction is never streamed again. */
static void
wal_pop_commits(struct ob_wal_s *w)
{
    while (w->chead < w->ctail && w->commits[w->chead % WAL_WINDOW].upto <= w->marked)
        w->target = w->commits[w->chead++ % WAL_WINDOW].end_lsn;
}

/*
 * Settles acknowledged events in order. Returns 0; -1 when the orderdb
 * session failed; or the state of the first event Kafka did not take.
 */
static int
wal_advance(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;

    while (w->done < w->next) {
        wal_ev_t *ev = &w->ring[w->done % WAL_WINDOW];
        if (ev->state == EV_PENDING)
            break;
        if (ev->state != EV_OK)
            return ev->state;
        if (rl->breaker != OB_BREAKER_CLOSED)
            ob_relay_set_breaker(rl, OB_BREAKER_CLOSED);
        w->last_ack_ms = ob_now_ms();
        if (w->nmark == WAL_MARK_BATCH && wal_flush_marks(rl) != 0)
            return -1;
        if (w->nmark == WAL_MARK_BATCH)
            break;     /* all of them waiting to become visible: settle later */
        if (w->nmark == 0)
            w->mark_due_ms = ob_now_ms() + WAL_MARK_MS;
        w->mark_n[w->nmark] = w->done;
        w->mark_tries[w->nmark] = 0;
        w->marks[w->nmark++] = (ob_relay_mark_t) { ev->id, ev->offset, ev->acked_ms };
        ob_relay_count_produced(ev->partition, ev->offset);
        w->done++;
    }
    if (w->nmark > 0 && ob_now_ms() >= w->mark_due_ms && wal_flush_marks(rl) != 0)
        return -1;
    if (w->nmark == 0)
        w->marked = w->done;
    wal_pop_commits(w);
    return 0;
}

/*
 * Kafka away is no failure for the stream (its messages never expire): it
 * stalls. The partitions' breaker field says so on the status page.
 */
static void
wal_show_stall(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    int              stalled = w->done < w->next && ob_now_ms() - w->last_ack_ms > rl->cfg->relay.delivery_timeout_ms;

    if (stalled == w->stalled)
        return;
    w->stalled = stalled;
    if (stalled)
        ob_log(OB_LOG_WARN, "wal: Kafka has acknowledged nothing for %d ms; the stream waits for it",
               rl->cfg->relay.delivery_timeout_ms);
    else
        ob_log(OB_LOG_INFO, "wal: Kafka acknowledges again; the stream goes on");
    for (int i = 0; i < rl->nparts; i++)
        atomic_store(&ob_shm->map->parts[rl->parts[i]].breaker, (int32_t) (stalled ? OB_BREAKER_OPEN : OB_BREAKER_CLOSED));
}

static int
wal_send_status(ob_relay_t *rl, int reply)
{
    struct ob_wal_s *w = rl->wal;
    char             msg[34];
    uint64_t         written = w->received > w->target ? w->received : w->target;
    int64_t          now = ob_now_ms();
    size_t           n = ob_pgo_status_update(msg, written, w->target, ob_pgo_pg_time(ob_wall_ms()), reply);

    if (PQputCopyData(w->repl, msg, (int) n) != 1 || PQflush(w->repl) != 0) {
        ob_log(OB_LOG_WARN, "wal: status update failed: %s", PQerrorMessage(w->repl));
        return -1;
    }
    w->confirmed = w->target;
    w->last_confirm_ms = now;
    w->next_status_ms = now + WAL_STATUS_MS;
    return 0;
}

static int
wal_confirm(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    int64_t          now = ob_now_ms();

    if ((w->target > w->confirmed && now - w->last_confirm_ms >= WAL_CONFIRM_MS) || now >= w->next_status_ms)
        return wal_send_status(rl, 0);
    return 0;
}

static int
wal_quarantined(struct ob_wal_s *w, const char *aggregate_id)
{
    return w->nquar > 0 && bsearch(aggregate_id, w->quar, (size_t) w->nquar, sizeof(*w->quar), wal_quar_cmp) != NULL;
}

static int
wal_insert(ob_relay_t *rl, const ob_pgo_msg_t *m)
{
    struct ob_wal_s    *w = rl->wal;
    ob_pgo_outbox_row_t row;
    ob_relay_row_t      ev;
    wal_ev_t           *fl;
    char                err[256];
    rd_kafka_resp_err_t e;

    if (!w->have_map || m->relid != w->map.relid)
        return 0;           /* not the outbox */
    if (ob_pgo_outbox_row(m, &w->map, &row, err, sizeof(err)) != 0) {
        ob_log(OB_LOG_ERROR, "wal: %s", err);
        return -1;
    }
    /* before a re-split's LSN the old filter applies: another relay owns these now */
    if (row.partition < 0 || row.partition % rl->cfg->workers.relays != rl->index ||
        wal_quarantined(w, row.aggregate_id))
        return 0;
    memset(&ev, 0, sizeof(ev));
    ev.id = row.id;
    ev.partition = row.partition;
    ev.seq = row.seq;
    memcpy(ev.event_id, row.event_id, sizeof(ev.event_id));
    memcpy(ev.aggregate_id, row.aggregate_id, sizeof(ev.aggregate_id));
    memcpy(ev.event_type, row.event_type, sizeof(ev.event_type));
    if (w->done == w->next)
        w->last_ack_ms = ob_now_ms();     /* the stall clock starts with the first event in flight */
    fl = &w->ring[w->next % WAL_WINDOW];
    *fl = (wal_ev_t) { .id = row.id, .partition = row.partition, .state = EV_PENDING, .offset = -1 };
    e = ob_relay_produce(rl, &ev, row.payload, row.payload_len, (void *) (uintptr_t) (OB_WAL_OPAQUE_TAG | w->next));
    w->next++;
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        ob_wal_dr(rl, w->next - 1, e, -1);
    else
        atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_STREAMED], 1);
    return 0;
}

static int
wal_message(ob_relay_t *rl, const ob_pgo_frame_t *f)
{
    struct ob_wal_s *w = rl->wal;
    ob_pgo_msg_t     m;
    char             err[256];
    wal_commit_t    *c;

    if (ob_pgo_decode(f->data, f->len, &m, err, sizeof(err)) != 0) {
        ob_log(OB_LOG_ERROR, "wal: %s", err);
        return -1;
    }
    switch (m.kind) {
    case OB_PGO_BEGIN:
        w->in_txn = 1;
        break;
    case OB_PGO_COMMIT:
        w->in_txn = 0;
        c = &w->commits[w->ctail++ % WAL_WINDOW];
        c->end_lsn = m.end_lsn;
        c->upto = w->next;
        c->recv_ms = ob_now_ms();
        if (m.end_lsn > w->received)
            w->received = m.end_lsn;
        break;
    case OB_PGO_RELATION:
        if (strcmp(m.rel.relname, "outbox") == 0) {
            if (ob_pgo_outbox_map(&m.rel, &w->map, err, sizeof(err)) != 0) {
                ob_log(OB_LOG_ERROR, "wal: %s", err);
                return -1;
            }
            w->have_map = 1;
        }
        break;
    case OB_PGO_INSERT:
        return wal_insert(rl, &m);
    case OB_PGO_SKIPPED:
        break;
    }
    return 0;
}

static int
wal_frame(ob_relay_t *rl, const char *buf, int len)
{
    struct ob_wal_s *w = rl->wal;
    ob_pgo_frame_t   f;
    char             err[256];

    if (ob_pgo_frame(buf, (size_t) len, &f, err, sizeof(err)) != 0) {
        ob_log(OB_LOG_ERROR, "wal: %s", err);
        return -1;
    }
    if (f.type == 'w')
        return wal_message(rl, &f);
    if (f.wal_end > w->received)
        w->received = f.wal_end;
    /* nothing in flight, nothing half-read: all the server sent is settled */
    if (!w->in_txn && w->done == w->next && w->nmark == 0 && w->chead == w->ctail && f.wal_end > w->target)
        w->target = f.wal_end;
    return f.reply_requested ? wal_send_status(rl, 0) : 0;
}

static void
wal_drain_pipe(struct ob_wal_s *w)
{
    char buf[64];

    while (read(w->pipe[0], buf, sizeof(buf)) > 0)
        ;
}

/* Waits up to ms for the replication socket (when want_socket) or a delivery report. */
static int
wal_wait(ob_relay_t *rl, int want_socket, int ms)
{
    struct ob_wal_s *w = rl->wal;
    struct pollfd    fds[2] = { { .fd = w->pipe[0], .events = POLLIN }, { .fd = PQsocket(w->repl), .events = POLLIN } };

    if (poll(fds, want_socket ? 2 : 1, ms) < 0 && errno != EINTR)
        return -1;
    if (want_socket && (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) && PQconsumeInput(w->repl) != 1)
        return -1;
    return 0;
}

static void
wal_failed(ob_relay_t *rl, int state)
{
    struct ob_wal_s *w = rl->wal;
    wal_ev_t        *ev = &w->ring[w->done % WAL_WINDOW];

    if (state == EV_REJECTED) {
        ob_log(OB_LOG_ERROR, "wal: Kafka rejected event id %lld (%s); a polling pass quarantines it",
               (long long) ev->id, rd_kafka_err2str(ev->err));
        wal_update_flag(rl, 1);
        atomic_fetch_add(&ob_shm->map->parts[ev->partition].errors, 1);
    } else {
        ob_log(OB_LOG_WARN, "wal: Kafka did not acknowledge event id %lld (%s); the stream resumes from the slot",
               (long long) ev->id, rd_kafka_err2str(ev->err));
        atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_ERRORS], 1);
        atomic_fetch_add(&ob_shm->map->parts[ev->partition].errors, 1);
        ob_relay_set_breaker(rl, OB_BREAKER_OPEN);
    }
    ob_wal_stop(rl, 0);
}

/* One read from the stream: 1 got a frame, 0 nothing now, -1 the stream ended. */
static int
wal_read(ob_relay_t *rl, int wait_ms)
{
    struct ob_wal_s *w = rl->wal;
    char            *buf = NULL;
    int              n = PQgetCopyData(w->repl, &buf, 1), rc;

    if (n == 0)
        return wal_wait(rl, 1, wait_ms) == 0 ? 0 : -1;
    if (n < 0) {
        PGresult *r = PQgetResult(w->repl);
        ob_log(OB_LOG_WARN, "wal: stream from slot %s ended: %s", w->slot,
               r ? PQresultErrorMessage(r) : PQerrorMessage(w->repl));
        PQclear(r);
        w->ready = 0;
        return -1;
    }
    rc = wal_frame(rl, buf, n);
    PQfreemem(buf);
    return rc == 0 ? 1 : -1;
}

int
ob_wal_step(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;
    int64_t          deadline = ob_now_ms() + WAL_STEP_MS;

    if (!w->streaming) {
        wal_start(rl);
        return 0;
    }
    while (w->streaming && !ob_sig_term && !ob_sig_quit && ob_now_ms() < deadline) {
        int rc;
        rd_kafka_poll(rl->rk, 0);
        wal_drain_pipe(w);
        rc = wal_advance(rl);
        if (rc < 0) {
            ob_wal_stop(rl, 0);
            return -1;
        }
        if (rc > 0) {
            wal_failed(rl, rc);
            break;
        }
        wal_show_stall(rl);
        if (wal_confirm(rl) != 0) {
            ob_wal_stop(rl, 0);
            break;
        }
        if (w->next - w->done >= WAL_WINDOW || w->ctail - w->chead >= WAL_WINDOW) {
            wal_wait(rl, 0, 10);       /* full: let Kafka catch up, the server keeps the rest */
            continue;
        }
        /* a burst of frames, then back to settling */
        for (int i = 0; i < 256 && w->next - w->done < WAL_WINDOW && w->ctail - w->chead < WAL_WINDOW; i++) {
            rc = wal_read(rl, (int) (deadline - ob_now_ms() > 10 ? 10 : 1));
            if (rc <= 0)
                break;
        }
        if (rc < 0)
            ob_wal_stop(rl, 0);
    }
    ob_shm_beat(rl->slot);
    return 0;
}

void
ob_wal_stop(ob_relay_t *rl, int finish)
{
    struct ob_wal_s *w = rl->wal;

    if (w == NULL || !w->streaming)
        return;
    if (finish) {
        int64_t deadline = ob_now_ms() + rl->cfg->relay.delivery_timeout_ms;
        while (w->done < w->next && ob_now_ms() < deadline) {
            rd_kafka_poll(rl->rk, 50);
            ob_shm_beat(rl->slot);
            if (wal_advance(rl) != 0)
                break;
        }
    }
    if (rl->pg != NULL && PQstatus(rl->pg) == CONNECTION_OK && wal_flush_marks(rl) == 0) {
        wal_pop_commits(w);
        if (w->target > w->confirmed && PQstatus(w->repl) == CONNECTION_OK)
            wal_send_status(rl, 0);
    }
    PQfinish(w->repl);
    w->repl = NULL;
    w->streaming = 0;
    w->base = w->done = w->marked = w->next;     /* later reports of this session are ignored */
    w->nmark = 0;
    w->stopped_ms = ob_now_ms();
    w->retry_at_ms = ob_now_ms() + (finish ? 0 : WAL_RETRY_MS);
    wal_counter(rl, OB_CTR_RELAY_STREAMING, 0);
}
