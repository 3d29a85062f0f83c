/*
 * tests/integration/test_kafka_secure.c: outboxd against a Kafka that
 * authenticates (SASL/SCRAM-SHA-256 only) and authorizes (StandardAuthorizer,
 * nothing allowed without an ACL): the second node of `scripts/stack.sh
 * up-secure`, which setup starts when it is not running.
 *
 * Skipped when OB_SKIP_KAFKA_SECURE is set (the sanitizer pass): what it
 * proves is Kafka's refusals and our config reaching librdkafka, where a
 * sanitizer adds nothing the unit tests and the plain pass do not cover.
 */
#include "tests/harness.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECURE_KAFKA "127.0.0.1:29094"
#define CREDENTIALS  "var/kafka-secure/credentials"

static obh_t h;
static char  pw_admin[64], pw_relay[64], pw_ledger[64], pw_intruder[64];
static char  group[96];

/* The passwords scripts/stack.sh made when it formatted the node. */
static void
read_credentials(void)
{
    FILE *f = fopen(CREDENTIALS, "r");
    char  user[32], pw[64];

    cr_assert_not_null(f, "%s missing after up-secure", CREDENTIALS);
    while (fscanf(f, "%31s %63s", user, pw) == 2) {
        char *dst = strcmp(user, "admin") == 0 ? pw_admin : strcmp(user, "relay") == 0 ? pw_relay
                  : strcmp(user, "ledger") == 0 ? pw_ledger : strcmp(user, "intruder") == 0 ? pw_intruder : NULL;
        if (dst != NULL)
            ob_strlcpy(dst, pw, sizeof(pw_admin));
    }
    fclose(f);
    cr_assert(pw_admin[0] && pw_relay[0] && pw_ledger[0] && pw_intruder[0], "incomplete %s", CREDENTIALS);
}

/* A client of the secure node as user (NULL: no SASL at all). */
static rd_kafka_t *
secure_client(rd_kafka_type_t type, const char *user, const char *pw, rd_kafka_conf_t *conf)
{
    char err[512];

    if (conf == NULL)
        conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", SECURE_KAFKA, err, sizeof(err)), RD_KAFKA_CONF_OK);
    if (user != NULL) {
        const char *kv[][2] = { { "security.protocol", "SASL_PLAINTEXT" }, { "sasl.mechanism", "SCRAM-SHA-256" },
                                { "sasl.username", user }, { "sasl.password", pw } };
        for (size_t i = 0; i < OB_ARRAY_LEN(kv); i++)
            cr_assert_eq(rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof(err)), RD_KAFKA_CONF_OK, "%s", err);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    cr_assert_not_null(rk, "%s", err);
    return rk;
}

static rd_kafka_AclBinding_t *
acl(rd_kafka_ResourceType_t type, const char *name, const char *principal, rd_kafka_AclOperation_t op)
{
    char err[256];
    rd_kafka_AclBinding_t *b = rd_kafka_AclBinding_new(type, name, RD_KAFKA_RESOURCE_PATTERN_LITERAL, principal, "*",
                                                       op, RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW, err, sizeof(err));
    cr_assert_not_null(b, "%s", err);
    return b;
}

/* The README's recommended ACLs, for this test's topic and group. */
static void
grant_acls(void)
{
    rd_kafka_t            *rk = secure_client(RD_KAFKA_PRODUCER, "admin", pw_admin, NULL);
    rd_kafka_queue_t      *q = rd_kafka_queue_new(rk);
    rd_kafka_AclBinding_t *b[] = {
        acl(RD_KAFKA_RESOURCE_TOPIC, h.topic, "User:relay", RD_KAFKA_ACL_OPERATION_WRITE),
        acl(RD_KAFKA_RESOURCE_TOPIC, h.topic, "User:relay", RD_KAFKA_ACL_OPERATION_DESCRIBE),
        acl(RD_KAFKA_RESOURCE_TOPIC, h.topic, "User:relay", RD_KAFKA_ACL_OPERATION_CREATE),
        acl(RD_KAFKA_RESOURCE_TOPIC, h.topic, "User:relay", RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS),
        acl(RD_KAFKA_RESOURCE_BROKER, "kafka-cluster", "User:relay", RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE),
        acl(RD_KAFKA_RESOURCE_TOPIC, h.topic, "User:ledger", RD_KAFKA_ACL_OPERATION_READ),
        acl(RD_KAFKA_RESOURCE_TOPIC, h.topic, "User:ledger", RD_KAFKA_ACL_OPERATION_DESCRIBE),
        acl(RD_KAFKA_RESOURCE_GROUP, group, "User:ledger", RD_KAFKA_ACL_OPERATION_READ),
    };
    size_t n = 0;

    rd_kafka_CreateAcls(rk, b, OB_ARRAY_LEN(b), NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, obh_ms(15000));
    cr_assert_not_null(ev, "CreateAcls timed out");
    cr_assert_eq(rd_kafka_event_error(ev), RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_event_error_string(ev));
    const rd_kafka_acl_result_t **res = rd_kafka_CreateAcls_result_acls(rd_kafka_event_CreateAcls_result(ev), &n);
    cr_assert_eq(n, OB_ARRAY_LEN(b));
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_error_t *e = rd_kafka_acl_result_error(res[i]);
        cr_assert_null(e, "ACL %zu: %s", i, e ? rd_kafka_error_string(e) : "");
    }
    rd_kafka_event_destroy(ev);
    for (size_t i = 0; i < OB_ARRAY_LEN(b); i++)
        rd_kafka_AclBinding_destroy(b[i]);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

