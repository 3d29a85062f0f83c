/*
 * workers/consumer/consumer.c: consumer worker i (Kafka -> ledger).
 *
 * NOTES
 *   What it does: one member of group [ledger] group (default
 *   ledger-service) on the topic, with static membership so a restarted
 *   consumer takes its partitions back without a rebalance, and a short
 *   session timeout so a dead one's partitions move within seconds. Each
 *   poll batch is decoded in C and applied in ONE ledgerdb transaction by
 *   ledger_apply_batch() (sql/ledgerdb/0002): idempotent by event id,
 *   ordered by per-order seq (gaps parked, applied when filled), then the
 *   offsets are committed. An offset is never committed before its event
 *   is durably applied, so a crash anywhere re-delivers and the ledger
 *   skips what it already has. Undecodable values and unknown types go to
 *   ledger_dead_letter and the consumer moves on.
 *
 *   Ledger database down: the batch in hand is retried with backoff (it is
 *   idempotent) while the group session stays alive; no offset moves until
 *   it is applied. Nothing lost, nothing doubled.
 *
 *   What it owns: one PGconn, one rdkafka consumer.
 *
 *   Signals: TERM/INT stop after the batch in hand is applied and committed
 *   (or abandoned uncommitted if the database is away), close the consumer
 *   (leaving the group cleanly), exit 0. USR1 reopens the log.
 *
 *   Exit codes: 0 asked to stop; 1 cannot start the Kafka consumer; 2 a
 *   consumer setting is invalid.
 */
#include "../../common/event.h"
#include "../../common/log.h"
#include "../../common/money.h"
#include "../../common/pg.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/uuid.h"
#include "../../common/worker.h"

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
    rd_kafka_message_t *batch[CONS_BATCH];
    int                 n;
    int64_t             next_stats_ms;
} ob_cons_t;

static int  cons_init(ob_cons_t *cs, char *err, size_t errlen);
static int  cons_fill(ob_cons_t *cs);
static int  cons_apply(ob_cons_t *cs, char *err, size_t errlen);
static void cons_apply_until_done(ob_cons_t *cs);
static void cons_commit(ob_cons_t *cs);
static void cons_committed(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offs,
                           void *opaque);
static void cons_release(ob_cons_t *cs);
static void cons_stats(ob_cons_t *cs);

int
ob_cons_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index)
{
    ob_cons_t cs;
    char      err[512];
    int       rc;

    memset(&cs, 0, sizeof(cs));
    cs.cfg = cfg;
    cs.slot = slot;
    cs.index = index;
    ob_shm_beat(slot);
    rc = cons_init(&cs, err, sizeof(err));
    if (rc != OB_EXIT_OK) {
        ob_log(OB_LOG_ERROR, "consumer init failed: %s", err);
        ob_worker_note(slot, "%s", err);
        if (cs.rk != NULL)
            rd_kafka_destroy(cs.rk);
        return rc;
    }
    while (!ob_sig_term && !ob_sig_quit) {
        if (ob_sig_reopen) {
            ob_sig_reopen = 0;
            ob_log_reopen();
        }
        ob_sig_reload = ob_sig_child = 0;
        ob_shm_beat(slot);
        cons_stats(&cs);
        if (cons_fill(&cs) > 0) {
            cons_apply_until_done(&cs);
            cons_release(&cs);
        }
    }
    ob_log(OB_LOG_INFO, "consumer %d leaving the group", index);
    rd_kafka_consumer_close(cs.rk);
    rd_kafka_destroy(cs.rk);
    PQfinish(cs.pg);
    return OB_EXIT_OK;
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
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char             instance[160], app[64];
    struct {
        const char *k, *v;
    } kv[] = {
        { "bootstrap.servers", cfg->kafka.brokers },
        { "group.id", cfg->ledger.group },
        { "group.instance.id", instance },          /* static membership: restarts do not rebalance */
        { "enable.auto.commit", "false" },           /* offsets only after the ledger commit */
        { "enable.auto.offset.store", "false" },
        { "auto.offset.reset", "earliest" },
        { "session.timeout.ms", "6000" },            /* a dead member's partitions move within seconds */
        { "heartbeat.interval.ms", "1000" },
        { "client.id", "outboxd-consumer" },
        /* librdkafka prefetches up to 64 MB per consumer by default; a batch
         * is 500 events, so 8 MB of read-ahead keeps the pipe full and the
         * RSS bounded while a large backlog is applied */
        { "queued.max.messages.kbytes", "8192" },
        { "queued.min.messages", "2000" },
        { "fetch.max.bytes", "8388608" },
    };

    snprintf(instance, sizeof(instance), "outboxd-%s-consumer-%d", cfg->supervisor.name, cs->index);
    for (size_t i = 0; i < OB_ARRAY_LEN(kv); i++)
        if (rd_kafka_conf_set(conf, kv[i].k, kv[i].v, err, errlen) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            return OB_EXIT_FATAL;
        }
    rd_kafka_conf_set_opaque(conf, cs);
    rd_kafka_conf_set_rebalance_cb(conf, cons_rebalance);
    rd_kafka_conf_set_offset_commit_cb(conf, cons_committed);
    rd_kafka_conf_set_log_cb(conf, cons_log_cb);
    cs->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
    if (cs->rk == NULL)
        return OB_EXIT_RETRY;
    rd_kafka_poll_set_consumer(cs->rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, cfg->kafka.topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(cs->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "subscribe(%s) failed: %s", cfg->kafka.topic, rd_kafka_err2str(e));
        return OB_EXIT_RETRY;
    }
    snprintf(app, sizeof(app), "outboxd consumer %d", cs->index);
    /* no database yet is fine: the first batch waits for it */
    cs->pg = ob_pg_connect(cfg->ledger.dsn, app, err, errlen);
    if (cs->pg == NULL)
        ob_log(OB_LOG_WARN, "%s; will retry", err);
    return OB_EXIT_OK;
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
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                ob_log(OB_LOG_WARN, "consume: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        cs->batch[cs->n++] = m;
    }
    return cs->n;
}

