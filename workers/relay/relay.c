/*
 * workers/relay/relay.c: relay worker i of R (outbox -> Kafka).
 *
 * NOTES
 *   What it does: checks that the topic has [kafka] partitions partitions
 *   (creating it when absent); takes a seat among the relays of every
 *   instance on orderdb and claims its share of the partitions (share.c),
 *   each confirmed by a session advisory lock on its own orderdb
 *   connection; then loops: one publish cycle (publish.c) over the held
 *   partitions, or in mode wal a step of the stream (wal_stream.c), again
 *   at once while batches come back full, otherwise a sleep on its shm
 *   wake word (bumped by HTTP workers after each commit). Rows written by
 *   any other client wake nobody, so the sleep adapts: poll_min_ms after a
 *   poll that found rows no wake announced, doubling while polls find none
 *   (or only announced rows), up to poll_interval_ms (outcome.c,
 *   ob_relay_poll_wait).
 *   Once a second it re-checks its session, re-reads the seats (a relay
 *   joined or left: partitions change hands), retries locks it lacks and
 *   refreshes per-partition backlog figures in shm (upkeep.c); every 10 s
 *   the janitor deletes published rows older than retention.
 *
 *   Kafka away is not a bad message: a cycle whose rows were not
 *   acknowledged opens the circuit breaker; no rows are claimed until a
 *   metadata probe (half-open) succeeds, with backoff and jitter. No
 *   attempt is counted against any row.
 *
 *   With a synchronous standby nothing is produced before the standby has
 *   flushed it (barrier.c), so a failover cannot take back a published event.
 *
 *   What it owns: one PGconn (its locks live and die with it), one producer
 *   (recreated after a fatal error; the batch in hand stays pending).
 *
 *   Signals: TERM/INT finish the batch in hand, mark it, exit 0. USR1
 *   reopens the log. HUP is the supervisor's business.
 *
 *   Exit codes: 0 asked to stop; 1 cannot reach orderdb or Kafka at start
 *   (the supervisor retries with backoff); 2 the topic's partition count
 *   differs from the config, or the producer config is invalid.
 */
#include "relay_int.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/schema.h"
#include "../../common/routing.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/worker.h"
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAY_TICK_MS       1000
#define RELAY_JANITOR_MS    10000
#define RELAY_STATS_MS      5000

static int  relay_init(ob_relay_t *rl, char *err, size_t errlen);
static void relay_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
static void relay_loop(ob_relay_t *rl);
static void relay_tick(ob_relay_t *rl);
static int  relay_breaker_allows(ob_relay_t *rl);
static void relay_lose_connection(ob_relay_t *rl, const char *why);
static int  relay_shutdown(ob_relay_t *rl);

int
ob_relay_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index)
{
    ob_relay_t rl;
    char       err[512];
    int        rc;

    ob_pg_set_peer_timeout(cfg->postgres.peer_timeout_s);
    memset(&rl, 0, sizeof(rl));
    rl.cfg = cfg;
    rl.slot = slot;
    rl.index = index;
    rl.seat = rl.share_seat = rl.rank = -1;
    ob_shm_beat(slot);
    rc = relay_init(&rl, err, sizeof(err));
    if (rc != OB_EXIT_OK) {
        ob_log(OB_LOG_ERROR, "relay init failed: %s", err);
        ob_worker_note(slot, "%s", err);
        relay_shutdown(&rl);
        return rc;
    }
    ob_log(OB_LOG_INFO, "relay %d of %d (%s) started", index, cfg->workers.relays,
           cfg->relay.mode == OB_RELAY_PARTITIONED ? "partitioned"
           : cfg->relay.mode == OB_RELAY_WAL     ? "wal"
                                                 : "skip_locked");
    relay_loop(&rl);
    return relay_shutdown(&rl);
}

