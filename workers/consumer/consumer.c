/*
 * workers/consumer/consumer.c: consumer worker i (Kafka -> ledger).
 *
 * NOTES
 *   What it does: one member of group [ledger] group (default
 *   ledger-service) on the topic, with static membership so a restarted
 *   consumer takes its partitions back without a rebalance, and a short
 *   session timeout so a dead one's partitions move within seconds. Each
 *   poll batch is decoded and validated in C, then applied in ONE ledgerdb
 *   transaction by ledger_apply_events() (apply.c, sql/ledgerdb/0003):
 *   idempotent by event id, ordered by per-order seq (gaps parked, applied
 *   when filled), then the offsets are committed. An offset is never
 *   committed before its event is durably applied, so a crash anywhere
 *   re-delivers and the ledger skips what it already has. Events that
 *   cannot be booked go to ledger_dead_letter with their records and the
 *   consumer moves on.
 *
 *   Failures, by SQLSTATE class (apply.h): the database away, or a
 *   transient error (serialization, deadlock, disk full, out of memory,
 *   I/O, cancel): the batch in hand is retried with backoff, it is
 *   idempotent; nothing is dead-lettered and no offset moves. Any other
 *   failure of the batch: its events are applied one per transaction, so
 *   a data error (classes 22, 23, e.g. a constraint checked at COMMIT)
 *   dead-letters exactly the event that caused it and the rest are booked;
 *   an event failing with anything but a data error is retried, never
 *   dead-lettered. While events wait and none was applied for
 *   [ledger] stall_after, the slot says stalled (status, /metrics).
 *
 *   What it owns: one PGconn, one rdkafka consumer.
 *
 *   Signals: TERM/INT stop after the batch in hand is applied and committed
 *   (or abandoned uncommitted if the database is away), close the consumer
 *   (leaving the group cleanly), exit 0. USR1 reopens the log.
 *
 *   Exit codes: 0 asked to stop; 1 cannot start the Kafka consumer; 2 a
 *   consumer setting is invalid, or Kafka raised a fatal error (e.g. this
 *   consumer was fenced by another with the same group.instance.id): the
 *   log and the slot's note say what to change.
 */
#include "../../common/event.h"
#include "../../common/kprops.h"
#include "../../common/log.h"
#include "../../common/money.h"
#include "../../common/pg.h"
#include "../../common/schema.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/uuid.h"
#include "../../common/worker.h"
#include "consumer.h"
#include "apply.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CONS_BATCH        500
#define CONS_STATS_MS     1000
#define CONS_BACKOFF_MAX  5000

typedef struct {
    const ob_cfg_t     *cfg;
    ob_shm_slot_t      *slot;
    int                 index;
    PGconn             *pg;
    rd_kafka_t         *rk;
    char                instance[160];       /* group.instance.id */
    rd_kafka_message_t *batch[CONS_BATCH];
    ob_cons_record_t    recs[CONS_BATCH];
    ob_cons_outcome_t   out[CONS_BATCH];
    int64_t             fetched_us[CONS_BATCH];  /* wall clock: consumer_poll handed it over */
    ob_cons_trust_t     trust;               /* which signatures are accepted */
    int                 n;
    int                 unapplied;           /* the batch in hand is not in the ledger yet */
    int                 fatal;
    int64_t             next_stats_ms;
    int64_t             progress_ms;         /* last applied batch, or last moment nothing waited */
} ob_cons_t;

static int  cons_init(ob_cons_t *cs, char *err, size_t errlen);
static int  cons_fill(ob_cons_t *cs);
static void cons_apply_until_done(ob_cons_t *cs);
static void cons_commit(ob_cons_t *cs);
static void cons_committed(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offs,
                           void *opaque);
static void cons_release(ob_cons_t *cs);
static void cons_stats(ob_cons_t *cs);
static int  cons_fatal(ob_cons_t *cs);
static ob_cons_class_t cons_connect(ob_cons_t *cs, char *err, size_t errlen);

