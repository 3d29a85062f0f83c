/* workers/consumer/apply.c: see apply.h. */
#include "apply.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/pgarr.h"
#include "../../common/money.h"
#include "../../common/util.h"
#include "../../common/uuid.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ledger_entries.amount and ledger_parked.amount are numeric(20, 4): 16
 * integer digits and 4 decimals. An amount past either is a data error
 * raised inside SQL, where version 2 of the schema could not contain it. */
_Static_assert(OB_MONEY_MAX_MAJOR < 10000000000000000LL, "amounts must fit numeric(20, 4)");
#define LEDGER_SCALE 4

ob_cons_class_t
ob_cons_classify(const char *s)
{
    static const char *transient[] = {
        "40", /* serialization failure, deadlock */
        "53", /* disk full, out of memory, too many connections */
        "55", /* lock not available, object in use */
        "57", /* query canceled (statement_timeout); 57P0x handled above */
        "58", /* I/O error */
        "72", /* snapshot too old */
        "XX", /* internal error, data corrupted: never the event's fault */
    };

    if (s == NULL || strlen(s) != 5)
        return OB_CONS_AWAY;
    if (strncmp(s, "22", 2) == 0 || strncmp(s, "23", 2) == 0)
        return OB_CONS_DATA;
    if (strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0)
        return OB_CONS_AWAY;
    for (size_t i = 0; i < OB_ARRAY_LEN(transient); i++)
        if (strncmp(s, transient[i], 2) == 0)
            return OB_CONS_TRANSIENT;
    return OB_CONS_OTHER;
}

const char *
ob_cons_class_name(ob_cons_class_t c)
{
    static const char *names[] = { "ok", "data error", "transient error", "database away", "not a data error" };

    return (unsigned) c < OB_ARRAY_LEN(names) ? names[c] : "?";
}

int
ob_cons_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s, *end = p + len;

    while (p < end) {
        unsigned c = *p++, cp, min;
        int      n;
        if (c < 0x80)
            continue;
        if (c >= 0xc2 && c <= 0xdf)
            n = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (end - p < n)
            return 0;
        for (int i = 0; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        p += n;
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
    }
    return 1;
}

void
ob_cons_printable(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;

    if (outlen == 0)
        return;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            if (o + 1 >= outlen)
                break;
            out[o++] = (char) c;
        } else {
            /* the backslash too, so an escape in the output is never ambiguous */
            if (o + 4 >= outlen)
                break;
            snprintf(out + o, 5, "\\x%02x", c);
            o += 4;
        }
    }
    out[o] = '\0';
}

/* Fills why with fmt, quoting the offending field as printable ASCII. */
static int
refuse_with(char *why, size_t whylen, const char *fmt, const char *field)
{
    char shown[100];

    ob_cons_printable(field, strlen(field), shown, sizeof(shown));
    snprintf(why, whylen, fmt, shown);
    return -1;
}