static void
relay_loop(ob_relay_t *rl)
{
    while (ob_worker_tick(rl->slot)) {
        uint32_t seen = atomic_load(&rl->slot->wake);
        /* rows an HTTP worker announced need no fast polling after them: it wakes us for the next ones too */
        int      announced = seen != rl->wake_seen;
        rl->wake_seen = seen;
        relay_tick(rl);
        if (rl->fatal) {
            char err[512];
            rd_kafka_destroy(rl->rk);
            rl->fatal = 0;
            rl->rk = ob_relay_producer_new(rl, relay_dr, err, sizeof(err));
            if (rl->rk == NULL) {
                ob_log(OB_LOG_ERROR, "cannot recreate the producer: %s", err);
                return;     /* exit 0 would hide it: the caller's shutdown returns, supervisor restarts */
            }
        }
        int allowed = rl->pg != NULL && relay_breaker_allows(rl), found = 0;
        if (allowed && ob_wal_streams(rl)) {
            if (ob_wal_step(rl) < 0)
                relay_lose_connection(rl, PQerrorMessage(rl->pg));
            continue;     /* the step waited on the stream itself */
        }
        if (allowed) {
            if ((found = rl->wal ? ob_wal_poll_cycle(rl, ob_relay_cycle) : ob_relay_cycle(rl)) < 0) {
                relay_lose_connection(rl, PQerrorMessage(rl->pg));
                continue;
            }
            if (rl->more)
                continue;
        }
        rd_kafka_poll(rl->rk, 0);
        rl->wait_ms = ob_relay_poll_wait(rl->wait_ms, announced ? 0 : found, rl->cfg->relay.poll_min_ms,
                                         rl->cfg->relay.poll_interval_ms);
        ob_shm_wait(rl->slot, seen, rl->breaker == OB_BREAKER_OPEN ? 100 : rl->wait_ms);
    }
}

/*
 * Delivery reports run on this thread inside rd_kafka_poll. Both engines
 * share the producer (mode wal polls while it catches up), so the opaque
 * says whose report it is; each engine then ignores reports of batches or
 * stream sessions it gave up on.
 */
static void
relay_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    ob_relay_t *rl = opaque;
    uint64_t    v = (uint64_t) (uintptr_t) m->_private;

    (void) rk;
    if (v & OB_WAL_OPAQUE_TAG)
        ob_wal_dr(rl, v & ~OB_WAL_OPAQUE_TAG, m->err, m->offset);
    else
        ob_relay_polled_dr(rl, v, m->err, m->offset);
}

/*
 * Statistics taken while a backlog builds say "most rows are pending"; after
 * the drain they are stale, and the planner then walks the primary key
 * filtering NOT published instead of the partial pending index: a claim
 * went from 3 ms to 1.8 s in the bench. SSD-like random I/O costs keep the
 * partial index the cheaper plan whatever the statistics say.
 *
 * The relay's own commits (marks, quarantine moves, janitor deletes) need
 * not wait for the WAL flush: a mark lost in a database crash only turns
 * its rows pending again, and they are re-sent, which at-least-once
 * delivery and the consumer's dedupe already absorb. Orders themselves are
 * written by the HTTP workers with synchronous_commit on (checked there).
 */
static void
relay_session_setup(ob_relay_t *rl)
{
    char err[256];

    if (ob_pg_exec(rl->pg, "SET random_page_cost = 1.1", err, sizeof(err)) != 0 ||
        ob_pg_exec(rl->pg, "SET synchronous_commit = off", err, sizeof(err)) != 0)
        ob_log(OB_LOG_WARN, "relay session setup: %s", err);
}

/*
 * outboxd.emit hashes with outboxd.settings' partition count, the HTTP
 * workers with [kafka] partitions: publishing while they differ would split
 * aggregates over two counts; and a schema older than this binary (after
 * an upgrade, before `outboxd migrate`) must not be published from.
 * OB_EXIT_OK, RETRY (no answer) or FATAL.
 */
static int
relay_check_settings(ob_relay_t *rl, char *err, size_t errlen)
{
    PGresult *r;
    int       rc = ob_schema_check(rl->pg, "outbox", err, errlen);

    if (rc != OB_EXIT_OK)
        return rc;
    r = ob_pg_query(rl->pg, "SELECT partitions FROM outboxd.settings", 0, NULL, NULL, err, errlen);
    if (r == NULL)
        return PQstatus(rl->pg) == CONNECTION_OK ? OB_EXIT_FATAL : OB_EXIT_RETRY;
    if (PQntuples(r) != 1) {
        snprintf(err, errlen, "outboxd.settings is empty: run outboxd migrate with this configuration");
        rc = OB_EXIT_FATAL;
    } else if (atoi(PQgetvalue(r, 0, 0)) != rl->cfg->kafka.partitions) {
        snprintf(err, errlen,
                 "outboxd.settings says %s partitions, [kafka] partitions = %d: outboxd.emit and the HTTP workers"
                 " would hash aggregates over different counts",
                 PQgetvalue(r, 0, 0), rl->cfg->kafka.partitions);
        rc = OB_EXIT_FATAL;
    }
    PQclear(r);
    return rc;
}

