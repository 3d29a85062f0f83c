/*
 * tests/integration/test_signing.c: [kafka] signing_key end to end. The
 * relay signs what it produces, the consumer books only what a key it
 * accepts signed, forged records are dead-lettered with the record, and a
 * key rotation keeps old and new records acceptable, re-reads included.
 */
#include "tests/integration/fixture.h"
#include "common/event.h"
#include "common/murmur2.h"
#include "common/rsig.h"
#include "common/util.h"
#include "common/uuid.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K1_SECRET "6b31000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d"
#define K2_SECRET "azIgc2VjcmV0IHNlY29uZCBrZXkgMzIgYnl0ZXMhISE="
#define K1 "k1:hex:" K1_SECRET
#define K2 "k2:base64:" K2_SECRET
#define K9 "k9:hex:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
#define ORDERS 12

static ob_rsig_key_t
key(const char *spec)
{
    ob_rsig_key_t k;
    const char   *why = NULL;

    cr_assert_eq(ob_rsig_parse_key(spec, &k, &why), 0, "%s", why);
    return k;
}

/* How the test's own records are signed. */
typedef enum { SIGN_NONE, SIGN_OK, SIGN_BAD } sign_t;

/* Produces a valid order.created for order with amount, signed by k as asked; waits for the ack. */
static void
produce_event(rd_kafka_t *rk, const char *order, const char *amount, const ob_rsig_key_t *k, sign_t how)
{
    ob_event_t    ev = { 0 };
    ob_uuid_t     u;
    char         *val, sig[OB_RSIG_VALUE_LEN + 1];
    size_t        len;
    ob_rsig_hdr_t c[OB_RSIG_NCOVERED];

    cr_assert_eq(ob_uuid_v7(&u), 0);
    ob_uuid_format(&u, ev.id);
    strcpy(ev.type, OB_EVENT_CREATED);
    strcpy(ev.aggregate_type, "order");
    strcpy(ev.aggregate_id, order);
    ev.seq = 1;
    ob_event_timestamp(ob_wall_ms(), ev.occurred_at);
    strcpy(ev.customer_id, "c-sig");
    strcpy(ev.amount, amount);
    strcpy(ev.currency, "USD");
    strcpy(ev.status, "created");
    cr_assert_eq(ob_event_encode(&ev, 0, &val, &len), 0);
    const char *v[OB_RSIG_NCOVERED] = { ev.id, ev.type, order, "1", "application/msgpack" };
    rd_kafka_headers_t *hs = rd_kafka_headers_new(8);
    for (int i = 0; i < OB_RSIG_NCOVERED; i++) {
        c[i] = (ob_rsig_hdr_t) { ob_rsig_covered[i], v[i], strlen(v[i]) };
        rd_kafka_header_add(hs, ob_rsig_covered[i], -1, v[i], -1);
    }
    if (how != SIGN_NONE) {
        /* a bad one: signed over another amount than the value carries */
        cr_assert_eq(ob_rsig_sign(k, order, 36, val, len - (how == SIGN_BAD), c, sig), 0);
        rd_kafka_header_add(hs, OB_RSIG_HEADER, -1, sig, -1);
    }
    cr_assert_eq(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(h.topic),
                                   RD_KAFKA_V_PARTITION(ob_partition_for(order, 36, h.partitions)),
                                   RD_KAFKA_V_KEY(order, 36), RD_KAFKA_V_VALUE(val, len),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hs), RD_KAFKA_V_END),
                 0);
    cr_assert_eq(rd_kafka_flush(rk, obh_ms(10000)), 0);
    free(val);
}

static void
post_orders(int n, const char *amount)
{
    char body[256], resp[1024];

    snprintf(body, sizeof(body), "{\"customerId\":\"sig\",\"amount\":\"%s\",\"currency\":\"USD\"}", amount);
    for (int i = 0; i < n; i++)
        cr_assert_eq(obh_http(h.orders_port, "POST", "/orders", NULL, body, resp, sizeof(resp), NULL, 0), 201, "%s",
                     resp);
}

/* Waits until the ledger's sql reaches want. */
static void
wait_ledger(const char *sql, long long want, int timeout_ms)
{
    obh_wait_scalar(&h, h.ledger_dsn, sql, want, timeout_ms);
}

static long long
dead_letters_for(const char *order, const char *error_like)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM ledger_dead_letter WHERE kafka_key = convert_to('%s', 'UTF8')"
             " AND kafka_value IS NOT NULL AND array_length(kafka_header_keys, 1) >= 5 AND error LIKE '%s'",
             order, error_like);
    return obh_scalar(h.ledger_dsn, sql);
}