int
ob_cons_validate(ob_event_t *ev, char *why, size_t whylen)
{
    const struct {
        const char *name, *value;
    } fields[] = {
        { "id", ev->id },           { "type", ev->type },           { "aggregate_type", ev->aggregate_type },
        { "aggregate_id", ev->aggregate_id }, { "occurred_at", ev->occurred_at }, { "customerId", ev->customer_id },
        { "amount", ev->amount },   { "currency", ev->currency },   { "status", ev->status },
    };
    const ob_currency_t *cur;
    ob_uuid_t            u;
    int64_t              minor;
    const char          *bad;
    int                  created;
    char                 fmt[96];

    for (size_t i = 0; i < OB_ARRAY_LEN(fields); i++)
        if (!ob_cons_utf8_valid(fields[i].value, strlen(fields[i].value))) {
            snprintf(fmt, sizeof(fmt), "field %s is not valid UTF-8: \"%%s\"", fields[i].name);
            return refuse_with(why, whylen, fmt, fields[i].value);
        }
    if (ob_uuid_parse(ev->id, &u) != 0 || ob_uuid_parse(ev->aggregate_id, &u) != 0) {
        snprintf(why, whylen, "id or aggregate_id is not a UUID");
        return -1;
    }
    if (strcmp(ev->aggregate_type, "order") != 0)
        return refuse_with(why, whylen, "aggregate_type \"%s\" is not \"order\"", ev->aggregate_type);
    created = strcmp(ev->type, OB_EVENT_CREATED) == 0;
    if (!created && strcmp(ev->type, OB_EVENT_CANCELLED) != 0)
        return refuse_with(why, whylen, "unknown event type \"%s\"", ev->type);
    /* a create is the order's first version; INT32_MAX is refused so that
     * the ledger's seq + 1 can never overflow */
    if (created ? ev->seq != 1 : (ev->seq < 2 || ev->seq == INT32_MAX)) {
        snprintf(why, whylen, "seq %d out of range for %s (%s)", (int) ev->seq, ev->type,
                 created ? "must be 1" : "2 to 2147483646");
        return -1;
    }
    cur = ob_currency_find(ev->currency);
    if (cur == NULL || cur->digits > LEDGER_SCALE)
        return refuse_with(why, whylen, "currency \"%s\" is not one the ledger accepts", ev->currency);
    if (ob_money_parse(ev->amount, strlen(ev->amount), cur, &minor, &bad) != 0) {
        snprintf(fmt, sizeof(fmt), "amount \"%%s\" refused: %s", bad);
        return refuse_with(why, whylen, fmt, ev->amount);
    }
    ob_money_format(minor, cur->digits, ev->amount, sizeof(ev->amount));
    return 0;
}

/* Whether header name, where the record has it, says want: absent, or every copy equal. */
static int
cons_header_agrees(const ob_cons_record_t *r, const char *name, const char *want)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0 &&
            (r->headers[i].value == NULL || r->headers[i].value_len != strlen(want) ||
             memcmp(r->headers[i].value, want, r->headers[i].value_len) != 0))
            return 0;
    return 1;
}

/*
 * The payload must say what the record's key and headers say (the relay
 * writes all of them from one row, and signs the headers): a value that
 * claims another order or event than its record is refused, so neither a
 * mislabelled record nor one whose payload was crafted apart from its
 * headers is booked. 0, or -1 with why.
 */
static int
cons_agrees(const ob_cons_record_t *r, const ob_event_t *ev, char *why, size_t whylen)
{
    char seq[16];

    snprintf(seq, sizeof(seq), "%d", (int) ev->seq);
    if (r->key != NULL && (r->key_len != strlen(ev->aggregate_id) || memcmp(r->key, ev->aggregate_id, r->key_len) != 0))
        snprintf(why, whylen, "the record's key is not the payload's aggregate_id");
    else if (!cons_header_agrees(r, "event-id", ev->id) || !cons_header_agrees(r, "aggregate-id", ev->aggregate_id) ||
             !cons_header_agrees(r, "aggregate-seq", seq) || !cons_header_agrees(r, "event-type", ev->type) ||
             !cons_header_agrees(r, OB_HDR_AGGREGATE_TYPE, ev->aggregate_type))
        snprintf(why, whylen, "the record's headers disagree with its payload (event-id, aggregate-id, aggregate-seq,"
                              " event-type or aggregate-type)");
    else
        return 0;
    return -1;
}

int
ob_cons_decode(const ob_cons_record_t *r, ob_event_t *ev, char *why, size_t whylen)
{
    int json = 0;

    if (r->headers_dropped) {
        snprintf(why, whylen, "more than %d headers", OB_CONS_MAX_HEADERS);
        return -1;
    }
    for (int i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, "content-type") == 0)
            json = r->headers[i].value != NULL && r->headers[i].value_len == 16 &&
                   memcmp(r->headers[i].value, "application/json", 16) == 0;
    if (r->value == NULL) {
        snprintf(why, whylen, "empty value");
        return -1;
    }
    if (ob_event_decode(r->value, r->value_len, json, ev, why, whylen) != 0 || ob_cons_validate(ev, why, whylen) != 0)
        return -1;
    return cons_agrees(r, ev, why, whylen);
}