static int
relay_init(ob_relay_t *rl, char *err, size_t errlen)
{
    const ob_cfg_t *cfg = rl->cfg;
    char            app[64];
    int             rc;

    rl->rk = ob_relay_producer_new(rl, relay_dr, err, errlen);
    if (rl->rk == NULL)
        return OB_EXIT_FATAL;     /* a bad producer setting is a config problem */
    /* every routed topic, at start: a missing one would otherwise show only when its first event comes */
    rl->ntopics = ob_cfg_topics(cfg, rl->topics);
    for (int t = 0; t < rl->ntopics; t++) {
        rl->shm_topic[t] = ob_shm_topic_index(ob_shm, rl->topics[t]);
        if ((rc = ob_relay_check_topic(rl->rk, rl->topics[t], cfg->kafka.partitions, err, errlen)) != OB_EXIT_OK)
            return rc;
        ob_shm_beat(rl->slot);
    }
    ob_relay_read_limits(rl);
    ob_shm_beat(rl->slot);
    snprintf(app, sizeof(app), "outboxd relay %d", rl->index);
    rl->pg = ob_pg_connect(ob_cfg_relay_dsn(cfg), app, err, errlen);
    if (rl->pg == NULL)
        return OB_EXIT_RETRY;
    /* first: with a synchronous standby away, a commit waiting for it would wedge the relay (routing sync) */
    relay_session_setup(rl);
    if ((rc = relay_check_settings(rl, err, errlen)) != OB_EXIT_OK)
        return rc;
    /* relay 0 speaks for the instance: after a reload, emit takes a newly routed type once it runs.
     * Failing that (a grant missing after an upgrade) costs only emit's strict check its freshness:
     * publishing goes on. */
    if (rl->index == 0 && ob_routing_sync(rl->pg, cfg, err, errlen) != 0) {
        if (PQstatus(rl->pg) != CONNECTION_OK)
            return OB_EXIT_RETRY;
        ob_log(OB_LOG_WARN, "outboxd.routing not updated, emit's strict routes check keeps its last state: %s", err);
    }
    if ((rc = ob_barrier_setup(rl, err, errlen)) != OB_EXIT_OK)
        return rc;
    rl->next_janitor_ms = ob_now_ms() + RELAY_JANITOR_MS;
    if (cfg->relay.mode == OB_RELAY_WAL)
        return ob_wal_init(rl, err, errlen);
    return OB_EXIT_OK;
}

/* Open: wait out the backoff, then probe with a metadata request (half-open). */
static int
relay_breaker_allows(ob_relay_t *rl)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t             e;

    if (rl->breaker != OB_BREAKER_OPEN)
        return 1;
    if (ob_now_ms() < rl->breaker_until_ms)
        return 0;
    ob_relay_set_breaker(rl, OB_BREAKER_HALF_OPEN);
    e = rd_kafka_metadata(rl->rk, 0, NULL, &md, 1000);
    ob_shm_beat(rl->slot);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ob_log(OB_LOG_DEBUG, "breaker probe failed: %s", rd_kafka_err2str(e));
        ob_relay_set_breaker(rl, OB_BREAKER_OPEN);
        return 0;
    }
    rd_kafka_metadata_destroy(md);
    return 1;     /* half-open: the next cycle decides */
}

static void
relay_lose_connection(ob_relay_t *rl, const char *why)
{
    char msg[512];

    ob_strlcpy(msg, why ? why : "", sizeof(msg));
    for (size_t n = strlen(msg); n > 0 && msg[n - 1] == '\n'; n--)
        msg[n - 1] = '\0';
    ob_log(OB_LOG_WARN, "orderdb connection lost, partitions released: %s", msg);
    ob_wal_stop(rl, 0);     /* the stream needs the locks */
    ob_share_forget(rl);
    PQfinish(rl->pg);
    rl->pg = NULL;
}

/*
 * A relay joined or left: everything this one sent of a partition is
 * acknowledged and marked (or given up, pending) before it lets the
 * partition go, and mode wal's stream follows the new share.
 */