static int
all_set(const unsigned char *v, int n)
{
    for (int i = 0; i < n; i++)
        if (!v[i])
            return 0;
    return 1;
}

/* Signature header key ids of every record on the topic: counts of "k1:", "k2:" and none; returns how many read. */
static int
count_signatures(int want, int *k1, int *k2, int *none)
{
    char             err[256], sig[128];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int              got = 0;
    unsigned char    eof[256] = { 0 };      /* per partition: at its end since its last record */
    int64_t          deadline = ob_now_ms() + obh_ms(20000);

    *k1 = *k2 = *none = 0;
    rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", h.tag, err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(h.partitions);
    for (int p = 0; p < h.partitions; p++)
        rd_kafka_topic_partition_list_add(tp, h.topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(c, tp), 0);
    rd_kafka_topic_partition_list_destroy(tp);
    while (ob_now_ms() < deadline && !(got >= want && all_set(eof, h.partitions))) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eof[m->partition & 0xff] = 1;
        } else if (m->err == 0) {
            got++;
            eof[m->partition & 0xff] = 0;
            obh_header(m, OB_RSIG_HEADER, sig, sizeof(sig));
            *k1 += strncmp(sig, "k1:", 3) == 0 && strlen(sig) == 67;
            *k2 += strncmp(sig, "k2:", 3) == 0 && strlen(sig) == 67;
            *none += sig[0] == '\0';
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    cr_assert_geq(got, want, "read %d records of %d", got, want);
    cr_assert_eq(got - (*k1 + *k2 + *none), 1, "besides the test's k9 forgery, a signature of another shape");
    return got;
}

static rd_kafka_t *
test_producer(void)
{
    char             err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err)), RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cr_assert_not_null(rk, "%s", err);
    return rk;
}

static const char *conf_k1 =
    "[workers]\nhttp = 1\nrelays = 1\nconsumers = 1\n"
    "[kafka]\nsigning_key = " K1 "\nrequire_signature = yes\n";

/* k2 signs, k1 is still accepted; a new consumer group (%s) re-reads the whole topic. */
static const char *conf_k2 =
    "[workers]\nhttp = 1\nrelays = 1\nconsumers = 1\n"
    "[kafka]\nsigning_key = " K2 "\nverify_keys = " K1 "\nrequire_signature = yes\n"
    "[ledger]\ngroup = ledger-rotated-%s\n";

static int
rotated_consumer_done(obh_t *hh, void *arg)
{
    ob_shm_slot_t s;
    int          *want_dups = arg;

    return obh_worker(hh, OB_KIND_CONSUMER, 0, &s) >= 0 &&
           s.counters[OB_CTR_CONS_DUPLICATES] >= (uint64_t) *want_dups && s.counters[OB_CTR_CONS_DEAD_LETTERS] >= 3;
}

