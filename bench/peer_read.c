/*
 * bench/peer_read.c: a peer's records read back from Kafka, each checked
 * against its outbox row, and commit -> Kafka from the two.
 *
 * A comparison with outboxd means something only if the peer sends what
 * outboxd sends, so every record read is compared with what outboxd's
 * relay would have produced from the same row: key = aggregate_id, value
 * = payload, partition = the partition column, and the headers event-id,
 * event-type, aggregate-id, aggregate-seq, content-type and aggregate-type
 * (workers/relay/producer.c). Headers the peer adds on top are listed.
 *
 * "Kafka" is the record's timestamp in a topic created with
 * message.timestamp.type=LogAppendTime: when the broker appended it, on
 * this machine's clock, like the databases' now(). outboxd's published_at
 * is later than its append (the acknowledgement's round trip and the mark
 * transaction's start), so the peer's figures are not made worse by it.
 */
#include "bench/obbench.h"
#include "common/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEER_READ_TIMEOUT_S 60.0

/* The headers outboxd's relay sets on every event, in this order below. */
static const char *const peer_hdr_names[] = { "event-id",      "event-type",   "aggregate-id",
                                              "aggregate-seq", "content-type", "aggregate-type" };
#define PEER_NHDR ((int) (sizeof(peer_hdr_names) / sizeof(peer_hdr_names[0])))
enum { HDR_EVENT_ID, HDR_EVENT_TYPE, HDR_AGG_ID, HDR_AGG_SEQ, HDR_CONTENT_TYPE, HDR_AGG_TYPE };

typedef struct {
    char  *key, *val, *hdr[PEER_NHDR];    /* hdr: NULL when absent or without a value */
    size_t klen, vlen;
    int    hcount[PEER_NHDR];             /* each must come exactly once */
    int    partition;
    double ts_ms;
} peer_msg_t;

typedef struct {
    peer_msg_t *msgs;
    size_t      n, cap;
    json_t     *extra;                    /* names of headers outboxd does not send, as a set */
    int         tstype;
} peer_read_t;

