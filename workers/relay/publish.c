/*
 * workers/relay/publish.c: one claim -> produce -> wait -> mark cycle.
 *
 * Partitioned mode: read the pending rows of every partition this relay
 * holds the advisory lock for (one round trip, LATERAL per partition, id
 * order, partial index), produce them all with explicit partitions so
 * Kafka works on many partitions at once, wait for every delivery report,
 * then mark what Kafka acknowledged (with its offset) in one UPDATE, on
 * the same session that holds the locks. A crash anywhere before the
 * UPDATE re-sends those rows: at-least-once, made exactly-once in effect by
 * the consumer. Per partition only the acknowledged prefix is marked, so a
 * row is never marked while an earlier row of its partition is not.
 *
 * skip_locked mode (the seed exercise's shape, kept for comparison): any
 * relay claims any pending rows with FOR UPDATE SKIP LOCKED inside a
 * transaction held open across the Kafka round trip; no ownership, so no
 * per-order ordering guarantee across relays.
 *
 * Rows Kafka rejects for themselves move to outbox_quarantine; later events
 * of the same order are not claimed while one of its events is quarantined.
 */
#include "relay_int.h"
#include "../../common/kprops.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/rsig.h"
#include "../../common/util.h"

#include <arpa/inet.h>
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATS_CAP   10000       /* pending counts stop at this ("at least"): counting costs the relay's session */
#define JANITOR_ROWS "1000"

static const char *claim_partitioned_sql =
    "SELECT o.id, o.partition, o.seq, o.event_id::text, o.aggregate_id::text, o.event_type, o.payload"
    " FROM unnest($1::int[], $2::int[]) AS p(part, lim) CROSS JOIN LATERAL ("
    "   SELECT id, partition, seq, event_id, aggregate_id, event_type, payload FROM outbox"
    "   WHERE partition = p.part AND NOT published"
    "     AND NOT EXISTS (SELECT 1 FROM outbox_quarantine q WHERE q.aggregate_id = outbox.aggregate_id)"
    "   ORDER BY id LIMIT p.lim) o"
    " ORDER BY o.partition, o.id";

static const char *claim_skip_locked_sql =
    "SELECT id, partition, seq, event_id::text, aggregate_id::text, event_type, payload FROM outbox"
    " WHERE NOT published"
    "   AND NOT EXISTS (SELECT 1 FROM outbox_quarantine q WHERE q.aggregate_id = outbox.aggregate_id)"
    " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";

/* published_at is when Kafka acknowledged, not when the mark ran: mode wal marks
 * in batches, and commit -> Kafka latency is read from this column. */
static const char *mark_sql =
    "UPDATE outbox SET published = true, kafka_offset = v.off,"
    "   published_at = timestamptz 'epoch' + v.at * interval '1 millisecond'"
    " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, off, at) WHERE outbox.id = v.id"
    " RETURNING outbox.id";

static const char *quarantine_sql =
    "WITH moved AS (DELETE FROM outbox WHERE id = $1::bigint RETURNING *)"
    " INSERT INTO outbox_quarantine (id, event_id, aggregate_type, aggregate_id, seq, event_type, partition,"
    "   payload, created_at, error)"
    " SELECT id, event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload, created_at, $2"
    " FROM moved";

/* Errors that say "this message can never be accepted", not "Kafka is away". */
int
ob_relay_permanent(rd_kafka_resp_err_t e)
{
    return e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
           e == RD_KAFKA_RESP_ERR_INVALID_MSG || e == RD_KAFKA_RESP_ERR_INVALID_RECORD ||
           e == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE || e == RD_KAFKA_RESP_ERR__INVALID_ARG;
}

static void
publish_record(ob_relay_t *rl, int i, rd_kafka_resp_err_t e, int64_t offset)
{
    ob_relay_row_t *row = &rl->rows[i];

    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && offset < 0) {
        /* "success" with no offset: librdkafka's answer to a retried request
         * the broker calls a duplicate. After a broker kill -9 the fault suite
         * saw such an event missing from the log: unverifiable, so re-sent. */
        row->state = OB_DR_RETRY;
        snprintf(row->error, sizeof(row->error), "acknowledged without an offset");
        return;
    }
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        row->state = OB_DR_OK;
        row->offset = offset;
        row->acked_ms = ob_wall_ms();
        return;
    }
    row->state = ob_relay_permanent(e) ? OB_DR_REJECTED : OB_DR_RETRY;
    snprintf(row->error, sizeof(row->error), "%s: %s", rd_kafka_err2name(e), rd_kafka_err2str(e));
}

