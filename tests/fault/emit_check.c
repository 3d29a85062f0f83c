/*
 * tests/fault/emit_check.c: see emit_check.h.
 *
 * An aggregate is (type, id): the checker keys it as "type\x1fid", so
 * product "42" and stock "42" never meet. Seqs are judged on each event's
 * first appearance in the log; later appearances of the same event at the
 * same partition are the at-least-once re-sends a consumer deduplicates by
 * event id, counted but harmless.
 */
#include "tests/fault/emit_check.h"
#include "tests/fault/check_util.h"
#include "common/murmur2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define note(res, counter, ...) obc_note((res)->first, sizeof((res)->first), (counter), __VA_ARGS__)

typedef char aggkey_t[72];
typedef char seqkey_t[96];

typedef struct {
    const obe_input_t *in;
    obe_result_t      *res;
    obc_smap_t         calls;     /* event id -> call */
    obc_smap_t         rows;      /* event id -> outbox row */
    obc_smap_t         held;      /* aggregate -> quarantined */
    obc_smap_t         events;    /* event id -> its first Kafka record */
    obc_smap_t         seqs;      /* aggregate + seq -> first record carrying it */
    obc_smap_t         aggs;      /* aggregate -> index into max_seq, nseqs */
    obc_smap_t         at;        /* topic/partition/offset -> record */
    aggkey_t          *call_agg;  /* each call's aggregate */
    aggkey_t          *msg_agg;
    seqkey_t          *msg_seq;
    seqkey_t          *msg_at;
    aggkey_t          *held_agg;
    int               *call_seq;  /* the seq Kafka shows for each call, 0 when absent */
    int               *max_seq, *nseqs;
    size_t             naggs;
} ec_t;

static void *
ec_alloc(size_t n, size_t size)
{
    void *p = calloc(n + 1, size);

    if (p == NULL)
        abort();    /* a test tool: no memory is not a result */
    return p;
}

static void
agg_key(aggkey_t out, const char *type, const char *id)
{
    snprintf(out, sizeof(aggkey_t), "%s\x1f%s", type, id);
}

/* The topic [routes] send type to: its route's, else the last (default) one. */
static int
topic_for(const obe_input_t *in, const char *type)
{
    for (int t = 0; t + 1 < in->ntopics; t++)
        if (in->route_types[t] != NULL && strcmp(in->route_types[t], type) == 0)
            return t;
    return in->ntopics - 1;
}

static int
committed(const obe_call_t *call)
{
    return call->outcome == OBE_COMMITTED || (call->outcome == OBE_UNKNOWN && call->committed_in_log);
}

static void
ec_init(ec_t *c, const obe_input_t *in, obe_result_t *res)
{
    memset(c, 0, sizeof(*c));
    c->in = in;
    c->res = res;
    obc_smap_init(&c->calls, in->ncalls);
    obc_smap_init(&c->rows, in->nrows);
    obc_smap_init(&c->held, in->nquarantined);
    obc_smap_init(&c->events, in->nkmsgs);
    obc_smap_init(&c->seqs, in->nkmsgs);
    obc_smap_init(&c->aggs, in->nkmsgs);
    obc_smap_init(&c->at, in->nkmsgs);
    c->call_agg = ec_alloc(in->ncalls, sizeof(*c->call_agg));
    c->msg_agg = ec_alloc(in->nkmsgs, sizeof(*c->msg_agg));
    c->msg_seq = ec_alloc(in->nkmsgs, sizeof(*c->msg_seq));
    c->msg_at = ec_alloc(in->nkmsgs, sizeof(*c->msg_at));
    c->held_agg = ec_alloc(in->nquarantined, sizeof(*c->held_agg));
    c->call_seq = ec_alloc(in->ncalls, sizeof(*c->call_seq));
    c->max_seq = ec_alloc(in->nkmsgs, sizeof(*c->max_seq));
    c->nseqs = ec_alloc(in->nkmsgs, sizeof(*c->nseqs));
    for (size_t i = 0; i < in->ncalls; i++) {
        if (obc_smap_put(&c->calls, in->calls[i].event_id, i))
            note(res, &res->duplicate, "emit returned event id %s twice", in->calls[i].event_id);
        agg_key(c->call_agg[i], in->calls[i].type, in->calls[i].id);
    }
    for (size_t i = 0; i < in->nrows; i++)
        if (obc_smap_put(&c->rows, in->rows[i].event_id, i))
            note(res, &res->duplicate, "the outbox holds event %s twice", in->rows[i].event_id);
    for (size_t i = 0; i < in->nquarantined; i++) {
        agg_key(c->held_agg[i], in->quarantined[i].type, in->quarantined[i].id);
        obc_smap_put(&c->held, c->held_agg[i], i);
    }
}

