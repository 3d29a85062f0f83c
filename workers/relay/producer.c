/*
 * workers/relay/producer.c: the relay's Kafka producer, and the one way
 * every relay mode produces an event.
 *
 * The delivery-report callback is the caller's: which engine a report
 * belongs to is told by its opaque, which only the loop above both engines
 * knows how to route, so nothing here calls into either of them.
 */
#include "relay_int.h"
#include "../../common/kprops.h"
#include "../../common/log.h"
#include "../../common/rsig.h"
#include "../../common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    rd_kafka_conf_set_opaque(conf, rl);
    rd_kafka_conf_set_dr_msg_cb(conf, dr);
    rd_kafka_conf_set_error_cb(conf, producer_error_cb);
    rd_kafka_conf_set_log_cb(conf, producer_log_cb);
    return rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);   /* takes conf */
}

/*
 * Our headers, and with [kafka] signing_key their signature (common/rsig.h)
 * over the key, the value and the five others; a new list per message,
 * because librdkafka owns it once a produce succeeds.
 */
static rd_kafka_headers_t *
producer_headers(ob_relay_t *rl, const ob_relay_row_t *row, const void *payload, size_t len, const char *seq)
{
    const char         *ctype = strcmp(rl->cfg->kafka.format, "json") == 0 ? "application/json" : "application/msgpack";
    const char         *vals[OB_RSIG_NCOVERED] = { row->event_id, row->event_type, row->aggregate_id, seq, ctype };
    ob_rsig_hdr_t        covered[OB_RSIG_NCOVERED];
    rd_kafka_headers_t *hs = rd_kafka_headers_new(OB_RSIG_NCOVERED + 1);
    char                sig[OB_RSIG_VALUE_LEN + 1];

    for (int i = 0; i < OB_RSIG_NCOVERED; i++) {
        covered[i] = (ob_rsig_hdr_t) { ob_rsig_covered[i], vals[i], strlen(vals[i]) };
        rd_kafka_header_add(hs, ob_rsig_covered[i], -1, vals[i], -1);
    }
    if (rl->cfg->kafka.signing_key.len == 0)
        return hs;
    if (ob_rsig_sign(&rl->cfg->kafka.signing_key, row->aggregate_id, strlen(row->aggregate_id), payload, len, covered,
                    sig) != 0)
        abort();    /* out of memory: the worker restarts, the row stays pending */
    rd_kafka_header_add(hs, OB_RSIG_HEADER, -1, sig, -1);
    return hs;
}

/*
 * Produces one event exactly as every relay mode must: the order's
 * partition, its id as key, the payload as value, the same headers.
 * Waits (polling delivery reports) while the local queue is full.
 */
rd_kafka_resp_err_t
ob_relay_produce(ob_relay_t *rl, const ob_relay_row_t *row, const void *payload, size_t len, void *opaque)
{
    char                seq[16];
    rd_kafka_resp_err_t e;
    rd_kafka_headers_t *hs;

    snprintf(seq, sizeof(seq), "%d", row->seq);
    hs = producer_headers(rl, row, payload, len, seq);
    for (;;) {
        e = rd_kafka_producev(
            rl->rk, RD_KAFKA_V_TOPIC(rl->cfg->kafka.topic), RD_KAFKA_V_PARTITION(row->partition),
            RD_KAFKA_V_KEY(row->aggregate_id, strlen(row->aggregate_id)), RD_KAFKA_V_VALUE((void *) payload, len),
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