int
ob_cons_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index)
{
    ob_cons_t *cs = calloc(1, sizeof(*cs));     /* ~0.6 MB of batch state: not on the stack */
    char       err[512];
    int        rc;

    ob_pg_set_peer_timeout(cfg->postgres.peer_timeout_s);
    if (cs == NULL)
        return OB_EXIT_RETRY;
    cs->cfg = cfg;
    cs->slot = slot;
    cs->index = index;
    cs->progress_ms = ob_now_ms();
    ob_shm_beat(slot);
    rc = cons_init(cs, err, sizeof(err));
    if (rc != OB_EXIT_OK) {
        ob_log(OB_LOG_ERROR, "consumer init failed: %s", err);
        ob_worker_note(slot, "%s", err);
        if (cs->rk != NULL)
            rd_kafka_destroy(cs->rk);
        free(cs);
        return rc;
    }
    while (!cons_fatal(cs) && ob_worker_tick(slot)) {
        cons_stats(cs);
        if (cons_fill(cs) > 0) {
            cons_apply_until_done(cs);
            cons_release(cs);
        }
    }
    rc = cs->fatal ? OB_EXIT_FATAL : OB_EXIT_OK;
    if (cs->fatal) {
        /* a fatal instance cannot leave the group; closing would only wait */
        rd_kafka_destroy_flags(cs->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    } else {
        ob_log(OB_LOG_INFO, "consumer %d leaving the group", index);
        rd_kafka_consumer_close(cs->rk);
        rd_kafka_destroy(cs->rk);
    }
    PQfinish(cs->pg);
    free(cs);
    return rc;
}

/*
 * A fatal librdkafka error leaves the instance unable to consume or commit
 * for good; polling on would look alive and do nothing. Says what to change.
 */
static int
cons_fatal(ob_cons_t *cs)
{
    char                why[512];
    rd_kafka_resp_err_t e;

    if (cs->fatal)
        return 1;
    e = rd_kafka_fatal_error(cs->rk, why, sizeof(why));
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    cs->fatal = 1;
    if (e == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID) {
        ob_log(OB_LOG_ERROR,
               "consumer %d fenced by Kafka: another consumer joined group \"%s\" as group.instance.id \"%s\", "
               "so two outboxd instances share [supervisor] name \"%s\"; give each host its own [supervisor] name "
               "and restart it (%s)",
               cs->index, cs->cfg->ledger.group, cs->instance, cs->cfg->supervisor.name, why);
        ob_worker_note(cs->slot, "fenced: another instance uses [supervisor] name \"%s\"; give each host its own",
                       cs->cfg->supervisor.name);
    } else {
        ob_log(OB_LOG_ERROR, "consumer %d: fatal Kafka error %s: %s; this consumer cannot go on: fix the cause, "
               "then reload", cs->index, rd_kafka_err2name(e), why);
        ob_worker_note(cs->slot, "fatal Kafka error %s: %.90s; fix it, then reload", rd_kafka_err2name(e), why);
    }
    return 1;
}

static void
cons_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void) rk;
    ob_log(level <= 3 ? OB_LOG_ERROR : level <= 4 ? OB_LOG_WARN : OB_LOG_DEBUG, "kafka %s: %s", fac, buf);
}

/* Eager rebalancing: offsets are committed after every applied batch, so a
 * revocation has nothing pending to commit; just follow the assignment. */
static void
cons_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    ob_cons_t *cs = opaque;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, parts);
        atomic_store(&cs->slot->counters[OB_CTR_CONS_ASSIGNED], (uint64_t) parts->cnt);
        ob_log(OB_LOG_INFO, "assigned %d partition(s)", parts->cnt);
    } else {
        rd_kafka_assign(rk, NULL);
        atomic_store(&cs->slot->counters[OB_CTR_CONS_ASSIGNED], 0);
        ob_log(OB_LOG_INFO, "partitions revoked");
    }
}