/* The test's topic and its ACLs go; the cluster-wide IDEMPOTENT_WRITE stays for the next run. */
static void
drop_topic_and_acls(void)
{
    char              err[256];
    rd_kafka_t       *rk = secure_client(RD_KAFKA_PRODUCER, "admin", pw_admin, NULL);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(h.topic);
    rd_kafka_AclBindingFilter_t *f[] = {
        rd_kafka_AclBindingFilter_new(RD_KAFKA_RESOURCE_TOPIC, h.topic, RD_KAFKA_RESOURCE_PATTERN_LITERAL, NULL, NULL,
                                      RD_KAFKA_ACL_OPERATION_ANY, RD_KAFKA_ACL_PERMISSION_TYPE_ANY, err, sizeof(err)),
        rd_kafka_AclBindingFilter_new(RD_KAFKA_RESOURCE_GROUP, group, RD_KAFKA_RESOURCE_PATTERN_LITERAL, NULL, NULL,
                                      RD_KAFKA_ACL_OPERATION_ANY, RD_KAFKA_ACL_PERMISSION_TYPE_ANY, err, sizeof(err)),
    };
    rd_kafka_event_t *ev;

    rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
    if ((ev = rd_kafka_queue_poll(q, 10000)) != NULL)
        rd_kafka_event_destroy(ev);
    rd_kafka_DeleteAcls(rk, f, OB_ARRAY_LEN(f), NULL, q);
    if ((ev = rd_kafka_queue_poll(q, 10000)) != NULL)
        rd_kafka_event_destroy(ev);
    for (size_t i = 0; i < OB_ARRAY_LEN(f); i++)
        rd_kafka_AclBinding_destroy(f[i]);
    rd_kafka_DeleteTopic_destroy(dt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

static void
setup(void)
{
    if (getenv("OB_SKIP_KAFKA_SECURE") != NULL)
        return;
    cr_assert_eq(system("bash scripts/stack.sh up-secure >/dev/null"), 0, "scripts/stack.sh up-secure failed");
    read_credentials();
    obh_init(&h, 1);
    snprintf(group, sizeof(group), "ledger-%s", h.tag);   /* the harness's [ledger] group */
    grant_acls();
}

static void
teardown(void)
{
    if (getenv("OB_SKIP_KAFKA_SECURE") != NULL)
        return;
    obh_cleanup(&h);
    drop_topic_and_acls();
}

static void
write_secure_conf(void)
{
    char extra[2048];

    snprintf(extra, sizeof(extra),
             "[kafka]\nbrokers = " SECURE_KAFKA "\n"
             "[workers]\nrelays = 1\nconsumers = 1\n"
             "[kafka.properties]\nsecurity.protocol = SASL_PLAINTEXT\nsasl.mechanism = SCRAM-SHA-256\n"
             "[kafka.producer]\nsasl.username = relay\nsasl.password = %s\n"
             "[kafka.consumer]\nsasl.username = ledger\nsasl.password = %s\n",
             pw_relay, pw_ledger);
    obh_write_conf(&h, extra);
}

static int
ledger_count_is(obh_t *hh, void *arg)
{
    char resp[1024], want[32];

    snprintf(want, sizeof(want), "\"count\":%d", *(int *) arg);
    return obh_http(hh->ledger_port, "GET", "/ledger/total", NULL, NULL, resp, sizeof(resp), NULL, 0) == 200 &&
           strstr(resp, want) != NULL;
}

/* Sum of the group's committed offsets, read as admin (OffsetFetch needs no membership). */
static int
group_committed_at_least(obh_t *hh, void *arg)
{
    char             err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int64_t          sum = 0;

    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_t *c = secure_client(RD_KAFKA_CONSUMER, "admin", pw_admin, conf);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(hh->partitions);
    for (int p = 0; p < hh->partitions; p++)
        rd_kafka_topic_partition_list_add(l, hh->topic, p);
    if (rd_kafka_committed(c, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < l->cnt; i++)
            sum += l->elems[i].offset > 0 ? l->elems[i].offset : 0;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(c);
    return sum >= *(int *) arg;
}

static void
delivered(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void) rk;
    (void) opaque;
    *(rd_kafka_resp_err_t *) m->_private = m->err;
}

/* Produces one record as user (NULL: unauthenticated) and returns its delivery error. */
static rd_kafka_resp_err_t
produce_as(const char *user, const char *pw)
{
    char                err[256];
    rd_kafka_conf_t    *conf = rd_kafka_conf_new();
    rd_kafka_resp_err_t got = RD_KAFKA_RESP_ERR__BEGIN;

    cr_assert_eq(rd_kafka_conf_set(conf, "message.timeout.ms", "5000", err, sizeof(err)), RD_KAFKA_CONF_OK);
    /* the refusals are expected: keep librdkafka's complaints about them off the test output */
    cr_assert_eq(rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err)), RD_KAFKA_CONF_OK);
    rd_kafka_conf_set_dr_msg_cb(conf, delivered);
    rd_kafka_t *p = secure_client(RD_KAFKA_PRODUCER, user, pw, conf);
    cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(h.topic), RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_KEY("k", 1),
                                   RD_KAFKA_V_VALUE("forged", 6), RD_KAFKA_V_OPAQUE(&got), RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int64_t t0 = ob_now_ms(); got == RD_KAFKA_RESP_ERR__BEGIN && ob_now_ms() - t0 < obh_ms(15000);)
        rd_kafka_poll(p, 50);
    rd_kafka_destroy(p);
    return got;
}