void
ob_cons_trust_init(ob_cons_trust_t *t, const ob_cfg_t *cfg)
{
    memset(t, 0, sizeof(*t));
    /* ob_cfg_validate refused a signing key whose id verify_keys gives another secret */
    (void) ob_rsig_ring_merge(&cfg->kafka.verify_keys, &cfg->kafka.signing_key, &t->ring);
    t->require = cfg->kafka.require_signature;
}

int
ob_cons_verify(const ob_cons_trust_t *t, const ob_cons_record_t *r, char *why, size_t whylen)
{
    ob_rsig_hdr_t hdrs[OB_CONS_MAX_HEADERS];
    char         raw[256];

    if (t == NULL || (t->ring.n == 0 && !t->require))
        return 0;
    if (r->headers_dropped) {
        snprintf(why, whylen, "more than %d headers", OB_CONS_MAX_HEADERS);
        return -1;
    }
    for (int i = 0; i < r->nheaders; i++)
        hdrs[i] = (ob_rsig_hdr_t) { r->headers[i].name, r->headers[i].value, r->headers[i].value_len };
    if (ob_rsig_verify(&t->ring, t->require, r->key, r->key_len, r->value, r->value_len, hdrs, r->nheaders, raw,
                      sizeof(raw)) == 0)
        return 0;
    /* the reason may quote a key id a foreign producer chose */
    ob_cons_printable(raw, strlen(raw), why, whylen);
    return -1;
}

/* The class of a statement that failed (ob_pg_check wrote err and state). */
static ob_cons_class_t
cons_failed(PGconn *pg, const char *state)
{
    return PQstatus(pg) != CONNECTION_OK ? OB_CONS_AWAY : ob_cons_classify(state);
}

/* Checks a result whose rows are not read; state is written only when it failed. */
static ob_cons_class_t
cons_command(PGconn *pg, PGresult *r, char *state, char *err, size_t errlen)
{
    char st[6];

    r = ob_pg_check(pg, r, st, err, errlen);
    if (r == NULL) {
        if (state != NULL)
            memcpy(state, st, sizeof(st));
        return cons_failed(pg, st);
    }
    PQclear(r);
    return OB_CONS_OK;
}

ob_cons_class_t
ob_cons_exec(PGconn *pg, const char *sql, char *state, char *err, size_t errlen)
{
    return cons_command(pg, PQexec(pg, sql), state, err, errlen);
}

/* A literal the statement cannot go without: out of memory, the worker
 * restarts and the batch is re-read from Kafka. */
static char *
cons_literal(ob_pgarr_t *a)
{
    char *s = ob_pgarr_end(a);

    if (s == NULL)
        abort();
    return s;
}

/* The header names (values == 0) or values of r as a bytea[] literal of hex elements. */
static char *
cons_bytea_array(const ob_cons_record_t *r, int values)
{
    ob_pgarr_t a = { 0 };

    for (int i = 0; i < r->nheaders; i++) {
        const ob_cons_header_t *hd = &r->headers[i];
        if (values)
            ob_pgarr_add_bytea(&a, hd->value, hd->value_len);
        else
            ob_pgarr_add_bytea(&a, hd->name, strlen(hd->name));
    }
    return cons_literal(&a);
}