static int
cons_init(ob_cons_t *cs, char *err, size_t errlen)
{
    const ob_cfg_t  *cfg = cs->cfg;
    rd_kafka_conf_t *conf;
    char            *instance = cs->instance;
    ob_kprops_kv_t   kv[] = {
        { "bootstrap.servers", cfg->kafka.brokers },
        { "group.id", cfg->ledger.group },
        { "group.instance.id", instance },          /* static membership: restarts do not rebalance */
        { "enable.auto.commit", "false" },           /* offsets only after the ledger commit */
        { "enable.auto.offset.store", "false" },
        { "auto.offset.reset", "earliest" },
        { "session.timeout.ms", "6000" },            /* a dead member's partitions move within seconds */
        { "heartbeat.interval.ms", "1000" },
        { "client.id", "outboxd-consumer" },
        { "socket.keepalive.enable", "true" },       /* as the relay's producer: a silent broker is noticed */
        /* librdkafka prefetches up to 64 MB per consumer by default; a batch
         * is 500 events, so 8 MB of read-ahead keeps the pipe full and the
         * RSS bounded while a large backlog is applied. librdkafka 2.0
         * stops fetching once the consumer's queue (partition queues
         * forward to it) holds queued.min.messages, and looks again only on
         * its broker thread's next turn (up to a second): at 2 000 a
         * consumer drained its queue in 0.6 s and then waited for the rest
         * of that second. 10 000 gave 9 % more with the same RSS. */
        { "queued.max.messages.kbytes", "8192" },
        { "queued.min.messages", "10000" },
        { "fetch.max.bytes", "8388608" },
    };

    snprintf(instance, sizeof(cs->instance), "outboxd-%s-consumer-%d", cfg->supervisor.name, cs->index);
    ob_cons_trust_init(&cs->trust, cfg);
    if (cs->trust.ring.n > 0)
        ob_log(OB_LOG_INFO, "consumer %d: checking record signatures with %d key(s)%s", cs->index, cs->trust.ring.n,
               cs->trust.require ? ", unsigned records refused" : ", unsigned records accepted");
    conf = ob_kprops_conf(cfg, OB_KPROP_CONSUMER, kv, OB_ARRAY_LEN(kv), err, errlen);
    if (conf == NULL)
        return OB_EXIT_FATAL;
    rd_kafka_conf_set_opaque(conf, cs);
    rd_kafka_conf_set_rebalance_cb(conf, cons_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, cons_committed);
    rd_kafka_conf_set_log_cb(conf, cons_log_cb);
    cs->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
    if (cs->rk == NULL)
        return OB_EXIT_RETRY;
    rd_kafka_poll_set_consumer(cs->rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(2);
    /*
     * The orders' topic, and [kafka] topic when a route moved them: events
     * published before the reload that moved them may still wait there, and
     * the ledger parks a later seq until its predecessor comes. Other
     * aggregates' events on either are passed over.
     */
    const char                      *topic = ob_cfg_topic_for(cfg, "order");
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    if (strcmp(topic, cfg->kafka.topic) != 0)
        rd_kafka_topic_partition_list_add(topics, cfg->kafka.topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(cs->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "subscribe(%s) failed: %s", topic, rd_kafka_err2str(e));
        return OB_EXIT_RETRY;
    }
    /* no database yet is fine: the first batch waits for it */
    if (cons_connect(cs, err, errlen) != OB_CONS_OK && !cs->fatal)
        ob_log(OB_LOG_WARN, "%s; will retry", err);
    return cs->fatal ? OB_EXIT_FATAL : OB_EXIT_OK;
}

/* The record view of a message: pointers into it, valid while it lives. */
static void
cons_record(ob_cons_record_t *r, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs;
    const char         *name;
    const void         *val;
    size_t              size;

    r->topic = rd_kafka_topic_name(m->rkt);
    r->partition = m->partition;
    r->offset = m->offset;
    r->key = m->key;
    r->key_len = m->key_len;
    r->value = m->payload;
    r->value_len = m->len;
    r->nheaders = 0;
    r->headers_dropped = 0;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
        if (r->nheaders == OB_CONS_MAX_HEADERS) {
            r->headers_dropped = 1;
            break;
        }
        r->headers[r->nheaders++] = (ob_cons_header_t) { name, val, size };
    }
}

/*
 * Collects up to CONS_BATCH messages: blocks up to 250 ms for the first,
 * then takes only what is already fetched. Waiting for more would add its
 * wait to every event's commit->ledger time; under load the fetch queue
 * fills batches by itself.
 */
static int
cons_fill(ob_cons_t *cs)
{
    cs->n = 0;
    while (cs->n < CONS_BATCH) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cs->rk, cs->n == 0 ? 250 : 0);
        if (m == NULL)
            break;
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF && m->err != RD_KAFKA_RESP_ERR__FATAL)
                ob_log(OB_LOG_WARN, "consume: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (cons_fatal(cs))
                break;
            continue;
        }
        cons_record(&cs->recs[cs->n], m);
        cs->fetched_us[cs->n] = ob_wall_us();
        cs->batch[cs->n++] = m;
    }
    return cs->n;
}

