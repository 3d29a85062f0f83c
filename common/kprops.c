/*
 * common/kprops.c: librdkafka properties from the config (see kprops.h).
 *
 * Each refusal names why the property is ours: an override would quietly
 * void a guarantee (DESIGN §10) rather than fail loudly. librdkafka's
 * aliases are listed too, or "request.required.acks" would slip past "acks".
 */
#include "kprops.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *section;
    int         scope;
} sections[] = {
    { "kafka.properties", OB_KPROP_ALL },
    { "kafka.producer", OB_KPROP_PRODUCER },
    { "kafka.consumer", OB_KPROP_CONSUMER },
};

#define WHY_IDEM   "the relay's idempotent producer keeps each partition's order across retries (G5)"
#define WHY_TIMEOUT "the relay sets it from [relay] delivery_timeout_ms, and to 0 in mode wal, where an expired message could be overtaken by a younger one"
#define WHY_COMMIT "the consumer stores and commits offsets itself, only after the ledger commit (G4)"
#define WHY_GROUP  "the consumer's group and static membership come from [ledger] group and [supervisor] name"
#define WHY_LINGER "that is [relay] linger_ms"
#define WHY_MEM    "it bounds the consumer's read-ahead and so its memory"

static const struct {
    const char *key;
    const char *why;
} refused[] = {
    { "enable.idempotence", WHY_IDEM },
    { "enable.gapless.guarantee", WHY_IDEM },
    { "max.in.flight.requests.per.connection", WHY_IDEM },
    { "max.in.flight", WHY_IDEM },
    { "retries", WHY_IDEM },
    { "message.send.max.retries", WHY_IDEM },
    { "acks", "a row is marked published only once every in-sync replica has it (G3); idempotence sets acks=all" },
    { "request.required.acks", "a row is marked published only once every in-sync replica has it (G3); idempotence sets acks=all" },
    { "transactional.id", "the relay does not use transactions; a transactional producer would refuse its produce calls" },
    { "message.timeout.ms", WHY_TIMEOUT },
    { "delivery.timeout.ms", WHY_TIMEOUT },
    { "partitioner", "the relay chooses each record's partition itself (murmur2 of the order id, stored at insert)" },
    { "queue.buffering.max.ms", WHY_LINGER },
    { "linger.ms", WHY_LINGER },
    { "queue.buffering.max.messages", "the relay sizes its batches and the wal window against it" },
    { "batch.num.messages", "with linger_ms it keeps a partition's rows in one produce request, which quarantine relies on" },
    { "reconnect.backoff.max.ms", "it bounds how soon a restarted broker is found again (DESIGN §11)" },
    { "bootstrap.servers", "that is [kafka] brokers" },
    { "metadata.broker.list", "that is [kafka] brokers" },
    { "enable.auto.commit", WHY_COMMIT },
    { "auto.commit.enable", WHY_COMMIT },
    { "enable.auto.offset.store", WHY_COMMIT },
    { "offset.store.method", WHY_COMMIT },
    { "group.id", WHY_GROUP },
    { "group.instance.id", WHY_GROUP },
    { "partition.assignment.strategy", "the consumer's rebalance callback assigns eagerly; a cooperative strategy needs another protocol" },
    { "session.timeout.ms", "static membership with a short session moves a dead member's partitions within seconds" },
    { "heartbeat.interval.ms", "static membership with a short session moves a dead member's partitions within seconds" },
    { "isolation.level", "the consumer reads only committed records" },
    { "enable.partition.eof", "the consumer's poll loop does not expect end-of-partition events" },
    { "auto.offset.reset", "a group without offsets must read from the beginning, or events are never booked" },
    { "queued.max.messages.kbytes", WHY_MEM },
    { "queued.min.messages", WHY_MEM },
    { "fetch.max.bytes", WHY_MEM },
};

/* Substrings that make a key's value a secret; lower case, as librdkafka's names are. */
static const char *const secret_words[] = {
    "password", "secret", "key.pem", "ssl.key", "keystore", "sasl.jaas", "oauthbearer.config",
    "token", "credential", "private",
};

int
ob_kprops_section(const char *section)
{
    for (size_t i = 0; i < OB_ARRAY_LEN(sections); i++)
        if (strcmp(sections[i].section, section) == 0)
            return sections[i].scope;
    return -1;
}

static const char *
kprops_section_name(int scope)
{
    for (size_t i = 0; i < OB_ARRAY_LEN(sections); i++)
        if (sections[i].scope == scope)
            return sections[i].section;
    return "?";
}

int
ob_kprops_is_secret(const char *key)
{
    for (size_t i = 0; i < OB_ARRAY_LEN(secret_words); i++)
        if (strcasestr(key, secret_words[i]) != NULL)
            return 1;
    return 0;
}

const char *
ob_kprops_shown(const ob_kprop_t *p)
{
    return ob_kprops_is_secret(p->key) ? "***" : p->value;
}