/*
 * A message's opaque names its batch and its row: (generation << 32) | row+1.
 * The row alone is not enough: when a cycle gives up waiting, its messages
 * may still be reported later, during another batch whose row i is another
 * event; taking that report for it marked an event published that Kafka
 * never acknowledged. The fault suite found it (Kafka killed mid-batch).
 */
_Static_assert(sizeof(void *) >= 8, "the delivery-report opaque packs a generation and a row into a pointer");

static void *
publish_opaque(const ob_relay_t *rl, int i)
{
    return (void *) (uintptr_t) (((uint64_t) rl->batch_gen << 32) | (uint64_t) (uint32_t) (i + 1));
}

/* Delivery reports run on this thread inside rd_kafka_poll: record only. */
static void
publish_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    ob_relay_t *rl = opaque;
    uint64_t    v = (uint64_t) (uintptr_t) m->_private;
    int64_t     i = (int64_t) (v & 0xffffffffu) - 1;

    (void) rk;
    if (v & OB_WAL_OPAQUE_TAG) {
        ob_wal_dr(rl, v & ~OB_WAL_OPAQUE_TAG, m->err, m->offset);
        return;
    }
    if ((uint32_t) (v >> 32) != rl->batch_gen || i < 0 || i >= rl->nrows) {
        /* a batch we gave up on: its rows stayed pending and are sent again */
        ob_log(OB_LOG_DEBUG, "late delivery report (%s) for an abandoned batch ignored", rd_kafka_err2name(m->err));
        return;
    }
    publish_record(rl, (int) i, m->err, m->offset);
    rl->outstanding--;
}

static void
publish_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    ob_relay_t *rl = opaque;
    char        fatal[256];

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        ob_log(OB_LOG_ERROR, "kafka producer fatal error, recreating it: %s", fatal);
        rl->fatal = 1;
        return;
    }
    ob_log(OB_LOG_DEBUG, "kafka: %s", reason);
}

static void
publish_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void) rk;
    ob_log(level <= 3 ? OB_LOG_ERROR : level <= 4 ? OB_LOG_WARN : OB_LOG_DEBUG, "kafka %s: %s", fac, buf);
}

rd_kafka_t *
ob_relay_producer_new(ob_relay_t *rl, char *err, size_t errlen)
{
    const ob_cfg_t  *cfg = rl->cfg;
    rd_kafka_conf_t *conf;
    char             linger[16], timeout[16];
    ob_kprops_kv_t   kv[] = {
        { "bootstrap.servers", cfg->kafka.brokers },
        { "enable.idempotence", "true" },       /* per-partition order across retries */
        { "linger.ms", linger },
        { "message.timeout.ms", timeout },      /* bounds a cycle when Kafka is away */
        { "queue.buffering.max.messages", "1000000" },
        { "batch.num.messages", "10000" },
        { "client.id", "outboxd-relay" },
        /* a broker back from a restart is found within a second, not after librdkafka's 10 s backoff */
        { "reconnect.backoff.max.ms", "1000" },
    };

    snprintf(linger, sizeof(linger), "%d", cfg->relay.linger_ms);
    /*
     * Mode wal produces event by event, so one partition has many requests
     * in flight; a timeout fails the oldest while a younger one may still
     * land once Kafka is back, and seq 2 would precede seq 1 in the log
     * (the fault suite saw it). Messages that never expire keep the order:
     * the stream stalls (its window is bounded) until Kafka answers.
     */
    snprintf(timeout, sizeof(timeout), "%d", cfg->relay.mode == OB_RELAY_WAL ? 0 : cfg->relay.delivery_timeout_ms);
    conf = ob_kprops_conf(cfg, OB_KPROP_PRODUCER, kv, OB_ARRAY_LEN(kv), err, errlen);
    if (conf == NULL)
        return NULL;
    rd_kafka_conf_set_opaque(conf, rl);
    rd_kafka_conf_set_dr_msg_cb(conf, publish_dr);
    rd_kafka_conf_set_error_cb(conf, publish_error_cb);
    rd_kafka_conf_set_log_cb(conf, publish_log_cb);
    return rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);   /* takes conf */
}

