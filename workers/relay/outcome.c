/*
 * workers/relay/outcome.c: the relay's delivery rules, as pure functions.
 *
 * Every rule that decides whether an event counts as delivered, what is
 * marked published, how a rejected batch finds its culprit and how far
 * mode wal may confirm is here, once, for both engines; none touches a
 * connection or a producer, so the unit tests (tests/unit/test_relay_logic.c)
 * hold them to their word without PostgreSQL or Kafka.
 */
#include "relay_int.h"

#include <stdio.h>
#include <string.h>

/* Errors that say "this message can never be accepted", not "Kafka is away". */
int
ob_relay_permanent(rd_kafka_resp_err_t e)
{
    return e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
           e == RD_KAFKA_RESP_ERR_INVALID_MSG || e == RD_KAFKA_RESP_ERR_INVALID_RECORD ||
           e == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE || e == RD_KAFKA_RESP_ERR__INVALID_ARG;
}

ob_dr_state_t
ob_relay_outcome(rd_kafka_resp_err_t e, int64_t offset, char *why, size_t whylen)
{
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && offset < 0) {
        /* "success" with no offset: librdkafka's answer to a retried request
         * the broker calls a duplicate. After a broker kill -9 the fault suite
         * saw such an event missing from the log: unverifiable, so re-sent. */
        if (why != NULL)
            snprintf(why, whylen, "acknowledged without an offset");
        return OB_DR_RETRY;
    }
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return OB_DR_OK;
    if (why != NULL)
        snprintf(why, whylen, "%s: %s", rd_kafka_err2name(e), rd_kafka_err2str(e));
    return ob_relay_permanent(e) ? OB_DR_REJECTED : OB_DR_RETRY;
}

int
ob_relay_rows_in(const ob_relay_row_t *rows, int n, int partition, int one_group)
{
    int count = 0;

    for (int i = 0; i < n; i++)
        count += one_group || rows[i].partition == partition;
    return count;
}

/*
 * A row refused before it left is named as the culprit by that refusal, so
 * it is quarantined at once: isolating it would send the rows after it
 * again, already acknowledged, as duplicates.
 * A row held back (an earlier row of its partition was refused, so it was
 * never sent) stays pending, and is no retry: the next cycle claims it
 * again, unless its order now has a quarantined event.
 * A partition stops at its first row to retry, to isolate or held: a row is
 * never marked while an earlier row of its partition is not. Each
 * partition is remembered on its own: skip_locked claims in id order, so
 * the partitions of one batch interleave. A row whose partition is out of
 * the table's range (another writer's bad row) stops every such row.
 */
void
ob_relay_plan_marks(const ob_relay_row_t *rows, int n, int one_group, unsigned char *plan)
{
    unsigned char stopped[OB_SHM_PARTITIONS + 1] = { 0 };

    for (int i = 0; i < n; i++) {
        const ob_relay_row_t *row = &rows[i];
        int                   k = row->partition >= 0 && row->partition < OB_SHM_PARTITIONS ? row->partition
                                                                                            : OB_SHM_PARTITIONS;
        if (stopped[k] || row->held)
            plan[i] = OB_MARK_SKIP;
        else if (row->state == OB_DR_OK)
            plan[i] = OB_MARK_PUBLISHED;
        else if (row->state == OB_DR_REJECTED && !row->refused &&
                 ob_relay_rows_in(rows, n, row->partition, one_group) > 1)
            plan[i] = OB_MARK_ISOLATE;      /* the whole request failed: no culprit named */
        else if (row->state == OB_DR_REJECTED)
            plan[i] = OB_MARK_QUARANTINE;
        else
            plan[i] = OB_MARK_RETRY;        /* pending past the wait counts as not acknowledged */
        if (plan[i] == OB_MARK_ISOLATE || plan[i] == OB_MARK_RETRY || row->held)
            stopped[k] = 1;
    }
}

static int
outcome_iso_key(int partition, int one_group)
{
    return one_group ? 0 : partition;
}

void
ob_relay_isolation_begin(int *isolate, const ob_relay_row_t *rows, int n, int i, int one_group)
{
    int p = rows[i].partition;

    isolate[outcome_iso_key(p, one_group)] = ob_relay_rows_in(rows, n, p, one_group);
}

