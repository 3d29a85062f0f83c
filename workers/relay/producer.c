/*
 * workers/relay/producer.c: the relay's Kafka producer, and the one way
 * every relay mode produces an event.
 *
 * The delivery-report callback is the caller's: which engine a report
 * belongs to is told by its opaque, which only the loop above both engines
 * knows how to route, so nothing here calls into either of them.
 */
#include "relay_int.h"
#include "../../common/event.h"
#include "../../common/kprops.h"
#include "../../common/log.h"
#include "../../common/rsig.h"
#include "../../common/util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void
producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
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
producer_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void) rk;
    ob_log(level <= 3 ? OB_LOG_ERROR : level <= 4 ? OB_LOG_WARN : OB_LOG_DEBUG, "kafka %s: %s", fac, buf);
}

/* A compressed batch's size cannot be known before librdkafka builds it. */
static int
producer_compressed(const rd_kafka_conf_t *conf)
{
    char   codec[32];
    size_t n = sizeof(codec);

    return rd_kafka_conf_get(conf, "compression.codec", codec, &n) == RD_KAFKA_CONF_OK && strcmp(codec, "none") != 0;
}

rd_kafka_t *
ob_relay_producer_new(ob_relay_t *rl, ob_relay_dr_cb dr, char *err, size_t errlen)
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
        /* a broker that vanished without a FIN (host lost, cable cut) is noticed by TCP, not only by a timeout */
        { "socket.keepalive.enable", "true" },
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
    rl->compressed = producer_compressed(conf);
    rd_kafka_conf_set_opaque(conf, rl);
    rd_kafka_conf_set_dr_msg_cb(conf, dr);
    rd_kafka_conf_set_error_cb(conf, producer_error_cb);
    rd_kafka_conf_set_log_cb(conf, producer_log_cb);
    return rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);   /* takes conf */
}