static void
relay_share(ob_relay_t *rl)
{
    ob_share_plan_t plan;
    char            err[512];
    int             rc = ob_share_plan(rl, &plan, err, sizeof(err));

    if (rc > 0) {
        ob_wal_stop(rl, 1);
        if ((rc = ob_share_apply(rl, &plan, err, sizeof(err))) == 0)
            ob_wal_reshare(rl);
    }
    if (rc >= 0)
        rc = ob_share_lock(rl, err, sizeof(err));
    if (rc < 0)
        relay_lose_connection(rl, err);
}

/* Reconnects if needed and claims the share's partitions not yet held. */
static void
relay_claim(ob_relay_t *rl)
{
    char err[512], app[64];

    if (rl->pg == NULL) {
        snprintf(app, sizeof(app), "outboxd relay %d", rl->index);
        rl->pg = ob_pg_connect(ob_cfg_relay_dsn(rl->cfg), app, err, sizeof(err));
        if (rl->pg == NULL) {
            ob_log(OB_LOG_WARN, "%s", err);
            return;
        }
        relay_session_setup(rl);
        /* after a failover the new primary may have no synchronous standby, or one the old lacked;
         * and its positions are another server's */
        rl->barrier_safe = 0;
        if (ob_barrier_setup(rl, err, sizeof(err)) != OB_EXIT_OK) {
            ob_log(OB_LOG_WARN, "standby barrier: %s", err);
            PQfinish(rl->pg);
            rl->pg = NULL;
            return;
        }
        ob_log(OB_LOG_INFO, "orderdb connection restored; taking the partitions no other relay holds");
    }
    if (rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED)
        return;     /* row locks, not partition ownership */
    relay_share(rl);
}

/*
 * A round trip a tick proves the session (and so its locks) is still ours:
 * the seats' read, and with the barrier possible first its own.
 * With the barrier possible, re-reading synchronous_standby_names is that
 * round trip: a standby named or dropped by a reload is followed within
 * RELAY_TICK_MS, and a reconnect (relay_claim) reads it once, not twice.
 */
static void
relay_check_session(ob_relay_t *rl)
{
    char err[512];
    int  rc;

    if (rl->pg == NULL)
        return;
    if (rl->cfg->relay.standby_barrier == OB_BARRIER_OFF) {
        if (rl->cfg->relay.mode != OB_RELAY_SKIP_LOCKED)
            return;     /* the seats' read (relay_share) is the round trip */
        if (ob_pg_exec(rl->pg, "SELECT 1", err, sizeof(err)) != 0)
            relay_lose_connection(rl, err);
        return;
    }
    rc = ob_barrier_setup(rl, err, sizeof(err));
    if (rc == OB_EXIT_RETRY) {
        relay_lose_connection(rl, err);
    } else if (rc != OB_EXIT_OK) {
        ob_log(OB_LOG_WARN, "standby barrier: %s", err);
        rl->barrier = 1;     /* cannot tell: hold rather than publish what a failover could take back */
    }
}

static void
relay_tick(ob_relay_t *rl)
{
    int64_t now = ob_now_ms();

    if (now < rl->next_tick_ms)
        return;
    rl->next_tick_ms = now + RELAY_TICK_MS;
    relay_check_session(rl);
    relay_claim(rl);
    if (rl->pg == NULL)
        return;
    int stats_due = now >= rl->next_stats_ms;
    if (stats_due) {
        rl->next_stats_ms = now + RELAY_STATS_MS;
        ob_relay_stats(rl);
    }
    ob_wal_tick(rl, stats_due);
    if (now >= rl->next_janitor_ms) {
        rl->next_janitor_ms = now + RELAY_JANITOR_MS;
        ob_relay_janitor(rl);
    }
}

static int
relay_shutdown(ob_relay_t *rl)
{
    ob_wal_stop(rl, 1);
    ob_wal_free(rl);
    ob_share_forget(rl);
    PQfinish(rl->pg);       /* releases the advisory locks */
    rl->pg = NULL;
    if (rl->rk != NULL) {
        rd_kafka_flush(rl->rk, 5000);
        if (rd_kafka_outq_len(rl->rk) > 0)
            ob_log(OB_LOG_WARN, "%d Kafka message(s) not delivered at exit; their rows stay pending",
                   rd_kafka_outq_len(rl->rk));
        rd_kafka_destroy(rl->rk);
        rl->rk = NULL;
    }
    free(rl->rows);
    rl->rows = NULL;
    return OB_EXIT_OK;
}