/* Growing array literal, e.g. {a,b,c}; elements are validated tokens (no quoting needed). */
typedef struct {
    char  *s;
    size_t len, cap;
} arr_t;

static void
arr_add(arr_t *a, const char *tok)
{
    size_t need = a->len + strlen(tok) + 3;

    if (need > a->cap) {
        a->cap = need * 2 + 256;
        a->s = realloc(a->s, a->cap);
    }
    if (a->len == 0)
        a->s[a->len++] = '{';
    else
        a->s[a->len++] = ',';
    memcpy(a->s + a->len, tok, strlen(tok));
    a->len += strlen(tok);
    a->s[a->len] = '\0';
}

static const char *
arr_done(arr_t *a)
{
    if (a->len == 0)
        arr_add(a, "");
    a->s[a->len] = '}';
    a->s[a->len + 1] = '\0';
    return a->s;
}

/* Decodes and validates one message; on failure fills why for the dead letter. */
static int
cons_decode(const rd_kafka_message_t *m, ob_event_t *ev, char *why, size_t whylen)
{
    rd_kafka_headers_t  *hdrs;
    const void          *ct = NULL;
    size_t               ctlen = 0;
    int                  json;
    ob_uuid_t            u;
    const ob_currency_t *cur;
    char                 amount[48];

    json = rd_kafka_message_headers(m, &hdrs) == 0 && rd_kafka_header_get_last(hdrs, "content-type", &ct, &ctlen) == 0 &&
           ctlen == 16 && memcmp(ct, "application/json", 16) == 0;
    if (m->payload == NULL || ob_event_decode(m->payload, m->len, json, ev, why, whylen) != 0)
        return m->payload == NULL ? (snprintf(why, whylen, "empty value"), -1) : -1;
    if (ob_uuid_parse(ev->id, &u) != 0 || ob_uuid_parse(ev->aggregate_id, &u) != 0) {
        snprintf(why, whylen, "id or aggregate_id is not a UUID");
        return -1;
    }
    if (strcmp(ev->type, OB_EVENT_CREATED) != 0 && strcmp(ev->type, OB_EVENT_CANCELLED) != 0) {
        snprintf(why, whylen, "unknown event type \"%.64s\"", ev->type);
        return -1;
    }
    cur = ob_currency_find(ev->currency);
    if (ev->seq < 1 || cur == NULL || ob_decimal_rescale(ev->amount, cur->digits, amount, sizeof(amount)) != 0 ||
        amount[0] == '-') {
        snprintf(why, whylen, "bad seq, amount or currency");
        return -1;
    }
    return 0;
}