static void
ec_free(ec_t *c)
{
    obc_smap_free(&c->calls);
    obc_smap_free(&c->rows);
    obc_smap_free(&c->held);
    obc_smap_free(&c->events);
    obc_smap_free(&c->seqs);
    obc_smap_free(&c->aggs);
    obc_smap_free(&c->at);
    free(c->call_agg);
    free(c->msg_agg);
    free(c->msg_seq);
    free(c->msg_at);
    free(c->held_agg);
    free(c->call_seq);
    free(c->max_seq);
    free(c->nseqs);
}

/* What the writers were told, unanswered COMMITs as the commit log settled them,
 * and nothing uncommitted in the outbox. */
static void
ec_history(ec_t *c)
{
    obe_result_t *res = c->res;

    for (size_t i = 0; i < c->in->ncalls; i++) {
        const obe_call_t *call = &c->in->calls[i];
        res->calls++;
        if (call->outcome == OBE_COMMITTED)
            res->committed++;
        else if (call->outcome == OBE_ROLLED_BACK)
            res->rolled_back++;
        else
            res->unknown++;
        if (call->outcome == OBE_UNKNOWN && call->committed_in_log)
            res->unknown_committed++;
        else if (call->outcome == OBE_UNKNOWN)
            res->unknown_absent++;
        if (!committed(call) && obc_smap_get(&c->rows, call->event_id, NULL))
            note(res, &res->phantom, "event %s (%s %s) never committed, yet in the outbox", call->event_id,
                 call->type, call->id);
    }
}

/* The record against the call that made it: key, type, payload, topic, partition. */
static void
ec_record_matches(ec_t *c, const obe_kmsg_t *m, const obe_call_t *call)
{
    obe_result_t *res = c->res;
    int           want_topic = topic_for(c->in, call->type);
    int           want_part = ob_partition_for(call->id, strlen(call->id), c->in->partitions);

    if (strcmp(m->type, call->type) != 0 || strcmp(m->id, call->id) != 0)
        note(res, &res->mismatch, "event %s emitted for (%s, %s), published as (%s, %s)", m->event_id, call->type,
             call->id, m->type, m->id);
    else if (m->writer != call->writer || m->n != call->n)
        note(res, &res->mismatch, "event %s: payload says writer %d call %ld, emitted by writer %d call %ld",
             m->event_id, m->writer, m->n, call->writer, call->n);
    if (m->topic != want_topic)
        note(res, &res->violations, "event %s (%s) on topic %d, routed to topic %d", m->event_id, call->type, m->topic,
             want_topic);
    if (m->partition != want_part)
        note(res, &res->violations, "event %s key %s in partition %d, murmur2 says %d", m->event_id, call->id,
             m->partition, want_part);
}

/* A new event on its aggregate: one seq per event, each above the last. */
static void
ec_first_seq(ec_t *c, size_t i, size_t call_index)
{
    const obe_kmsg_t *m = &c->in->kmsgs[i];
    obe_result_t     *res = c->res;
    size_t            a, prev;

    if (m->seq < 1)
        note(res, &res->violations, "event %s (%s, %s) carries no aggregate-seq of 1 or more", m->event_id, m->type,
             m->id);
    agg_key(c->msg_agg[i], m->type, m->id);
    snprintf(c->msg_seq[i], sizeof(seqkey_t), "%s\x1f%d", c->msg_agg[i], m->seq);
    if (!obc_smap_get(&c->aggs, c->msg_agg[i], &a)) {
        a = c->naggs++;
        obc_smap_put(&c->aggs, c->msg_agg[i], a);
    }
    if (obc_smap_put(&c->seqs, c->msg_seq[i], i)) {
        obc_smap_get(&c->seqs, c->msg_seq[i], &prev);
        note(res, &res->duplicate, "(%s, %s) seq %d given to events %s and %s", m->type, m->id, m->seq,
             c->in->kmsgs[prev].event_id, m->event_id);
    } else {
        c->nseqs[a]++;
        if (m->seq < c->max_seq[a])
            note(res, &res->violations, "(%s, %s): Kafka has seq %d after seq %d", m->type, m->id, m->seq,
                 c->max_seq[a]);
    }
    c->max_seq[a] = m->seq > c->max_seq[a] ? m->seq : c->max_seq[a];
    c->call_seq[call_index] = m->seq;
}