static ob_cons_class_t
cons_connect(ob_cons_t *cs, char *err, size_t errlen)
{
    char app[64];

    if (cs->pg != NULL && PQstatus(cs->pg) == CONNECTION_OK)
        return OB_CONS_OK;
    PQfinish(cs->pg);
    snprintf(app, sizeof(app), "outboxd consumer %d", cs->index);
    cs->pg = ob_pg_connect(cs->cfg->ledger.dsn, app, err, errlen);
    if (cs->pg == NULL)
        return OB_CONS_AWAY;
    /* applying through functions an older ledger schema lacks would dead-letter every event */
    if (ob_schema_check(cs->pg, "ledgerdb", err, errlen) == OB_EXIT_FATAL) {
        ob_log(OB_LOG_ERROR, "consumer %d: %s", cs->index, err);
        ob_worker_note(cs->slot, "%s", err);
        cs->fatal = 1;
        PQfinish(cs->pg);
        cs->pg = NULL;
        return OB_CONS_AWAY;
    }
    return OB_CONS_OK;
}

static void
cons_rollback(ob_cons_t *cs)
{
    char ignore[256];

    /* a failed COMMIT has already ended the transaction */
    if (cs->pg != NULL && PQstatus(cs->pg) == CONNECTION_OK && PQtransactionStatus(cs->pg) != PQTRANS_IDLE)
        ob_cons_exec(cs->pg, "ROLLBACK", NULL, ignore, sizeof(ignore));
}

/* Applies recs[first .. first+n) in one transaction; OB_CONS_OK or the failure's class, with state and err. */
static ob_cons_class_t
cons_txn(ob_cons_t *cs, int first, int n, char *state, char *err, size_t errlen)
{
    ob_cons_class_t c;

    state[0] = '\0';
    if ((c = cons_connect(cs, err, errlen)) != OB_CONS_OK ||
        (c = ob_cons_exec(cs->pg, "BEGIN", state, err, errlen)) != OB_CONS_OK)
        return c;
    c = ob_cons_apply(cs->pg, &cs->trust, cs->recs + first, n, 1, cs->out + first, state, err, errlen);
    if (c == OB_CONS_OK)
        c = ob_cons_exec(cs->pg, "COMMIT", state, err, errlen);
    if (c != OB_CONS_OK)
        cons_rollback(cs);
    return c;
}

/* Tallies the outcomes of recs[first .. first+n) into the slot counters. */
/*
 * Stage times of booked event i, its ledger transaction just committed. The
 * record's timestamp is the relay's produce time (CreateTime); occurred_at
 * is the order's, taken just before its commit.
 */
static void
cons_stages(ob_cons_t *cs, int i, int64_t committed_us)
{
    rd_kafka_timestamp_type_t tstype;
    int64_t                   ts = rd_kafka_message_timestamp(cs->batch[i], &tstype);

    if (tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME && ts > 0)
        ob_shm_stage_add(cs->slot, OB_STAGE_CONS_FETCH, cs->fetched_us[i] - ts * 1000);
    ob_shm_stage_add(cs->slot, OB_STAGE_CONS_APPLY, committed_us - cs->fetched_us[i]);
    if (cs->out[i].occurred_ms > 0)
        ob_shm_stage_add(cs->slot, OB_STAGE_CONS_TOTAL, committed_us - cs->out[i].occurred_ms * 1000);
}

static void
cons_count(ob_cons_t *cs, int first, int n)
{
    int64_t newest = 0, committed_us = ob_wall_us();

    for (int i = first; i < first + n; i++) {
        const ob_cons_outcome_t *o = &cs->out[i];
        int                      k = o->code > 0 ? OB_CTR_CONS_APPLIED
                                   : o->code == 0 ? OB_CTR_CONS_PARKED
                                   : o->code == -1 ? OB_CTR_CONS_DUPLICATES
                                   : o->code == -3 ? OB_CTR_CONS_OTHER_AGGREGATES
                                                   : OB_CTR_CONS_DEAD_LETTERS;
        atomic_fetch_add(&cs->slot->counters[k], (uint64_t) (o->code > 0 ? o->code : 1));
        atomic_fetch_add(&cs->slot->counters[OB_CTR_CONS_DEAD_LETTERS], (uint64_t) o->late);
        if (o->code == -2)
            ob_log(OB_LOG_WARN, "dead-lettered %s[%d]@%lld%s%s: %s", cs->recs[i].topic, (int) cs->recs[i].partition,
                   (long long) cs->recs[i].offset, o->state[0] ? " SQLSTATE " : "", o->state, o->why);
        if (o->occurred_ms > newest)
            newest = o->occurred_ms;
        if (o->code > 0)
            cons_stages(cs, i, committed_us);
    }
    if (newest > 0)
        atomic_store(&cs->slot->counters[OB_CTR_CONS_APPLY_LAG_MS], (uint64_t) (ob_wall_ms() - newest));
}