static int
cons_dead_letter(ob_cons_t *cs, const rd_kafka_message_t *m, const char *why, char *err, size_t errlen)
{
    char        part[16], off[24];
    const char *params[6] = { rd_kafka_topic_name(m->rkt), part, off, m->key, m->payload, why };
    int         lens[6] = { 0, 0, 0, (int) m->key_len, (int) m->len, 0 };
    int         fmts[6] = { 0, 0, 0, 1, 1, 0 };
    PGresult   *r;

    snprintf(part, sizeof(part), "%d", (int) m->partition);
    snprintf(off, sizeof(off), "%lld", (long long) m->offset);
    r = PQexecParams(cs->pg,
                     "INSERT INTO ledger_dead_letter (kafka_topic, kafka_partition, kafka_offset, kafka_key,"
                     " kafka_value, error) VALUES ($1, $2::int, $3::bigint, $4, $5, $6) ON CONFLICT DO NOTHING",
                     6, NULL, params, lens, fmts, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

typedef struct {
    arr_t events, orders, seqs, types, amounts, currencies, parts, offsets;
} apply_arrays_t;

static void
cons_arrays_free(apply_arrays_t *a)
{
    arr_t *all[] = { &a->events, &a->orders, &a->seqs, &a->types, &a->amounts, &a->currencies, &a->parts, &a->offsets };

    for (size_t i = 0; i < OB_ARRAY_LEN(all); i++)
        free(all[i]->s);
}

/* Tallies ledger_apply_batch's per-event results into the slot counters. */
static void
cons_count(ob_cons_t *cs, PGresult *r, int64_t newest_ms)
{
    const char *s = PQgetvalue(r, 0, 0);
    char       *end;

    for (const char *p = s + 1; *p && *p != '}';) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        if (v > 0)
            atomic_fetch_add(&cs->slot->counters[OB_CTR_CONS_APPLIED], (uint64_t) v);
        else if (v == 0)
            atomic_fetch_add(&cs->slot->counters[OB_CTR_CONS_PARKED], 1);
        else if (v == -1)
            atomic_fetch_add(&cs->slot->counters[OB_CTR_CONS_DUPLICATES], 1);
        else
            atomic_fetch_add(&cs->slot->counters[OB_CTR_CONS_DEAD_LETTERS], 1);
        p = *end == ',' ? end + 1 : end;
    }
    if (newest_ms > 0)
        atomic_store(&cs->slot->counters[OB_CTR_CONS_APPLY_LAG_MS], (uint64_t) (ob_wall_ms() - newest_ms));
}

/* Milliseconds since the epoch of an event's occurred_at ("...T..:..:..mmmZ"), 0 if unparsable. */
static int64_t
cons_occurred_ms(const char *ts)
{
    struct tm tm;
    int       ms = 0;

    memset(&tm, 0, sizeof(tm));
    if (strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm) == NULL)
        return 0;
    sscanf(ts + 19, ".%3dZ", &ms);
    return (int64_t) timegm(&tm) * 1000 + ms;
}