int
ob_relay_claim_limit(const int *isolate, int key, int batch)
{
    return isolate[key] > 0 ? 1 : batch;
}

int
ob_relay_poll_wait(int prev_ms, int found, int min_ms, int max_ms)
{
    if (min_ms <= 0 || min_ms >= max_ms)
        return max_ms;
    if (found > 0 || prev_ms < min_ms)
        return min_ms;
    return prev_ms > max_ms / 2 ? max_ms : prev_ms * 2;
}

void
ob_relay_isolation_settled(const ob_relay_row_t *rows, int n, int one_group, const int *isolate,
                           unsigned char *settled)
{
    memset(settled, 0, OB_SHM_PARTITIONS);
    for (int i = 0; i < n; i++) {
        int k = outcome_iso_key(rows[i].partition, one_group);
        if (isolate[k] > 0 && ob_relay_rows_in(rows, n, rows[i].partition, one_group) == 1)
            settled[k] = rows[i].state != OB_DR_RETRY;
    }
}

int
ob_relay_isolation_step(int *isolate, const unsigned char *settled)
{
    int any = 0;

    for (int k = 0; k < OB_SHM_PARTITIONS; k++) {
        if (settled[k])
            isolate[k]--;
        any |= isolate[k] > 0;
    }
    return any;
}

int
ob_relay_any_held(const ob_relay_row_t *rows, int n)
{
    for (int i = 0; i < n; i++)
        if (rows[i].held)
            return 1;
    return 0;
}

int
ob_relay_batch_full(const ob_relay_row_t *rows, int n, int batch)
{
    int run = 0;

    for (int i = 0; i < n; i++) {
        run = i > 0 && rows[i].partition == rows[i - 1].partition ? run + 1 : 1;
        if (run >= batch)
            return 1;
    }
    return 0;
}

/* Bytes of a zigzag varint, as Kafka's record format writes lengths and counts. */
static size_t
outcome_varint(size_t v)
{
    uint64_t z = (uint64_t) v << 1;     /* lengths are never negative here */
    size_t   n = 1;

    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

size_t
ob_relay_header_size(size_t namelen, size_t vallen)
{
    return outcome_varint(namelen) + namelen + outcome_varint(vallen) + vallen;
}

/* Record batch format v2: its header is 61 bytes, base offset and length included. */
#define OUTCOME_BATCH_OVERHEAD 61

size_t
ob_relay_record_size(size_t keylen, size_t vallen, size_t nhdr, size_t hdrbytes)
{
    /* attributes, then timestamp and offset deltas, both 0 in a batch of one */
    size_t body = 3 + outcome_varint(keylen) + keylen + outcome_varint(vallen) + vallen + outcome_varint(nhdr) +
                  hdrbytes;

    return OUTCOME_BATCH_OVERHEAD + outcome_varint(body) + body;
}

uint64_t
ob_relay_marked_upto(const uint64_t *mark_n, int nmark, uint64_t done)
{
    return nmark > 0 ? mark_n[0] : done;
}

/* Marked before confirmed: a confirmed transaction is never streamed again. */
uint64_t
ob_relay_gate(const ob_wal_commit_t *ring, uint64_t cap, uint64_t *head, uint64_t tail, uint64_t marked,
              uint64_t target)
{
    while (*head < tail && ring[*head % cap].upto <= marked)
        target = ring[(*head)++ % cap].end_lsn;
    return target;
}

int
ob_relay_share(const int *seats, int n, int mine, int partitions, int *parts, int *rank)
{
    int k = 0;

    *rank = -1;
    for (int i = 0; i < n; i++)
        if (seats[i] == mine)
            *rank = i;
    if (*rank < 0)
        return 0;
    for (int p = 0; p < partitions; p++)
        if (p % n == *rank)
            parts[k++] = p;
    return k;
}

/* Only the highest seat moves, and only down: seats stay 0..n-1, and a leave moves one relay, not all above it. */
int
ob_relay_seat_hole(const int *seats, int n, int mine)
{
    int hole = 0;

    if (n == 0 || seats[n - 1] != mine || mine == n - 1)
        return -1;
    for (int i = 0; i < n && seats[i] == hole; i++)
        hole++;
    return hole < mine ? hole : -1;
}
