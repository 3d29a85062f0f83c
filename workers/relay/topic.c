/*
 * workers/relay/topic.c: make sure the topic exists with [kafka] partitions.
 *
 * Partition = murmur2(order id) mod P is computed at insert time and stored
 * in the outbox row, so a topic with a different count would silently send
 * an order's events somewhere consumers do not expect. That is a
 * configuration error (exit 2), not something to retry. A topic the relay
 * creates takes the cluster's default.replication.factor (and its
 * min.insync.replicas): on three brokers that is what an operator set for
 * durability, where a fixed 1 would leave every event on one disk.
 */
#include "relay_int.h"
#include "../../common/util.h"

#include <stdio.h>
#include <stdlib.h>
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
    rd_kafka_NewTopic_t     *nt = rd_kafka_NewTopic_new(topic, partitions, -1, err, errlen);
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

/* The value of max.message.bytes among a topic's configs; 0 when absent or not a number. */
static int64_t
topic_limit_of(const rd_kafka_ConfigResource_t *res)
{
    size_t                           n = 0;
    const rd_kafka_ConfigEntry_t   **ents = rd_kafka_ConfigResource_configs(res, &n);
    const char                      *v;
    char                            *end;
    long long                        lim;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(rd_kafka_ConfigEntry_name(ents[i]), "max.message.bytes") != 0 ||
            (v = rd_kafka_ConfigEntry_value(ents[i])) == NULL)
            continue;
        lim = strtoll(v, &end, 10);
        return *end == '\0' && lim > 0 ? (int64_t) lim : 0;
    }
    return 0;
}

int
ob_relay_topic_limits(rd_kafka_t *rk, const char *const *topics, int n, int64_t *limits, int timeout_ms, char *err,
                      size_t errlen)
{
    rd_kafka_ConfigResource_t       *res[OB_TOPICS_MAX + 1];
    const rd_kafka_ConfigResource_t **got;
    rd_kafka_queue_t                *q = rd_kafka_queue_new(rk);
    rd_kafka_event_t                *ev;
    size_t                           cnt = 0;
    int                              rc = -1;

    err[0] = '\0';
    for (int t = 0; t < n; t++) {
        limits[t] = 0;
        res[t] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topics[t]);
    }
    rd_kafka_DescribeConfigs(rk, res, (size_t) n, NULL, q);
    ev = rd_kafka_queue_poll(q, timeout_ms);
    if (ev == NULL) {
        snprintf(err, errlen, "DescribeConfigs timed out");
    } else if (rd_kafka_event_error(ev)) {
        snprintf(err, errlen, "DescribeConfigs failed: %s", rd_kafka_event_error_string(ev));
    } else {
        got = rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &cnt);
        for (size_t i = 0; i < cnt; i++)
            for (int t = 0; t < n; t++) {
                if (strcmp(rd_kafka_ConfigResource_name(got[i]), topics[t]) != 0)
                    continue;
                if (rd_kafka_ConfigResource_error(got[i]) != RD_KAFKA_RESP_ERR_NO_ERROR)
                    snprintf(err, errlen, "%s: %s", topics[t], rd_kafka_ConfigResource_error_string(got[i]));
                else
                    limits[t] = topic_limit_of(got[i]);
            }
        rc = 0;
    }
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    for (int t = 0; t < n; t++)
        rd_kafka_ConfigResource_destroy(res[t]);
    return rc;
}
