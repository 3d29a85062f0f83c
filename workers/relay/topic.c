/*
 * workers/relay/topic.c: make sure the topic exists with [kafka] partitions.
 *
 * Partition = murmur2(order id) mod P is computed at insert time and stored
 * in the outbox row, so a topic with a different count would silently send
 * an order's events somewhere consumers do not expect. That is a
 * configuration error (exit 2), not something to retry.
 */
#include "relay_int.h"
#include "../../common/util.h"

#include <stdio.h>
#include <string.h>

/* Partition count of topic from cluster metadata: >0, 0 = absent, -1 = error. */
static int
topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, char *err, size_t errlen)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t             e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    int                             n = 0;

    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "metadata request failed: %s", rd_kafka_err2str(e));
        return -1;
    }
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, topic) == 0 && md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            n = md->topics[i].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

static int
topic_create(rd_kafka_t *rk, const char *topic, int partitions, int timeout_ms, char *err, size_t errlen)
{
    rd_kafka_NewTopic_t     *nt = rd_kafka_NewTopic_new(topic, partitions, 1, err, errlen);
    rd_kafka_queue_t        *q;
    rd_kafka_event_t        *ev;
    const rd_kafka_topic_result_t **res;
    size_t                   cnt = 0;
    int                      rc = -1;

    if (nt == NULL)
        return -1;
    q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    ev = rd_kafka_queue_poll(q, timeout_ms);
    if (ev == NULL) {
        snprintf(err, errlen, "CreateTopics(%s) timed out", topic);
    } else if (rd_kafka_event_error(ev)) {
        snprintf(err, errlen, "CreateTopics(%s) failed: %s", topic, rd_kafka_event_error_string(ev));
    } else {
        res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        rd_kafka_resp_err_t e = cnt > 0 ? rd_kafka_topic_result_error(res[0]) : RD_KAFKA_RESP_ERR_NO_ERROR;
        /* another relay may have won the race: fine, the count is checked again */
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            rc = 0;
        else
            snprintf(err, errlen, "CreateTopics(%s) failed: %s", topic, rd_kafka_err2str(e));
    }
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    return rc;
}

int
ob_relay_check_topic(rd_kafka_t *rk, const char *topic, int partitions, char *err, size_t errlen)
{
    int n = topic_partitions(rk, topic, 5000, err, errlen);

    if (n < 0)
        return OB_EXIT_RETRY;
    if (n == 0) {
        if (topic_create(rk, topic, partitions, 10000, err, errlen) != 0)
            return OB_EXIT_RETRY;
        /* metadata can lag the creation briefly */
        for (int tries = 0; tries < 50 && (n = topic_partitions(rk, topic, 5000, err, errlen)) == 0; tries++)
            ob_sleep_ms(100);
        if (n <= 0) {
            if (n == 0)
                snprintf(err, errlen, "topic %s not visible after creating it", topic);
            return OB_EXIT_RETRY;
        }
    }
    if (n != partitions) {
        snprintf(err, errlen, "topic %s has %d partitions but [kafka] partitions = %d", topic, n, partitions);
        return OB_EXIT_FATAL;
    }
    return OB_EXIT_OK;
}
