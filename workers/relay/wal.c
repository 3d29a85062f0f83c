/*
 * workers/relay/wal.c: relay mode wal, change data capture from orderdb's
 * write-ahead log instead of polling the outbox. This file decides when
 * the relay streams (wal_stream.c) and when it polls; wal_slot.c sets up
 * the publication and the slot.
 *
 * NOTES
 *   Shape: the relay in seat s, rank r of n relays on orderdb (share.c),
 *   owns the logical replication slot <prefix>_s and the publication
 *   <prefix>_s of inserts into outbox WHERE (partition % n = r) (a
 *   PostgreSQL 15 row filter). It streams with pgoutput protocol 1
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
 *   moved partitions). Relays joining or leaving, on this instance or
 *   another, are such a change: the stream stops (all sent acknowledged
 *   and marked) before any partition changes hands. Each time the publication's filter changes or the
 *   slot is (re)created, relay_slots.catchup_needed is set first (in the
 *   same transaction as the filter change); the relay then runs the
 *   ordinary polling cycle over its partitions until one finds nothing more,
 *   clears the flag, and only then starts the stream. "Finds nothing" means
 *   took everything its snapshot showed: no partition's claim reached its
 *   LIMIT, nothing was held back, and Kafka acknowledged all of it (a
 *   cycle that finds none at all never comes while writers never pause).
 *   Coverage: the slot exists before that last polling snapshot, so every
 *   commit is either in the snapshot (polled) or after the slot's position
 *   (streamed); a few may be both, which is a duplicate, never a gap. `outboxd replay` also
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
#include "wal_int.h"
#include "../../common/log.h"
#include "../../common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    w->stopped_ms = ob_now_ms();
    rc = ob_wal_check_server(rl, err, errlen);
    if (rc != OB_EXIT_OK)
        return rc;
    if (pipe2(w->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return OB_EXIT_RETRY;
    }
    return OB_EXIT_OK;
}

void
ob_wal_reshare(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;

    if (w == NULL)
        return;
    w->slot[0] = w->pub[0] = w->filter[0] = '\0';
    if (rl->share_seat >= 0 && rl->rank >= 0) {
        snprintf(w->slot, sizeof(w->slot), "%s_%d", rl->cfg->relay.slot_prefix, rl->share_seat);
        snprintf(w->pub, sizeof(w->pub), "%s_%d", rl->cfg->relay.slot_prefix, rl->share_seat);
        snprintf(w->filter, sizeof(w->filter), "partition %% %d = %d", rl->members, rl->rank);
    }
    w->ready = 0;     /* set-up re-filters the publication, and a polling pass covers the moved partitions */
    w->pub_wait_logged = w->slot_busy_logged = 0;
    w->foreign_filter[0] = '\0';
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
    ob_wal_free_quarantine(w);
    ob_wal_drop_held(w);
    free(w->commits);
    free(w->ring);
    free(w);
    rl->wal = NULL;
}

/* A running stream stops when its publication, its locks or a polling pass say so. */
static void
wal_recheck_stream(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;

    if (w->foreign_filter[0] != '\0') {
        ob_log(OB_LOG_WARN, "wal: publication %s was set to WHERE (%s), not this relay's (%s), by another "
                            "instance; stream stopped, polling until it is this relay's again",
               w->pub, w->foreign_filter, w->filter);
        ob_wal_stop(rl, 1);
        w->ready = 0;
    } else if (!ob_wal_all_locks(rl)) {
        ob_log(OB_LOG_WARN, "wal: lost a partition lock; stream stopped, polling what this relay holds");
        ob_wal_stop(rl, 1);
        w->ready = 0;
    } else if (w->catchup) {
        ob_log(OB_LOG_INFO, "wal: a polling pass was asked for (replay?); stream paused");
        ob_wal_stop(rl, 1);
    }
}

void
ob_wal_tick(ob_relay_t *rl, int stats_due)
{
    struct ob_wal_s *w = rl->wal;
    int64_t          now = ob_now_ms();

    if (w == NULL || rl->pg == NULL || w->slot[0] == '\0')
        return;     /* no seat yet, or a share of nothing */
    if (!w->ready && !w->streaming && now >= w->retry_at_ms) {
        int rc = ob_wal_setup(rl);
        w->ready = rc == 1;
        if (rc != 1)
            w->retry_at_ms = now + WAL_RETRY_MS;
    }
    if (w->ready && ob_wal_read_flag(rl) == 0 && w->streaming)
        wal_recheck_stream(rl);
    if (stats_due) {
        if (ob_wal_slot_lag(rl)) {
            if (w->streaming)
                ob_wal_stop(rl, 0);
            w->ready = 0;     /* set-up finds out what happened and says so */
        }
        if (rl->share_seat == 0)
            ob_wal_drop_stale_slots(rl);
    }
    ob_wal_counter(rl, OB_CTR_RELAY_STREAMING, (uint64_t) w->streaming);
    ob_wal_counter(rl, OB_CTR_RELAY_CATCHUP, (uint64_t) (w->catchup || !w->ready));
    ob_wal_counter(rl, OB_CTR_RELAY_SLOT_LAG_MS,
                   (uint64_t) (w->streaming ? (w->chead < w->ctail ? now - w->commits[w->chead % WAL_WINDOW].recv_ms : 0)
                                            : now - w->stopped_ms));
}

/* cycle is the polling cycle, passed down by the loop, so that neither engine calls the other. */
int
ob_wal_poll_cycle(ob_relay_t *rl, int (*cycle)(ob_relay_t *rl))
{
    struct ob_wal_s *w = rl->wal;
    /* only a pass whose snapshot follows the slot's creation and the filter change counts */
    int              counts = w->ready && w->catchup && ob_wal_all_locks(rl);
    int              n = cycle(rl);

    /* complete when the cycle took all its snapshot showed (no partition's claim reached its limit, nothing held)
     * and Kafka took it: waiting for a cycle that finds nothing never ends under writes that never pause */
    if (n >= 0 && counts && !rl->more && !rl->barrier_held && rl->breaker == OB_BREAKER_CLOSED && ob_wal_all_locks(rl) &&
        ob_wal_update_flag(rl, 0) == 0)
        ob_log(OB_LOG_INFO, "wal: polling pass complete; streaming from slot %s", w->slot);
    return n;
}

int
ob_wal_streams(ob_relay_t *rl)
{
    struct ob_wal_s *w = rl->wal;

    return w != NULL && w->slot[0] != '\0' && (w->streaming || (w->ready && !w->catchup && ob_wal_all_locks(rl) &&
                                          rl->breaker != OB_BREAKER_OPEN && ob_now_ms() >= w->retry_at_ms));
}