/* Whole file into a malloc'd string. */
static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long  n;

    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = calloc(1, (size_t) n + 1);
    cr_assert_eq(fread(buf, 1, (size_t) n, f), (size_t) n);
    fclose(f);
    return buf;
}

static void
assert_no_password(const char *where, const char *text)
{
    const char *pws[] = { pw_relay, pw_ledger, pw_admin };

    for (size_t i = 0; i < OB_ARRAY_LEN(pws); i++)
        cr_assert_null(strstr(text, pws[i]), "%s shows a password", where);
}

Test(kafka_secure, relay_and_ledger_principals_book_orders_others_are_refused, .init = setup, .fini = teardown,
     .timeout = 180)
{
    char resp[1024], out[8192];
    int  orders = 5;

    if (getenv("OB_SKIP_KAFKA_SECURE") != NULL)
        cr_skip_test("OB_SKIP_KAFKA_SECURE is set (sanitizer pass)");
    write_secure_conf();
    const char *check[] = { "-t", "-c", h.conf, NULL };
    cr_assert_eq(obh_run(check, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "sasl.username=relay sasl.password=***") != NULL, "-t: %s", out);
    cr_assert(strstr(out, "sasl.username=ledger sasl.password=***") != NULL, "-t: %s", out);
    assert_no_password("-t", out);

    int64_t t0 = ob_now_ms();
    obh_start(&h, NULL);
    for (int i = 0; i < orders; i++)
        cr_assert_eq(obh_http(h.orders_port, "POST", "/orders", NULL,
                              "{\"customerId\":\"sec\",\"amount\":\"10.00\",\"currency\":\"USD\"}", resp, sizeof(resp),
                              NULL, 0),
                     201, "%s", resp);
    cr_assert(obh_poll(ledger_count_is, &h, &orders, obh_ms(60000)), "the ledger never booked %d orders; log %s",
              orders, h.log);
    cr_log_info("kafka_secure: %d orders booked through SASL/SCRAM in %lld ms from start", orders,
                (long long) (ob_now_ms() - t0));
    cr_assert(obh_poll(group_committed_at_least, &h, &orders, obh_ms(20000)), "the ledger's group committed nothing");
    cr_assert_eq(obh_log_count(&h, "max.message.bytes not read"), 0, "the DescribeConfigs grant did not do; log %s",
                 h.log);

    rd_kafka_resp_err_t e = produce_as("intruder", pw_intruder);
    cr_assert_eq(e, RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, "intruder's produce: %s", rd_kafka_err2str(e));
    e = produce_as(NULL, NULL);
    cr_assert_neq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "an unauthenticated produce was accepted");
    cr_assert_neq(e, RD_KAFKA_RESP_ERR__BEGIN, "an unauthenticated produce got no answer");
    cr_log_info("kafka_secure: intruder refused (%s), unauthenticated refused (%s)",
                rd_kafka_err2str(RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED), rd_kafka_err2str(e));
    cr_assert(ledger_count_is(&h, &orders), "a refused produce reached the ledger");

    const char *status[] = { "status", "--json", "-c", h.conf, NULL };
    cr_assert_eq(obh_run(status, out, sizeof(out)), 0, "%s", out);
    assert_no_password("status --json", out);
    cr_assert_eq(obh_stop(&h, obh_ms(15000)), 0);
    char *log = slurp(h.log);
    cr_assert(strstr(log, "sasl.password=***") != NULL, "the log does not show the masked properties");
    assert_no_password("the log", log);
    free(log);
}
