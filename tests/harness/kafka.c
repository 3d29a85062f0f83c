/*
 * tests/harness/kafka.c: the test's topic on the stack's broker: created,
 * grown, reconfigured and deleted with the admin API, written to and read
 * back whole; and the broker's pid, for tests that stop or kill it.
 */
#include "tests/harness.h"
#include "tests/harness/harness_int.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *
obh_brokers(void)
{
    const char *b = getenv("OB_TEST_BROKERS");

    return b != NULL && b[0] != '\0' ? b : "127.0.0.1:59092";
}

static rd_kafka_t *
obh_kafka_admin(void)
{
    char             err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cr_assert_not_null(rk, "%s", err);
    return rk;
}

/* The names to drop: the test's topic and every "<topic>-..." of its
 * routes, which tests name after it; tags are unique, so nothing else matches. */
static int
drop_names(rd_kafka_t *rk, const obh_t *h, char (*names)[256], int max)
{
    const struct rd_kafka_metadata *md = NULL;
    size_t                          len = strlen(h->topic);
    int                             n = 0;

    if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "harness: no topic list from Kafka: dropping %s only, its routed topics stay\n", h->topic);
        md = NULL;
    }
    for (int i = 0; md != NULL && i < md->topic_cnt && n < max; i++) {
        const char *t = md->topics[i].topic;
        if (strcmp(t, h->topic) == 0 || (strncmp(t, h->topic, len) == 0 && t[len] == '-'))
            snprintf(names[n++], sizeof(names[0]), "%s", t);
    }
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    if (n == 0)
        snprintf(names[n++], sizeof(names[0]), "%s", h->topic);
    return n;
}