/*
 * Waits out *backoff (then doubles it) while heartbeating and keeping the
 * lag and stall figures current: the wait is exactly when they matter.
 * -1 when asked to stop or Kafka failed for good.
 */
static int
cons_backoff(ob_cons_t *cs, int64_t *backoff)
{
    int64_t until = ob_now_ms() + *backoff;

    /* No consumer_poll here: it would hand us more messages. Group
     * heartbeats run on librdkafka's own thread, so membership holds
     * for outages shorter than max.poll.interval.ms. */
    while (ob_now_ms() < until && !ob_sig_term && !ob_sig_quit) {
        ob_sig_wait(50);
        ob_shm_beat(cs->slot);
        cons_stats(cs);
        if (cons_fatal(cs))
            return -1;
    }
    if (ob_sig_term || ob_sig_quit)
        return -1;
    *backoff = *backoff * 2 > CONS_BACKOFF_MAX ? CONS_BACKOFF_MAX : *backoff * 2;
    return 0;
}

/*
 * Dead-letters recs[i] in a transaction of its own, after its own
 * transaction failed with a data error (state, why). If even the record
 * cannot be stored, its coordinates are, so that the consumer moves on.
 */
static ob_cons_class_t
cons_dead_letter_alone(ob_cons_t *cs, int i, const char *state, const char *why)
{
    const ob_cons_record_t *r = &cs->recs[i];
    char                    err[512] = "", st[6], text[1024];
    ob_cons_class_t         c = OB_CONS_OK;

    for (int bare = 0; bare <= 1; bare++) {
        if (bare)
            snprintf(text, sizeof(text), "the record could not be stored (%s); it failed with: %s", err, why);
        if ((c = cons_connect(cs, err, sizeof(err))) != OB_CONS_OK ||
            (c = ob_cons_exec(cs->pg, "BEGIN", st, err, sizeof(err))) != OB_CONS_OK)
            return c;
        c = ob_cons_dead_letter(cs->pg, r, bare ? text : why, state, bare, err, sizeof(err));
        if (c == OB_CONS_OK)
            c = ob_cons_exec(cs->pg, "COMMIT", st, err, sizeof(err));
        if (c == OB_CONS_OK) {
            cs->out[i].code = -2;
            ob_strlcpy(cs->out[i].state, state, sizeof(cs->out[i].state));
            ob_cons_printable(why, strlen(why), cs->out[i].why, sizeof(cs->out[i].why));
            cs->out[i].late = 0;
            cons_count(cs, i, 1);
            return OB_CONS_OK;
        }
        cons_rollback(cs);
        if (c != OB_CONS_DATA)
            return c;
    }
    return c;
}

/*
 * The batch failed for a reason that is neither the database being away
 * nor transient: one event per transaction, so a data error is pinned on
 * exactly one event. An event failing otherwise is retried, never
 * dead-lettered. -1 when asked to stop (the offsets stay uncommitted; what
 * was applied is skipped as duplicates when re-read).
 */
static int
cons_apply_singly(ob_cons_t *cs)
{
    char    err[512], state[6];
    int64_t backoff;

    for (int i = 0; i < cs->n; i++) {
        for (backoff = 100;;) {
            ob_cons_class_t c = cons_txn(cs, i, 1, state, err, sizeof(err));
            if (c == OB_CONS_OK) {
                cons_count(cs, i, 1);
                break;
            }
            if (c == OB_CONS_DATA && (c = cons_dead_letter_alone(cs, i, state, err)) == OB_CONS_OK)
                break;
            ob_log(OB_LOG_WARN, "ledger apply of %s[%d]@%lld failed (%s, SQLSTATE %s), retry in %lld ms: %s",
                   cs->recs[i].topic, (int) cs->recs[i].partition, (long long) cs->recs[i].offset,
                   ob_cons_class_name(c), state[0] ? state : "none", (long long) backoff, err);
            if (cons_backoff(cs, &backoff) != 0)
                return -1;
        }
        cs->progress_ms = ob_now_ms();
    }
    return 0;
}

/*
 * Applies the batch in hand, retrying with backoff while the ledger
 * database is away or the failure is transient; the batch is idempotent,
 * so retrying is safe. Offsets are committed only after success. On TERM
 * during an outage it gives up without committing: the next owner of these
 * partitions re-reads them.
 */