/* Applies the batch in one transaction; 0, or -1 with err (nothing applied). */
static int
cons_apply(ob_cons_t *cs, char *err, size_t errlen)
{
    apply_arrays_t a;
    ob_event_t     ev;
    char           why[256], buf[64], app[64];
    int            dead = 0;
    int64_t        newest = 0;

    if (cs->pg == NULL || PQstatus(cs->pg) != CONNECTION_OK) {
        PQfinish(cs->pg);
        snprintf(app, sizeof(app), "outboxd consumer %d", cs->index);
        cs->pg = ob_pg_connect(cs->cfg->ledger.dsn, app, err, errlen);
        if (cs->pg == NULL)
            return -1;
    }
    memset(&a, 0, sizeof(a));
    if (ob_pg_exec(cs->pg, "BEGIN", err, errlen) != 0)
        goto fail;
    for (int i = 0; i < cs->n; i++) {
        const rd_kafka_message_t *m = cs->batch[i];
        if (cons_decode(m, &ev, why, sizeof(why)) != 0) {
            if (cons_dead_letter(cs, m, why, err, errlen) != 0)
                goto fail;
            dead++;
            continue;
        }
        arr_add(&a.events, ev.id);
        arr_add(&a.orders, ev.aggregate_id);
        snprintf(buf, sizeof(buf), "%d", ev.seq);
        arr_add(&a.seqs, buf);
        arr_add(&a.types, ev.type);
        arr_add(&a.amounts, ev.amount);
        arr_add(&a.currencies, ev.currency);
        snprintf(buf, sizeof(buf), "%d", (int) m->partition);
        arr_add(&a.parts, buf);
        snprintf(buf, sizeof(buf), "%lld", (long long) m->offset);
        arr_add(&a.offsets, buf);
        int64_t t = cons_occurred_ms(ev.occurred_at);
        if (t > newest)
            newest = t;
    }
    const char *params[9] = { arr_done(&a.events), arr_done(&a.orders), arr_done(&a.seqs), arr_done(&a.types),
                              arr_done(&a.amounts), arr_done(&a.currencies), cs->cfg->kafka.topic,
                              arr_done(&a.parts), arr_done(&a.offsets) };
    PGresult *r = PQexecParams(cs->pg,
                               "SELECT ledger_apply_batch($1::uuid[], $2::uuid[], $3::int[], $4::text[],"
                               " $5::numeric[], $6::text[], $7, $8::int[], $9::bigint[])",
                               9, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        goto fail;
    }
    if (ob_pg_exec(cs->pg, "COMMIT", err, errlen) != 0) {
        PQclear(r);
        goto fail;
    }
    cons_count(cs, r, newest);
    PQclear(r);
    atomic_fetch_add(&cs->slot->counters[OB_CTR_CONS_DEAD_LETTERS], (uint64_t) dead);
    cons_arrays_free(&a);
    return 0;
fail:
    if (PQstatus(cs->pg) == CONNECTION_OK) {
        char ignore[64];
        ob_pg_exec(cs->pg, "ROLLBACK", ignore, sizeof(ignore));
    }
    cons_arrays_free(&a);
    return -1;
}

/*
 * Applies the batch in hand, retrying with backoff while the ledger
 * database is away; the batch is idempotent, so retrying is safe. Offsets
 * are committed only after success. On TERM during an outage it gives up
 * without committing: the next owner of these partitions re-reads them.
 */
static void
cons_apply_until_done(ob_cons_t *cs)
{
    char    err[512];
    int64_t backoff = 100;
    int     early = cs->cfg->debug.fault == OB_FAULT_CONSUMER_COMMIT_BEFORE_APPLY;

    if (early)
        cons_commit(cs);    /* the negative control's bug: a crash now loses the batch */
    while (cons_apply(cs, err, sizeof(err)) != 0) {
        for (size_t n = strlen(err); n > 0 && err[n - 1] == '\n'; n--)
            err[n - 1] = '\0';
        ob_log(OB_LOG_WARN, "ledger apply failed, batch kept, retry in %lld ms: %s", (long long) backoff, err);
        int64_t until = ob_now_ms() + backoff;
        /* No consumer_poll here: it would hand us more messages. Group
         * heartbeats run on librdkafka's own thread, so membership holds
         * for outages shorter than max.poll.interval.ms. */
        while (ob_now_ms() < until && !ob_sig_term && !ob_sig_quit) {
            ob_sig_wait(50);
            ob_shm_beat(cs->slot);
        }
        if (ob_sig_term || ob_sig_quit)
            return;
        backoff = backoff * 2 > CONS_BACKOFF_MAX ? CONS_BACKOFF_MAX : backoff * 2;
    }
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

/* Lag (high watermark - committed position) over the assigned partitions, into shm. */
static void
cons_stats(ob_cons_t *cs)
{
    rd_kafka_topic_partition_list_t *asg = NULL;
    int64_t                          now = ob_now_ms(), lag = 0;

    if (now < cs->next_stats_ms)
        return;
    cs->next_stats_ms = now + CONS_STATS_MS;
    if (rd_kafka_assignment(cs->rk, &asg) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    rd_kafka_position(cs->rk, asg);
    for (int i = 0; i < asg->cnt; i++) {
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(cs->rk, asg->elems[i].topic, asg->elems[i].partition, &lo, &hi) == 0 &&
            asg->elems[i].offset >= 0 && hi > asg->elems[i].offset)
            lag += hi - asg->elems[i].offset;
    }
    atomic_store(&cs->slot->counters[OB_CTR_CONS_LAG], (uint64_t) lag);
    rd_kafka_topic_partition_list_destroy(asg);
}
