/*
 * workers/relay/publish.c: polling, one claim -> produce -> wait -> mark cycle.
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
 * per-order ordering guarantee across relays. It has its own claim and
 * cycle; the rest of the cycle is shared.
 *
 * Rows Kafka rejects for themselves move to outbox_quarantine; later events
 * of the same order are not claimed while one of its events is quarantined.
 * What counts as acknowledged, what is marked and how a culprit is found
 * are the rules of outcome.c.
 */
#include "relay_int.h"
#include "../../common/pgarr.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/util.h"

#include <arpa/inet.h>
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The columns both claims return, binary, in this order. */
enum { COL_ID, COL_PARTITION, COL_SEQ, COL_EVENT_ID, COL_AGG_TYPE, COL_AGG_ID, COL_EVENT_TYPE, COL_PAYLOAD,
       COL_CONTENT_TYPE, COL_HEADERS, COL_CREATED_US };
/* created_at is the writer's transaction start, the latest clock a polled row
 * has of its commit: commit -> claim is measured from it (DESIGN §2) */
#define CLAIM_COLS                                                                                               \
    "id, partition, seq, event_id::text, aggregate_type, aggregate_id, event_type, payload, content_type,"        \
    " headers::text, (extract(epoch FROM created_at) * 1000000)::int8"
/* parked behind a quarantined event of its aggregate */
#define NOT_QUARANTINED                                                                                          \
    "NOT EXISTS (SELECT 1 FROM outboxd.outbox_quarantine q"                                                     \
    " WHERE q.aggregate_type = o.aggregate_type AND q.aggregate_id = o.aggregate_id)"

static const char *claim_partitioned_sql =
    "SELECT c.* FROM unnest($1::int[], $2::int[]) AS p(part, lim) CROSS JOIN LATERAL ("
    "   SELECT " CLAIM_COLS " FROM outboxd.outbox o"
    "   WHERE partition = p.part AND NOT published AND " NOT_QUARANTINED
    "   ORDER BY id LIMIT p.lim) c"
    " ORDER BY c.partition, c.id";

static const char *claim_skip_locked_sql =
    "SELECT " CLAIM_COLS " FROM outboxd.outbox o"
    " WHERE NOT published AND " NOT_QUARANTINED
    " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";

static const char *quarantine_sql =
    "WITH moved AS (DELETE FROM outboxd.outbox WHERE id = $1::bigint RETURNING *)"
    " INSERT INTO outboxd.outbox_quarantine (id, event_id, aggregate_type, aggregate_id, seq, event_type, partition,"
    "   payload, content_type, headers, created_at, error)"
    " SELECT id, event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload, content_type, headers,"
    "   created_at, $2"
    " FROM moved";

