/*
 * common/kprops.h: librdkafka properties passed through from the config.
 *
 * Operators need security settings (SASL, TLS) that outboxd has no keys
 * for, so [kafka.properties], [kafka.producer] and [kafka.consumer] hand
 * theirs to rd_kafka_conf_set(). Properties our guarantees rest on are
 * refused, and secrets are shown only as "***".
 */
#ifndef OB_KPROPS_H
#define OB_KPROPS_H

#include "cfg.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>

/* The scope of a config section, or -1 when it is not a properties section. */
int ob_kprops_section(const char *section);

/*
 * Checks key = value for a properties section: refused keys, then a fresh
 * rd_kafka_conf_t. On error returns -1 with a sentence in why, which never
 * holds a secret's value.
 */
int ob_kprops_check(const char *key, const char *value, char *why, size_t whylen);

/* Adds or replaces key in cfg (already checked); -1 when the table is full. */
int ob_kprops_put(ob_cfg_t *cfg, int scope, const char *key, const char *value);

/* True when the key's value must never be shown. */
int ob_kprops_is_secret(const char *key);

/* The value as it may be shown: "***" for secrets. */
const char *ob_kprops_shown(const ob_kprop_t *p);

/*
 * Sets the properties for one client (OB_KPROP_PRODUCER or
 * OB_KPROP_CONSUMER): [kafka.properties] first, then the client's own
 * section, so the narrower one wins. Errors name the key, never a secret.
 */
int ob_kprops_apply(const ob_cfg_t *cfg, int side, rd_kafka_conf_t *conf, char *err, size_t errlen);

/* One of a client's own settings, in the table it hands to ob_kprops_conf(). */
typedef struct {
    const char *key, *value;
} ob_kprops_kv_t;

/*
 * A configuration for one client (OB_KPROP_PRODUCER or OB_KPROP_CONSUMER):
 * its own table of settings in order, then ob_kprops_apply(). NULL with
 * the reason in err when librdkafka refuses one; the caller owns the
 * result until rd_kafka_new() takes it.
 */
rd_kafka_conf_t *ob_kprops_conf(const ob_cfg_t *cfg, int side, const ob_kprops_kv_t *kv, size_t n, char *err,
                                size_t errlen);

/* "[kafka.producer] sasl.username=relay sasl.password=***" for one client; "" when none. */
void ob_kprops_describe(const ob_cfg_t *cfg, int side, char *out, size_t outlen);

#endif