ob_cons_class_t
ob_cons_dead_letter(PGconn *pg, const ob_cons_record_t *r, const char *why, const char *sqlstate, int bare,
                    char *err, size_t errlen)
{
    char            part[16], off[24], text[512];
    char           *keys = bare ? NULL : cons_bytea_array(r, 0), *vals = bare ? NULL : cons_bytea_array(r, 1);
    const char     *params[9] = { r->topic, part, off, bare ? NULL : r->key, bare ? NULL : r->value,
                                  keys, vals, text, sqlstate ? sqlstate : "" };
    int             lens[9] = { 0, 0, 0, (int) r->key_len, (int) r->value_len, 0, 0, 0, 0 };
    int             fmts[9] = { 0, 0, 0, 1, 1, 0, 0, 0, 0 };
    PGresult       *res;
    ob_cons_class_t c;

    /* the reason may quote the record's bytes: only ASCII reaches a text column */
    ob_cons_printable(why, strlen(why), text, sizeof(text));
    snprintf(part, sizeof(part), "%d", (int) r->partition);
    snprintf(off, sizeof(off), "%lld", (long long) r->offset);
    res = PQexecParams(pg,
                       "INSERT INTO ledger_dead_letter (kafka_topic, kafka_partition, kafka_offset, kafka_key,"
                       " kafka_value, kafka_header_keys, kafka_header_values, error, sqlstate)"
                       " VALUES ($1, $2::int, $3::bigint, $4, $5, $6::bytea[], $7::bytea[], $8, NULLIF($9, ''))"
                       " ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING",
                       9, NULL, params, lens, fmts, 0);
    c = cons_command(pg, res, NULL, err, errlen);
    free(keys);
    free(vals);
    return c;
}

/* A parked event keeps its record, so that the ledger can dead-letter it whole if it fails when its turn comes. */
static ob_cons_class_t
cons_park_record(PGconn *pg, const ob_cons_record_t *r, const char *event_id, char *state, char *err, size_t errlen)
{
    char           *keys = cons_bytea_array(r, 0), *vals = cons_bytea_array(r, 1);
    const char     *params[5] = { event_id, r->key, r->value, keys, vals };
    int             lens[5] = { 0, (int) r->key_len, (int) r->value_len, 0, 0 };
    int             fmts[5] = { 0, 1, 1, 0, 0 };
    PGresult       *res;
    ob_cons_class_t c;

    res = PQexecParams(pg,
                       "UPDATE ledger_parked SET kafka_key = $2, payload = $3, kafka_header_keys = $4::bytea[],"
                       " kafka_header_values = $5::bytea[] WHERE event_id = $1::uuid",
                       5, NULL, params, lens, fmts, 0);
    c = cons_command(pg, res, state, err, errlen);
    free(keys);
    free(vals);
    return c;
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

typedef struct {
    ob_pgarr_t events, orders, seqs, types, amounts, currencies, parts, offsets;
    int  *idx;                 /* index in recs of each valid event */
    char (*ids)[37];
    int   n;
} batch_t;

/* The record's traceparent header when it is one well-formed W3C value, else NULL (malformed ones are not kept). */
static const ob_cons_header_t *
cons_traceparent(const ob_cons_record_t *r)
{
    const ob_cons_header_t *t = NULL;

    for (int i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, "traceparent") == 0) {
            if (t != NULL)
                return NULL;
            t = &r->headers[i];
        }
    return t != NULL && t->value != NULL && ob_traceparent_valid(t->value, t->value_len) ? t : NULL;
}

/*
 * Keeps the trace context of the events booked or parked (code >= 0) in
 * ledger_traces, in the batch's transaction; nothing to do, no round trip.
 */
