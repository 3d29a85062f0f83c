/*
 * tests/fault/checker.c: see checker.h. Order ids and event ids are looked
 * up through the maps of check_util.h.
 */
#include "tests/fault/checker.h"
#include "tests/fault/check_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Records a problem: counts it and keeps the first few words about it. */
#define note(res, counter, ...) obc_note((res)->first, sizeof((res)->first), (counter), __VA_ARGS__)

int
obc_parse_amount(const char *s, int64_t *out)
{
    int64_t v = 0;
    int     neg = 0, frac = -1;

    if (*s == '-')
        neg = 1, s++;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s; s++) {
        if (*s == '.' && frac < 0) {
            frac = 0;
            continue;
        }
        if (*s < '0' || *s > '9' || frac >= 4 || v > INT64_MAX / 10 - 9)
            return -1;
        v = v * 10 + (*s - '0');
        if (frac >= 0)
            frac++;
    }
    for (frac = frac < 0 ? 0 : frac; frac < 4; frac++)
        v *= 10;
    *out = neg ? -v : v;
    return 0;
}

/* What the ledger holds for one order. */
typedef struct {
    int     charges, credits;
    int64_t charged, credited;
    int     last_seq;
} ledger_agg_t;

typedef struct {
    int      partition;
    int      max_seq;
    uint64_t seen;      /* bit s: seq s seen (seqs above 63 share bit 63) */
} kafka_agg_t;

static int
entry_cmp(const void *a, const void *b)
{
    const obc_entry_t *x = *(const obc_entry_t *const *) a, *y = *(const obc_entry_t *const *) b;

    return x->id < y->id ? -1 : x->id > y->id;
}

static void
check_history(const obc_input_t *in, const obc_smap_t *by_id, const obc_smap_t *by_key, obc_result_t *res)
{
    size_t k;

    for (size_t i = 0; i < in->nreqs; i++) {
        const obc_req_t *q = &in->reqs[i];
        res->requests++;
        switch (q->outcome) {
        case OBC_OK:
            res->acked++;
            break;
        case OBC_REFUSED:
            res->refused++;
            break;
        case OBC_UNAVAILABLE:
            res->unavailable++;
            break;
        case OBC_BAD:
            res->bad_status++;
            break;
        }
        if (q->op == OBC_CREATE) {
            int committed = obc_smap_get(by_key, q->key, &k);
            if (q->outcome == OBC_OK && (!obc_smap_get(by_id, q->order, &k) || !committed))
                note(res, &res->lost, "create %s acknowledged as %s but not in orderdb", q->key, q->order);
            else if (q->outcome == OBC_OK && in->orders[k].amount != q->amount)
                note(res, &res->mismatch, "order %s: asked %lld, stored %lld", q->order, (long long) q->amount,
                     (long long) in->orders[k].amount);
            else if (q->outcome == OBC_REFUSED && committed)
                note(res, &res->phantom, "create %s refused with %d but committed", q->key, q->status);
            else if (q->outcome != OBC_OK && committed)
                res->unknown_committed++;
            else if (q->outcome != OBC_OK)
                res->unknown_absent++;
        } else if (q->outcome == OBC_OK) {
            if (!obc_smap_get(by_id, q->order, &k) || !in->orders[k].cancelled)
                note(res, &res->lost, "cancel of %s acknowledged but the order is not cancelled", q->order);
        }
    }
}

