/*
 * tests/unit/test_checker.c: the fault suite's checker, fed a clean history
 * and then each kind of corruption it exists to catch. A checker that
 * passes a broken system is itself broken.
 */
#include "tests/fault/checker.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define N 3

static obc_req_t    reqs[N + 2];
static obc_order_t  orders[N];
static obc_outbox_t outbox[N + 1];
static obc_kmsg_t   kmsgs[N + 4];
static obc_entry_t  entries[N + 4];
static char         held[1][40];
static obc_input_t  in;

/* Three orders, the last one cancelled, everything consistent. */
static void
clean(void)
{
    memset(&in, 0, sizeof(in));
    for (int i = 0; i < N; i++) {
        char id[40], key[64];
        snprintf(id, sizeof(id), "00000000-0000-7000-8000-00000000000%d", i);
        snprintf(key, sizeof(key), "k-%d", i);
        reqs[i] = (obc_req_t) { .op = OBC_CREATE, .outcome = OBC_OK, .status = 201, .amount = 10000 * (i + 1) };
        strcpy(reqs[i].key, key);
        strcpy(reqs[i].order, id);
        orders[i] = (obc_order_t) { .amount = 10000 * (i + 1), .cancelled = i == N - 1 };
        strcpy(orders[i].id, id);
        strcpy(orders[i].key, key);
        outbox[i] = (obc_outbox_t) { .seq = 1, .published = 1, .partition = i, .offset = 0 };
        snprintf(outbox[i].event_id, sizeof(outbox[i].event_id), "e-%d-1", i);
        strcpy(outbox[i].order, id);
        kmsgs[i] = (obc_kmsg_t) { .seq = 1, .partition = i, .offset = 0 };
        strcpy(kmsgs[i].event_id, outbox[i].event_id);
        strcpy(kmsgs[i].order, id);
        entries[i] = (obc_entry_t) { .id = i + 1, .seq = 1, .kind = OBC_CHARGE, .amount = 10000 * (i + 1) };
        strcpy(entries[i].event_id, outbox[i].event_id);
        strcpy(entries[i].order, id);
    }
    /* the cancel of the last order: request, outbox row, message, credit note */
    reqs[N] = (obc_req_t) { .op = OBC_CANCEL, .outcome = OBC_OK, .status = 200 };
    strcpy(reqs[N].order, orders[N - 1].id);
    outbox[N] = (obc_outbox_t) { .seq = 2, .published = 1, .partition = N - 1, .offset = 1 };
    strcpy(outbox[N].event_id, "e-2-2");
    strcpy(outbox[N].order, orders[N - 1].id);
    kmsgs[N] = (obc_kmsg_t) { .seq = 2, .partition = N - 1, .offset = 1 };
    strcpy(kmsgs[N].event_id, "e-2-2");
    strcpy(kmsgs[N].order, orders[N - 1].id);
    entries[N] = (obc_entry_t) { .id = N + 1, .seq = 2, .kind = OBC_CREDIT_NOTE, .amount = -10000 * N };
    strcpy(entries[N].event_id, "e-2-2");
    strcpy(entries[N].order, orders[N - 1].id);
    in = (obc_input_t) { reqs, N + 1, orders, N, outbox, N + 1, held, 0, kmsgs, N + 1, entries, N + 1 };
}

static obc_result_t
run(void)
{
    obc_result_t r;

    obc_check(&in, &r);
    return r;
}

Test(checker, clean_history_passes, .init = clean)
{
    obc_result_t r;

    cr_assert_eq(obc_check(&in, &r), 0, "%s", r.first);
    cr_assert_eq(r.acked, N + 1);
    cr_assert_eq(r.orders, N);
}

Test(checker, acknowledged_order_missing_from_orderdb_is_lost, .init = clean)
{
    strcpy(reqs[0].order, "00000000-0000-7000-8000-00000000dead");
    strcpy(reqs[0].key, "k-never");
    cr_assert_eq(run().lost, 1);
}

Test(checker, committed_order_without_charge_is_lost, .init = clean)
{
    in.nentries = 0;
    in.entries = entries + 1;    /* drop order 0's charge */
    in.nentries = N;
    obc_result_t r = run();
    cr_assert_eq(r.lost, 1, "%s", r.first);
}

Test(checker, cancel_without_credit_note_is_lost, .init = clean)
{
    in.nentries = N;
    cr_assert_eq(run().lost, 1);
}

Test(checker, marked_published_but_absent_from_kafka_is_lost, .init = clean)
{
    in.nkmsgs = N;    /* the cancel's message never reached the topic */
    obc_result_t r = run();
    cr_assert_eq(r.lost, 1, "%s", r.first);
    cr_assert(strstr(r.first, "not in Kafka") != NULL, "%s", r.first);
}

Test(checker, lost_event_names_what_kafka_holds_at_its_recorded_offset, .init = clean)
{
    kmsgs[N] = kmsgs[0];    /* the cancel's offset holds a re-send of another event */
    kmsgs[N].partition = N - 1;
    kmsgs[N].offset = 1;
    obc_result_t r = run();
    cr_assert_geq(r.lost, 1, "%s", r.first);
    cr_assert(strstr(r.first, "marked published at 2@1, where Kafka holds event e-0-1") != NULL, "%s", r.first);
}