static ob_cons_class_t
cons_keep_traces(PGconn *pg, const batch_t *b, const ob_cons_record_t *recs, const ob_cons_outcome_t *out,
                 char *state, char *err, size_t errlen)
{
    ob_pgarr_t      ids = { 0 }, traces = { 0 };
    char            tp[OB_TRACEPARENT_LEN + 1], *lit[2];
    ob_cons_class_t c = OB_CONS_OK;

    for (int k = 0; k < b->n; k++) {
        const ob_cons_header_t *t = cons_traceparent(&recs[b->idx[k]]);
        if (t == NULL || out[b->idx[k]].code < 0)
            continue;
        memcpy(tp, t->value, OB_TRACEPARENT_LEN);
        tp[OB_TRACEPARENT_LEN] = '\0';
        ob_pgarr_add(&ids, b->ids[k]);
        ob_pgarr_add(&traces, tp);
    }
    int any = ids.n > 0;
    lit[0] = ob_pgarr_end(&ids);
    lit[1] = ob_pgarr_end(&traces);
    if (lit[0] == NULL || lit[1] == NULL)
        abort();      /* out of memory: the worker restarts, the batch is re-read */
    if (any) {
        char      st[6];
        PGresult *r = ob_pg_query(pg, "SELECT ledger_keep_traces($1::uuid[], $2::text[])", 2,
                                  (const char *const *) lit, st, err, errlen);
        if (r == NULL && state != NULL)
            memcpy(state, st, sizeof(st));
        if (r == NULL)
            c = cons_failed(pg, st);
        else if (!PQgetisnull(r, 0, 0))
            ob_log(OB_LOG_WARN, "trace context not kept (the events are booked): %s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    free(lit[0]);
    free(lit[1]);
    return c;
}

static void
batch_add(batch_t *b, int i, const ob_event_t *ev, const ob_cons_record_t *r)
{
    char num[24];

    ob_pgarr_add(&b->events, ev->id);
    ob_pgarr_add(&b->orders, ev->aggregate_id);
    snprintf(num, sizeof(num), "%d", (int) ev->seq);
    ob_pgarr_add(&b->seqs, num);
    ob_pgarr_add(&b->types, ev->type);
    ob_pgarr_add(&b->amounts, ev->amount);
    ob_pgarr_add(&b->currencies, ev->currency);
    snprintf(num, sizeof(num), "%d", (int) r->partition);
    ob_pgarr_add(&b->parts, num);
    snprintf(num, sizeof(num), "%lld", (long long) r->offset);
    ob_pgarr_add(&b->offsets, num);
    memcpy(b->ids[b->n], ev->id, 37);
    b->idx[b->n++] = i;
}

static void
batch_free(batch_t *b)
{
    ob_pgarr_t *all[] = { &b->events, &b->orders, &b->seqs, &b->types, &b->amounts, &b->currencies, &b->parts,
                          &b->offsets };

    for (size_t i = 0; i < OB_ARRAY_LEN(all); i++)
        free(ob_pgarr_end(all[i]));
    free(b->idx);
    free(b->ids);
}

/* Reads ledger_apply_events' rows into out[] and acts on them: records of parked events kept, refusals dead-lettered. */
static ob_cons_class_t
cons_results(PGconn *pg, PGresult *res, const batch_t *b, const ob_cons_record_t *recs, int dead_letter,
             ob_cons_outcome_t *out, char *state, char *err, size_t errlen)
{
    ob_cons_class_t c = OB_CONS_OK;

    if (PQntuples(res) != b->n) {
        snprintf(err, errlen, "ledger_apply_events returned %d rows for %d events", PQntuples(res), b->n);
        return OB_CONS_OTHER;
    }
    for (int k = 0; k < b->n && c == OB_CONS_OK; k++) {
        ob_cons_outcome_t *o = &out[b->idx[k]];
        o->code = atoi(PQgetvalue(res, k, 0));
        o->late = atoi(PQgetvalue(res, k, 3));
        if (o->code == 0)
            c = cons_park_record(pg, &recs[b->idx[k]], b->ids[k], state, err, errlen);
        if (o->code != -2)
            continue;
        ob_strlcpy(o->state, PQgetvalue(res, k, 1), sizeof(o->state));
        ob_cons_printable(PQgetvalue(res, k, 2), strlen(PQgetvalue(res, k, 2)), o->why, sizeof(o->why));
        if (dead_letter)
            c = ob_cons_dead_letter(pg, &recs[b->idx[k]], o->why, o->state, 0, err, errlen);
    }
    return c == OB_CONS_OK ? cons_keep_traces(pg, b, recs, out, state, err, errlen) : c;
}

/* The batch's valid events in one call of ledger_apply_events: one round trip, one transaction. */
static ob_cons_class_t
cons_apply_batch(PGconn *pg, batch_t *b, const ob_cons_record_t *recs, int dead_letter, ob_cons_outcome_t *out,
                 char *state, char *err, size_t errlen)
{
    /* one topic per call: the consumer reads one, a replay applies one record at a time */
    ob_pgarr_t     *cols[9] = { &b->events, &b->orders, &b->seqs, &b->types, &b->amounts, &b->currencies, NULL,
                                &b->parts, &b->offsets };
    char           *lit[9] = { NULL }, st[6];
    const char     *params[9];
    ob_cons_class_t c;

    for (int i = 0; i < 9; i++)
        params[i] = cols[i] != NULL ? (lit[i] = cons_literal(cols[i])) : recs[0].topic;
    PGresult *res = ob_pg_check(pg,
                                PQexecParams(pg,
                                             "SELECT code, state, message, late FROM ledger_apply_events("
                                             "$1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::numeric[],"
                                             " $6::text[], $7, $8::int[], $9::bigint[])",
                                             9, NULL, params, NULL, NULL, 0),
                                st, err, errlen);
    if (res == NULL) {
        if (state != NULL)
            memcpy(state, st, sizeof(st));
        c = cons_failed(pg, st);
    } else {
        c = cons_results(pg, res, b, recs, dead_letter, out, state, err, errlen);
        PQclear(res);
    }
    for (int i = 0; i < 9; i++)
        free(lit[i]);
    return c;
}

/*
 * An event of another aggregate type than orders (outboxd.emit's, on a
 * topic it shares with them): its aggregate-type header, once, says so.
 * Not the ledger's to book, nor a poison to dead-letter.
 */
static int
cons_other_aggregate(const ob_cons_record_t *r)
{
    const ob_cons_header_t *h = NULL;

    for (int i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, OB_HDR_AGGREGATE_TYPE) == 0) {
            if (h != NULL)
                return 0;    /* twice: not ours to judge; decoding refuses it if it is no order */
            h = &r->headers[i];
        }
    return h != NULL && h->value != NULL && !r->headers_dropped &&
           !(h->value_len == strlen(OB_AGGREGATE_ORDER) && memcmp(h->value, OB_AGGREGATE_ORDER, h->value_len) == 0);
}

ob_cons_class_t
ob_cons_apply(PGconn *pg, const ob_cons_trust_t *trust, const ob_cons_record_t *recs, int n, int dead_letter, ob_cons_outcome_t *out,
              char *state, char *err, size_t errlen)
{
    batch_t         b;
    ob_event_t      ev;
    ob_cons_class_t c = OB_CONS_OK;

    if (state != NULL)
        state[0] = '\0';
    memset(&b, 0, sizeof(b));
    b.idx = malloc(sizeof(*b.idx) * (size_t) (n > 0 ? n : 1));
    b.ids = malloc(sizeof(*b.ids) * (size_t) (n > 0 ? n : 1));
    if (b.idx == NULL || b.ids == NULL)
        abort();
    for (int i = 0; i < n && c == OB_CONS_OK; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        int trusted = ob_cons_verify(trust, &recs[i], out[i].why, sizeof(out[i].why)) == 0;
        if (trusted && cons_other_aggregate(&recs[i])) {
            out[i].code = -3;
            continue;
        }
        if (trusted &&
            ob_cons_decode(&recs[i], &ev, out[i].why, sizeof(out[i].why)) == 0) {
            out[i].occurred_ms = cons_occurred_ms(ev.occurred_at);
            batch_add(&b, i, &ev, &recs[i]);
            continue;
        }
        out[i].code = -2;
        if (dead_letter)
            c = ob_cons_dead_letter(pg, &recs[i], out[i].why, "", 0, err, errlen);
    }
    if (c == OB_CONS_OK && b.n > 0)
        c = cons_apply_batch(pg, &b, recs, dead_letter, out, state, err, errlen);
    batch_free(&b);
    return c;
}
