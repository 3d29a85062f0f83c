/*
 * tests/unit/test_emit_check.c: the checker of the foreign-writer fault
 * scenario, fed a clean history and then each corruption it exists to
 * catch: a checker that passes a broken relay proves nothing.
 *
 * The clean history: writer 0 emits product "42" twice (two transactions),
 * writer 1 then stock "42" once and coupon "7" once in one transaction,
 * and rolls back one more product "42" event. Routes send product and stock
 * to topics 0 and 1; coupon has none and goes to topic 2, the default.
 */
#include "tests/fault/emit_check.h"
#include "common/murmur2.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define P 4

static obe_call_t  calls[8];
static obe_row_t   rows[8];
static obe_kmsg_t  kmsgs[10];
static obe_agg_t   held[1];
static obe_input_t in;
static const char *const routed[] = { "product", "stock" };

static int
part(const char *id)
{
    return ob_partition_for(id, strlen(id), P);
}

static void
call(int i, const char *type, const char *id, int writer, long n, int64_t begin, int64_t end, obe_outcome_t o)
{
    calls[i] = (obe_call_t) { .writer = writer, .n = n, .begin_us = begin, .end_us = end, .outcome = o };
    snprintf(calls[i].event_id, sizeof(calls[i].event_id), "ev-%d", i);
    strcpy(calls[i].type, type);
    strcpy(calls[i].id, id);
}

/* Call i's row in the outbox and its record at offset on its topic. */
static void
published(int i, int topic, int64_t offset, int seq)
{
    const obe_call_t *c = &calls[i];

    rows[i] = (obe_row_t) { .published = 1, .partition = part(c->id), .offset = offset };
    strcpy(rows[i].event_id, c->event_id);
    strcpy(rows[i].type, c->type);
    strcpy(rows[i].id, c->id);
    kmsgs[i] = (obe_kmsg_t) { .topic = topic, .partition = part(c->id), .offset = offset, .seq = seq,
                              .writer = c->writer, .n = c->n };
    strcpy(kmsgs[i].event_id, c->event_id);
    strcpy(kmsgs[i].type, c->type);
    strcpy(kmsgs[i].id, c->id);
}

static void
clean(void)
{
    memset(calls, 0, sizeof(calls));
    memset(rows, 0, sizeof(rows));
    memset(kmsgs, 0, sizeof(kmsgs));
    call(0, "product", "42", 0, 1, 100, 200, OBE_COMMITTED);
    call(1, "product", "42", 0, 2, 300, 400, OBE_COMMITTED);
    call(2, "stock", "42", 1, 1, 500, 600, OBE_COMMITTED);
    call(3, "coupon", "7", 1, 2, 500, 600, OBE_COMMITTED);
    call(4, "product", "42", 1, 3, 700, 800, OBE_ROLLED_BACK);
    published(0, 0, 0, 1);
    published(1, 0, 1, 2);
    published(2, 1, 0, 1);
    published(3, 2, 0, 1);
    strcpy(held[0].type, "product");
    strcpy(held[0].id, "42");
    in = (obe_input_t) { .calls = calls, .ncalls = 5, .rows = rows, .nrows = 4, .quarantined = held,
                         .nquarantined = 0, .kmsgs = kmsgs, .nkmsgs = 4, .partitions = P,
                         .route_types = routed, .ntopics = 3 };
}

static obe_result_t
run(void)
{
    obe_result_t r;

    obe_check(&in, &r);
    return r;
}

static long
faults(const obe_result_t *r)
{
    return r->lost + r->phantom + r->duplicate + r->violations + r->mismatch;
}

Test(emit_check, clean_history_passes, .init = clean)
{
    obe_result_t r = run();

    cr_assert_eq(faults(&r), 0, "%s", r.first);
    cr_assert_eq(r.committed, 4);
    cr_assert_eq(r.rolled_back, 1);
}

Test(emit_check, committed_event_on_no_topic_is_lost, .init = clean)
{
    in.nkmsgs = 3;    /* the coupon never reached the default topic */
    obe_result_t r = run();
    cr_assert_eq(r.lost, 1, "%s", r.first);
}

Test(emit_check, a_quarantined_aggregate_is_held_not_lost, .init = clean)
{
    kmsgs[1] = kmsgs[3];    /* product 42 seq 2 missing: its aggregate is held back */
    in.nkmsgs = 3;
    in.nquarantined = 1;
    obe_result_t r = run();
    cr_assert_eq(faults(&r), 0, "%s", r.first);
    cr_assert_eq(r.quarantined, 2);
}