Test(checker, offset_recorded_for_another_message_is_a_mismatch, .init = clean)
{
    outbox[0].offset = 5;    /* the relay took some other message's acknowledgement for this one */
    obc_result_t r = run();
    cr_assert_eq(r.mismatch, 1, "%s", r.first);
    cr_assert_eq(r.lost, 0, "%s", r.first);
}

Test(checker, entry_for_uncommitted_order_is_phantom, .init = clean)
{
    entries[N + 1] = (obc_entry_t) { .id = 99, .seq = 1, .kind = OBC_CHARGE, .amount = 5 };
    strcpy(entries[N + 1].event_id, "e-x");
    strcpy(entries[N + 1].order, "00000000-0000-7000-8000-0000000000ff");
    in.nentries = N + 2;
    cr_assert_eq(run().phantom, 1);
}

Test(checker, refused_create_that_committed_is_phantom, .init = clean)
{
    reqs[1].outcome = OBC_REFUSED;
    reqs[1].status = 422;
    cr_assert_eq(run().phantom, 1);
}

Test(checker, kafka_event_the_outbox_never_had_is_phantom, .init = clean)
{
    strcpy(kmsgs[0].event_id, "e-invented");
    obc_result_t r = run();
    cr_assert_eq(r.phantom, 1, "%s", r.first);
    cr_assert_eq(r.lost, 1, "the real event is then missing too: %s", r.first);
}

Test(checker, second_charge_is_duplicate, .init = clean)
{
    entries[N + 1] = entries[0];
    entries[N + 1].id = 50;
    strcpy(entries[N + 1].event_id, "e-0-again");
    in.nentries = N + 2;
    cr_assert_eq(run().duplicate, 1);
}

Test(checker, event_booked_twice_is_duplicate, .init = clean)
{
    entries[N + 1] = entries[1];
    entries[N + 1].id = 51;
    in.nentries = N + 2;
    cr_assert_geq(run().duplicate, 1);
}

Test(checker, credit_note_before_charge_is_a_violation, .init = clean)
{
    entries[N - 1].id = 100;    /* the charge of the cancelled order booked after its credit note */
    cr_assert_eq(run().violations, 1);
}

Test(checker, kafka_seq_backwards_is_a_violation, .init = clean)
{
    obc_kmsg_t t = kmsgs[N - 1];

    kmsgs[N - 1] = kmsgs[N];
    kmsgs[N] = t;
    cr_assert_eq(run().violations, 1);
}

Test(checker, kafka_resend_is_not_a_violation, .init = clean)
{
    kmsgs[N + 1] = kmsgs[N - 1];    /* seq 1 again after seq 2: an at-least-once re-send */
    kmsgs[N + 2] = kmsgs[N];
    in.nkmsgs = N + 3;
    obc_result_t r = run();
    cr_assert_eq(r.violations, 0, "%s", r.first);
    cr_assert_eq(r.kafka_resends, 2);
}

Test(checker, order_split_over_partitions_is_a_violation, .init = clean)
{
    kmsgs[N].partition = 7;
    cr_assert_eq(run().violations, 1);
}

Test(checker, wrong_amount_is_a_mismatch, .init = clean)
{
    entries[0].amount = 9999;
    cr_assert_eq(run().mismatch, 1);
}

Test(checker, quarantined_order_is_held_not_lost, .init = clean)
{
    strcpy(held[0], orders[0].id);
    in.nquarantined = 1;
    in.entries = entries + 1;
    in.nentries = N;
    obc_result_t r = run();
    cr_assert_eq(r.lost, 0, "%s", r.first);
    cr_assert_eq(r.quarantined, 1);
}

Test(checker, unavailable_creates_are_resolved_against_orderdb, .init = clean)
{
    reqs[0].outcome = OBC_UNAVAILABLE;
    reqs[0].status = 503;
    reqs[1].outcome = OBC_UNAVAILABLE;
    strcpy(reqs[1].key, "k-absent");
    obc_result_t r = run();
    cr_assert_eq(r.unknown_committed, 1);
    cr_assert_eq(r.unknown_absent, 1);
    cr_assert_eq(r.lost + r.phantom, 0, "%s", r.first);
}

Test(checker, amounts_parse_exactly)
{
    int64_t v;

    cr_assert_eq(obc_parse_amount("12.34", &v), 0);
    cr_assert_eq(v, 123400);
    cr_assert_eq(obc_parse_amount("-7", &v), 0);
    cr_assert_eq(v, -70000);
    cr_assert_eq(obc_parse_amount("1.0000", &v), 0);
    cr_assert_eq(v, 10000);
    cr_assert_eq(obc_parse_amount("1.00001", &v), -1);
    cr_assert_eq(obc_parse_amount("1e3", &v), -1);
    cr_assert_eq(obc_parse_amount("", &v), -1);
}
