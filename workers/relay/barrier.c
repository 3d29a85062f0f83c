/*
 * workers/relay/barrier.c: the standby barrier.
 *
 * On PostgreSQL 15 a logical walsender sends a transaction once its commit
 * is flushed locally, before the synchronous standby confirms it; and a
 * commit whose synchronous wait was cancelled (pg_cancel_backend, a client
 * giving up) becomes visible to every snapshot without the standby having
 * it. An event produced then and booked by a consumer vanishes from orderdb
 * when the standby is promoted: a phantom. So, while the barrier is on,
 * nothing is produced before the synchronous standby has the WAL holding
 * its commit.
 *
 * How: the relay commits a transaction of its own with synchronous_commit
 * = on. It must write WAL, or PostgreSQL does not wait for it (an xid alone
 * writes none): a transactional logical message, which needs no table and
 * no privilege, and which pgoutput does not send. Its commit record lies after every commit a
 * claim just saw and after every commit the stream has sent (the walsender
 * decodes flushed WAL only), and PostgreSQL returns the COMMIT only once
 * synchronous_standby_names is satisfied, by its own rules (FIRST n, ANY
 * n), woken by the walsender rather than polled. The insert position read
 * inside it is kept: a streamed commit below it needs no second barrier,
 * so a drain far behind the tail asks once per position, not per event.
 *
 * A COMMIT the standby does not confirm within BARRIER_WAIT_MS is
 * cancelled (committing an empty transaction locally costs nothing); the
 * caller produces nothing: polled rows stay pending, the stream stops and
 * resumes from its slot.
 */
#include "relay_int.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/util.h"
#include "../../common/worker.h"
#include "pgoutput.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define BARRIER_WAIT_MS  1000
#define BARRIER_BEAT_MS  100
#define BARRIER_GRACE_MS 5000     /* after the cancel: a server that answers nothing is a lost session */
#define BARRIER_WARN_MS  10000

static const char *barrier_sql =
    "BEGIN; SET LOCAL synchronous_commit = on;"
    " SELECT pg_current_wal_insert_lsn()::text, pg_logical_emit_message(true, 'outboxd.barrier', ''); COMMIT";

int
ob_barrier_setup(ob_relay_t *rl, char *err, size_t errlen)
{
    ob_barrier_mode_t mode = rl->cfg->relay.standby_barrier;
    PGresult         *r;
    int               was = rl->barrier;

    rl->barrier = 0;
    if (mode != OB_BARRIER_OFF) {
        r = ob_pg_query(rl->pg, "SELECT current_setting('synchronous_standby_names') <> ''", 0, NULL, NULL, err,
                        errlen);
        if (r == NULL)
            return PQstatus(rl->pg) == CONNECTION_OK ? OB_EXIT_FATAL : OB_EXIT_RETRY;
        rl->barrier = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
    }
    if (rl->barrier && rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED && !was) {
        snprintf(err, errlen,
                 "orderdb names a synchronous standby, and mode skip_locked cannot wait for it inside its claim"
                 " transaction: use mode partitioned or wal, or [relay] standby_barrier = off to accept that a"
                 " failover can take back published events");
        return OB_EXIT_FATAL;
    }
    if (rl->barrier != was)
        rl->barrier_safe = 0;
    if (rl->barrier != was)
        ob_log(OB_LOG_INFO, "standby barrier %s%s", rl->barrier ? "on" : "off",
               rl->barrier ? ": events are produced once a synchronous standby has their commit" : "");
    atomic_store(&rl->slot->counters[OB_CTR_RELAY_BARRIER], (uint64_t) rl->barrier);
    return OB_EXIT_OK;
}

static void
barrier_cancel(ob_relay_t *rl)
{
    PGcancel *c = PQgetCancel(rl->pg);
    char      err[256];

    if (c != NULL && !PQcancel(c, err, sizeof(err)))
        ob_log(OB_LOG_WARN, "standby barrier: cancel failed: %s", err);
    PQfreeCancel(c);
}

/*
 * Waits until the next result can be read without blocking, cancelling the
 * statement at the deadline (*cancelled then set). 0, or -1 when the
 * session failed or the server did not answer even the cancel.
 */