/* "{1,4,7}": the held partitions as an int[] literal. */
static int
publish_held_array(ob_relay_t *rl, char *out, size_t outlen)
{
    size_t used = 0;
    int    n = 0;

    used += (size_t) snprintf(out, outlen, "{");
    for (int i = 0; i < rl->nparts && used < outlen; i++)
        if (rl->held[rl->parts[i]])
            used += (size_t) snprintf(out + used, outlen - used, "%s%d", n++ ? "," : "", rl->parts[i]);
    snprintf(out + used, outlen - used, "}");
    return n;
}

/* Partitions whose stats and janitor work this relay does: its own in
 * partitioned mode; all of them for relay 0 in skip_locked mode. */
static int
publish_scope_array(ob_relay_t *rl, char *out, size_t outlen)
{
    size_t used = 0;

    if (rl->cfg->relay.mode != OB_RELAY_SKIP_LOCKED)
        return publish_held_array(rl, out, outlen);
    if (rl->index != 0)
        return 0;
    used += (size_t) snprintf(out, outlen, "{");
    for (int p = 0; p < rl->cfg->kafka.partitions && used < outlen; p++)
        used += (size_t) snprintf(out + used, outlen - used, "%s%d", p ? "," : "", p);
    snprintf(out + used, outlen - used, "}");
    return rl->cfg->kafka.partitions;
}

/* The per-partition LIMITs matching publish_held_array: batch, or 1 while isolating. */
static void
publish_limits_array(ob_relay_t *rl, char *out, size_t outlen)
{
    size_t used = (size_t) snprintf(out, outlen, "{");
    int    n = 0;

    for (int i = 0; i < rl->nparts && used < outlen; i++) {
        int p = rl->parts[i];
        if (rl->held[p])
            used += (size_t) snprintf(out + used, outlen - used, "%s%d", n++ ? "," : "",
                                      rl->isolate[p] > 0 ? 1 : rl->cfg->relay.batch);
    }
    snprintf(out + used, outlen - used, "}");
}

static PGresult *
publish_claim(ob_relay_t *rl, int *nheld)
{
    char        held[4 * OB_SHM_PARTITIONS + 4], limits[8 * OB_SHM_PARTITIONS + 4], batch[16];
    const char *params[2];

    if (rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED) {
        *nheld = 1;
        snprintf(batch, sizeof(batch), "%d", rl->isolate[0] > 0 ? 1 : rl->cfg->relay.batch);
        params[0] = batch;
        return PQexecParams(rl->pg, claim_skip_locked_sql, 1, NULL, params, NULL, NULL, 1);
    }
    *nheld = publish_held_array(rl, held, sizeof(held));
    if (*nheld == 0)
        return NULL;
    publish_limits_array(rl, limits, sizeof(limits));
    params[0] = held;
    params[1] = limits;
    return PQexecParams(rl->pg, claim_partitioned_sql, 2, NULL, params, NULL, NULL, 1);
}

/* Isolation is tracked per partition, or in slot 0 for skip_locked (one batch for all). */
static int
publish_iso_key(ob_relay_t *rl, int partition)
{
    return rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED ? 0 : partition;
}

static int
publish_rows_in(ob_relay_t *rl, int partition)
{
    int n = 0;

    for (int i = 0; i < rl->nrows; i++)
        n += rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED || rl->rows[i].partition == partition;
    return n;
}

static int
publish_grow(ob_relay_t *rl, int n)
{
    if (n <= rl->cap)
        return 0;
    ob_relay_row_t *rows = realloc(rl->rows, (size_t) n * sizeof(*rows));
    if (rows == NULL)
        return -1;
    rl->rows = rows;
    rl->cap = n;
    return 0;
}

static void
publish_copy(char *dst, size_t dstlen, PGresult *r, int row, int col)
{
    int n = PQgetlength(r, row, col);

    if ((size_t) n >= dstlen)
        n = (int) dstlen - 1;
    memcpy(dst, PQgetvalue(r, row, col), (size_t) n);
    dst[n] = '\0';
}