/* The row's outcome, with its offset and acknowledgement time when Kafka took it. */
static void
publish_record(ob_relay_t *rl, int i, rd_kafka_resp_err_t e, int64_t offset)
{
    ob_relay_row_t *row = &rl->rows[i];

    char            why[sizeof(row->error)] = "";

    row->state = ob_relay_outcome(e, offset, why, sizeof(why));
    if (row->error[0] == '\0' || row->state != OB_DR_REJECTED)
        memcpy(row->error, why, sizeof(why));    /* a refusal ob_relay_produce explained keeps its reason */
    if (row->state == OB_DR_OK) {
        row->offset = offset;
        row->acked_us = ob_wall_us();
        row->acked_ms = row->acked_us / 1000;
    }
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
void
ob_relay_polled_dr(ob_relay_t *rl, uint64_t v, rd_kafka_resp_err_t err, int64_t offset)
{
    int64_t i = (int64_t) (v & 0xffffffffu) - 1;

    if ((uint32_t) (v >> 32) != rl->batch_gen || i < 0 || i >= rl->nrows) {
        /* a batch we gave up on: its rows stayed pending and are sent again */
        ob_log(OB_LOG_DEBUG, "late delivery report (%s) for an abandoned batch ignored", rd_kafka_err2name(err));
        return;
    }
    publish_record(rl, (int) i, err, offset);
    rl->outstanding--;
}

/* The per-partition LIMITs matching ob_relay_held_array: batch, or 1 while isolating. */
static char *
publish_limits_array(ob_relay_t *rl)
{
    ob_pgarr_t a = { 0 };

    for (int i = 0; i < rl->nparts; i++) {
        int p = rl->parts[i];
        if (rl->held[p])
            ob_pgarr_add_int(&a, ob_relay_claim_limit(rl->isolate, p, rl->cfg->relay.batch));
    }
    return ob_pgarr_end(&a);
}

/* The pending rows of every held partition; NULL when none is held. */
static PGresult *
publish_claim_partitioned(ob_relay_t *rl)
{
    int         n;
    char       *held = ob_relay_held_array(rl, &n), *limits = n > 0 ? publish_limits_array(rl) : NULL;
    const char *params[2] = { held, limits };
    PGresult   *r = NULL;

    if (n > 0 && held != NULL && limits != NULL)
        r = PQexecParams(rl->pg, claim_partitioned_sql, 2, NULL, params, NULL, NULL, 1);
    free(held);
    free(limits);
    return r;
}

/* Any pending rows no other relay has locked; the whole batch is isolation group 0. */
static PGresult *
publish_claim_skip_locked(ob_relay_t *rl)
{
    char        batch[16];
    const char *params[1] = { batch };

    snprintf(batch, sizeof(batch), "%d", ob_relay_claim_limit(rl->isolate, 0, rl->cfg->relay.batch));
    return PQexecParams(rl->pg, claim_skip_locked_sql, 1, NULL, params, NULL, NULL, 1);
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

/*
 * Takes the claimed rows in hand: 1 some, 0 none (r cleared), -1 the claim
 * failed (r cleared). Rows a synchronous standby may lack are let go, still
 * pending, as if none were found (the barrier logs why).
 */
static int
publish_take(ob_relay_t *rl, PGresult *r)
{
    char err[256];
    int  passed;

    if ((r = ob_pg_check(rl->pg, r, NULL, err, sizeof(err))) == NULL) {
        ob_log(OB_LOG_WARN, "claim failed: %s", err);
        return -1;
    }
    rl->nrows = PQntuples(r);
    passed = rl->nrows == 0 ? 1 : ob_barrier_wait(rl, 0);
    rl->claimed_us = ob_wall_us();
    rl->barrier_held = passed == 0;
    if (rl->nrows == 0 || passed <= 0 || publish_grow(rl, rl->nrows) != 0) {
        PQclear(r);
        rl->nrows = 0;
        return passed < 0 ? -1 : 0;
    }
    return 1;
}

/* Column col of result row into dst; -1 when it does not fit (NULL reads as ""). */
static int
publish_copy(char *dst, size_t dstlen, PGresult *r, int row, int col)
{
    return ob_relay_field(dst, dstlen, PQgetvalue(r, row, col), (size_t) PQgetlength(r, row, col));
}

/* Row i's fields from the claim; -1 when one is larger than the relay's bounds. */
static int
publish_fields(ob_relay_row_t *row, PGresult *r, int i)
{
    row->id = ob_be64(PQgetvalue(r, i, COL_ID));
    row->created_us = ob_be64(PQgetvalue(r, i, COL_CREATED_US));
    row->partition = ob_be32(PQgetvalue(r, i, COL_PARTITION));
    row->seq = ob_be32(PQgetvalue(r, i, COL_SEQ));
    return publish_copy(row->event_id, sizeof(row->event_id), r, i, COL_EVENT_ID) |
           publish_copy(row->aggregate_type, sizeof(row->aggregate_type), r, i, COL_AGG_TYPE) |
           publish_copy(row->aggregate_id, sizeof(row->aggregate_id), r, i, COL_AGG_ID) |
           publish_copy(row->event_type, sizeof(row->event_type), r, i, COL_EVENT_TYPE) |
           publish_copy(row->content_type, sizeof(row->content_type), r, i, COL_CONTENT_TYPE);
}

/* A partition's slot in a stop table: out-of-range ones (another writer's bad row) share the last. */
static int
publish_part_key(int32_t partition)
{
    return partition >= 0 && partition < OB_SHM_PARTITIONS ? partition : OB_SHM_PARTITIONS;
}

/*
 * Produces row i of the claim (binary columns, COL_*), unless stop says an
 * earlier row of its partition was refused: then it is held, not sent, so
 * no later event of that order reaches Kafka before the refused one is
 * replayed (the claim skips an order with a quarantined event).
 */
static void
publish_produce(ob_relay_t *rl, PGresult *r, int i, unsigned char *stop)
{
    ob_relay_row_t     *row = &rl->rows[i];
    ob_relay_body_t     b = { PQgetvalue(r, i, COL_PAYLOAD), (size_t) PQgetlength(r, i, COL_PAYLOAD),
                              PQgetisnull(r, i, COL_HEADERS) ? NULL : PQgetvalue(r, i, COL_HEADERS),
                              (size_t) PQgetlength(r, i, COL_HEADERS) };
    rd_kafka_resp_err_t e;

    memset(row, 0, sizeof(*row));
    row->claimed_us = rl->claimed_us;
    if (stop[publish_part_key(ob_be32(PQgetvalue(r, i, COL_PARTITION)))]) {
        row->id = ob_be64(PQgetvalue(r, i, COL_ID));
        row->partition = ob_be32(PQgetvalue(r, i, COL_PARTITION));
        row->held = 1;
        return;
    }
    if (publish_fields(row, r, i) != 0) {
        /* a writer past the schema's checks: refused whole, never cut */
        ob_log(OB_LOG_ERROR, "outbox row %lld has a field longer than the relay's bounds", (long long) row->id);
        e = RD_KAFKA_RESP_ERR__INVALID_ARG;
    } else {
        e = ob_relay_produce(rl, row, &b, publish_opaque(rl, i));
    }
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        rl->outstanding++;
    else {
        row->refused = 1;
        stop[publish_part_key(row->partition)] = 1;
        publish_record(rl, i, e, -1);    /* refused before it left: no report will come */
    }
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
            if (rl->rows[i].state == OB_DR_PENDING && !rl->rows[i].held)
                rl->rows[i].state = OB_DR_RETRY;
    }
}

/* The negative control's bug: every row counts as delivered, so rows Kafka
 * never took are marked published and never sent again. */
static void
publish_ignore_acks(ob_relay_t *rl)
{
    for (int i = 0; i < rl->nrows; i++)
        if (rl->rows[i].state != OB_DR_OK && !rl->rows[i].held) {
            rl->rows[i].state = OB_DR_OK;
            rl->rows[i].offset = -1;
            rl->rows[i].acked_us = ob_wall_us();
            rl->rows[i].acked_ms = rl->rows[i].acked_us / 1000;
        }
}

/* Produces the rows in hand (r is cleared) and waits until each has an outcome. */
static void
publish_send(ob_relay_t *rl, PGresult *r)
{
    unsigned char stop[OB_SHM_PARTITIONS + 1] = { 0 };

    rl->outstanding = 0;
    rl->batch_gen++;
    for (int i = 0; i < rl->nrows; i++)
        publish_produce(rl, r, i, stop);
    PQclear(r);
    publish_wait(rl);
    if (rl->cfg->debug.fault == OB_FAULT_RELAY_MARK_BEFORE_ACK)
        publish_ignore_acks(rl);
}

static int
publish_tx(ob_relay_t *rl, const char *sql)
{
    return ob_relay_sql_ok(rl->pg, PQexec(rl->pg, sql), sql);
}

static int
publish_quarantine(ob_relay_t *rl, const ob_relay_row_t *row)
{
    char        id[24];
    const char *params[2] = { id, row->error };
    int         ok;

    snprintf(id, sizeof(id), "%lld", (long long) row->id);
    ob_log(OB_LOG_ERROR, "event %s (%s %s seq %d) rejected, quarantined: %s", row->event_id, row->aggregate_type,
           row->aggregate_id, row->seq, row->error);
    ok = ob_relay_sql_ok(rl->pg, PQexecParams(rl->pg, quarantine_sql, 2, NULL, params, NULL, NULL, 0), "quarantine");
    atomic_fetch_add(&ob_shm->map->parts[row->partition].errors, 1);
    return ok;
}

/* Carries out plan[i] for row i; 0, or -1 when the quarantine failed. */
static int
publish_apply(ob_relay_t *rl, int one_group, int i, unsigned char plan, ob_relay_mark_t *marks, int *marked,
              int *retry)
{
    ob_relay_row_t *row = &rl->rows[i];

    switch ((ob_mark_plan_t) plan) {
    case OB_MARK_PUBLISHED:
        marks[(*marked)++] = (ob_relay_mark_t) { row->id, row->offset, row->acked_ms };
        ob_relay_count_produced(rl, row->topic, row->partition, row->offset);
        ob_relay_count_stages(rl, row->created_us, row->claimed_us, row->acked_us);
        break;
    case OB_MARK_ISOLATE:
        ob_relay_isolation_begin(rl->isolate, rl->rows, rl->nrows, i, one_group);
        ob_log(OB_LOG_WARN, "partition %d: batch rejected (%s); retrying its rows one at a time", row->partition,
               row->error);
        break;
    case OB_MARK_QUARANTINE:
        return publish_quarantine(rl, row) ? 0 : -1;
    case OB_MARK_RETRY:
        (*retry)++;
        atomic_fetch_add(&ob_shm->map->parts[row->partition].errors, 1);
        break;
    case OB_MARK_SKIP:
        break;
    }
    return 0;
}

/*
 * Marks acknowledged rows and quarantines rejected ones as planned by
 * ob_relay_plan_marks. Returns the number marked, or -1 on a database
 * failure.
 */
static int
publish_mark(ob_relay_t *rl, int one_group, int *retry)
{
    ob_relay_mark_t *marks = malloc((size_t) rl->nrows * sizeof(*marks));
    unsigned char   *plan = malloc((size_t) rl->nrows);
    int              marked = 0, ok = marks != NULL && plan != NULL;

    *retry = 0;
    if (ok)
        ob_relay_plan_marks(rl->rows, rl->nrows, one_group, plan);
    for (int i = 0; i < rl->nrows && ok; i++)
        ok = publish_apply(rl, one_group, i, plan[i], marks, &marked, retry) == 0;
    if (ok && ob_relay_mark_rows(rl, marks, marked, NULL) != 0)
        ok = 0;
    free(plan);
    free(marks);
    return ok ? marked : -1;
}

/*
 * Marks inside the transaction the caller opened, commits, then counts
 * culprit isolation down. Returns the number marked, or -1 on a database
 * failure; sets *full while a group still isolates.
 */
static int
publish_settle(ob_relay_t *rl, int one_group, int *retry, int *full)
{
    unsigned char settled[OB_SHM_PARTITIONS];
    int           marked;

    /* groups that sent a single row while isolating, and whether it settled */
    ob_relay_isolation_settled(rl->rows, rl->nrows, one_group, rl->isolate, settled);
    marked = publish_mark(rl, one_group, retry);
    if (marked < 0 || !publish_tx(rl, "COMMIT"))
        return -1;
    if (ob_relay_isolation_step(rl->isolate, settled))
        *full = 1;    /* one row per cycle: do not sleep between them */
    return marked;
}

/* Figures and the breaker after a committed cycle; returns the rows it claimed. */
static int
publish_end(ob_relay_t *rl, const int64_t t[3], int marked, int retry, int full)
{
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_CLAIM_US], (uint64_t) (t[1] - t[0]));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_KAFKA_US], (uint64_t) (t[2] - t[1]));
    atomic_fetch_add(&rl->slot->counters[OB_CTR_RELAY_MARK_US], (uint64_t) (ob_now_us() - t[2]));
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