void
obh_kafka_drop_topic(obh_t *h)
{
    char                    err[256], names[32][256];
    rd_kafka_DeleteTopic_t *dt[32];
    rd_kafka_conf_t        *conf = rd_kafka_conf_new();

    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL)
        return;
    int n = drop_names(rk, h, names, 32);
    for (int i = 0; i < n; i++)
        dt[i] = rd_kafka_DeleteTopic_new(names[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopics(rk, dt, (size_t) n, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_DeleteTopic_destroy_array(dt, (size_t) n);
    rd_kafka_destroy(rk);
}

void
obh_kafka_create_topic(obh_t *h, int max_message_bytes)
{
    char                 err[256], mmb[16];
    rd_kafka_t          *rk = obh_kafka_admin();
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(h->topic, h->partitions, -1, err, sizeof(err));   /* the brokers' default */
    rd_kafka_queue_t    *q = rd_kafka_queue_new(rk);

    if (max_message_bytes > 0) {
        snprintf(mmb, sizeof(mmb), "%d", max_message_bytes);
        rd_kafka_NewTopic_set_config(nt, "max.message.bytes", mmb);
    }
    rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    cr_assert_not_null(ev, "CreateTopics timed out");
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t                                cnt;
    const rd_kafka_topic_result_t       **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
    cr_assert(cnt == 1 && rd_kafka_topic_result_error(tr[0]) == 0, "CreateTopics: %s",
              cnt ? rd_kafka_topic_result_error_string(tr[0]) : "no result");
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_destroy(rk);
}

void
obh_kafka_grow_topic(obh_t *h, int partitions)
{
    char                     err[256];
    rd_kafka_t              *rk = obh_kafka_admin();
    rd_kafka_NewPartitions_t *np = rd_kafka_NewPartitions_new(h->topic, (size_t) partitions, err, sizeof(err));
    rd_kafka_queue_t        *q = rd_kafka_queue_new(rk);

    cr_assert_not_null(np, "NewPartitions: %s", err);
    rd_kafka_CreatePartitions(rk, &np, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    cr_assert_not_null(ev, "CreatePartitions timed out");
    size_t                          cnt;
    const rd_kafka_topic_result_t **tr =
        rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(ev), &cnt);
    cr_assert(cnt == 1 && rd_kafka_topic_result_error(tr[0]) == 0, "CreatePartitions: %s",
              cnt ? rd_kafka_topic_result_error_string(tr[0]) : "no result");
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewPartitions_destroy(np);
    rd_kafka_destroy(rk);
    h->partitions = partitions;
}

/* One AlterConfigs round; the resource's own error (the request's is asserted). */
static rd_kafka_resp_err_t
kafka_alter_max_bytes(rd_kafka_t *rk, const char *topic, const char *v, char *why, size_t whylen)
{
    rd_kafka_ConfigResource_t *cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_queue_t          *q = rd_kafka_queue_new(rk);
    rd_kafka_resp_err_t        e;
    size_t                     n = 0;

    rd_kafka_ConfigResource_set_config(cr, "max.message.bytes", v);
    rd_kafka_AlterConfigs(rk, &cr, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    cr_assert_not_null(ev, "AlterConfigs timed out");
    cr_assert_eq(rd_kafka_event_error(ev), 0, "AlterConfigs: %s", rd_kafka_event_error_string(ev));
    const rd_kafka_ConfigResource_t **res =
        rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &n);
    cr_assert_eq(n, 1, "AlterConfigs: %zu results", n);
    e = rd_kafka_ConfigResource_error(res[0]);
    snprintf(why, whylen, "%s", rd_kafka_ConfigResource_error_string(res[0]) ? rd_kafka_ConfigResource_error_string(res[0])
                                                                             : rd_kafka_err2str(e));
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_ConfigResource_destroy(cr);
    return e;
}

/* The topic's max.message.bytes as the broker reports it; -1 when it does not answer. */
static int
kafka_max_bytes(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_ConfigResource_t *cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_queue_t          *q = rd_kafka_queue_new(rk);
    size_t                     n = 0, ne = 0;
    int                        v = -1;

    rd_kafka_DescribeConfigs(rk, &cr, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    if (ev != NULL && rd_kafka_event_error(ev) == 0) {
        const rd_kafka_ConfigResource_t **res =
            rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &n);
        const rd_kafka_ConfigEntry_t **ents = n == 1 ? rd_kafka_ConfigResource_configs(res[0], &ne) : NULL;
        for (size_t i = 0; i < ne; i++)
            if (strcmp(rd_kafka_ConfigEntry_name(ents[i]), "max.message.bytes") == 0 && rd_kafka_ConfigEntry_value(ents[i]))
                v = atoi(rd_kafka_ConfigEntry_value(ents[i]));
    }
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_ConfigResource_destroy(cr);
    return v;
}

/*
 * The relay creates the topic after its slot is up, so the topic may not
 * exist yet: the resource's error said so, and was once ignored, leaving
 * the limit unset and s13's poison event published instead of quarantined.
 */
void
obh_kafka_set_max_message_bytes(obh_t *h, int bytes)
{
    char                v[16], why[512];
    rd_kafka_t         *rk = obh_kafka_admin();
    rd_kafka_resp_err_t e;
    int64_t             until = ob_now_ms() + 15000;

    snprintf(v, sizeof(v), "%d", bytes);
    while ((e = kafka_alter_max_bytes(rk, h->topic, v, why, sizeof(why))) ==
               RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && ob_now_ms() < until)
        ob_sleep_ms(100);
    cr_assert_eq(e, 0, "AlterConfigs %s max.message.bytes: %s", h->topic, why);
    /* the broker applies it once it replays the record: a test that relies on the limit waits for it */
    while (kafka_max_bytes(rk, h->topic) != bytes) {
        cr_assert_lt(ob_now_ms(), until, "max.message.bytes of %s never became %d", h->topic, bytes);
        ob_sleep_ms(50);
    }
    rd_kafka_destroy(rk);
}

void
obh_header(const rd_kafka_message_t *m, const char *name, char *out, size_t outlen)
{
    rd_kafka_headers_t *hdrs;
    const void         *v;
    size_t              len;

    out[0] = '\0';
    if (rd_kafka_message_headers(m, &hdrs) == 0 && rd_kafka_header_get_last(hdrs, name, &v, &len) == 0) {
        if (len >= outlen)
            len = outlen - 1;
        memcpy(out, v, len);
        out[len] = '\0';
    }
}

int
obh_kafka_each(obh_t *h, const char *topic, int partitions, int want, int timeout_ms,
               void (*each)(const rd_kafka_message_t *m, void *arg), void *arg)
{
    char             err[256], group[160];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int64_t          deadline = ob_now_ms() + timeout_ms;
    int              got = 0, eof = 0;
    char            *at_end = calloc((size_t) partitions + 1, 1);    /* partition p read to its end since its last record */

    cr_assert_not_null(at_end);
    snprintf(group, sizeof(group), "%s-%s", h->tag, topic);
    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(tp, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(c, tp), 0);
    rd_kafka_topic_partition_list_destroy(tp);
    while (ob_now_ms() < deadline && !(got >= want && eof >= partitions)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m == NULL)
            continue;
        /*
         * librdkafka reports a partition's end each time it reaches it, so
         * only the partitions that got records report it again: counting
         * ends anew after every record waited out the whole timeout.
         */
        int p = m->partition >= 0 && m->partition < partitions ? m->partition : -1;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && p >= 0 && !at_end[p]) {
            at_end[p] = 1;
            eof++;
        } else if (m->err == 0) {
            each(m, arg);
            got++;
            if (p >= 0 && at_end[p]) {
                at_end[p] = 0;
                eof--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    free(at_end);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return got;
}

typedef struct {
    obh_msg_t *out;
    int        n, cap;
} read_all_t;

static void
read_all_one(const rd_kafka_message_t *m, void *arg)
{
    read_all_t *a = arg;
    char        seq[16];

    if (a->n == a->cap) {
        a->cap *= 2;
        a->out = realloc(a->out, (size_t) a->cap * sizeof(*a->out));
        cr_assert_not_null(a->out);
    }
    obh_msg_t *o = &a->out[a->n++];
    o->partition = m->partition;
    o->offset = m->offset;
    o->len = m->len;
    snprintf(o->key, sizeof(o->key), "%.*s", (int) (m->key_len < sizeof(o->key) ? m->key_len : sizeof(o->key) - 1),
             (const char *) m->key);
    obh_header(m, "event-id", o->event_id, sizeof(o->event_id));
    obh_header(m, "aggregate-seq", seq, sizeof(seq));
    o->seq = atoi(seq);
}

obh_msg_t *
obh_kafka_read_all(obh_t *h, int want, int timeout_ms, int *n)
{
    read_all_t a = { malloc((size_t) (want + 1024) * sizeof(obh_msg_t)), 0, want + 1024 };

    cr_assert_not_null(a.out);
    obh_kafka_each(h, h->topic, h->partitions, want, timeout_ms, read_all_one, &a);
    *n = a.n;
    return a.out;
}

void
obh_kafka_produce(obh_t *h, int partition, const char *key, const void *value, size_t len, const char *ctype)
{
    rd_kafka_t         *rk = obh_kafka_admin();
    rd_kafka_resp_err_t e;
    int64_t             deadline = ob_now_ms() + 15000;

    do {
        if (ctype != NULL)
            e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(h->topic), RD_KAFKA_V_PARTITION(partition),
                                  RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *) value, len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_HEADER("content-type", ctype, -1), RD_KAFKA_V_END);
        else
            e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(h->topic), RD_KAFKA_V_PARTITION(partition),
                                  RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *) value, len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e != 0)
            rd_kafka_poll(rk, 100);
    } while (e != 0 && ob_now_ms() < deadline);
    cr_assert_eq(e, 0, "produce: %s", rd_kafka_err2str(e));
    cr_assert_eq(rd_kafka_flush(rk, 15000), 0, "produce not acknowledged");
    rd_kafka_destroy(rk);
}