/*
 * Our headers, and with [kafka] signing_key their signature (common/rsig.h)
 * over the key, the value and the five others; a new list per message,
 * because librdkafka owns it once a produce succeeds.
 */
static rd_kafka_headers_t *
publish_headers(ob_relay_t *rl, const ob_relay_row_t *row, const void *payload, size_t len, const char *seq)
{
    const char         *ctype = strcmp(rl->cfg->kafka.format, "json") == 0 ? "application/json" : "application/msgpack";
    const char         *vals[OB_RSIG_NCOVERED] = { row->event_id, row->event_type, row->aggregate_id, seq, ctype };
    ob_rsig_hdr_t        covered[OB_RSIG_NCOVERED];
    rd_kafka_headers_t *hs = rd_kafka_headers_new(OB_RSIG_NCOVERED + 1);
    char                sig[OB_RSIG_VALUE_LEN + 1];

    for (int i = 0; i < OB_RSIG_NCOVERED; i++) {
        covered[i] = (ob_rsig_hdr_t) { ob_rsig_covered[i], vals[i], strlen(vals[i]) };
        rd_kafka_header_add(hs, ob_rsig_covered[i], -1, vals[i], -1);
    }
    if (rl->cfg->kafka.signing_key.len == 0)
        return hs;
    if (ob_rsig_sign(&rl->cfg->kafka.signing_key, row->aggregate_id, strlen(row->aggregate_id), payload, len, covered,
                    sig) != 0)
        abort();    /* out of memory: the worker restarts, the row stays pending */
    rd_kafka_header_add(hs, OB_RSIG_HEADER, -1, sig, -1);
    return hs;
}

/*
 * Produces one event exactly as every relay mode must: the order's
 * partition, its id as key, the payload as value, the same headers.
 * Waits (polling delivery reports) while the local queue is full.
 */
