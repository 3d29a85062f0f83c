/* tests/unit/test_cfg.c: config parsing, validation, errors with file:line. */
#include "tests/unit/cfg_text.h"
#include "common/cfg.h"
#include "common/kprops.h"
#include "common/util.h"
#include "common/log.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


Test(cfg, committed_dev_config_is_valid)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    cr_assert_eq(ob_cfg_load(&cfg, "outboxd.conf", err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cfg.kafka.topic, "outbox-events");
    cr_assert_eq(cfg.kafka.partitions, 12);
    cr_assert_eq(cfg.workers.relays, 2);
    cr_assert_eq(cfg.relay.mode, OB_RELAY_PARTITIONED);
    cr_assert_eq(cfg.relay.retention_s, 24 * 3600);
    cr_assert_str_eq(cfg.log.file, "");
}

Test(cfg, defaults_apply_to_missing_keys)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    cr_assert_eq(obu_load("[workers]\nrelays = 3\n", &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.workers.relays, 3);
    cr_assert_eq(cfg.workers.http, 2);
    cr_assert_eq(cfg.supervisor.watchdog_s, 10);
    cr_assert_eq(cfg.orders.max_body, 64 * 1024);
    cr_assert_str_eq(cfg.orders.listen, "127.0.0.1:3000");
}