/* librdkafka's reason, with a secret's value cut out should it quote it. */
static void
kprops_reason(const char *key, const char *value, const char *reason, char *out, size_t outlen)
{
    const char *hit;

    if (!ob_kprops_is_secret(key) || value[0] == '\0' || (hit = strstr(reason, value)) == NULL) {
        ob_strlcpy(out, reason, outlen);
        return;
    }
    snprintf(out, outlen, "%.*s***", (int) (hit - reason), reason);
}

int
ob_kprops_check(const char *key, const char *value, char *why, size_t whylen)
{
    rd_kafka_conf_t *conf;
    char             reason[512];
    rd_kafka_conf_res_t res;

    for (size_t i = 0; i < OB_ARRAY_LEN(refused); i++)
        if (strcmp(refused[i].key, key) == 0) {
            snprintf(why, whylen, "outboxd sets this property itself and refuses an override: %s", refused[i].why);
            return -1;
        }
    conf = rd_kafka_conf_new();
    res = rd_kafka_conf_set(conf, key, value, reason, sizeof(reason));
    rd_kafka_conf_destroy(conf);
    if (res == RD_KAFKA_CONF_OK)
        return 0;
    kprops_reason(key, value, reason, why, whylen);
    return -1;
}

int
ob_kprops_put(ob_cfg_t *cfg, int scope, const char *key, const char *value)
{
    ob_kprop_t *p = NULL;

    for (int i = 0; i < cfg->kafka.nprops; i++)
        if (cfg->kafka.props[i].scope == scope && strcmp(cfg->kafka.props[i].key, key) == 0)
            p = &cfg->kafka.props[i];
    if (p == NULL) {
        if (cfg->kafka.nprops >= OB_KPROP_MAX)
            return -1;
        p = &cfg->kafka.props[cfg->kafka.nprops++];
    }
    if (strlen(key) >= sizeof(p->key) || strlen(value) >= sizeof(p->value))
        return -1;
    memset(p, 0, sizeof(*p));   /* reload checks compare the whole [kafka] struct */
    ob_strlcpy(p->key, key, sizeof(p->key));
    ob_strlcpy(p->value, value, sizeof(p->value));
    p->scope = scope;
    return 0;
}

static int
kprops_apply_scope(const ob_cfg_t *cfg, int scope, rd_kafka_conf_t *conf, char *err, size_t errlen)
{
    char reason[512], safe[512];

    for (int i = 0; i < cfg->kafka.nprops; i++) {
        const ob_kprop_t *p = &cfg->kafka.props[i];
        if (p->scope != scope)
            continue;
        if (rd_kafka_conf_set(conf, p->key, p->value, reason, sizeof(reason)) != RD_KAFKA_CONF_OK) {
            kprops_reason(p->key, p->value, reason, safe, sizeof(safe));
            snprintf(err, errlen, "[%s] %s: %s", kprops_section_name(scope), p->key, safe);
            return -1;
        }
    }
    return 0;
}

int
ob_kprops_apply(const ob_cfg_t *cfg, int side, rd_kafka_conf_t *conf, char *err, size_t errlen)
{
    char shown[2048];

    if (kprops_apply_scope(cfg, OB_KPROP_ALL, conf, err, errlen) != 0 ||
        kprops_apply_scope(cfg, side, conf, err, errlen) != 0)
        return -1;
    ob_kprops_describe(cfg, side, shown, sizeof(shown));
    if (shown[0] != '\0')
        ob_log(OB_LOG_INFO, "kafka %s properties: %s", side == OB_KPROP_CONSUMER ? "consumer" : "producer", shown);
    return 0;
}

/* Our own settings carry no secret, so librdkafka's reason is passed on as it is. */
static int
kprops_set_table(rd_kafka_conf_t *conf, const ob_kprops_kv_t *kv, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (rd_kafka_conf_set(conf, kv[i].key, kv[i].value, err, errlen) != RD_KAFKA_CONF_OK)
            return -1;
    return 0;
}

rd_kafka_conf_t *
ob_kprops_conf(const ob_cfg_t *cfg, int side, const ob_kprops_kv_t *kv, size_t n, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    /* the operator's after ours: of our keys only harmless ones (client.id) are not refused at load */
    if (kprops_set_table(conf, kv, n, err, errlen) != 0 || ob_kprops_apply(cfg, side, conf, err, errlen) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

void
ob_kprops_describe(const ob_cfg_t *cfg, int side, char *out, size_t outlen)
{
    size_t used = 0;
    int    last = -1;

    out[0] = '\0';
    for (int pass = 0; pass < 2; pass++) {
        int scope = pass == 0 ? OB_KPROP_ALL : side;
        for (int i = 0; i < cfg->kafka.nprops; i++) {
            const ob_kprop_t *p = &cfg->kafka.props[i];
            if (p->scope != scope)
                continue;
            int n = snprintf(out + used, outlen - used, "%s%s%s%s%s=%s", used ? " " : "", last != scope ? "[" : "",
                             last != scope ? kprops_section_name(scope) : "", last != scope ? "] " : "", p->key,
                             ob_kprops_shown(p));
            if (n < 0 || used + (size_t) n >= outlen)
                return;
            used += (size_t) n;
            last = scope;
        }
        if (side == OB_KPROP_ALL)
            break;
    }
}