/* Walks ledger entries in booking order: existence, duplicates, seq order. */
static ledger_agg_t *
check_ledger(const obc_input_t *in, const obc_smap_t *by_id, obc_result_t *res)
{
    ledger_agg_t        *agg = calloc(in->norders + 1, sizeof(*agg));
    const obc_entry_t  **sorted = malloc((in->nentries + 1) * sizeof(*sorted));
    obc_smap_t               events;
    size_t               k;

    if (agg == NULL || sorted == NULL)
        abort();
    obc_smap_init(&events, in->nentries);
    for (size_t i = 0; i < in->nentries; i++)
        sorted[i] = &in->entries[i];
    qsort(sorted, in->nentries, sizeof(*sorted), entry_cmp);
    for (size_t i = 0; i < in->nentries; i++) {
        const obc_entry_t *e = sorted[i];
        if (obc_smap_put(&events, e->event_id, i))
            note(res, &res->duplicate, "event %s booked twice", e->event_id);
        if (!obc_smap_get(by_id, e->order, &k)) {
            note(res, &res->phantom, "ledger %s for order %s, which orderdb never committed",
                 e->kind == OBC_CHARGE ? "charge" : "credit note", e->order);
            continue;
        }
        ledger_agg_t *a = &agg[k];
        if (e->seq <= a->last_seq)
            note(res, &res->violations, "order %s: ledger booked seq %d after seq %d", e->order, e->seq, a->last_seq);
        a->last_seq = e->seq > a->last_seq ? e->seq : a->last_seq;
        if (e->kind == OBC_CHARGE)
            a->charges++, a->charged = e->amount;
        else
            a->credits++, a->credited = e->amount;
    }
    obc_smap_free(&events);
    free(sorted);
    return agg;
}

/* Every committed order against its ledger entries. */
static void
check_orders(const obc_input_t *in, const ledger_agg_t *agg, obc_result_t *res)
{
    obc_smap_t held;

    obc_smap_init(&held, in->nquarantined);
    for (size_t i = 0; i < in->nquarantined; i++)
        obc_smap_put(&held, in->quarantined[i], i);
    for (size_t i = 0; i < in->norders; i++) {
        const obc_order_t  *o = &in->orders[i];
        const ledger_agg_t *a = &agg[i];
        if (obc_smap_get(&held, o->id, NULL)) {
            res->quarantined++;
            continue;
        }
        if (a->charges == 0)
            note(res, &res->lost, "order %s committed, no charge in the ledger", o->id);
        else if (a->charged != o->amount)
            note(res, &res->mismatch, "order %s: amount %lld, charged %lld", o->id, (long long) o->amount,
                 (long long) a->charged);
        if (a->charges > 1)
            note(res, &res->duplicate, "order %s charged %d times", o->id, a->charges);
        if (a->credits > 1)
            note(res, &res->duplicate, "order %s credited %d times", o->id, a->credits);
        if (o->cancelled && a->credits == 0)
            note(res, &res->lost, "order %s cancelled, no credit note in the ledger", o->id);
        else if (o->cancelled && a->credited != -o->amount)
            note(res, &res->mismatch, "order %s: amount %lld, credited %lld", o->id, (long long) o->amount,
                 (long long) a->credited);
        else if (!o->cancelled && a->credits > 0)
            note(res, &res->phantom, "order %s not cancelled, yet credited", o->id);
    }
    obc_smap_free(&held);
}

/* An event marked published that the topic lacks: say what the topic holds
 * at the offset the relay recorded for it, the first clue to why. */
static void
check_lost_in_kafka(const obc_input_t *in, const obc_outbox_t *o, obc_result_t *res)
{
    const obc_kmsg_t *at = NULL;

    for (size_t k = 0; k < in->nkmsgs && at == NULL; k++)
        if (in->kmsgs[k].partition == o->partition && in->kmsgs[k].offset == o->offset)
            at = &in->kmsgs[k];
    if (at != NULL)
        note(res, &res->lost,
             "event %s (order %s seq %d) marked published at %d@%lld, where Kafka holds event %s (order %s seq %d)",
             o->event_id, o->order, o->seq, o->partition, (long long) o->offset, at->event_id, at->order, at->seq);
    else
        note(res, &res->lost, "event %s (order %s seq %d) marked published at %d@%lld, not in Kafka", o->event_id,
             o->order, o->seq, o->partition, (long long) o->offset);
}

/*
 * Every row marked published must be in the topic, and at the offset the
 * relay recorded for it: a recorded offset that holds another event means
 * the relay took some other message's acknowledgement for this one.
 */