pid_t
obh_kafka_node_pid(int n)
{
    char  path[64];
    FILE *f;
    int   pid = 0;

    snprintf(path, sizeof(path), "var/run/kafka-ha-%d.pid", n);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    if (fscanf(f, "%d", &pid) != 1 || !obh_alive((pid_t) pid))
        pid = 0;
    fclose(f);
    return (pid_t) pid;
}

int
obh_kafka_leaders(obh_t *h, int leads[4], int *min_isr)
{
    rd_kafka_t                     *rk = obh_kafka_admin();
    rd_kafka_topic_t               *t = rd_kafka_topic_new(rk, h->topic, NULL);
    const struct rd_kafka_metadata *md;
    int                             rc = -1;

    memset(leads, 0, 4 * sizeof(*leads));
    *min_isr = 99;
    if (rd_kafka_metadata(rk, 0, t, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < md->topic_cnt; i++)
            for (int p = 0; p < md->topics[i].partition_cnt; p++) {
                const rd_kafka_metadata_partition_t *mp = &md->topics[i].partitions[p];
                leads[mp->leader >= 1 && mp->leader <= 3 && mp->err == 0 ? mp->leader : 0]++;
                if (mp->isr_cnt < *min_isr)
                    *min_isr = mp->isr_cnt;
            }
        rc = md->topic_cnt == 1 && md->topics[0].err == 0 ? 0 : -1;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
    return rc;
}

pid_t
obh_kafka_pid(void)
{
    FILE *f = fopen("var/run/kafka.pid", "r");
    int   pid = 0;

    cr_assert_not_null(f, "var/run/kafka.pid: run tests from the repository root with the stack up");
    cr_assert_eq(fscanf(f, "%d", &pid), 1);
    fclose(f);
    return (pid_t) pid;
}