Test(emit_check, rolled_back_event_on_a_topic_is_phantom, .init = clean)
{
    published(4, 0, 2, 3);
    in.nrows = 4;    /* not in the outbox either */
    in.nkmsgs = 5;
    obe_result_t r = run();
    cr_assert_eq(r.phantom, 1, "%s", r.first);
}

Test(emit_check, rolled_back_event_in_the_outbox_is_phantom, .init = clean)
{
    published(4, 0, 2, 3);
    in.nrows = 5;
    obe_result_t r = run();
    cr_assert_eq(r.phantom, 1, "%s", r.first);
}

Test(emit_check, another_producers_record_is_phantom, .init = clean)
{
    kmsgs[4] = kmsgs[0];
    strcpy(kmsgs[4].event_id, "not-ours");
    kmsgs[4].offset = 2;
    in.nkmsgs = 5;
    obe_result_t r = run();
    cr_assert_eq(r.phantom, 1, "%s", r.first);
}

Test(emit_check, unknown_commit_is_settled_by_the_commit_log, .init = clean)
{
    calls[3].outcome = OBE_UNKNOWN;    /* the log says committed: it must be, and is, published */
    calls[3].committed_in_log = 1;
    call(5, "coupon", "8", 1, 4, 900, 1000, OBE_UNKNOWN);    /* the log says aborted: absent everywhere */
    in.ncalls = 6;
    obe_result_t r = run();
    cr_assert_eq(faults(&r), 0, "%s", r.first);
    cr_assert_eq(r.unknown_committed, 1);
    cr_assert_eq(r.unknown_absent, 1);
}

Test(emit_check, a_resend_at_the_same_partition_is_harmless, .init = clean)
{
    kmsgs[4] = kmsgs[0];
    kmsgs[4].offset = 2;
    in.nkmsgs = 5;
    obe_result_t r = run();
    cr_assert_eq(faults(&r), 0, "%s", r.first);
    cr_assert_eq(r.kafka_resends, 1);
}

Test(emit_check, one_event_on_two_partitions_is_a_duplicate, .init = clean)
{
    kmsgs[4] = kmsgs[0];
    kmsgs[4].partition = (kmsgs[0].partition + 1) % P;
    in.nkmsgs = 5;
    obe_result_t r = run();
    cr_assert_eq(r.duplicate, 1, "%s", r.first);
}

Test(emit_check, one_seq_given_to_two_events_is_a_duplicate, .init = clean)
{
    kmsgs[1].seq = 1;
    obe_result_t r = run();
    cr_assert_geq(r.duplicate, 1, "%s", r.first);
}

Test(emit_check, seqs_out_of_order_in_the_log_are_a_violation, .init = clean)
{
    obe_kmsg_t t = kmsgs[0];

    kmsgs[0] = kmsgs[1], kmsgs[1] = t;    /* seq 2 before seq 1 */
    obe_result_t r = run();
    cr_assert_geq(r.violations, 1, "%s", r.first);
}

Test(emit_check, a_gap_in_the_seqs_is_a_violation, .init = clean)
{
    kmsgs[1].seq = 3;    /* numbers not given back by a rollback, or skipped */
    obe_result_t r = run();
    cr_assert_eq(r.violations, 1, "%s", r.first);
}

Test(emit_check, an_event_on_the_wrong_topic_is_a_violation, .init = clean)
{
    kmsgs[3].topic = 0;    /* the unrouted coupon on the product topic */
    obe_result_t r = run();
    cr_assert_eq(r.violations, 1, "%s", r.first);
    cr_assert(strstr(r.first, "routed to topic 2") != NULL, "%s", r.first);
}

Test(emit_check, an_event_off_its_murmur2_partition_is_a_violation, .init = clean)
{
    kmsgs[2].partition = (kmsgs[2].partition + 1) % P;
    obe_result_t r = run();
    cr_assert_eq(r.violations, 1, "%s", r.first);
}

Test(emit_check, seq_order_against_commit_order_is_a_violation, .init = clean)
{
    calls[1].begin_us = 10, calls[1].end_us = 50;    /* seq 2 committed before seq 1's transaction began */
    calls[1].n = 0;
    obe_result_t r = run();
    cr_assert_geq(r.violations, 1, "%s", r.first);
    cr_assert(strstr(r.first, "committed before a lower seq") != NULL, "%s", r.first);
}