/* A later record of an event already seen: harmless only as a copy of the
 * first, at its partition; a re-send that renumbers or re-keys the event
 * would pass every check made on first appearances. */
static void
ec_resend(ec_t *c, const obe_kmsg_t *first, const obe_kmsg_t *m)
{
    obe_result_t *res = c->res;

    if (first->topic != m->topic || first->partition != m->partition)
        note(res, &res->duplicate, "event %s on topic %d partition %d and topic %d partition %d", m->event_id,
             first->topic, first->partition, m->topic, m->partition);
    else if (first->seq != m->seq || strcmp(first->type, m->type) != 0 || strcmp(first->id, m->id) != 0 ||
             first->writer != m->writer || first->n != m->n)
        note(res, &res->mismatch, "event %s re-sent at %d@%lld as (%s, %s) seq %d, first sent as (%s, %s) seq %d",
             m->event_id, m->partition, (long long) m->offset, m->type, m->id, m->seq, first->type, first->id,
             first->seq);
    else
        res->kafka_resends++;
}

static void
ec_kafka(ec_t *c)
{
    const obe_input_t *in = c->in;
    obe_result_t      *res = c->res;
    size_t             k, first;

    for (size_t i = 0; i < in->nkmsgs; i++) {
        const obe_kmsg_t *m = &in->kmsgs[i];
        snprintf(c->msg_at[i], sizeof(seqkey_t), "%d/%d/%lld", m->topic, m->partition, (long long) m->offset);
        obc_smap_put(&c->at, c->msg_at[i], i);
        if (!obc_smap_get(&c->calls, m->event_id, &k) || !committed(&in->calls[k])) {
            note(res, &res->phantom, "topic %d %d@%lld holds event %s (%s, %s), which no writer committed", m->topic,
                 m->partition, (long long) m->offset, m->event_id, m->type, m->id);
            continue;
        }
        if (obc_smap_put(&c->events, m->event_id, i)) {
            obc_smap_get(&c->events, m->event_id, &first);
            ec_resend(c, &in->kmsgs[first], m);
            continue;
        }
        ec_record_matches(c, m, &in->calls[k]);
        ec_first_seq(c, i, k);
    }
}

/* Every committed event is on a topic, unless its aggregate is quarantined;
 * and each aggregate's seqs are exactly 1..its committed events. */
static void
ec_lost(ec_t *c)
{
    const obe_input_t *in = c->in;
    obe_result_t      *res = c->res;
    int               *want = ec_alloc(in->nkmsgs, sizeof(*want));
    size_t             a;

    for (size_t i = 0; i < in->ncalls; i++) {
        const obe_call_t *call = &in->calls[i];
        if (!committed(call))
            continue;
        if (obc_smap_get(&c->held, c->call_agg[i], NULL))
            res->quarantined++;
        else if (!obc_smap_get(&c->events, call->event_id, NULL))
            note(res, &res->lost, "event %s (%s, %s) committed, on no topic", call->event_id, call->type, call->id);
        else if (obc_smap_get(&c->aggs, c->call_agg[i], &a))
            want[a]++;
    }
    for (size_t i = 0; i < in->nkmsgs; i++) {
        if (c->msg_agg[i][0] == '\0' || obc_smap_get(&c->held, c->msg_agg[i], NULL) ||
            !obc_smap_get(&c->aggs, c->msg_agg[i], &a) || want[a] < 0)
            continue;
        if (c->max_seq[a] != c->nseqs[a] || c->nseqs[a] != want[a])
            note(res, &res->violations, "(%s, %s): %d committed events carry %d distinct seqs up to %d, not 1..%d",
                 in->kmsgs[i].type, in->kmsgs[i].id, want[a], c->nseqs[a], c->max_seq[a], want[a]);
        want[a] = -1;    /* an aggregate has many records: one verdict, not one per record */
    }
    free(want);
}