static void
check_offsets(const obc_input_t *in, const obc_smap_t *events, obc_result_t *res)
{
    size_t k;

    for (size_t i = 0; i < in->noutbox; i++) {
        const obc_outbox_t *o = &in->outbox[i];
        if (!o->published)
            continue;
        if (!obc_smap_get(events, o->event_id, &k)) {
            check_lost_in_kafka(in, o, res);
            continue;
        }
        if (o->offset < 0)
            continue;
        int found = 0;
        for (size_t j = k; j < in->nkmsgs && !found; j++)    /* kmsgs[k]: its first appearance */
            found = strcmp(in->kmsgs[j].event_id, o->event_id) == 0 && in->kmsgs[j].partition == o->partition &&
                    in->kmsgs[j].offset == o->offset;
        if (!found)
            note(res, &res->mismatch, "event %s recorded at %d@%lld, but Kafka has it elsewhere", o->event_id,
                 o->partition, (long long) o->offset);
    }
}

/* The topic: partition per order, first appearance of each seq in order,
 * every outbox row marked published present, nothing the outbox never had. */
static void
check_kafka(const obc_input_t *in, obc_result_t *res)
{
    obc_smap_t       orders, events, outbox;
    kafka_agg_t *agg = calloc(in->nkmsgs + 1, sizeof(*agg));
    size_t       norders = 0, k;

    if (agg == NULL)
        abort();
    obc_smap_init(&orders, in->nkmsgs);
    obc_smap_init(&events, in->nkmsgs);
    obc_smap_init(&outbox, in->noutbox);
    for (size_t i = 0; i < in->noutbox; i++)
        obc_smap_put(&outbox, in->outbox[i].event_id, i);
    for (size_t i = 0; i < in->nkmsgs; i++) {
        const obc_kmsg_t *m = &in->kmsgs[i];
        uint64_t          bit = 1ULL << (m->seq < 63 ? m->seq : 63);
        obc_smap_put(&events, m->event_id, i);
        if (!obc_smap_get(&outbox, m->event_id, NULL))
            note(res, &res->phantom, "Kafka %d@%lld holds event %s, which the outbox never had", m->partition,
                 (long long) m->offset, m->event_id);
        if (!obc_smap_get(&orders, m->order, &k)) {
            k = norders++;
            obc_smap_put(&orders, m->order, k);
            agg[k].partition = m->partition;
        }
        kafka_agg_t *a = &agg[k];
        if (a->partition != m->partition)
            note(res, &res->violations, "order %s in partitions %d and %d", m->order, a->partition, m->partition);
        if (a->seen & bit)
            res->kafka_resends++;
        else if (m->seq < a->max_seq)
            note(res, &res->violations, "order %s: Kafka has seq %d after seq %d", m->order, m->seq, a->max_seq);
        a->seen |= bit;
        a->max_seq = m->seq > a->max_seq ? m->seq : a->max_seq;
    }
    check_offsets(in, &events, res);
    obc_smap_free(&orders);
    obc_smap_free(&events);
    obc_smap_free(&outbox);
    free(agg);
}

long
obc_check(const obc_input_t *in, obc_result_t *res)
{
    obc_smap_t by_id, by_key;

    memset(res, 0, sizeof(*res));
    res->orders = (long) in->norders;
    res->entries = (long) in->nentries;
    res->kmsgs = (long) in->nkmsgs;
    obc_smap_init(&by_id, in->norders);
    obc_smap_init(&by_key, in->norders);
    for (size_t i = 0; i < in->norders; i++) {
        obc_smap_put(&by_id, in->orders[i].id, i);
        if (in->orders[i].key[0] != '\0')
            obc_smap_put(&by_key, in->orders[i].key, i);
    }
    check_history(in, &by_id, &by_key, res);
    ledger_agg_t *agg = check_ledger(in, &by_id, res);
    check_orders(in, agg, res);
    free(agg);
    check_kafka(in, res);
    obc_smap_free(&by_id);
    obc_smap_free(&by_key);
    return res->lost + res->phantom + res->duplicate + res->violations + res->mismatch;
}