static void
cons_apply_until_done(ob_cons_t *cs)
{
    char            err[512], state[6];
    int64_t         backoff = 100;
    int             early = cs->cfg->debug.fault == OB_FAULT_CONSUMER_COMMIT_BEFORE_APPLY;
    ob_cons_class_t c;

    if (early)
        cons_commit(cs);    /* the negative control's bug: a crash now loses the batch */
    cs->unapplied = 1;
    while ((c = cons_txn(cs, 0, cs->n, state, err, sizeof(err))) != OB_CONS_OK) {
        if (c == OB_CONS_DATA || c == OB_CONS_OTHER) {
            ob_log(OB_LOG_WARN, "ledger batch of %d failed (%s, SQLSTATE %s): %s; applying it one event at a time",
                   cs->n, ob_cons_class_name(c), state[0] ? state : "none", err);
            if (cons_apply_singly(cs) != 0)
                return;
            break;
        }
        ob_log(OB_LOG_WARN, "ledger apply failed (%s, SQLSTATE %s), batch kept, retry in %lld ms: %s",
               ob_cons_class_name(c), state[0] ? state : "none", (long long) backoff, err);
        if (cons_backoff(cs, &backoff) != 0)
            return;
    }
    if (c == OB_CONS_OK)
        cons_count(cs, 0, cs->n);
    cs->unapplied = 0;
    cs->progress_ms = ob_now_ms();
    if (!early)
        cons_commit(cs);
}

/* Commits, per partition, the offset after the last applied message. */
static void
cons_commit(ob_cons_t *cs)
{
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(cs->n);
    rd_kafka_resp_err_t              e;

    for (int i = 0; i < cs->n; i++) {
        const rd_kafka_message_t         *m = cs->batch[i];
        rd_kafka_topic_partition_t       *tp =
            rd_kafka_topic_partition_list_find(offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (tp == NULL)
            tp = rd_kafka_topic_partition_list_add(offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->offset + 1 > tp->offset)
            tp->offset = m->offset + 1;
    }
    /* Asynchronous: the ledger commit already made the batch durable, so a
     * lost offset commit only means re-reading events that are skipped as
     * duplicates. Waiting for the broker here added a round trip to every
     * event's latency, and a hung broker stalled the worker until the
     * watchdog killed it. */
    e = rd_kafka_commit(cs->rk, offs, 1);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        ob_log(OB_LOG_WARN, "offset commit not sent (events will be re-read and skipped): %s", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(offs);
}

/* Result of an asynchronous offset commit, served by consumer_poll. */
static void
cons_committed(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offs, void *opaque)
{
    (void) rk;
    (void) offs;
    (void) opaque;
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        ob_log(OB_LOG_WARN, "offset commit failed (events will be re-read and skipped): %s", rd_kafka_err2str(err));
}

static void
cons_release(ob_cons_t *cs)
{
    for (int i = 0; i < cs->n; i++)
        rd_kafka_message_destroy(cs->batch[i]);
    cs->n = 0;
}

/*
 * Lag and stall figures, into shm. Waiting events are the batch in hand
 * until it is applied, plus high watermark - position over the assigned
 * partitions: counting only the latter, a consumer stuck on the last batch
 * of a topic would show no lag at all. Stalled: events wait and nothing
 * was applied for [ledger] stall_after, whatever the reason.
 */
static void
cons_stats(ob_cons_t *cs)
{
    rd_kafka_topic_partition_list_t *asg = NULL;
    int64_t                          now = ob_now_ms(), waiting = cs->unapplied ? cs->n : 0, idle;

    if (now < cs->next_stats_ms)
        return;
    cs->next_stats_ms = now + CONS_STATS_MS;
    if (rd_kafka_assignment(cs->rk, &asg) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_position(cs->rk, asg);
        for (int i = 0; i < asg->cnt; i++) {
            int64_t lo, hi;
            if (rd_kafka_get_watermark_offsets(cs->rk, asg->elems[i].topic, asg->elems[i].partition, &lo, &hi) == 0 &&
                asg->elems[i].offset >= 0 && hi > asg->elems[i].offset)
                waiting += hi - asg->elems[i].offset;
        }
        rd_kafka_topic_partition_list_destroy(asg);
    }
    if (waiting == 0)
        cs->progress_ms = now;
    idle = now - cs->progress_ms;
    atomic_store(&cs->slot->counters[OB_CTR_CONS_LAG], (uint64_t) waiting);
    atomic_store(&cs->slot->counters[OB_CTR_CONS_NO_PROGRESS_MS], (uint64_t) idle);
    atomic_store(&cs->slot->counters[OB_CTR_CONS_STALLED],
                 (uint64_t) (idle >= (int64_t) cs->cfg->ledger.stall_after_s * 1000));
}