/* Every offset the relay recorded holds the event it was recorded for. */
static void
ec_offsets(ec_t *c)
{
    const obe_input_t *in = c->in;
    obe_result_t      *res = c->res;
    seqkey_t           key;
    size_t             k;

    for (size_t i = 0; i < in->nrows; i++) {
        const obe_row_t *r = &in->rows[i];
        if (!r->published || r->offset < 0 || !obc_smap_get(&c->events, r->event_id, NULL))
            continue;    /* a published row missing from Kafka is lost, counted above */
        snprintf(key, sizeof(key), "%d/%d/%lld", topic_for(in, r->type), r->partition, (long long) r->offset);
        if (!obc_smap_get(&c->at, key, &k) || strcmp(in->kmsgs[k].event_id, r->event_id) != 0)
            note(res, &res->mismatch, "event %s recorded at %d@%lld, where its topic holds %s", r->event_id,
                 r->partition, (long long) r->offset, obc_smap_get(&c->at, key, &k) ? in->kmsgs[k].event_id : "nothing");
    }
}

typedef struct {
    const char       *agg;
    const obe_call_t *call;
    int               seq;
} ordered_t;

static int
ordered_cmp(const void *a, const void *b)
{
    const ordered_t *x = a, *y = b;
    int              d = strcmp(x->agg, y->agg);

    return d != 0 ? d : (x->seq > y->seq) - (x->seq < y->seq);
}


/*
 * Seq order is commit order: an event whose transaction ended before
 * another's began has the lower seq, and one writer's calls on an
 * aggregate (sequential, in one transaction or several) ascend.
 */
static void
ec_commit_order(ec_t *c)
{
    const obe_input_t *in = c->in;
    ordered_t         *v = ec_alloc(in->ncalls, sizeof(*v));
    size_t             n = 0;

    for (size_t i = 0; i < in->ncalls; i++)
        if (c->call_seq[i] > 0)
            v[n++] = (ordered_t) { c->call_agg[i], &in->calls[i], c->call_seq[i] };
    qsort(v, n, sizeof(*v), ordered_cmp);
    for (size_t g = 0; g < n;) {
        int64_t max_begin = INT64_MIN;
        long    last_n[OBE_MAX_WRITERS];
        size_t  end = g;
        for (int w = 0; w < OBE_MAX_WRITERS; w++)
            last_n[w] = -1;
        for (; end < n && strcmp(v[end].agg, v[g].agg) == 0; end++) {
            const obe_call_t *x = v[end].call;
            int               w = x->writer >= 0 && x->writer < OBE_MAX_WRITERS ? x->writer : 0;
            if (max_begin > x->end_us)
                note(c->res, &c->res->violations, "(%s, %s) seq %d committed before a lower seq's transaction began",
                     x->type, x->id, v[end].seq);
            if (last_n[w] > x->n)
                note(c->res, &c->res->violations, "(%s, %s) seq %d: writer %d's call %ld came after its call %ld",
                     x->type, x->id, v[end].seq, x->writer, x->n, last_n[w]);
            max_begin = x->begin_us > max_begin ? x->begin_us : max_begin;
            last_n[w] = x->n > last_n[w] ? x->n : last_n[w];
        }
        g = end;
    }
    free(v);
}

long
obe_check(const obe_input_t *in, obe_result_t *res)
{
    ec_t c;

    memset(res, 0, sizeof(*res));
    res->kmsgs = (long) in->nkmsgs;
    ec_init(&c, in, res);
    ec_history(&c);
    ec_kafka(&c);
    ec_lost(&c);
    ec_offsets(&c);
    ec_commit_order(&c);
    ec_free(&c);
    return res->lost + res->phantom + res->duplicate + res->violations + res->mismatch;
}