Test(emit_check, one_writers_calls_out_of_order_are_a_violation, .init = clean)
{
    calls[0].n = 3;    /* same transaction times, but the writer made seq 1's call last */
    calls[1].begin_us = 100, calls[1].end_us = 200;
    kmsgs[0].n = 3;
    obe_result_t r = run();
    cr_assert_eq(r.violations, 1, "%s", r.first);
    cr_assert(strstr(r.first, "came after its call") != NULL, "%s", r.first);
}

Test(emit_check, a_payload_that_is_not_the_writers_is_a_mismatch, .init = clean)
{
    kmsgs[2].n = 9;
    obe_result_t r = run();
    cr_assert_eq(r.mismatch, 1, "%s", r.first);
}

Test(emit_check, a_key_that_is_not_the_aggregate_is_a_mismatch, .init = clean)
{
    strcpy(kmsgs[3].id, "8");
    kmsgs[3].partition = part("8");
    obe_result_t r = run();
    cr_assert_geq(r.mismatch, 1, "%s", r.first);
}

Test(emit_check, offset_recorded_for_another_record_is_a_mismatch, .init = clean)
{
    rows[0].offset = 1;    /* the relay took seq 2's acknowledgement for seq 1 */
    obe_result_t r = run();
    cr_assert_eq(r.mismatch, 1, "%s", r.first);
}

Test(emit_check, a_resend_that_renumbers_the_event_is_a_mismatch, .init = clean)
{
    kmsgs[4] = kmsgs[0];
    kmsgs[4].offset = 2;
    kmsgs[4].seq = 5;
    in.nkmsgs = 5;
    obe_result_t r = run();
    cr_assert_eq(r.mismatch, 1, "%s", r.first);
    cr_assert_eq(r.kafka_resends, 0);
}

Test(emit_check, a_resend_with_another_calls_payload_is_a_mismatch, .init = clean)
{
    kmsgs[4] = kmsgs[0];
    kmsgs[4].offset = 2;
    kmsgs[4].n = 2;
    in.nkmsgs = 5;
    obe_result_t r = run();
    cr_assert_eq(r.mismatch, 1, "%s", r.first);
}

Test(emit_check, one_event_on_two_topics_is_a_duplicate, .init = clean)
{
    kmsgs[4] = kmsgs[3];
    kmsgs[4].topic = 0;    /* the coupon also on the product topic */
    in.nkmsgs = 5;
    obe_result_t r = run();
    cr_assert_eq(r.duplicate, 1, "%s", r.first);
}

Test(emit_check, a_record_without_a_seq_is_a_violation, .init = clean)
{
    kmsgs[0].seq = 0;    /* what a missing aggregate-seq header reads as */
    kmsgs[1].seq = 1;
    obe_result_t r = run();
    cr_assert_geq(r.violations, 1, "%s", r.first);
    cr_assert(strstr(r.first, "no aggregate-seq") != NULL, "%s", r.first);
}

Test(emit_check, an_unknown_commit_the_log_aborted_yet_on_a_topic_is_phantom, .init = clean)
{
    calls[3].outcome = OBE_UNKNOWN;    /* committed_in_log 0 */
    in.nrows = 3;    /* the coupon's row is not in the outbox */
    obe_result_t r = run();
    cr_assert_eq(r.phantom, 1, "%s", r.first);
}

Test(emit_check, an_unknown_commit_the_log_aborted_yet_in_the_outbox_is_phantom, .init = clean)
{
    calls[3].outcome = OBE_UNKNOWN;    /* the outbox under test does not get to say it committed */
    obe_result_t r = run();
    cr_assert_geq(r.phantom, 1, "%s", r.first);
    cr_assert(strstr(r.first, "never committed, yet in the outbox") != NULL, "%s", r.first);
}

Test(emit_check, an_unknown_commit_the_log_committed_but_on_no_topic_is_lost, .init = clean)
{
    calls[3].outcome = OBE_UNKNOWN;
    calls[3].committed_in_log = 1;
    in.nkmsgs = 3;
    obe_result_t r = run();
    cr_assert_eq(r.lost, 1, "%s", r.first);
}

Test(emit_check, one_event_id_returned_twice_is_a_duplicate, .init = clean)
{
    strcpy(calls[4].event_id, calls[0].event_id);
    obe_result_t r = run();
    cr_assert_geq(r.duplicate, 1, "%s", r.first);
}