rd_kafka_resp_err_t
ob_relay_produce(ob_relay_t *rl, const ob_relay_row_t *row, const void *payload, size_t len, void *opaque)
{
    char                seq[16];
    rd_kafka_resp_err_t e;
    rd_kafka_headers_t *hs;

    snprintf(seq, sizeof(seq), "%d", row->seq);
    hs = publish_headers(rl, row, payload, len, seq);
    for (;;) {
        e = rd_kafka_producev(
            rl->rk, RD_KAFKA_V_TOPIC(rl->cfg->kafka.topic), RD_KAFKA_V_PARTITION(row->partition),
            RD_KAFKA_V_KEY(row->aggregate_id, strlen(row->aggregate_id)), RD_KAFKA_V_VALUE((void *) payload, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_HEADERS(hs),
            RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rl->rk, 100);      /* let delivery reports drain the queue */
        ob_shm_beat(rl->slot);
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_headers_destroy(hs);    /* a refused produce leaves the list with us */
    return e;
}

/* Produces row i (binary columns: id, partition, seq, event_id, aggregate_id, event_type, payload). */
static void
publish_produce(ob_relay_t *rl, PGresult *r, int i)
{
    ob_relay_row_t     *row = &rl->rows[i];
    rd_kafka_resp_err_t e;

    memset(row, 0, sizeof(*row));
    row->id = ob_be64(PQgetvalue(r, i, 0));
    row->partition = ob_be32(PQgetvalue(r, i, 1));
    row->seq = ob_be32(PQgetvalue(r, i, 2));
    publish_copy(row->event_id, sizeof(row->event_id), r, i, 3);
    publish_copy(row->aggregate_id, sizeof(row->aggregate_id), r, i, 4);
    publish_copy(row->event_type, sizeof(row->event_type), r, i, 5);
    e = ob_relay_produce(rl, row, PQgetvalue(r, i, 6), (size_t) PQgetlength(r, i, 6), publish_opaque(rl, i));
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        rl->outstanding++;
    else
        publish_record(rl, i, e, -1);    /* refused before it left: no report will come */
}

/* Waits for every delivery report, heartbeating; bounded by message.timeout.ms. */
static void
publish_wait(ob_relay_t *rl)
{
    int64_t deadline = ob_now_ms() + rl->cfg->relay.delivery_timeout_ms + 5000;

    while (rl->outstanding > 0 && ob_now_ms() < deadline) {
        rd_kafka_poll(rl->rk, 50);
        ob_shm_beat(rl->slot);
    }
    if (rl->outstanding > 0) {
        ob_log(OB_LOG_WARN, "%d delivery report(s) missing after the timeout; rows stay pending", rl->outstanding);
        for (int i = 0; i < rl->nrows; i++)
            if (rl->rows[i].state == OB_DR_PENDING)
                rl->rows[i].state = OB_DR_RETRY;
    }
}

/* The negative control's bug: every row counts as delivered, so rows Kafka
 * never took are marked published and never sent again. */
static void
publish_ignore_acks(ob_relay_t *rl)
{
    for (int i = 0; i < rl->nrows; i++)
        if (rl->rows[i].state != OB_DR_OK) {
            rl->rows[i].state = OB_DR_OK;
            rl->rows[i].offset = -1;
            rl->rows[i].acked_ms = ob_wall_ms();
        }
}

static PGresult *
publish_exec(PGconn *pg, const char *sql, int n, const char *const *params)
{
    return PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
}

static int
publish_ok(PGresult *r, const char *what)
{
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        ob_log(OB_LOG_WARN, "%s failed: %s", what, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

static int
mark_id_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;

    return x < y ? -1 : x > y;
}

/* missing[i] = 1 for each row the UPDATE did not return. */
static void
mark_missing(PGresult *r, const ob_relay_mark_t *m, int n, unsigned char *missing)
{
    int      got = PQntuples(r);
    int64_t *ids = malloc((size_t) (got ? got : 1) * sizeof(*ids));

    for (int i = 0; i < got && ids != NULL; i++)
        ids[i] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    if (ids != NULL)
        qsort(ids, (size_t) got, sizeof(*ids), mark_id_cmp);
    for (int i = 0; i < n; i++)
        missing[i] = ids == NULL || bsearch(&m[i].id, ids, (size_t) got, sizeof(*ids), mark_id_cmp) == NULL;
    free(ids);
}

/*
 * Marks rows published with the offsets Kafka gave them, in one UPDATE.
 * Returns 0, or -1 when the statement failed.
 */
int
ob_relay_mark_rows(ob_relay_t *rl, const ob_relay_mark_t *m, int n, unsigned char *missing)
{
    size_t      cap = (size_t) n * 24 + 8, len[3] = { 1, 1, 1 };
    char       *lit[3] = { malloc(cap), malloc(cap), malloc(cap) };
    const char *params[3] = { lit[0], lit[1], lit[2] };
    int         ok = 0;

    if (n > 0 && lit[0] && lit[1] && lit[2]) {
        lit[0][0] = lit[1][0] = lit[2][0] = '{';
        for (int i = 0; i < n; i++) {
            const char *sep = i ? "," : "";
            len[0] += (size_t) sprintf(lit[0] + len[0], "%s%lld", sep, (long long) m[i].id);
            len[1] += (size_t) sprintf(lit[1] + len[1], "%s%lld", sep, (long long) m[i].offset);
            len[2] += (size_t) sprintf(lit[2] + len[2], "%s%lld", sep, (long long) m[i].acked_ms);
        }
        for (int k = 0; k < 3; k++)
            strcpy(lit[k] + len[k], "}");
        PGresult *r = publish_exec(rl->pg, mark_sql, 3, params);
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        if (ok && missing != NULL)
            mark_missing(r, m, n, missing);
        ok = publish_ok(r, "mark published");
    }
    for (int k = 0; k < 3; k++)
        free(lit[k]);
    return n == 0 || ok ? 0 : -1;
}

/*
 * Marks acknowledged rows and quarantines rejected ones, per partition in
 * id order, stopping a partition at its first row still to retry. Returns
 * the number marked, or -1 on a database failure.
 */
static int
publish_mark(ob_relay_t *rl, int *retry)
{
    ob_relay_mark_t *marks = malloc((size_t) rl->nrows * sizeof(*marks));
    int              marked = 0, stop_part = -1, ok = 1;

    *retry = 0;
    if (marks == NULL)
        return -1;
    for (int i = 0; i < rl->nrows && ok; i++) {
        ob_relay_row_t *row = &rl->rows[i];
        if (row->partition == stop_part)
            continue;
        if (row->state == OB_DR_OK) {
            marks[marked++] = (ob_relay_mark_t) { row->id, row->offset, row->acked_ms };
            ob_relay_count_produced(row->partition, row->offset);
        } else if (row->state == OB_DR_REJECTED && publish_rows_in(rl, row->partition) > 1) {
            /* the whole request failed: find the culprit one row at a time */
            int k = publish_iso_key(rl, row->partition);
            rl->isolate[k] = publish_rows_in(rl, row->partition);
            stop_part = row->partition;
            ob_log(OB_LOG_WARN, "partition %d: batch rejected (%s); retrying its rows one at a time", row->partition,
                   row->error);
        } else if (row->state == OB_DR_REJECTED) {
            char        id[24];
            const char *params[2] = { id, row->error };
            snprintf(id, sizeof(id), "%lld", (long long) row->id);
            ob_log(OB_LOG_ERROR, "event %s (order %s seq %d) rejected by Kafka, quarantined: %s", row->event_id,
                   row->aggregate_id, row->seq, row->error);
            ok = publish_ok(publish_exec(rl->pg, quarantine_sql, 2, params), "quarantine");
            atomic_fetch_add(&ob_shm->map->parts[row->partition].errors, 1);
        } else {
            stop_part = row->partition;
            (*retry)++;
            atomic_fetch_add(&ob_shm->map->parts[row->partition].errors, 1);
        }
    }
    if (ok && ob_relay_mark_rows(rl, marks, marked, NULL) != 0)
        ok = 0;
    free(marks);
    return ok ? marked : -1;
}

/* Per-partition figures of an acknowledged event, in shm. */
void
ob_relay_count_produced(int partition, int64_t offset)
{
    ob_shm_part_t *pt = &ob_shm->map->parts[partition];

    atomic_fetch_add(&pt->produced, 1);
    atomic_store(&pt->last_offset, offset);
}

static int
publish_tx(ob_relay_t *rl, const char *sql)
{
    return publish_ok(PQexec(rl->pg, sql), sql);
}

/* Whether a partition filled its batch: then there is probably more waiting. */
static int
publish_full(ob_relay_t *rl)
{
    int run = 0;

    if (rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED)
        return rl->nrows >= rl->cfg->relay.batch;
    for (int i = 0; i < rl->nrows; i++) {
        run = i > 0 && rl->rows[i].partition == rl->rows[i - 1].partition ? run + 1 : 1;
        if (run >= rl->cfg->relay.batch)
            return 1;
    }
    return 0;
}

int
ob_relay_cycle(ob_relay_t *rl)
{
    int       skip_locked = rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED, nheld = 0, retry = 0, marked, full;
    PGresult *r;
    int64_t   t0 = ob_now_us(), t1, t2;

    rl->more = 0;
    /* Partitioned mode needs no transaction across Kafka: the advisory locks
     * are the claim. skip_locked keeps its row locks until the COMMIT. */
    if (skip_locked && !publish_tx(rl, "BEGIN"))
        return -1;
    r = publish_claim(rl, &nheld);
    if (r == NULL)
        return skip_locked && !publish_tx(rl, "ROLLBACK") ? -1 : 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        ob_log(OB_LOG_WARN, "claim failed: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    rl->nrows = PQntuples(r);
    if (rl->nrows == 0 || publish_grow(rl, rl->nrows) != 0) {
        PQclear(r);
        rl->nrows = 0;
        return skip_locked && !publish_tx(rl, "ROLLBACK") ? -1 : 0;
    }
    t1 = ob_now_us();
    rl->outstanding = 0;
    rl->batch_gen++;
    for (int i = 0; i < rl->nrows; i++)
        publish_produce(rl, r, i);
    PQclear(r);
    publish_wait(rl);
    t2 = ob_now_us();
    if (rl->cfg->debug.fault == OB_FAULT_RELAY_MARK_BEFORE_ACK)
        publish_ignore_acks(rl);
    full = publish_full(rl);
    if (!skip_locked && !publish_tx(rl, "BEGIN"))
        return -1;
    /* partitions that sent a single row while isolating, and whether it settled */
    int isolating[OB_SHM_PARTITIONS] = { 0 };
    for (int i = 0; i < rl->nrows; i++) {
        int k = publish_iso_key(rl, rl->rows[i].partition);
        if (rl->isolate[k] > 0 && publish_rows_in(rl, rl->rows[i].partition) == 1)
            isolating[k] = rl->rows[i].state == OB_DR_RETRY ? 0 : 1;
    }
    marked = publish_mark(rl, &retry);
    if (marked < 0 || !publish_tx(rl, "COMMIT"))
        return -1;
    for (int k = 0; k < OB_SHM_PARTITIONS; k++) {
        if (isolating[k])
            rl->isolate[k]--;
        if (rl->isolate[k] > 0)
            full = 1;    /* one row per cycle: do not sleep between them */
    }
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_CLAIM_US], (uint64_t) (t1 - t0));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_KAFKA_US], (uint64_t) (t2 - t1));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_MARK_US], (uint64_t) (ob_now_us() - t2));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_BATCHES], 1);
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_PUBLISHED], (uint64_t) marked);
    if (retry > 0) {
        const char *why = "Kafka unavailable";
        for (int i = 0; i < rl->nrows; i++)
            if (rl->rows[i].state == OB_DR_RETRY && rl->rows[i].error[0]) {
                why = rl->rows[i].error;
                break;
            }
        atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_ERRORS], (uint64_t) retry);
        ob_log(OB_LOG_WARN, "%d row(s) not acknowledged (%s); opening the circuit breaker", retry, why);
        ob_relay_set_breaker(rl, OB_BREAKER_OPEN);
    } else {
        ob_relay_set_breaker(rl, OB_BREAKER_CLOSED);
        rl->more = full;
    }
    int n = rl->nrows;
    rl->nrows = 0;
    return n;
}