/* Needs no transaction across Kafka: the advisory locks are the claim. */
static int
publish_cycle_partitioned(ob_relay_t *rl)
{
    int64_t   t[3] = { ob_now_us(), 0, 0 };
    int       rc, retry = 0, marked, full;
    PGresult *r;

    rl->more = rl->barrier_held = 0;
    r = publish_claim_partitioned(rl);
    if (r == NULL)
        return 0;
    if ((rc = publish_take(rl, r)) <= 0)
        return rc;
    t[1] = ob_now_us();
    publish_send(rl, r);
    t[2] = ob_now_us();
    full = ob_relay_batch_full(rl->rows, rl->nrows, rl->cfg->relay.batch) || ob_relay_any_held(rl->rows, rl->nrows);
    if (!publish_tx(rl, "BEGIN"))
        return -1;
    marked = publish_settle(rl, 0, &retry, &full);
    if (marked < 0)
        return -1;
    return publish_end(rl, t, marked, retry, full);
}

/* Keeps its row locks from the claim until the COMMIT, across the Kafka round trip. */
static int
publish_cycle_skip_locked(ob_relay_t *rl)
{
    int64_t   t[3] = { ob_now_us(), 0, 0 };
    int       rc, retry = 0, marked, full;
    PGresult *r;

    rl->more = rl->barrier_held = 0;
    if (!publish_tx(rl, "BEGIN"))
        return -1;
    r = publish_claim_skip_locked(rl);
    rc = r == NULL ? 0 : publish_take(rl, r);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return publish_tx(rl, "ROLLBACK") ? 0 : -1;
    t[1] = ob_now_us();
    publish_send(rl, r);
    t[2] = ob_now_us();
    full = rl->nrows >= rl->cfg->relay.batch || ob_relay_any_held(rl->rows, rl->nrows);
    marked = publish_settle(rl, 1, &retry, &full);
    if (marked < 0)
        return -1;
    return publish_end(rl, t, marked, retry, full);
}

int
ob_relay_cycle(ob_relay_t *rl)
{
    return rl->cfg->relay.mode == OB_RELAY_SKIP_LOCKED ? publish_cycle_skip_locked(rl)
                                                       : publish_cycle_partitioned(rl);
}