static int
barrier_ready(ob_relay_t *rl, int64_t deadline, int *cancelled)
{
    while (PQisBusy(rl->pg)) {
        int64_t       now = ob_now_ms(), left = deadline - now;
        struct pollfd p = { .fd = PQsocket(rl->pg), .events = POLLIN };

        if (left <= 0 && !*cancelled) {
            barrier_cancel(rl);
            *cancelled = 1;
        }
        if (*cancelled && now > deadline + BARRIER_GRACE_MS) {
            /* the query still runs: any later statement on this session would wait for it */
            shutdown(PQsocket(rl->pg), SHUT_RDWR);
            return -1;
        }
        if (poll(&p, 1, left > 0 && left < BARRIER_BEAT_MS ? (int) left : BARRIER_BEAT_MS) < 0 && errno != EINTR)
            return -1;
        if (PQconsumeInput(rl->pg) != 1)
            return -1;
        ob_shm_beat(rl->slot);
    }
    return 0;
}

/*
 * Anyone may cancel the wait (pg_cancel_backend on every SyncRep waiter):
 * the COMMIT then succeeds with only a WARNING, and the standby has
 * confirmed nothing. The fault suite's cancel did exactly that.
 */
static void
barrier_notice(void *arg, const PGresult *r)
{
    if (ob_pg_syncrep_cancelled(r))
        *(int *) arg = 1;
}

/* The barrier's statements and their results; 0, or -1 when the session failed. */
static int
barrier_run(ob_relay_t *rl, int64_t deadline, int *cancelled, int *failed, uint64_t *safe)
{
    PGresult *r;

    if (!PQsendQuery(rl->pg, barrier_sql))
        return -1;
    for (;;) {
        if (barrier_ready(rl, deadline, cancelled) != 0)
            return -1;
        if ((r = PQgetResult(rl->pg)) == NULL)
            break;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            *failed |= ob_pgo_lsn_parse(PQgetvalue(r, 0, 0), safe) != 0;
        else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            if (!*cancelled)
                ob_log(OB_LOG_WARN, "standby barrier: %s", PQresultErrorMessage(r));
            *failed = 1;
        }
        PQclear(r);
    }
    /* cancelled before its COMMIT ran: the rest of the string was skipped, the block is open */
    if (PQtransactionStatus(rl->pg) != PQTRANS_IDLE && !ob_relay_sql_ok(rl->pg, PQexec(rl->pg, "ROLLBACK"), "ROLLBACK"))
        return -1;
    return PQstatus(rl->pg) == CONNECTION_OK ? 0 : -1;
}

/* Runs the barrier transaction: 1 confirmed (*safe set), 0 not within the wait, -1 the session failed. */
static int
barrier_commit(ob_relay_t *rl, uint64_t *safe)
{
    int              cancelled = 0, failed = 0, warned = 0, rc;
    PQnoticeReceiver old = PQsetNoticeReceiver(rl->pg, barrier_notice, &warned);

    rc = barrier_run(rl, ob_now_ms() + BARRIER_WAIT_MS, &cancelled, &failed, safe);
    PQsetNoticeReceiver(rl->pg, old, NULL);
    if (rc < 0)
        return -1;
    return cancelled || failed || warned ? 0 : 1;
}

static void
barrier_gave_up(ob_relay_t *rl)
{
    int64_t now = ob_now_ms();

    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_BARRIER_TIMEOUTS], 1);
    if (now - rl->barrier_warned_ms < BARRIER_WARN_MS)
        return;
    rl->barrier_warned_ms = now;
    ob_log(OB_LOG_WARN,
           "standby barrier: no synchronous standby confirmed within %d ms; nothing is produced until one does",
           BARRIER_WAIT_MS);
    ob_worker_note(rl->slot, "waiting for a synchronous standby to confirm");
}

int
ob_barrier_wait(ob_relay_t *rl, uint64_t lsn)
{
    int64_t  t0 = ob_now_us();
    uint64_t safe = 0;
    int      rc;

    if (!rl->barrier || (lsn != 0 && lsn <= rl->barrier_safe))
        return 1;
    if (rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED) {
        /* its claim is a transaction held open across Kafka: a commit of ours would end it, and its locks */
        barrier_gave_up(rl);
        return 0;
    }
    rc = barrier_commit(rl, &safe);
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_BARRIER_US], (uint64_t) (ob_now_us() - t0));
    if (rc > 0 && safe > rl->barrier_safe)
        rl->barrier_safe = safe;
    if (rc == 0)
        barrier_gave_up(rl);
    return rc;
}
