/*
 * workers/relay/barrier.c: the standby barrier.
 *
 * On PostgreSQL 15 a logical walsender sends a transaction once its commit
 * is flushed locally, before the synchronous standby confirms it; and a
 * commit whose synchronous wait was cancelled (statement_timeout,
 * pg_cancel_backend) becomes visible to every snapshot without the standby
 * having it. An event produced then and booked by a consumer vanishes from
 * orderdb when the standby is promoted: a phantom. So, when the barrier is
 * on, nothing is produced before a synchronous standby's flush position
 * (pg_stat_replication) has passed the WAL that holds its commit:
 *
 *   polling: the insert position read after the claim's snapshot, which
 *     every commit that snapshot sees lies below;
 *   stream: the Commit message's end LSN; a transaction too large to hold
 *     until its Commit takes the server's flush position read after its
 *     first change arrived, which its commit lies below (the walsender
 *     decodes flushed WAL only).
 *
 * One synchronous standby past the position is enough: it is the one a
 * failover promotes (with FIRST n or ANY n, promote the standby furthest
 * ahead). The last position seen is kept, so a drain far behind the
 * standby asks nothing. A wait is given up after BARRIER_WAIT_MS: the
 * polled rows stay pending, the stream stops and resumes from its slot.
 */
#include "relay_int.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/worker.h"
#include "pgoutput.h"

#include <poll.h>
#include <stdio.h>
#include <string.h>

#define BARRIER_WAIT_MS   1000
#define BARRIER_POLL_MAX  16      /* ms between two looks at pg_stat_replication */
#define BARRIER_WARN_MS   10000

/* the standby furthest ahead among those a commit waits for */
#define STANDBY_FLUSH "(SELECT max(flush_lsn) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))::text"

static const char *const sample_sql[] = {
    [OB_BARRIER_AT_LSN] = "SELECT NULL::text, " STANDBY_FLUSH,
    [OB_BARRIER_AT_INSERT] = "SELECT pg_current_wal_insert_lsn()::text, " STANDBY_FLUSH,
    [OB_BARRIER_AT_FLUSH] = "SELECT pg_current_wal_flush_lsn()::text, " STANDBY_FLUSH,
};

int
ob_barrier_setup(ob_relay_t *rl, char *err, size_t errlen)
{
    ob_barrier_mode_t mode = rl->cfg->relay.standby_barrier;
    PGresult         *r;
    int               named, allowed, was = rl->barrier;

    rl->barrier = 0;
    rl->standby_flush = 0;     /* after a failover the positions are another server's */
    if (mode == OB_BARRIER_OFF)
        return OB_EXIT_OK;
    r = ob_pg_query(rl->pg,
                    "SELECT current_setting('synchronous_standby_names') <> '',"
                    " pg_has_role('pg_read_all_stats', 'USAGE')"
                    " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
                    0, NULL, NULL, err, errlen);
    if (r == NULL)
        return PQstatus(rl->pg) == CONNECTION_OK ? OB_EXIT_FATAL : OB_EXIT_RETRY;
    named = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    allowed = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    PQclear(r);
    rl->barrier = mode == OB_BARRIER_ON || named;
    if (rl->barrier && !allowed) {
        /* pg_stat_replication shows flush_lsn as NULL to others: the barrier would never pass */
        snprintf(err, errlen,
                 "[relay] standby_barrier is on but the relay's role cannot read pg_stat_replication's positions:"
                 " GRANT pg_read_all_stats TO it (docs/least-privilege.sql), or set standby_barrier = off and"
                 " accept that a failover can take back published events");
        rl->barrier = 0;
        return OB_EXIT_FATAL;
    }
    if (rl->barrier != was)
        ob_log(OB_LOG_INFO, "standby barrier %s%s", rl->barrier ? "on" : "off",
               rl->barrier ? ": events are produced once a synchronous standby has flushed their commit" : "");
    atomic_store(&rl->slot->counters[OB_CTR_RELAY_BARRIER], (uint64_t) rl->barrier);
    return OB_EXIT_OK;
}

/* An LSN as text into *lsn; NULL (no synchronous standby) reads as 0. */
static void
barrier_lsn(PGresult *r, int col, uint64_t *lsn)
{
    if (PQgetisnull(r, 0, col) || ob_pgo_lsn_parse(PQgetvalue(r, 0, col), lsn) != 0)
        *lsn = 0;
}

static void
barrier_gave_up(ob_relay_t *rl, uint64_t lsn)
{
    char    want[32], have[32];
    int64_t now = ob_now_ms();

    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_BARRIER_TIMEOUTS], 1);
    if (now - rl->barrier_warned_ms < BARRIER_WARN_MS)
        return;
    rl->barrier_warned_ms = now;
    ob_pgo_lsn_format(lsn, want, sizeof(want));
    ob_pgo_lsn_format(rl->standby_flush, have, sizeof(have));
    ob_log(OB_LOG_WARN,
           "standby barrier: no synchronous standby has flushed %s within %d ms (furthest: %s); nothing is produced"
           " past it until one has",
           want, BARRIER_WAIT_MS, rl->standby_flush ? have : "none connected");
    ob_worker_note(rl->slot, "waiting for a synchronous standby to flush %s", want);
}

int
ob_barrier_wait(ob_relay_t *rl, ob_barrier_at_t at, uint64_t lsn)
{
    int64_t t0 = ob_now_us();
    int     delay = 1;

    if (!rl->barrier || (at == OB_BARRIER_AT_LSN && lsn <= rl->standby_flush))
        return 1;
    for (;;) {
        char      err[256];
        uint64_t  standby;
        PGresult *r = ob_pg_query(rl->pg, sample_sql[at], 0, NULL, NULL, err, sizeof(err));
        if (r == NULL) {
            ob_log(OB_LOG_WARN, "standby barrier: %s", err);
            return -1;
        }
        if (at != OB_BARRIER_AT_LSN) {
            barrier_lsn(r, 0, &lsn);     /* the target is fixed by the first sample */
            at = OB_BARRIER_AT_LSN;
        }
        barrier_lsn(r, 1, &standby);
        PQclear(r);
        if (standby > rl->standby_flush)
            rl->standby_flush = standby;
        int64_t waited = ob_now_us() - t0;
        if (lsn <= rl->standby_flush || waited >= BARRIER_WAIT_MS * 1000 || ob_sig_term) {
            atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_BARRIER_US], (uint64_t) waited);
            if (lsn <= rl->standby_flush)
                return 1;
            barrier_gave_up(rl, lsn);
            return 0;
        }
        ob_shm_beat(rl->slot);
        poll(NULL, 0, delay);
        delay = delay * 2 > BARRIER_POLL_MAX ? BARRIER_POLL_MAX : delay * 2;
    }
}