void
ob_relay_stats(ob_relay_t *rl)
{
    char        held[4 * OB_SHM_PARTITIONS + 4];
    const char *params[1] = { held };
    PGresult   *r;

    if (publish_scope_array(rl, held, sizeof(held)) == 0)
        return;
    r = PQexecParams(rl->pg,
                     "SELECT p.part,"
                     " (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE partition = p.part AND NOT published"
                     "   LIMIT " OB_STR(STATS_CAP) ") s),"
                     " (SELECT (extract(epoch FROM created_at) * 1000)::bigint FROM outbox"
                     "   WHERE partition = p.part AND NOT published ORDER BY id LIMIT 1)"
                     " FROM unnest($1::int[]) AS p(part)",
                     1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(r); i++) {
            int p = atoi(PQgetvalue(r, i, 0));
            if (p < 0 || p >= OB_SHM_PARTITIONS)
                continue;
            atomic_store(&ob_shm->map->parts[p].pending, (uint64_t) atoll(PQgetvalue(r, i, 1)));
            atomic_store(&ob_shm->map->parts[p].oldest_pending_ms,
                         PQgetisnull(r, i, 2) ? 0 : (int64_t) atoll(PQgetvalue(r, i, 2)));
        }
    }
    PQclear(r);
}

void
ob_relay_janitor(ob_relay_t *rl)
{
    char        held[4 * OB_SHM_PARTITIONS + 4], secs[16];
    const char *params[2] = { secs, held };

    if (publish_scope_array(rl, held, sizeof(held)) == 0)
        return;
    snprintf(secs, sizeof(secs), "%d", rl->cfg->relay.retention_s);
    /* small batches keep each delete's locks short; a few per visit keeps up */
    for (int round = 0; round < 10; round++) {
        PGresult *r = PQexecParams(rl->pg,
                                   "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published"
                                   " AND published_at < now() - make_interval(secs => $1::int)"
                                   " AND partition = ANY($2::int[]) LIMIT " JANITOR_ROWS ")",
                                   2, NULL, params, NULL, NULL, 0);
        int deleted = PQresultStatus(r) == PGRES_COMMAND_OK ? atoi(PQcmdTuples(r)) : 0;
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            ob_log(OB_LOG_WARN, "janitor: %s", PQresultErrorMessage(r));
        PQclear(r);
        if (deleted < 1000)
            break;
        ob_shm_beat(rl->slot);
    }
}