int
ob_relay_field(char *dst, size_t dstlen, const char *src, size_t n)
{
    if (n >= dstlen || memchr(src, '\0', n) != NULL)
        return -1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

/* Names the relay sets itself (outboxd.headers_problem refuses them too): a second copy could mislead a reader. */
static int
producer_reserved(const char *name)
{
    static const char *const ours[] = { "id", "event-id", "event-type", "aggregate-type", "aggregate-id",
                                        "aggregate-seq", "content-type", OB_RSIG_HEADER };

    for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
        if (strcasecmp(name, ours[i]) == 0)
            return 1;
    return 0;
}

/*
 * The event's own headers (outboxd.emit's headers argument, a traceparent)
 * after ours: a JSON object of string values, under names outboxd does not
 * set, as the outbox's check constraint keeps it; checked again here for a
 * writer that got past the constraint. Anything else refuses the event: -1
 * with why.
 */
static int
producer_user_headers(rd_kafka_headers_t *hs, const ob_relay_body_t *b, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t      *obj, *v;
    const char  *k;
    int          rc = 0;

    if (b->headers == NULL)
        return 0;
    obj = json_loadb(b->headers, b->hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(obj)) {
        snprintf(why, whylen, "headers are not a JSON object: %s", obj ? "another JSON type" : jerr.text);
        json_decref(obj);
        return -1;
    }
    json_object_foreach(obj, k, v) {
        if (!json_is_string(v) || producer_reserved(k)) {
            snprintf(why, whylen, "header %.64s is %s", k, producer_reserved(k) ? "set by outboxd itself" : "not a string");
            rc = -1;
            break;
        }
        rd_kafka_header_add(hs, k, -1, json_string_value(v), (ssize_t) json_string_length(v));
    }
    json_decref(obj);
    return rc;
}

/*
 * Our headers, and with [kafka] signing_key their signature (common/rsig.h)
 * over the key, the value and the five covered ones; then aggregate-type
 * and the event's own. A new list per message, because librdkafka owns it
 * once a produce succeeds. NULL with why when the event's headers are bad.
 */
static rd_kafka_headers_t *
producer_headers(ob_relay_t *rl, const ob_relay_row_t *row, const ob_relay_body_t *b, const char *seq, char *why,
                 size_t whylen)
{
    const char         *ctype = row->content_type[0] ? row->content_type
                                                     : ob_event_content_type(strcmp(rl->cfg->kafka.format, "json") == 0);
    const char         *vals[OB_RSIG_NCOVERED] = { row->event_id, row->event_type, row->aggregate_id, seq, ctype };
    ob_rsig_hdr_t        covered[OB_RSIG_NCOVERED];
    rd_kafka_headers_t *hs = rd_kafka_headers_new(OB_RSIG_NCOVERED + 4);
    char                sig[OB_RSIG_VALUE_LEN + 1];

    for (int i = 0; i < OB_RSIG_NCOVERED; i++) {
        covered[i] = (ob_rsig_hdr_t) { ob_rsig_covered[i], vals[i], strlen(vals[i]) };
        rd_kafka_header_add(hs, ob_rsig_covered[i], -1, vals[i], -1);
    }
    if (rl->cfg->kafka.signing_key.len != 0) {
        if (ob_rsig_sign(&rl->cfg->kafka.signing_key, row->aggregate_id, strlen(row->aggregate_id), b->payload, b->len,
                        covered, sig) != 0)
            abort();    /* out of memory: the worker restarts, the row stays pending */
        rd_kafka_header_add(hs, OB_RSIG_HEADER, -1, sig, -1);
    }
    rd_kafka_header_add(hs, OB_HDR_AGGREGATE_TYPE, -1, row->aggregate_type, -1);
    /* Debezium's outbox router: key and value are ours already (StringConverter, BinaryDataConverter) */
    if (rl->cfg->kafka.compat == OB_COMPAT_DEBEZIUM)
        rd_kafka_header_add(hs, "id", -1, row->event_id, -1);
    if (producer_user_headers(hs, b, why, whylen) != 0) {
        rd_kafka_headers_destroy(hs);
        return NULL;
    }
    return hs;
}

void
ob_relay_read_limits(ob_relay_t *rl)
{
    char err[256];

    if (rl->compressed)
        return;
    if (ob_relay_topic_limits(rl->rk, rl->topics, rl->ntopics, rl->max_bytes, 5000, err, sizeof(err)) != 0 ||
        err[0] != '\0')
        ob_log(OB_LOG_WARN, "max.message.bytes not read (%s): a record too large for its topic is found only when"
                            " Kafka rejects it", err);
}

/* The record's size on the wire as Kafka will measure it. */
static size_t
producer_size(const ob_relay_row_t *row, const ob_relay_body_t *b, rd_kafka_headers_t *hs)
{
    size_t      nh = 0, bytes = 0, vlen;
    const char *name;
    const void *val;

    while (rd_kafka_header_get_all(hs, nh, &name, &val, &vlen) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        bytes += ob_relay_header_size(strlen(name), vlen);
        nh++;
    }
    return ob_relay_record_size(strlen(row->aggregate_id), b->len, nh, bytes);
}

/*
 * Kafka rejects a record larger than the topic's max.message.bytes, but
 * only once it arrives; by then a later event of the same partition may be
 * in another request, and would land first (DESIGN G5). Refused here, the
 * stream stops before the event and the polling cycle holds the rest of
 * the partition back. The limit is read again before refusing, so a limit
 * the operator raised lets the record through; with no answer, Kafka
 * decides. 1 with why when refused.
 */
static int
producer_too_large(ob_relay_t *rl, ob_relay_row_t *row, const ob_relay_body_t *b, rd_kafka_headers_t *hs)
{
    int64_t lim = rl->max_bytes[row->topic];
    size_t  size;
    char    err[256];

    if (rl->compressed || lim <= 0 || (size = producer_size(row, b, hs)) <= (size_t) lim)
        return 0;
    if (ob_relay_topic_limits(rl->rk, &rl->topics[row->topic], 1, &lim, 3000, err, sizeof(err)) != 0 || lim <= 0)
        return 0;
    rl->max_bytes[row->topic] = lim;
    if (size <= (size_t) lim)
        return 0;
    snprintf(row->error, sizeof(row->error), "MSG_SIZE_TOO_LARGE: a record of %zu bytes, topic %s allows %lld"
             " (max.message.bytes)", size, rl->topics[row->topic], (long long) lim);
    return 1;
}

/*
 * Produces one event exactly as every relay mode must: the aggregate's
 * partition, its id as key, the payload as value, the same headers.
 * Waits (polling delivery reports) while the local queue is full. An event
 * whose headers are malformed is refused as an invalid argument, one too
 * large for its topic as such (both rejected: quarantined), with why.
 */
/* The index in rl->topics of the topic [routes] send type to; -1 when strict routes name none. */
static int
producer_route(const ob_relay_t *rl, const char *type)
{
    const char *topic = ob_cfg_topic_for(rl->cfg, type);

    for (int t = 0; topic != NULL && t < rl->ntopics; t++)
        if (strcmp(rl->topics[t], topic) == 0)
            return t;
    return -1;
}

rd_kafka_resp_err_t
ob_relay_produce(ob_relay_t *rl, ob_relay_row_t *row, const ob_relay_body_t *b, void *opaque)
{
    char                seq[16], why[160];
    rd_kafka_resp_err_t e;
    rd_kafka_headers_t *hs;

    if ((row->topic = producer_route(rl, row->aggregate_type)) < 0) {
        /* written past outboxd.emit's check, or before a reload removed its route: kept, not sent anywhere */
        snprintf(row->error, sizeof(row->error), "aggregate type %s has no route and [kafka] strict_routes is on",
                 row->aggregate_type);
        ob_log(OB_LOG_ERROR, "event %s (%s %s seq %d) refused: %s", row->event_id, row->aggregate_type,
               row->aggregate_id, row->seq, row->error);
        return RD_KAFKA_RESP_ERR__INVALID_ARG;
    }
    snprintf(seq, sizeof(seq), "%d", row->seq);
    if ((hs = producer_headers(rl, row, b, seq, why, sizeof(why))) == NULL) {
        ob_log(OB_LOG_ERROR, "event %s (%s %s seq %d) refused: %s", row->event_id, row->aggregate_type,
               row->aggregate_id, row->seq, why);
        ob_strlcpy(row->error, why, sizeof(row->error));
        return RD_KAFKA_RESP_ERR__INVALID_ARG;
    }
    if (producer_too_large(rl, row, b, hs)) {
        ob_log(OB_LOG_ERROR, "event %s (%s %s seq %d) refused: %s", row->event_id, row->aggregate_type,
               row->aggregate_id, row->seq, row->error);
        rd_kafka_headers_destroy(hs);
        return RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
    }
    for (;;) {
        e = rd_kafka_producev(
            rl->rk, RD_KAFKA_V_TOPIC(rl->topics[row->topic]), RD_KAFKA_V_PARTITION(row->partition),
            RD_KAFKA_V_KEY(row->aggregate_id, strlen(row->aggregate_id)), RD_KAFKA_V_VALUE((void *) b->payload, b->len),
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