Test(cfg, unknown_key_names_file_line_and_key)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    cr_assert_eq(obu_load("[kafka]\nbrokers = x:1\n\n[relay]\nbatchsize = 10\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, ":5: [relay] batchsize: unknown key") != NULL, "got: %s", err);
}

Test(cfg, unknown_section_is_an_error)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    cr_assert_eq(obu_load("[kafak]\nbrokers = x:1\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, ":2: [kafak]: unknown section") != NULL, "got: %s", err);
}

Test(cfg, bad_values_are_rejected_with_reason)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        { "[workers]\nhttp = two\n", ":2: [workers] http: not an integer (got \"two\")" },
        { "[kafka]\npartitions = 0\n", ":2: [kafka] partitions: out of range" },
        { "[kafka]\npartitions = 999\n", ":2: [kafka] partitions: out of range" },
        { "[relay]\nmode = fastest\n", ":2: [relay] mode: expected partitioned, skip_locked or wal" },
        { "[relay]\nretention = 1y\n", ":2: [relay] retention: expected a duration" },
        { "[orders]\nunsafe_async_commit = maybe\n", ":2: [orders] unsafe_async_commit: expected yes or no" },
        { "[log]\nformat = xml\n", ":2: [log] format: expected logfmt or json" },
        { "[supervisor]\nwatchdog_s = 0\n", ":2: [supervisor] watchdog_s: out of range" },
        { "orphan = 1\n", ":1: [] orphan: key outside any section" },
        { "[workers]\nthis line has no equals sign\n", ":2: syntax error" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ob_cfg_t cfg;
        char     err[512] = "";
        cr_assert_eq(obu_load(cases[i].text, &cfg, err, sizeof(err)), -1, "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].want) != NULL, "case %zu: want \"%s\", got \"%s\"", i, cases[i].want, err);
    }
}

Test(cfg, relays_cannot_exceed_partitions)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    cr_assert_eq(obu_load("[kafka]\npartitions = 4\n[workers]\nrelays = 5\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, "relays = 5 exceeds [kafka] partitions = 4") != NULL, "got: %s", err);
}

/* Slot and publication names are built from it and go into DDL unquoted. */
Test(cfg, slot_prefix_must_be_a_plain_lower_case_name)
{
    static const char *bad[] = { "Outboxd", "ob-relay", "ob relay", "x;DROP TABLE outbox",
                                 "a_prefix_much_longer_than_forty_characters_x" };
    ob_cfg_t           cfg;
    char               err[512], text[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "[relay]\nmode = wal\nslot_prefix = %s\n", bad[i]);
        err[0] = '\0';
        cr_assert_eq(obu_load(text, &cfg, err, sizeof(err)), -1, "%s accepted", bad[i]);
        cr_assert(strstr(err, "[relay] slot_prefix: use 1-40 lower-case letters") != NULL, "got: %s", err);
    }
    cr_assert_eq(obu_load("[relay]\nmode = wal\nslot_prefix = ob_relay_2\n", &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.relay.mode, OB_RELAY_WAL);
    cr_assert_str_eq(cfg.relay.slot_prefix, "ob_relay_2");
}

Test(cfg, listeners_must_differ)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    cr_assert_eq(obu_load("[ledger]\nlisten = 127.0.0.1:3000\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, "must be different") != NULL, "got: %s", err);
}

Test(cfg, missing_file_is_a_sentence)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    cr_assert_eq(ob_cfg_load(&cfg, "/nonexistent/outboxd.conf", err, sizeof(err)), -1);
    cr_assert(strstr(err, "/nonexistent/outboxd.conf: cannot open config") != NULL, "got: %s", err);
}

Test(cfg, durations)
{
    int s;

    cr_assert_eq(ob_cfg_parse_duration("24h", &s), 0);
    cr_assert_eq(s, 86400);
    cr_assert_eq(ob_cfg_parse_duration("90", &s), 0);
    cr_assert_eq(s, 90);
    cr_assert_eq(ob_cfg_parse_duration("15m", &s), 0);
    cr_assert_eq(s, 900);
    cr_assert_eq(ob_cfg_parse_duration("2d", &s), 0);
    cr_assert_eq(s, 172800);
    cr_assert_eq(ob_cfg_parse_duration("-1s", &s), -1);
    cr_assert_eq(ob_cfg_parse_duration("h", &s), -1);
    cr_assert_eq(ob_cfg_parse_duration("99999999999d", &s), -1);
}

Test(cfg, restart_only_changes_are_detected_and_digest_moves)
{
    ob_cfg_t a, b;
    char     err[512] = "", out[256];

    cr_assert_eq(obu_load("[orders]\nlisten = 127.0.0.1:3000\n", &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(obu_load("[orders]\nlisten = 127.0.0.1:3001\n[workers]\nrelays = 1\n[kafka]\npartitions = 13\n", &b,
                      err, sizeof(err)),
                 0, "%s", err);
    cr_assert_neq(ob_cfg_digest(&a), ob_cfg_digest(&b));
    /* a reload keeps the running value of each restart-only key, named by the key table */
    cr_assert_eq(ob_cfg_keep_restart_only(&a, &b, out, sizeof(out)), 2);
    cr_assert_str_eq(out, "[orders] listen, [kafka] partitions");
    cr_assert_str_eq(b.orders.listen, "127.0.0.1:3000");
    cr_assert_eq(b.kafka.partitions, a.kafka.partitions);
    cr_assert_eq(b.workers.relays, 1, "a reloadable key takes the new value");
    cr_assert_eq(ob_cfg_keep_restart_only(&a, &b, out, sizeof(out)), 0);
    /* a shorter string over a longer default must not leave stale bytes behind */
    cr_assert_eq(obu_load("[orders]\nlisten = 1.2.3.4:5\n", &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(obu_load("[orders]\nlisten = 1.2.3.4:5\n", &b, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ob_cfg_digest(&a), ob_cfg_digest(&b));
}

/* Which workers a reload restarts comes from the key table, one row per key. */
Test(cfg, reload_restarts_the_kinds_the_key_table_names)
{
    static const struct {
        const char *text;
        unsigned    want;
    } cases[] = {
        { "[orders]\nthreads = 3\n", 0 },
        { "[ledger]\nstall_after = 5s\n", 0 },
        { "[workers]\nconsumers = 5\n", 0 },
        { "[relay]\nbatch = 7\n", OB_CFG_RESTARTS_RELAYS },
        { "[workers]\nrelays = 1\n", OB_CFG_RESTARTS_RELAYS },
        { "[relay]\ndsn = postgresql://relay@h/orderdb\n", OB_CFG_RESTARTS_RELAYS },
        { "[orders]\ndsn = postgresql://other@h/orderdb\n", OB_CFG_RESTARTS_RELAYS },
        { "[ledger]\ngroup = g2\n", OB_CFG_RESTARTS_CONSUMERS },
        { "[ledger]\ndsn = postgresql://l@h/ledgerdb\n", OB_CFG_RESTARTS_CONSUMERS },
        { "[kafka]\nbrokers = b:1\n", OB_CFG_RESTARTS_RELAYS | OB_CFG_RESTARTS_CONSUMERS },
        { "[kafka]\nrequire_signature = yes\nverify_keys = k1:hex:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
          OB_CFG_RESTARTS_RELAYS | OB_CFG_RESTARTS_CONSUMERS },
        { "[kafka.consumer]\nclient.id = x\n", OB_CFG_RESTARTS_RELAYS | OB_CFG_RESTARTS_CONSUMERS },
    };
    ob_cfg_t base, next;
    char     err[512];

    ob_cfg_defaults(&base);
    for (size_t i = 0; i < OB_ARRAY_LEN(cases); i++) {
        cr_assert_eq(obu_load(cases[i].text, &next, err, sizeof(err)), 0, "%s", err);
        next.path[0] = '\0';
        cr_expect_eq(ob_cfg_restarts(&base, &next), cases[i].want, "%s: restarts %u, want %u", cases[i].text,
                     ob_cfg_restarts(&base, &next), cases[i].want);
    }
    cr_assert_eq(ob_cfg_restarts(&base, &base), 0);
}

/* Every default in the table parses as a file would (ob_cfg_defaults aborts otherwise) and lies in range. */
Test(cfg, every_default_is_a_valid_value)
{
    ob_cfg_t          cfg;
    ob_cfg_key_info_t k;
    char              err[512], text[1024];

    ob_cfg_defaults(&cfg);
    cr_assert_eq(ob_cfg_validate(&cfg, err, sizeof(err)), 0, "%s", err);
    for (size_t i = 0; i < ob_cfg_key_count(); i++) {
        ob_cfg_key_info(i, &k);
        cr_assert(k.why != NULL && k.why[0] != '\0', "[%s] %s has no reason to change it", k.section, k.key);
        if (k.def == NULL)
            continue;
        snprintf(text, sizeof(text), "[%s]\n%s = %s\n", k.section, k.key, k.def);
        cr_assert_eq(obu_load(text, &cfg, err, sizeof(err)), 0, "[%s] %s = %s: %s", k.section, k.key, k.def, err);
    }
}

Test(log, dsn_passwords_are_masked)
{
    char out[256];

    ob_log_mask_dsn("postgresql://app:s3cret@db:5432/orderdb", out, sizeof(out));
    cr_assert_str_eq(out, "postgresql://app:***@db:5432/orderdb");
    ob_log_mask_dsn("host=db user=app password=s3cret dbname=x", out, sizeof(out));
    cr_assert_str_eq(out, "host=db user=app password=*** dbname=x");
    ob_log_mask_dsn("postgresql://outboxd@127.0.0.1:55432/orderdb", out, sizeof(out));
    cr_assert_str_eq(out, "postgresql://outboxd@127.0.0.1:55432/orderdb");
}

Test(cfg, fault_modes_need_the_unsafe_variable)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    unsetenv("OUTBOXD_UNSAFE_FAULTS");
    cr_assert_eq(obu_load("[debug]\nfault = none\n", &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.debug.fault, OB_FAULT_NONE);
    cr_assert_eq(obu_load("[workers]\nhttp = 1\n[debug]\nfault = relay_mark_before_ack\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, ":4: [debug] fault: this mode loses events on purpose") != NULL, "%s", err);
    cr_assert(strstr(err, "OUTBOXD_UNSAFE_FAULTS=1") != NULL, "%s", err);
    setenv("OUTBOXD_UNSAFE_FAULTS", "1", 1);
    cr_assert_eq(obu_load("[debug]\nfault = consumer_commit_before_apply\n", &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.debug.fault, OB_FAULT_CONSUMER_COMMIT_BEFORE_APPLY);
    cr_assert_eq(obu_load("[debug]\nfault = sometimes\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, "expected none, relay_mark_before_ack, consumer_commit_before_apply or "
                          "http_lose_write_reply") != NULL,
              "%s", err);
    unsetenv("OUTBOXD_UNSAFE_FAULTS");
}

/* ---- librdkafka properties: [kafka.properties], [kafka.producer], [kafka.consumer] ---- */

Test(cfg, kafka_properties_parse_per_client)
{
    ob_cfg_t cfg;
    char     err[512] = "", shown[1024];

    cr_assert_eq(obu_load("[kafka.properties]\nsecurity.protocol = SASL_PLAINTEXT\nsasl.mechanism = SCRAM-SHA-256\n"
                      "[kafka.producer]\nsasl.username = relay\n[kafka.consumer]\nsasl.username = ledger\n"
                      "[kafka.properties]\nsecurity.protocol = SASL_SSL\n",
                      &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(cfg.kafka.nprops, 4, "a repeated key replaces, it does not add");
    ob_kprops_describe(&cfg, OB_KPROP_PRODUCER, shown, sizeof(shown));
    cr_assert_str_eq(shown, "[kafka.properties] security.protocol=SASL_SSL sasl.mechanism=SCRAM-SHA-256 "
                            "[kafka.producer] sasl.username=relay");
    ob_kprops_describe(&cfg, OB_KPROP_CONSUMER, shown, sizeof(shown));
    cr_assert(strstr(shown, "[kafka.consumer] sasl.username=ledger") != NULL, "%s", shown);
    cr_assert_null(strstr(shown, "relay"), "the producer's section leaks into the consumer: %s", shown);
}

Test(cfg, kafka_properties_reach_the_client_conf_narrower_section_wins)
{
    ob_cfg_t         cfg;
    char             err[512] = "", v[256];
    size_t           vlen = sizeof(v);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    cr_assert_eq(obu_load("[kafka.properties]\nclient.id = everyone\nsocket.timeout.ms = 7000\n"
                      "[kafka.consumer]\nclient.id = ledger-side\n",
                      &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(ob_kprops_apply(&cfg, OB_KPROP_CONSUMER, conf, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(rd_kafka_conf_get(conf, "client.id", v, &vlen), RD_KAFKA_CONF_OK);
    cr_assert_str_eq(v, "ledger-side");
    vlen = sizeof(v);
    cr_assert_eq(rd_kafka_conf_get(conf, "socket.timeout.ms", v, &vlen), RD_KAFKA_CONF_OK);
    cr_assert_str_eq(v, "7000");
    rd_kafka_conf_destroy(conf);
    conf = rd_kafka_conf_new();
    cr_assert_eq(ob_kprops_apply(&cfg, OB_KPROP_PRODUCER, conf, err, sizeof(err)), 0, "%s", err);
    vlen = sizeof(v);
    cr_assert_eq(rd_kafka_conf_get(conf, "client.id", v, &vlen), RD_KAFKA_CONF_OK);
    cr_assert_str_eq(v, "everyone");
    rd_kafka_conf_destroy(conf);
}

Test(cfg, kafka_property_unknown_or_bad_value_names_file_line_key_and_reason)
{
    ob_cfg_t cfg;
    char     err[512] = "";

    cr_assert_eq(obu_load("[kafka]\nbrokers = x:1\n[kafka.producer]\nsasl.usernmae = relay\n", &cfg, err, sizeof(err)),
                 -1);
    cr_assert(strstr(err, ":4: [kafka.producer] sasl.usernmae: No such configuration property") != NULL, "%s", err);
    cr_assert_eq(obu_load("[kafka.consumer]\n\nsocket.timeout.ms = soon\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, ":3: [kafka.consumer] socket.timeout.ms: Invalid value") != NULL, "%s", err);
    cr_assert_eq(obu_load("[kafka.properties]\nsecurity.protocol = carrier-pigeon\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, ":2: [kafka.properties] security.protocol: Invalid value") != NULL, "%s", err);
    cr_assert_eq(obu_load("[kafka.admin]\nclient.id = x\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, "[kafka.admin]: unknown section") != NULL, "%s", err);
}

Test(cfg, kafka_properties_our_guarantees_rest_on_are_refused)
{
    static const char *const keys[] = {
        "enable.idempotence", "acks", "request.required.acks", "message.timeout.ms", "delivery.timeout.ms",
        "enable.auto.commit", "enable.auto.offset.store", "bootstrap.servers", "metadata.broker.list", "group.id",
        "group.instance.id", "isolation.level", "partitioner", "max.in.flight.requests.per.connection",
        "max.in.flight", "retries", "message.send.max.retries", "queue.buffering.max.ms", "linger.ms",
        "reconnect.backoff.max.ms", "enable.partition.eof", "auto.offset.reset", "transactional.id",
        "session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy", "queued.max.messages.kbytes",
        "queued.min.messages", "fetch.max.bytes", "queue.buffering.max.messages", "batch.num.messages",
        "enable.gapless.guarantee", "auto.commit.enable", "offset.store.method",
    };
    static const char *const sections[] = { "kafka.properties", "kafka.producer", "kafka.consumer" };
    ob_cfg_t cfg;
    char     text[256], err[512], want[256];

    for (size_t s = 0; s < OB_ARRAY_LEN(sections); s++)
        for (size_t i = 0; i < OB_ARRAY_LEN(keys); i++) {
            snprintf(text, sizeof(text), "[workers]\nhttp = 1\n[%s]\n%s = 1\n", sections[s], keys[i]);
            err[0] = '\0';
            cr_assert_eq(obu_load(text, &cfg, err, sizeof(err)), -1, "%s accepted in [%s]", keys[i], sections[s]);
            snprintf(want, sizeof(want), ":4: [%s] %s: outboxd sets this property itself and refuses an override: ",
                     sections[s], keys[i]);
            cr_assert(strstr(err, want) != NULL, "got: %s", err);
        }
    cr_assert_eq(obu_load("[kafka.properties]\nlinger.ms = 5\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, "that is [relay] linger_ms") != NULL, "%s", err);
    cr_assert_eq(obu_load("[kafka.properties]\nbootstrap.servers = a:1\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, "that is [kafka] brokers") != NULL, "%s", err);
}

Test(cfg, kafka_secrets_are_masked_wherever_shown)
{
    static const char *const secret_keys[] = {
        "sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem", "sasl.oauthbearer.config",
        "ssl.key.location", "ssl.keystore.location",
    };
    ob_cfg_t cfg;
    char     text[4096] = "[kafka.properties]\nsasl.username = relay\n", err[512] = "", shown[2048];
    size_t   used = strlen(text);

    for (size_t i = 0; i < OB_ARRAY_LEN(secret_keys); i++) {
        cr_assert(ob_kprops_is_secret(secret_keys[i]), "%s", secret_keys[i]);
        used += (size_t) snprintf(text + used, sizeof(text) - used, "%s = Hunter2-%zu\n", secret_keys[i], i);
    }
    cr_assert(!ob_kprops_is_secret("sasl.username"));
    cr_assert(!ob_kprops_is_secret("security.protocol"));
    cr_assert(ob_kprops_is_secret("sasl.jaas.config"));
    cr_assert_eq(obu_load(text, &cfg, err, sizeof(err)), 0, "%s", err);
    ob_kprops_describe(&cfg, OB_KPROP_PRODUCER, shown, sizeof(shown));
    cr_assert_null(strstr(shown, "Hunter2"), "%s", shown);
    cr_assert(strstr(shown, "sasl.password=***") != NULL, "%s", shown);
    cr_assert(strstr(shown, "sasl.username=relay") != NULL, "%s", shown);
}

Test(cfg, kafka_properties_change_the_kafka_section_so_relays_and_consumers_restart)
{
    ob_cfg_t a, b;
    char     err[512] = "";

    cr_assert_eq(obu_load("[kafka.producer]\nsasl.username = relay\n", &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(obu_load("[kafka.producer]\nsasl.username = relay2\n", &b, err, sizeof(err)), 0, "%s", err);
    cr_assert_neq(memcmp(&a.kafka, &b.kafka, sizeof(a.kafka)), 0);
    cr_assert_neq(ob_cfg_digest(&a), ob_cfg_digest(&b));
    cr_assert_eq(obu_load("[kafka.producer]\nsasl.username = relay\n", &b, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(memcmp(&a.kafka, &b.kafka, sizeof(a.kafka)), 0);
}

Test(cfg, routes_send_types_to_topics_with_the_default_for_the_rest)
{
    ob_cfg_t    cfg;
    const char *topics[OB_TOPICS_MAX + 1];
    char        err[512] = "";

    cr_assert_eq(obu_load("[routes]\nproduct = product-events\nstock = stock-events\ncoupon = product-events\n", &cfg,
                          err, sizeof(err)),
                 0, "%s", err);
    cr_assert_str_eq(ob_cfg_topic_for(&cfg, "product"), "product-events");
    cr_assert_str_eq(ob_cfg_topic_for(&cfg, "coupon"), "product-events");
    cr_assert_str_eq(ob_cfg_topic_for(&cfg, "stock"), "stock-events");
    cr_assert_str_eq(ob_cfg_topic_for(&cfg, "order"), "outbox-events");
    cr_assert_str_eq(ob_cfg_topic_for(&cfg, "anything"), "outbox-events", "not strict: the default topic");
    cr_assert_eq(ob_cfg_topics(&cfg, topics), 3, "distinct topics, the default first");
    cr_assert_str_eq(topics[0], "outbox-events");
    cr_assert_str_eq(topics[1], "product-events");
    cr_assert_str_eq(topics[2], "stock-events");
}

Test(cfg, strict_routes_refuse_unrouted_types_but_keep_the_orders_topic_while_orders_run)
{
    ob_cfg_t    cfg;
    const char *topics[OB_TOPICS_MAX + 1];
    char        err[512] = "";

    cr_assert_eq(obu_load("[kafka]\nstrict_routes = yes\n[routes]\nproduct = p\n", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_null(ob_cfg_topic_for(&cfg, "coupon"));
    cr_assert_str_eq(ob_cfg_topic_for(&cfg, "order"), "outbox-events", "the built-in orders API runs by default");
    cr_assert_eq(ob_cfg_topics(&cfg, topics), 2);
    cr_assert_eq(obu_load("[kafka]\nstrict_routes = yes\n[workers]\nhttp = 0\nconsumers = 0\n[routes]\nproduct = p\n",
                          &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_null(ob_cfg_topic_for(&cfg, "order"), "relay-only: 'order' is nobody's own type");
    cr_assert_eq(ob_cfg_topics(&cfg, topics), 1, "the default topic is unused and not checked");
    cr_assert_str_eq(topics[0], "p");
}

Test(cfg, bad_routes_name_file_line_and_why)
{
    static const struct {
        const char *text, *says;
    } bad[] = {
        { "[routes]\nproduct = bad topic\n", ":2: [routes] product: a topic name is 1 to 249 characters" },
        { "[routes]\nproduct = ..\n", ":2: [routes] product: a topic name" },
        { "[routes]\n.x = t\n", ":2: [routes] .x: an aggregate type is" },
        { "[routes]\np = a\nq = b\np = c\n", ":4: [routes] p: aggregate type routed twice" },
        { "[kafka]\ntopic = a/b\n", "[kafka] topic: a topic name" },
    };
    ob_cfg_t cfg;
    char     err[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_expect_eq(obu_load(bad[i].text, &cfg, err, sizeof(err)), -1, "accepted: %s", bad[i].text);
        cr_expect(strstr(err, bad[i].says) != NULL, "%s: got %s", bad[i].text, err);
    }
}

Test(cfg, more_than_sixteen_topics_are_refused_and_a_route_change_restarts_relays_and_consumers)
{
    ob_cfg_t a, b;
    char     text[2048], err[512] = "";
    size_t   n = (size_t) snprintf(text, sizeof(text), "[routes]\n");

    for (int i = 0; i < OB_TOPICS_MAX; i++)
        n += (size_t) snprintf(text + n, sizeof(text) - n, "t%d = topic-%d\n", i, i);
    cr_assert_eq(obu_load(text, &a, err, sizeof(err)), -1, "the default and 16 routed topics are 17");
    cr_assert(strstr(err, "more than 16 distinct topics") != NULL, "%s", err);
    cr_assert_eq(obu_load("[routes]\nproduct = p\n", &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(obu_load("[routes]\nproduct = p\nstock = s\n", &b, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ob_cfg_restarts(&a, &b), OB_CFG_RESTARTS_RELAYS | OB_CFG_RESTARTS_CONSUMERS);
    cr_assert_neq(ob_cfg_digest(&a), ob_cfg_digest(&b));
}

Test(cfg, strict_routes_need_a_route_and_turning_the_orders_api_off_restarts_relays)
{
    ob_cfg_t a, b;
    char     err[512] = "";

    cr_assert_eq(obu_load("[kafka]\nstrict_routes = yes\n[workers]\nhttp = 0\nconsumers = 0\n", &a, err, sizeof(err)),
                 -1);
    cr_assert(strstr(err, "every event would be refused") != NULL, "%s", err);
    cr_assert_eq(obu_load("[kafka]\nstrict_routes = yes\n[routes]\np = p\n", &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(obu_load("[kafka]\nstrict_routes = yes\n[workers]\nhttp = 0\nconsumers = 0\n[routes]\np = p\n", &b,
                          err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(ob_cfg_restarts(&a, &b) & OB_CFG_RESTARTS_RELAYS, OB_CFG_RESTARTS_RELAYS,
                 "'order' lost its topic: relays must restart with it");
}