Test(signing, signed_orders_flow_forgeries_are_dead_lettered_and_a_rotation_accepts_old_and_new,
     .init = setup, .fini = teardown, .timeout = 180)
{
    ob_rsig_key_t k1 = key(K1), k9 = key(K9);
    char          unsigned_id[37], bad_id[37], unknown_id[37], good_id[37], old_id[37], sql[256];
    int           n1, n2, none;
    rd_kafka_t   *rk = test_producer();
    int64_t       t0 = ob_now_ms();

    obh_kafka_create_topic(&h, 0);
    start_http(conf_k1);
    post_orders(ORDERS, "10.00");
    wait_ledger("SELECT count(*) FROM ledger_entries", ORDERS, 30000);
    cr_log_info("signing: first %d booked after %lld ms", ORDERS, (long long) (ob_now_ms() - t0));

    /* forgeries, and one the test signs properly with k1 so the others fail for their own reason only */
    obh_new_uuid(unsigned_id);
    obh_new_uuid(bad_id);
    obh_new_uuid(unknown_id);
    obh_new_uuid(good_id);
    produce_event(rk, unsigned_id, "1.00", NULL, SIGN_NONE);
    produce_event(rk, bad_id, "2.00", &k1, SIGN_BAD);
    produce_event(rk, unknown_id, "4.00", &k9, SIGN_OK);
    produce_event(rk, good_id, "0.25", &k1, SIGN_OK);
    wait_ledger("SELECT count(*) FROM ledger_dead_letter", 3, 20000);
    wait_ledger("SELECT count(*) FROM ledger_entries", ORDERS + 1, 20000);
    cr_assert_eq(dead_letters_for(unsigned_id, "unsigned record%"), 1, "log %s", h.log);
    cr_assert_eq(dead_letters_for(bad_id, "bad signature (key id ''k1'')"), 1);
    cr_assert_eq(dead_letters_for(unknown_id, "unknown signing key id ''k9''"), 1);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM ledger_entries WHERE order_id = '%s'", good_id);
    cr_assert_eq(obh_scalar(h.ledger_dsn, sql), 1, "the test's own k1 record was not booked");
    /* ledger = orders + the test's signed 0.25; nothing forged counted */
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT (sum(amount) * 100)::bigint FROM ledger_entries"),
                 ORDERS * 1000 + 25);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT (sum(amount) * 100)::bigint FROM orders"), ORDERS * 1000);
    count_signatures(ORDERS + 4, &n1, &n2, &none);
    cr_assert_geq(n1, ORDERS + 2, "relay records and the test's own k1 records carry k1 signatures");
    cr_assert_eq(n2, 0);
    cr_assert_eq(none, 1, "only the test's unsigned record lacks the header");

    /* rotation: k2 signs, k1 still accepted; the re-read of everything keeps k1's records */
    char          conf[1024];
    ob_shm_slot_t s;
    cr_assert_geq(obh_worker(&h, OB_KIND_CONSUMER, 0, &s), 0);
    snprintf(conf, sizeof(conf), conf_k2, h.tag);
    obh_write_conf(&h, conf);
    /* -t shows key ids, never a secret */
    char        out[8192];
    const char *targs[] = { "-t", "-c", h.conf, NULL };
    cr_assert_eq(obh_run(targs, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "relays sign with key id k2 (secret ***)") != NULL, "%s", out);
    cr_assert(strstr(out, "consumers accept key ids k1, k2 (secrets ***); unsigned records refused") != NULL, "%s",
              out);
    cr_assert(strstr(out, K1_SECRET) == NULL && strstr(out, K2_SECRET) == NULL, "-t shows a secret: %s", out);
    kill(h.pid, SIGHUP);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_CONSUMER, 0, s.pid, obh_ms(20000)), 0, "no new consumer; log %s", h.log);
    cr_log_info("signing: new consumer after %lld ms", (long long) (ob_now_ms() - t0));
    int dups = ORDERS + 1;
    cr_assert(obh_poll(rotated_consumer_done, &h, &dups, obh_ms(40000)),
              "the rotated consumer never re-read the topic as duplicates; log %s", h.log);
    cr_log_info("signing: rotated consumer re-read the topic after %lld ms", (long long) (ob_now_ms() - t0));
    obh_new_uuid(old_id);
    produce_event(rk, old_id, "0.50", &k1, SIGN_OK);          /* a producer still on k1 */
    post_orders(ORDERS, "1.00");
    wait_ledger("SELECT count(*) FROM ledger_entries", 2 * ORDERS + 2, 30000);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter"), 3, "log %s", h.log);
    cr_log_info("signing: k2 orders booked after %lld ms", (long long) (ob_now_ms() - t0));
    cr_assert_geq(obh_worker(&h, OB_KIND_CONSUMER, 0, &s), 0);
    cr_assert_eq(s.counters[OB_CTR_CONS_DEAD_LETTERS], 3, "re-read: only the three forgeries refused again (%llu)",
                 (unsigned long long) s.counters[OB_CTR_CONS_DEAD_LETTERS]);
    /* a relay retired mid-cycle may send an event twice: at least once, never lost */
    cr_assert_geq(s.counters[OB_CTR_CONS_DUPLICATES], (uint64_t) ORDERS + 1,
                  "re-read k1 records skipped as booked (%llu); log %s",
                 (unsigned long long) s.counters[OB_CTR_CONS_DUPLICATES], h.log);
    int total = count_signatures(2 * ORDERS + 5, &n1, &n2, &none);
    cr_assert_geq(n1, ORDERS + 3);
    cr_assert_geq(n2, ORDERS, "the relay signs with k2 after the rotation");
    cr_assert_eq(none, 1);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT (sum(amount) * 100)::bigint FROM ledger_entries"),
                 ORDERS * 1000 + ORDERS * 100 + 25 + 50);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT (sum(amount) * 100)::bigint FROM orders"),
                 ORDERS * 1000 + ORDERS * 100);
    cr_assert_eq(obh_log_count(&h, K1_SECRET) + obh_log_count(&h, K2_SECRET), 0, "a secret is in the log");
    rd_kafka_destroy(rk);
    cr_log_info("signing: %d + %d orders booked, 3 forgeries dead-lettered (twice: re-read), rotation k1 -> k2: "
                "%llu re-read as duplicates; topic %d records: %d k1, %d k2, %d unsigned; %lld ms",
                ORDERS, ORDERS, (unsigned long long) s.counters[OB_CTR_CONS_DUPLICATES], total, n1, n2, none,
                (long long) (ob_now_ms() - t0));
}