static char *
peer_dup(const void *p, size_t n)
{
    char *s = malloc(n + 1);

    if (s == NULL)
        bench_die("peer-read: out of memory");
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void
peer_headers(peer_read_t *pr, peer_msg_t *m, const rd_kafka_message_t *km)
{
    rd_kafka_headers_t *hs;
    const char         *name;
    const void         *val;
    size_t              size;

    if (rd_kafka_message_headers(km, &hs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    for (size_t i = 0; rd_kafka_header_get_all(hs, i, &name, &val, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
        int k = 0;
        while (k < PEER_NHDR && strcmp(name, peer_hdr_names[k]) != 0)
            k++;
        if (k == PEER_NHDR) {
            json_object_set_new(pr->extra, name, json_true());
            continue;
        }
        m->hcount[k]++;
        if (m->hdr[k] == NULL && val != NULL)
            m->hdr[k] = peer_dup(val, size);
    }
}

static void
peer_keep(peer_read_t *pr, const rd_kafka_message_t *km)
{
    rd_kafka_timestamp_type_t tstype;

    if (pr->n == pr->cap) {
        pr->cap = pr->cap ? pr->cap * 2 : 4096;
        pr->msgs = realloc(pr->msgs, pr->cap * sizeof(*pr->msgs));
        if (pr->msgs == NULL)
            bench_die("peer-read: out of memory");
    }
    peer_msg_t *m = &pr->msgs[pr->n++];
    memset(m, 0, sizeof(*m));
    m->key = peer_dup(km->key ? km->key : "", km->key ? km->key_len : 0);
    m->klen = km->key ? km->key_len : 0;
    m->val = peer_dup(km->payload ? km->payload : "", km->payload ? km->len : 0);
    m->vlen = km->payload ? km->len : 0;
    m->partition = (int) km->partition;
    m->ts_ms = (double) rd_kafka_message_timestamp(km, &tstype);
    pr->tstype = (int) tstype;
    peer_headers(pr, m, km);
}

static rd_kafka_t *
peer_consumer(const char *brokers)
{
    char             err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char      *kv[][2] = {
        { "bootstrap.servers", brokers },
        { "group.id", "outboxd-bench-peer-read" },    /* assign() only: no group joins, nothing committed */
        { "enable.auto.commit", "false" },
        { "client.id", "outboxd-bench" },
    };

    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof(err)) != RD_KAFKA_CONF_OK)
            bench_die("peer-read %s: %s", kv[i][0], err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (rk == NULL)
        bench_die("peer-read: %s", err);
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/*
 * Reads the first `per` records of each partition (all when per is 0),
 * from the low watermark up to the high one as it was on arrival.
 */
static void
peer_consume(peer_read_t *pr, const char *brokers, const char *topic, int partitions, long per)
{
    rd_kafka_t                      *rk = peer_consumer(brokers);
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(partitions);
    int64_t                         *lo = calloc((size_t) partitions, sizeof(*lo)), *want = calloc((size_t) partitions, sizeof(*want));
    long long                        left = 0;

    for (int p = 0; p < partitions; p++) {
        int64_t hi;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo[p], &hi, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
            bench_die("peer-read: no watermarks for %s/%d", topic, p);
        want[p] = per > 0 && hi - lo[p] > per ? per : hi - lo[p];
        left += want[p];
        rd_kafka_topic_partition_list_add(tp, topic, p)->offset = lo[p];
    }
    if (rd_kafka_assign(rk, tp) != RD_KAFKA_RESP_ERR_NO_ERROR)
        bench_die("peer-read: cannot assign %s", topic);
    double deadline = bench_now() + PEER_READ_TIMEOUT_S;
    while (left > 0 && bench_now() < deadline) {
        rd_kafka_message_t *km = rd_kafka_consumer_poll(rk, 500);
        if (km == NULL)
            continue;
        if (km->err == RD_KAFKA_RESP_ERR_NO_ERROR && km->offset - lo[km->partition] < want[km->partition]) {
            peer_keep(pr, km);
            left--;
        }
        rd_kafka_message_destroy(km);
    }
    if (left > 0)
        bench_note("peer-read: %lld records of %s not read within %.0f s", left, topic, PEER_READ_TIMEOUT_S);
    rd_kafka_topic_partition_list_destroy(tp);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(lo);
    free(want);
}

static int
peer_cmp_msg(const void *a, const void *b)
{
    const char *x = ((const peer_msg_t *) a)->hdr[HDR_EVENT_ID], *y = ((const peer_msg_t *) b)->hdr[HDR_EVENT_ID];

    return strcmp(x ? x : "", y ? y : "");
}

/* Columns of peer_rows, binary, so the payload comes as its bytes (the others are text anyway). */
enum { ROW_EVENT_ID, ROW_CREATED_MS, ROW_AGG_TYPE, ROW_AGG_ID, ROW_SEQ, ROW_EVENT_TYPE, ROW_PARTITION, ROW_PAYLOAD,
       ROW_CONTENT_TYPE };

/* The outbox rows of the records read, in event id order (uuid order = the canonical text's order). */
static PGresult *
peer_rows(PGconn *pg, const peer_read_t *pr)
{
    size_t      cap = pr->n * 40 + 3, used = 1;
    char       *ids = malloc(cap);
    const char *params[1] = { ids };

    if (ids == NULL)
        bench_die("peer-read: out of memory");
    ids[0] = '{';
    for (size_t i = 0; i < pr->n; i++) {
        const char *id = pr->msgs[i].hdr[HDR_EVENT_ID];
        if (id != NULL && strlen(id) == 36)    /* anything else matches no row and is counted unknown */
            used += (size_t) snprintf(ids + used, cap - used, "%s%s", used > 1 ? "," : "", id);
    }
    snprintf(ids + used, cap - used, "}");
    PGresult *r = PQexecParams(pg,
                               "SELECT event_id::text, ((extract(epoch FROM created_at) * 1000)::float8)::text,"
                               " aggregate_type, aggregate_id, seq::text, event_type, partition::text, payload,"
                               " content_type FROM outboxd.outbox WHERE event_id = ANY($1::uuid[]) ORDER BY event_id",
                               1, NULL, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        bench_die("peer-read: %s", PQresultErrorMessage(r));
    free(ids);
    return r;
}

static int
peer_field(char *why, size_t whylen, const char *what, const char *got, size_t glen, const char *want, size_t wlen)
{
    if (got != NULL && glen == wlen && memcmp(got, want, wlen) == 0)
        return 0;
    snprintf(why, whylen, "%s is %.*s, outboxd sends %.*s", what, got ? (int) (glen > 80 ? 80 : glen) : 6,
             got ? got : "absent", (int) (wlen > 80 ? 80 : wlen), want);
    return 1;
}

/* 0 when record m is what outboxd would send for row i; else 1 with why. */
static int
peer_compare(const peer_msg_t *m, PGresult *r, int i, char *why, size_t whylen)
{
    /* NULL: outboxd's own encoding, [kafka] format's type; the bench runs outboxd with the default format */
    const char *ctype = PQgetisnull(r, i, ROW_CONTENT_TYPE) ? ob_event_content_type(0) : PQgetvalue(r, i, ROW_CONTENT_TYPE);
    const char *want[PEER_NHDR] = { PQgetvalue(r, i, ROW_EVENT_ID), PQgetvalue(r, i, ROW_EVENT_TYPE),
                                    PQgetvalue(r, i, ROW_AGG_ID),   PQgetvalue(r, i, ROW_SEQ),
                                    ctype,                          PQgetvalue(r, i, ROW_AGG_TYPE) };
    char        what[64];

    if (m->partition != atoi(PQgetvalue(r, i, ROW_PARTITION))) {
        snprintf(why, whylen, "partition is %d, outboxd sends %s", m->partition, PQgetvalue(r, i, ROW_PARTITION));
        return 1;
    }
    if (peer_field(why, whylen, "the key", m->key, m->klen, want[HDR_AGG_ID], strlen(want[HDR_AGG_ID])))
        return 1;
    if (m->vlen != (size_t) PQgetlength(r, i, ROW_PAYLOAD) || memcmp(m->val, PQgetvalue(r, i, ROW_PAYLOAD), m->vlen)) {
        snprintf(why, whylen, "the value (%zu bytes) is not the payload column's %d bytes", m->vlen,
                 PQgetlength(r, i, ROW_PAYLOAD));
        return 1;
    }
    for (int k = 0; k < PEER_NHDR; k++) {
        snprintf(what, sizeof(what), "header %s", peer_hdr_names[k]);
        if (m->hcount[k] > 1) {
            snprintf(why, whylen, "header %s comes %d times", peer_hdr_names[k], m->hcount[k]);
            return 1;
        }
        if (peer_field(why, whylen, what, m->hdr[k], m->hdr[k] ? strlen(m->hdr[k]) : 0, want[k], strlen(want[k])))
            return 1;
    }
    return 0;
}

typedef struct {
    long    matched, alike, duplicates, unknown, mismatched;
    char    first_mismatch[320];
    double *lat;          /* commit -> Kafka of each matched record */
} peer_tally_t;

static void
peer_mismatch(peer_tally_t *t, const peer_msg_t *m, const char *why)
{
    if (t->mismatched++ == 0)
        snprintf(t->first_mismatch, sizeof(t->first_mismatch), "event %s: %s",
                 m->hdr[HDR_EVENT_ID] ? m->hdr[HDR_EVENT_ID] : "(no event-id)", why);
}

/* One merge pass over the records and the rows, both in event id order. */
static void
peer_match(peer_read_t *pr, PGresult *r, peer_tally_t *t)
{
    int  nr = PQntuples(r), i = 0;
    char why[256];

    qsort(pr->msgs, pr->n, sizeof(*pr->msgs), peer_cmp_msg);
    t->lat = malloc((pr->n + 1) * sizeof(*t->lat));
    if (t->lat == NULL)
        bench_die("peer-read: out of memory");
    for (size_t k = 0; k < pr->n; k++) {
        const peer_msg_t *m = &pr->msgs[k];
        const char       *id = m->hdr[HDR_EVENT_ID] ? m->hdr[HDR_EVENT_ID] : "";
        if (k > 0 && peer_cmp_msg(m, m - 1) == 0 && id[0]) {
            t->duplicates++;          /* a re-send: the first copy counts */
            continue;
        }
        while (i < nr && strcmp(PQgetvalue(r, i, ROW_EVENT_ID), id) < 0)
            i++;
        if (i == nr || strcmp(PQgetvalue(r, i, ROW_EVENT_ID), id) != 0) {
            t->unknown++;
            peer_mismatch(t, m, "no outbox row has this event id");
            continue;
        }
        if (peer_compare(m, r, i, why, sizeof(why)) != 0)
            peer_mismatch(t, m, why);
        else
            t->alike++;
        t->lat[t->matched++] = m->ts_ms - atof(PQgetvalue(r, i, ROW_CREATED_MS));
    }
}

/* Waits until the topic holds as many records as the outbox has rows; returns the row count. */
static long long
peer_settle(PGconn *pg, const char *brokers, const char *topic, int partitions, double timeout)
{
    rd_kafka_t *rk = bench_producer(brokers, 0, NULL);
    long long   rows = bench_scalar(pg, "SELECT count(*) FROM outboxd.outbox");
    double      deadline = bench_now() + timeout;

    while (bench_topic_messages(rk, topic, partitions, NULL) < rows && bench_now() < deadline)
        bench_sleep(0.1);
    rd_kafka_destroy(rk);
    return rows;
}

static const char *
peer_tstype(int t)
{
    return t == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? "LogAppendTime"
           : t == RD_KAFKA_TIMESTAMP_CREATE_TIME   ? "CreateTime"
                                                   : "none";
}

static json_t *
peer_result(const peer_read_t *pr, const peer_tally_t *t)
{
    json_t     *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "read", (json_int_t) pr->n, "matched",
                                (json_int_t) t->matched, "alike", (json_int_t) t->alike, "duplicates", (json_int_t) t->duplicates, "unknown",
                                (json_int_t) t->unknown, "mismatched", (json_int_t) t->mismatched, "timestamp_type",
                                peer_tstype(pr->tstype));
    json_t     *names = json_array(), *v;
    const char *k;

    json_object_set_new(out, "first_mismatch", t->first_mismatch[0] ? json_string(t->first_mismatch) : json_null());
    json_object_foreach(pr->extra, k, v) {
        (void) v;
        json_array_append_new(names, json_string(k));
    }
    json_object_set_new(out, "extra_headers", names);
    return out;
}

/*
 * peer-read --dsn D --brokers B --topic T --partitions P [--per-partition K] [--settle-timeout S]
 * With --per-partition, a sample: the first K records of each partition,
 * checked only. Without, every record, checked, and commit -> Kafka as
 * `latency` reports it (kafka_ms, with the rows not in Kafka as pending),
 * after waiting up to S seconds for the topic to catch up with the outbox.
 */
int
cmd_peer_read(int argc, char **argv)
{
    PGconn      *pg = bench_pg(bench_opt_req(argc, argv, "--dsn"));
    const char  *brokers = bench_opt_req(argc, argv, "--brokers"), *topic = bench_opt_req(argc, argv, "--topic");
    int          partitions = (int) bench_opt_long(argc, argv, "--partitions", 12);
    long         per = bench_opt_long(argc, argv, "--per-partition", 0);
    peer_read_t  pr = { .extra = json_object() };
    peer_tally_t t = { 0 };
    long long    rows = 0;

    if (per == 0)
        rows = peer_settle(pg, brokers, topic, partitions, bench_opt_double(argc, argv, "--settle-timeout", 60));
    peer_consume(&pr, brokers, topic, partitions, per);
    PGresult *r = peer_rows(pg, &pr);
    peer_match(&pr, r, &t);
    json_t *out = peer_result(&pr, &t);
    if (per == 0) {
        json_t *lat = bench_pct_json(t.lat, (size_t) t.matched);
        json_object_set_new(lat, "pending", json_integer((json_int_t) (rows - t.matched)));
        json_object_set_new(out, "kafka_ms", lat);
    }
    bench_note("peer-read: %zu records of %s, %ld as outboxd sends them, %ld not (%s)", pr.n, topic, t.alike,
               t.mismatched, t.first_mismatch[0] ? t.first_mismatch : "first: none");
    bench_emit(out);
    PQclear(r);
    for (size_t i = 0; i < pr.n; i++) {
        free(pr.msgs[i].key);
        free(pr.msgs[i].val);
        for (int k = 0; k < PEER_NHDR; k++)
            free(pr.msgs[i].hdr[k]);
    }
    free(pr.msgs);
    free(t.lat);
    json_decref(pr.extra);
    PQfinish(pg);
    return 0;
}
