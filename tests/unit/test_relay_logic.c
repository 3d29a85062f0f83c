/*
 * tests/unit/test_relay_logic.c: the relay's delivery rules
 * (workers/relay/outcome.c) without PostgreSQL or Kafka: what a delivery
 * report means, which rows of a polled batch are marked published, how a
 * rejected batch finds its culprit, and how far mode wal may confirm.
 *
 * These pin down what the engines do today; a change to how rows are
 * marked must keep every one of them true.
 */
#include "workers/relay/relay_int.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 500

/* A batch of rows given as (partition, state) pairs, ids in claim order. */
static int
batch(ob_relay_row_t *rows, const int (*spec)[2], int n)
{
    memset(rows, 0, (size_t) n * sizeof(*rows));
    for (int i = 0; i < n; i++) {
        rows[i].id = 1000 + i;
        rows[i].partition = spec[i][0];
        rows[i].state = (ob_dr_state_t) spec[i][1];
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* delivery outcome                                                          */
/* ------------------------------------------------------------------------ */

Test(relay_outcome, success_with_an_offset_is_acknowledged)
{
    char why[160] = "untouched";

    cr_assert_eq(ob_relay_outcome(RD_KAFKA_RESP_ERR_NO_ERROR, 0, why, sizeof(why)), OB_DR_OK);
    cr_assert_eq(ob_relay_outcome(RD_KAFKA_RESP_ERR_NO_ERROR, 41, why, sizeof(why)), OB_DR_OK);
    cr_assert_str_eq(why, "untouched", "an acknowledgement needs no reason");
}

Test(relay_outcome, success_without_an_offset_is_not_acknowledged)
{
    char why[160] = "";

    /* -1001 is RD_KAFKA_OFFSET_INVALID, what a duplicate's "success" carries */
    cr_assert_eq(ob_relay_outcome(RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_OFFSET_INVALID, why, sizeof(why)), OB_DR_RETRY);
    cr_assert_str_eq(why, "acknowledged without an offset");
    cr_assert_eq(ob_relay_outcome(RD_KAFKA_RESP_ERR_NO_ERROR, -1, NULL, 0), OB_DR_RETRY);
}

Test(relay_outcome, errors_no_retry_can_cure_are_rejections)
{
    const rd_kafka_resp_err_t permanent[] = {
        RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,   RD_KAFKA_RESP_ERR_INVALID_MSG,  RD_KAFKA_RESP_ERR_INVALID_RECORD,
        RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE, RD_KAFKA_RESP_ERR__INVALID_ARG,
    };
    char why[160];

    for (size_t i = 0; i < sizeof(permanent) / sizeof(permanent[0]); i++) {
        why[0] = '\0';
        cr_assert(ob_relay_permanent(permanent[i]), "%s", rd_kafka_err2name(permanent[i]));
        /* an offset on a failed report changes nothing */
        cr_assert_eq(ob_relay_outcome(permanent[i], 7, why, sizeof(why)), OB_DR_REJECTED, "%s",
                     rd_kafka_err2name(permanent[i]));
        cr_assert_not_null(strstr(why, rd_kafka_err2name(permanent[i])), "reason %s", why);
    }
}

Test(relay_outcome, kafka_away_is_a_retry_not_a_rejection)
{
    const rd_kafka_resp_err_t transient[] = {
        RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,          RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN,       RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR__QUEUE_FULL,
        RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION,
    };
    char why[160];

    for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++) {
        why[0] = '\0';
        cr_assert_not(ob_relay_permanent(transient[i]), "%s", rd_kafka_err2name(transient[i]));
        cr_assert_eq(ob_relay_outcome(transient[i], -1, why, sizeof(why)), OB_DR_RETRY, "%s",
                     rd_kafka_err2name(transient[i]));
        cr_assert_not_null(strstr(why, rd_kafka_err2name(transient[i])), "reason %s", why);
    }
}

/* ------------------------------------------------------------------------ */
/* marks: only the acknowledged prefix of each partition                     */
/* ------------------------------------------------------------------------ */

Test(relay_marks, a_partition_stops_at_its_first_row_to_retry)
{
    const int spec[][2] = {
        { 0, OB_DR_OK }, { 0, OB_DR_OK }, { 0, OB_DR_RETRY }, { 0, OB_DR_OK },
        { 1, OB_DR_OK }, { 1, OB_DR_OK },
        { 2, OB_DR_PENDING }, { 2, OB_DR_OK },
    };
    const unsigned char want[] = {
        OB_MARK_PUBLISHED, OB_MARK_PUBLISHED, OB_MARK_RETRY, OB_MARK_SKIP,
        OB_MARK_PUBLISHED, OB_MARK_PUBLISHED,
        OB_MARK_RETRY,     OB_MARK_SKIP,
    };
    ob_relay_row_t rows[8];
    unsigned char  plan[8];
    int            n = batch(rows, spec, 8);

    ob_relay_plan_marks(rows, n, 0, plan);
    for (int i = 0; i < n; i++)
        cr_assert_eq(plan[i], want[i], "row %d (partition %d): plan %d, want %d", i, rows[i].partition, plan[i],
                     want[i]);
}

/*
 * skip_locked claims in id order, so partitions interleave in the batch.
 * Before: only the partition stopped last was remembered, and partition 0's
 * last row was marked after partition 1 stopped, past partition 0's retry.
 */
Test(relay_marks, interleaved_partitions_each_stop_at_their_first_retry)
{
    const int spec[][2] = {
        { 0, OB_DR_RETRY }, { 1, OB_DR_OK }, { 1, OB_DR_RETRY }, { 0, OB_DR_OK }, { 1, OB_DR_OK }, { 2, OB_DR_OK },
    };
    const unsigned char want[] = {
        OB_MARK_RETRY, OB_MARK_PUBLISHED, OB_MARK_RETRY, OB_MARK_SKIP, OB_MARK_SKIP, OB_MARK_PUBLISHED,
    };
    ob_relay_row_t rows[6];
    unsigned char  plan[6];
    int            n = batch(rows, spec, 6);

    for (int one_group = 0; one_group <= 1; one_group++) {
        ob_relay_plan_marks(rows, n, one_group, plan);
        for (int i = 0; i < n; i++)
            cr_assert_eq(plan[i], want[i], "one_group %d, row %d (partition %d): plan %d, want %d", one_group, i,
                         rows[i].partition, plan[i], want[i]);
    }
}

Test(relay_marks, a_rejection_among_others_isolates_and_a_lone_one_is_quarantined)
{
    const int spec[][2] = {
        { 3, OB_DR_OK }, { 3, OB_DR_REJECTED }, { 3, OB_DR_OK },
        { 4, OB_DR_REJECTED },
        { 5, OB_DR_OK },
    };
    const unsigned char want[] = {
        OB_MARK_PUBLISHED, OB_MARK_ISOLATE, OB_MARK_SKIP,
        OB_MARK_QUARANTINE,
        OB_MARK_PUBLISHED,
    };
    ob_relay_row_t rows[5];
    unsigned char  plan[5];
    int            n = batch(rows, spec, 5);

    ob_relay_plan_marks(rows, n, 0, plan);
    for (int i = 0; i < n; i++)
        cr_assert_eq(plan[i], want[i], "row %d: plan %d, want %d", i, plan[i], want[i]);
}

Test(relay_marks, one_group_batch_isolates_a_rejection_beside_other_partitions)
{
    /* skip_locked: one LIMIT for the whole batch, so the request held them all */
    const int spec[][2] = { { 7, OB_DR_REJECTED }, { 8, OB_DR_OK } };
    ob_relay_row_t rows[2];
    unsigned char  plan[2];
    int            n = batch(rows, spec, 2);

    ob_relay_plan_marks(rows, n, 1, plan);
    cr_assert_eq(plan[0], OB_MARK_ISOLATE);
    cr_assert_eq(plan[1], OB_MARK_PUBLISHED, "another partition's row is not held back");
    ob_relay_plan_marks(rows, n, 0, plan);
    cr_assert_eq(plan[0], OB_MARK_QUARANTINE, "per partition, the row was alone in its group");
}

/* What the plan must be, written out the long way: per partition, the acknowledged prefix. */
static unsigned char
expected_plan(const ob_relay_row_t *rows, int n, int i)
{
    int first = i, count = 0;

    while (first > 0 && rows[first - 1].partition == rows[i].partition)
        first--;
    for (int k = first; k < n && rows[k].partition == rows[i].partition; k++)
        count++;
    if (count == 1 && rows[i].state == OB_DR_REJECTED)
        return OB_MARK_QUARANTINE;
    for (int k = first; k < i; k++)
        if (rows[k].state != OB_DR_OK)
            return OB_MARK_SKIP;
    if (rows[i].state == OB_DR_OK)
        return OB_MARK_PUBLISHED;
    return rows[i].state == OB_DR_REJECTED ? OB_MARK_ISOLATE : OB_MARK_RETRY;
}

Test(relay_marks, never_marks_a_row_after_an_unacknowledged_one_of_its_partition)
{
    const ob_dr_state_t states[] = { OB_DR_OK, OB_DR_OK, OB_DR_OK, OB_DR_RETRY, OB_DR_PENDING, OB_DR_REJECTED };
    ob_relay_row_t      rows[64];
    unsigned char       plan[64];

    srand(17);
    for (int round = 0; round < 2000; round++) {
        int n = 0;
        for (int p = 0; p < 8 && n < 60; p++)
            for (int k = rand() % 6; k > 0; k--) {
                memset(&rows[n], 0, sizeof(rows[n]));
                rows[n].id = n;
                rows[n].partition = p;
                rows[n++].state = states[rand() % 6];
            }
        ob_relay_plan_marks(rows, n, 0, plan);
        for (int i = 0; i < n; i++)
            cr_assert_eq(plan[i], expected_plan(rows, n, i), "round %d row %d (partition %d state %d): plan %d", round,
                         i, rows[i].partition, rows[i].state, plan[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* culprit isolation: one row per cycle for as many rows as the batch had     */
/* ------------------------------------------------------------------------ */

/* One cycle of a partition while isolating: its single row settles as given. */
static int
isolating_cycle(int *isolate, int partition, ob_dr_state_t state, int one_group)
{
    ob_relay_row_t row = { .id = 1, .partition = partition, .state = state };
    unsigned char  settled[OB_SHM_PARTITIONS];

    ob_relay_isolation_settled(&row, 1, one_group, isolate, settled);
    return ob_relay_isolation_step(isolate, settled);
}

Test(relay_isolation, a_rejected_batch_sends_one_row_per_cycle_for_each_of_its_rows)
{
    const int      spec[][2] = { { 3, OB_DR_OK }, { 3, OB_DR_OK }, { 3, OB_DR_REJECTED }, { 3, OB_DR_OK } };
    ob_relay_row_t rows[4];
    unsigned char  plan[4];
    int            isolate[OB_SHM_PARTITIONS] = { 0 };
    int            n = batch(rows, spec, 4);

    ob_relay_plan_marks(rows, n, 0, plan);
    cr_assert_eq(plan[2], OB_MARK_ISOLATE);
    ob_relay_isolation_begin(isolate, rows, n, 2, 0);
    cr_assert_eq(isolate[3], 4, "every row the batch had of the partition");
    cr_assert_eq(ob_relay_claim_limit(isolate, 3, BATCH), 1);
    cr_assert_eq(ob_relay_claim_limit(isolate, 4, BATCH), BATCH, "other partitions keep their batch");

    cr_assert_eq(isolating_cycle(isolate, 3, OB_DR_OK, 0), 1);
    cr_assert_eq(isolate[3], 3);
    cr_assert_eq(isolating_cycle(isolate, 3, OB_DR_RETRY, 0), 1, "a row to retry does not count");
    cr_assert_eq(isolate[3], 3);
    cr_assert_eq(isolating_cycle(isolate, 3, OB_DR_REJECTED, 0), 1, "the culprit, quarantined, counts");
    cr_assert_eq(isolate[3], 2);
    cr_assert_eq(isolating_cycle(isolate, 3, OB_DR_OK, 0), 1);
    cr_assert_eq(ob_relay_claim_limit(isolate, 3, BATCH), 1);
    cr_assert_eq(isolating_cycle(isolate, 3, OB_DR_OK, 0), 0, "done: the relay may sleep again");
    cr_assert_eq(isolate[3], 0);
    cr_assert_eq(ob_relay_claim_limit(isolate, 3, BATCH), BATCH);
}

Test(relay_isolation, only_a_single_row_of_the_isolating_partition_counts)
{
    const int      spec[][2] = { { 3, OB_DR_OK }, { 5, OB_DR_OK }, { 5, OB_DR_OK } };
    ob_relay_row_t rows[3];
    unsigned char  settled[OB_SHM_PARTITIONS];
    int            isolate[OB_SHM_PARTITIONS] = { 0 };
    int            n = batch(rows, spec, 3);

    isolate[3] = 2;
    isolate[5] = 2;     /* a group that somehow sent two rows is not counted down */
    ob_relay_isolation_settled(rows, n, 0, isolate, settled);
    cr_assert_eq(settled[3], 1);
    cr_assert_eq(settled[5], 0);
    cr_assert_eq(ob_relay_isolation_step(isolate, settled), 1);
    cr_assert_eq(isolate[3], 1);
    cr_assert_eq(isolate[5], 2);
}

Test(relay_isolation, one_group_batch_isolates_under_key_zero)
{
    const int      spec[][2] = { { 9, OB_DR_OK }, { 2, OB_DR_REJECTED }, { 9, OB_DR_OK } };
    ob_relay_row_t rows[3];
    int            isolate[OB_SHM_PARTITIONS] = { 0 };
    int            n = batch(rows, spec, 3);

    ob_relay_isolation_begin(isolate, rows, n, 1, 1);
    cr_assert_eq(isolate[0], 3, "the whole batch");
    cr_assert_eq(isolate[2], 0);
    cr_assert_eq(ob_relay_claim_limit(isolate, 0, BATCH), 1);
    cr_assert_eq(isolating_cycle(isolate, 11, OB_DR_OK, 1), 1, "any partition's single row counts");
    cr_assert_eq(isolate[0], 2);
}

Test(relay_isolation, a_partition_that_filled_its_batch_goes_again_at_once)
{
    const int      spec[][2] = { { 0, OB_DR_OK }, { 1, OB_DR_OK }, { 1, OB_DR_OK }, { 1, OB_DR_OK }, { 2, OB_DR_OK } };
    ob_relay_row_t rows[5];
    int            n = batch(rows, spec, 5);

    cr_assert_eq(ob_relay_batch_full(rows, n, 3), 1);
    cr_assert_eq(ob_relay_batch_full(rows, n, 4), 0, "five rows, but no partition has four");
}

/* ------------------------------------------------------------------------ */
/* mode wal: nothing confirmed past an unmarked row                          */
/* ------------------------------------------------------------------------ */

Test(relay_wal_gate, confirms_only_commits_whose_events_are_all_marked)
{
    /* events 0-1 in the first transaction, 2-4 in the second, none in the third, 5-7 in the fourth */
    ob_wal_commit_t ring[8] = { { 100, 2, 0 }, { 200, 5, 0 }, { 300, 5, 0 }, { 400, 8, 0 } };
    uint64_t        head = 0, tail = 4, target = 0;
    uint64_t        waiting[2] = { 3, 4 };    /* events 3 and 4: acknowledged, not yet found by the mark */

    target = ob_relay_gate(ring, 8, &head, tail, ob_relay_marked_upto(waiting, 2, 8), target);
    cr_assert_eq(target, 100, "event 3 is unmarked: the second transaction waits");
    cr_assert_eq(head, 1);
    target = ob_relay_gate(ring, 8, &head, tail, ob_relay_marked_upto(waiting + 1, 1, 8), target);
    cr_assert_eq(target, 100, "event 4 is still unmarked");
    cr_assert_eq(head, 1);
    target = ob_relay_gate(ring, 8, &head, tail, ob_relay_marked_upto(NULL, 0, 6), target);
    cr_assert_eq(target, 300, "all marked up to event 6: the second and the empty third");
    cr_assert_eq(head, 3);
    target = ob_relay_gate(ring, 8, &head, tail, ob_relay_marked_upto(NULL, 0, 8), target);
    cr_assert_eq(target, 400);
    cr_assert_eq(head, tail);
}

Test(relay_wal_gate, nothing_marked_leaves_the_target_where_it_was)
{
    ob_wal_commit_t ring[4] = { { 100, 1, 0 } };
    uint64_t        head = 0;

    cr_assert_eq(ob_relay_gate(ring, 4, &head, 1, 0, 42), 42);
    cr_assert_eq(head, 0);
    cr_assert_eq(ob_relay_gate(ring, 4, &head, 1, 1, 42), 100, "upto is exclusive: event 0 marked is enough");
}

Test(relay_wal_gate, the_oldest_waiting_mark_is_the_limit_whatever_follows)
{
    uint64_t waiting[3] = { 10, 11, 12 };

    cr_assert_eq(ob_relay_marked_upto(waiting, 3, 20), 10);
    cr_assert_eq(ob_relay_marked_upto(waiting, 0, 20), 20, "no mark waiting: everything settled is marked");
}

Test(relay_wal_gate, the_commit_ring_wraps)
{
    ob_wal_commit_t ring[4];
    uint64_t        head = 3, tail = 6;

    ring[3 % 4] = (ob_wal_commit_t) { 700, 30, 0 };
    ring[4 % 4] = (ob_wal_commit_t) { 800, 31, 0 };
    ring[5 % 4] = (ob_wal_commit_t) { 900, 40, 0 };
    cr_assert_eq(ob_relay_gate(ring, 4, &head, tail, 35, 600), 800);
    cr_assert_eq(head, 5);
}

/*
 * A row the relay refused itself (no route, bad headers) names its culprit:
 * quarantined at once. Isolating it sent the acknowledged rows after it again.
 */
Test(relay_marks, a_row_refused_before_it_left_is_quarantined_among_others)
{
    const int spec[][2] = { { 3, OB_DR_OK }, { 3, OB_DR_REJECTED }, { 3, OB_DR_OK } };
    const unsigned char want[] = { OB_MARK_PUBLISHED, OB_MARK_QUARANTINE, OB_MARK_PUBLISHED };
    ob_relay_row_t rows[3];
    unsigned char  plan[3];
    int            n = batch(rows, spec, 3);

    rows[1].refused = 1;
    ob_relay_plan_marks(rows, n, 0, plan);
    for (int i = 0; i < n; i++)
        cr_assert_eq(plan[i], want[i], "row %d: plan %d, want %d", i, plan[i], want[i]);
}

/*
 * After a refusal the polling cycle sends nothing more of that partition:
 * the rows it held back stay pending without counting as retries (the
 * breaker stays shut), and no row after them is marked; other partitions go on.
 */
Test(relay_marks, rows_held_behind_a_refusal_stay_pending_and_stop_only_their_partition)
{
    const int spec[][2] = { { 3, OB_DR_OK }, { 3, OB_DR_REJECTED }, { 3, OB_DR_PENDING }, { 3, OB_DR_PENDING },
                            { 4, OB_DR_OK } };
    const unsigned char want[] = { OB_MARK_PUBLISHED, OB_MARK_QUARANTINE, OB_MARK_SKIP, OB_MARK_SKIP,
                                   OB_MARK_PUBLISHED };
    ob_relay_row_t rows[5];
    unsigned char  plan[5];
    int            n = batch(rows, spec, 5);

    rows[1].refused = 1;
    cr_assert_not(ob_relay_any_held(rows, n));
    rows[2].held = rows[3].held = 1;
    cr_assert(ob_relay_any_held(rows, n), "held rows make the next cycle come at once");
    ob_relay_plan_marks(rows, n, 0, plan);
    for (int i = 0; i < n; i++)
        cr_assert_eq(plan[i], want[i], "row %d: plan %d, want %d", i, plan[i], want[i]);
    /* a row acknowledged after a held one (it cannot be sent, but say it were) is still not marked */
    rows[3].held = 0;
    rows[3].state = OB_DR_OK;
    ob_relay_plan_marks(rows, n, 0, plan);
    cr_assert_eq(plan[3], OB_MARK_SKIP);
}

/*
 * A record's size as Kafka's record batch v2 lays it out (61-byte header,
 * zigzag varint lengths): the figure max.message.bytes is held to.
 */
Test(relay_size, a_record_is_sized_as_a_batch_of_one_on_the_wire)
{
    /* key "k", 10-byte value, no headers: 3 fixed + 1+1 + 1+10 + 1 = 17; 61 + 1 + 17 */
    cr_assert_eq(ob_relay_record_size(1, 10, 0, 0), 79);
    cr_assert_eq(ob_relay_header_size(2, 3), 1 + 2 + 1 + 3);
    /* a length of 63 takes one varint byte, 64 two (zigzag doubles it) */
    cr_assert_eq(ob_relay_header_size(64, 0) - ob_relay_header_size(63, 0), 2, "a byte more, and a varint byte more");
    cr_assert_eq(ob_relay_record_size(1, 64, 0, 0) - ob_relay_record_size(1, 63, 0, 0), 2);
    /* headers add their bytes and their count */
    cr_assert_eq(ob_relay_record_size(1, 10, 1, ob_relay_header_size(2, 3)), 79 + 7);
    /* a body past 63 bytes: the record's own length varint grows too */
    cr_assert_eq(ob_relay_record_size(1, 50000, 0, 0), 61 + 3 + (3 + 2 + 3 + 50000 + 1));
}

/* Rows written by other clients wake nobody: the sleep after a poll shrinks to
 * poll_min_ms when it found rows and doubles back to poll_interval_ms when not. */
Test(relay_poll, the_sleep_shrinks_after_rows_and_doubles_back_while_polls_find_none)
{
    const int want[] = { 4, 8, 16, 32, 64, 100, 100 };
    int       w = 0;

    cr_assert_eq(ob_relay_poll_wait(w, 0, 2, 100), 2, "the first sleep is the shortest");
    cr_assert_eq(w = ob_relay_poll_wait(100, 3, 2, 100), 2, "rows found: back to poll_min_ms at once");
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        w = ob_relay_poll_wait(w, 0, 2, 100);
        cr_assert_eq(w, want[i], "empty poll %zu: %d ms, want %d", i + 1, w, want[i]);
    }
    cr_assert_eq(ob_relay_poll_wait(100, 1, 2, 100), 2);
    cr_assert_eq(ob_relay_poll_wait(2, 0, 2, 3), 3, "never above poll_interval_ms");
}

Test(relay_poll, poll_min_ms_zero_or_not_below_the_interval_keeps_a_fixed_interval)
{
    cr_assert_eq(ob_relay_poll_wait(0, 5, 0, 100), 100);
    cr_assert_eq(ob_relay_poll_wait(7, 0, 0, 100), 100);
    cr_assert_eq(ob_relay_poll_wait(0, 5, 100, 100), 100);
    cr_assert_eq(ob_relay_poll_wait(0, 5, 500, 100), 100);
    cr_assert_eq(ob_relay_poll_wait(60000, 0, 1, 60000), 60000);
    cr_assert_eq(ob_relay_poll_wait(40000, 0, 1, 60000), 60000, "no overflow past the interval");
}

/* ---- sharing partitions between the relays of every instance ---------------- */

Test(relay_share, every_partition_has_exactly_one_rank_and_shares_differ_by_at_most_one)
{
    int seats[] = { 0, 1, 2, 3, 4 }, parts[64], rank, owners[12];

    for (int n = 1; n <= 5; n++) {
        int lo = 64, hi = 0;
        memset(owners, 0, sizeof(owners));
        for (int i = 0; i < n; i++) {
            int k = ob_relay_share(seats, n, seats[i], 12, parts, &rank);
            cr_assert_eq(rank, i);
            for (int j = 0; j < k; j++)
                owners[parts[j]]++;
            lo = k < lo ? k : lo;
            hi = k > hi ? k : hi;
        }
        for (int p = 0; p < 12; p++)
            cr_assert_eq(owners[p], 1, "n=%d: partition %d has %d owners", n, p, owners[p]);
        cr_assert_leq(hi - lo, 1, "n=%d: shares %d..%d", n, lo, hi);
    }
}

Test(relay_share, a_seat_not_held_owns_nothing_and_ranks_skip_holes)
{
    int seats[] = { 0, 2, 5 }, parts[64], rank;

    cr_assert_eq(ob_relay_share(seats, 3, 1, 12, parts, &rank), 0);
    cr_assert_eq(rank, -1);
    cr_assert_eq(ob_relay_share(seats, 3, 5, 12, parts, &rank), 4);
    cr_assert_eq(rank, 2);
    cr_assert_eq(parts[0], 2);
    cr_assert_eq(parts[3], 11);
    cr_assert_eq(ob_relay_share(seats, 3, 0, 2, parts, &rank), 1, "more relays than partitions: some own none");
    cr_assert_eq(ob_relay_share(seats, 3, 5, 2, parts, &rank), 0);
}

Test(relay_share, only_the_highest_seat_moves_and_only_into_the_lowest_hole)
{
    int dense[] = { 0, 1, 2 }, holes[] = { 0, 2, 3, 5 }, one[] = { 4 };

    cr_assert_eq(ob_relay_seat_hole(dense, 3, 2), -1, "dense: nobody moves");
    cr_assert_eq(ob_relay_seat_hole(holes, 4, 5), 1);
    cr_assert_eq(ob_relay_seat_hole(holes, 4, 3), -1, "not the highest");
    cr_assert_eq(ob_relay_seat_hole(holes, 4, 0), -1);
    cr_assert_eq(ob_relay_seat_hole(one, 1, 4), 0);
    cr_assert_eq(ob_relay_seat_hole(one, 0, -1), -1);
}
