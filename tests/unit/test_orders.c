/* tests/unit/test_orders.c: request validation, money, UUIDv7, murmur2, event encoding. */
#include "common/event.h"
#include "common/money.h"
#include "common/murmur2.h"
#include "common/util.h"
#include "common/uuid.h"
#include "shm/shm.h"
#include "workers/http/order_req.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CTL                                                                                                    \
    "customerId: must not contain control characters (U+0000-U+001F, U+007F-U+009F) or line separators (U+2028," \
    " U+2029)"

static const struct {
    const char *body;
    const char *error;
} bad_bodies[] = {
    { "", "body: empty; expected a JSON object" },
    { "{", "body: invalid JSON at line 1 column 1: string or '}' expected near end of file" },
    { "not json", "body: invalid JSON at line 1 column 3: '[' or '{' expected near 'not'" },
    { "[1,2]", "body: expected a JSON object" },
    { "\"str\"", "body: invalid JSON at line 1 column 5: '[' or '{' expected near '\"str\"'" },
    { "{\"customerId\":\"c\",\"customerId\":\"d\",\"amount\":1,\"currency\":\"USD\"}",
      "body: invalid JSON at line 1 column 30: duplicate object key near '\"customerId\"'" },
    { "{\"amount\":1,\"currency\":\"USD\"}", "customerId: required" },
    { "{\"customerId\":null,\"amount\":1,\"currency\":\"USD\"}", "customerId: required" },
    { "{\"customerId\":42,\"amount\":1,\"currency\":\"USD\"}", "customerId: must be a string" },
    { "{\"customerId\":[\"c\"],\"amount\":1,\"currency\":\"USD\"}", "customerId: must be a string" },
    { "{\"customerId\":\"\",\"amount\":1,\"currency\":\"USD\"}", "customerId: must not be empty" },
    { "{\"customerId\":\"a\\u0000b\",\"amount\":1,\"currency\":\"USD\"}", "customerId: must not contain NUL" },
    { "{\"customerId\":\"a\\nb\",\"amount\":1,\"currency\":\"USD\"}", CTL },
    { "{\"customerId\":\"a\\u007fb\",\"amount\":1,\"currency\":\"USD\"}", CTL },
    { "{\"customerId\":\"a\\u0085b\",\"amount\":1,\"currency\":\"USD\"}", CTL },
    { "{\"customerId\":\"a\xc2\x9f\",\"amount\":1,\"currency\":\"USD\"}", CTL },
    { "{\"customerId\":\"a\\u2028b\",\"amount\":1,\"currency\":\"USD\"}", CTL },
    { "{\"customerId\":\"a\xe2\x80\xa9\",\"amount\":1,\"currency\":\"USD\"}", CTL },
    { "{\"customerId\":\"c-1\",\"amount\":1,\"currency\":\"USD\\u0000junk\"}", "currency: must not contain NUL" },
    { "{\"customerId\":\"c-1\",\"amount\":1,\"currency\":\"USD\\u0000\"}", "currency: must not contain NUL" },
    { "{\"customerId\":\"c-1\",\"amount\":1,\"currency\":\"US\xc2\x85\"}",
      "currency: \"US??\" is not a supported ISO 4217 code" },
    { "{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
      "body: arrays and objects nested deeper than 32 levels" },
    { "{\"customerId\":\"c-1\",\"amount\":1}", "currency: required" },
    { "{\"customerId\":\"c-1\",\"amount\":1,\"currency\":1}", "currency: must be a string" },
    { "{\"customerId\":\"c-1\",\"amount\":1,\"currency\":\"usd\"}",
      "currency: \"usd\" is not a supported ISO 4217 code" },
    { "{\"customerId\":\"c-1\",\"amount\":1,\"currency\":\"XXX\"}",
      "currency: \"XXX\" is not a supported ISO 4217 code" },
    { "{\"customerId\":\"c-1\",\"amount\":1,\"currency\":\"\"}", "currency: \"\" is not a supported ISO 4217 code" },
    { "{\"customerId\":\"c-1\",\"currency\":\"USD\"}", "amount: required" },
    { "{\"customerId\":\"c-1\",\"amount\":true,\"currency\":\"USD\"}",
      "amount: must be a number or a decimal string" },
    { "{\"customerId\":\"c-1\",\"amount\":{\"v\":1},\"currency\":\"USD\"}",
      "amount: must be a number or a decimal string" },
    { "{\"customerId\":\"c-1\",\"amount\":0,\"currency\":\"USD\"}", "amount: must be greater than 0" },
    { "{\"customerId\":\"c-1\",\"amount\":\"0.00\",\"currency\":\"USD\"}", "amount: must be greater than 0" },
    { "{\"customerId\":\"c-1\",\"amount\":-5,\"currency\":\"USD\"}", "amount: must be greater than 0" },
    { "{\"customerId\":\"c-1\",\"amount\":\"-5\",\"currency\":\"USD\"}", "amount: must be greater than 0" },
    { "{\"customerId\":\"c-1\",\"amount\":1.005,\"currency\":\"USD\"}", "amount: USD allows at most 2 decimal places" },
    { "{\"customerId\":\"c-1\",\"amount\":\"10.5\",\"currency\":\"JPY\"}",
      "amount: this currency has no minor unit: use a whole number" },
    { "{\"customerId\":\"c-1\",\"amount\":\"1.0001\",\"currency\":\"KWD\"}",
      "amount: KWD allows at most 3 decimal places" },
    { "{\"customerId\":\"c-1\",\"amount\":1e2,\"currency\":\"USD\"}", "amount: exponent notation is not accepted" },
    { "{\"customerId\":\"c-1\",\"amount\":\"abc\",\"currency\":\"USD\"}", "amount: not a decimal number" },
    { "{\"customerId\":\"c-1\",\"amount\":\"\",\"currency\":\"USD\"}", "amount: not a decimal number" },
    { "{\"customerId\":\"c-1\",\"amount\":\"1.\",\"currency\":\"USD\"}", "amount: not a decimal number" },
    { "{\"customerId\":\"c-1\",\"amount\":\".5\",\"currency\":\"USD\"}", "amount: not a decimal number" },
    { "{\"customerId\":\"c-1\",\"amount\":\" 5\",\"currency\":\"USD\"}", "amount: not a decimal number" },
    { "{\"customerId\":\"c-1\",\"amount\":\"+5\",\"currency\":\"USD\"}", "amount: not a decimal number" },
    { "{\"customerId\":\"c-1\",\"amount\":\"5 USD\",\"currency\":\"USD\"}", "amount: not a decimal number" },
    { "{\"customerId\":\"c-1\",\"amount\":10000000000000,\"currency\":\"USD\"}", "amount: too large" },
    { "{\"customerId\":\"c-1\",\"amount\":\"99999999999999999999999\",\"currency\":\"USD\"}", "amount: too large" },
};

Test(order_req, bad_bodies_get_400_naming_the_field)
{
    cr_assert_geq(sizeof(bad_bodies) / sizeof(bad_bodies[0]), 30);
    for (size_t i = 0; i < sizeof(bad_bodies) / sizeof(bad_bodies[0]); i++) {
        ob_order_req_t req;
        char           msg[256] = "";
        int            rc = ob_order_req_parse(bad_bodies[i].body, strlen(bad_bodies[i].body), &req, msg, sizeof(msg));
        cr_expect_eq(rc, 400, "case %zu (%s) accepted", i, bad_bodies[i].body);
        cr_expect_str_eq(msg, bad_bodies[i].error, "case %zu (%s)", i, bad_bodies[i].body);
    }
}

/* What a civetweb worker thread has: Debian's civetweb 1.15 fixes it at build time. */
#define CIVETWEB_STACK (100 * 1024)

typedef struct {
    const char *body;
    size_t      len;
    int         rc;
    char        msg[256];
} parse_job_t;

static void *
parse_on_thread(void *arg)
{
    parse_job_t   *job = arg;
    ob_order_req_t req;

    job->rc = ob_order_req_parse(job->body, job->len, &req, job->msg, sizeof(job->msg));
    return NULL;
}

/* Parses body on a thread with the workers' stack size, as the server does. */
static int
parse_small_stack(const char *body, size_t len, char *msg, size_t msglen)
{
    parse_job_t    job = { .body = body, .len = len };
    pthread_attr_t attr;
    pthread_t      th;

    pthread_attr_init(&attr);
    cr_assert_eq(pthread_attr_setstacksize(&attr, CIVETWEB_STACK), 0);
    cr_assert_eq(pthread_create(&th, &attr, parse_on_thread, &job), 0);
    pthread_join(th, NULL);
    pthread_attr_destroy(&attr);
    ob_strlcpy(msg, job.msg, msglen);
    return job.rc;
}

/* depth levels of arrays and objects mixed, around a valid order. */
static char *
nested_body(int depth, size_t *len)
{
    size_t cap = (size_t) depth * 16 + 128, n = 0;
    char  *b = malloc(cap);

    n += (size_t) sprintf(b, "{\"customerId\":\"c\",\"amount\":1,\"currency\":\"USD\",\"meta\":");
    for (int i = 1; i < depth; i++)
        n += (size_t) sprintf(b + n, i % 3 == 0 ? "{\"k\":" : "[");
    for (int i = depth - 1; i >= 1; i--)
        b[n++] = i % 3 == 0 ? '}' : ']';
    b[n++] = '}';
    b[n] = '\0';
    *len = n;
    return b;
}

/* About 800 levels overflowed a worker thread's stack inside jansson (SIGSEGV). */
Test(order_req, deep_nesting_is_400_on_a_worker_sized_stack)
{
    const int depths[] = { 33, 800, 5000, 200000 };
    char      msg[256];
    size_t    len;

    for (size_t i = 0; i < OB_ARRAY_LEN(depths); i++) {
        char *b = nested_body(depths[i], &len);
        cr_expect_eq(parse_small_stack(b, len, msg, sizeof(msg)), 400, "depth %d accepted", depths[i]);
        cr_expect_str_eq(msg, "body: arrays and objects nested deeper than 32 levels", "depth %d", depths[i]);
        free(b);
    }
    char *b = nested_body(32, &len);
    cr_expect_eq(parse_small_stack(b, len, msg, sizeof(msg)), 0, "depth 32 refused: %s", msg);
    free(b);
    /* brackets inside strings are not nesting */
    const char *s = "{\"customerId\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\",\"amount\":1,\"currency\":\"USD\"}";
    cr_expect_eq(parse_small_stack(s, strlen(s), msg, sizeof(msg)), 0, "%s", msg);
}

Test(order_req, customer_id_of_128_bytes_is_fine_129_is_not)
{
    char           body[512], id[130], msg[256];
    ob_order_req_t req;

    memset(id, 'x', 129);
    id[129] = '\0';
    snprintf(body, sizeof(body), "{\"customerId\":\"%s\",\"amount\":1,\"currency\":\"USD\"}", id);
    cr_assert_eq(ob_order_req_parse(body, strlen(body), &req, msg, sizeof(msg)), 400);
    cr_assert_str_eq(msg, "customerId: longer than 128 bytes");
    id[128] = '\0';
    snprintf(body, sizeof(body), "{\"customerId\":\"%s\",\"amount\":1,\"currency\":\"USD\"}", id);
    cr_assert_eq(ob_order_req_parse(body, strlen(body), &req, msg, sizeof(msg)), 0, "%s", msg);
}

Test(order_req, good_bodies_normalise_the_amount)
{
    static const struct {
        const char *body, *amount, *cur;
        long long   minor;
    } ok[] = {
        { "{\"customerId\":\"c-1\",\"amount\":100,\"currency\":\"USD\"}", "100.00", "USD", 10000 },
        { "{\"customerId\":\"c-1\",\"amount\":100.1,\"currency\":\"USD\"}", "100.10", "USD", 10010 },
        { "{\"customerId\":\"c-1\",\"amount\":\"0.01\",\"currency\":\"EUR\"}", "0.01", "EUR", 1 },
        { "{\"customerId\":\"c-1\",\"amount\":\"19.990\",\"currency\":\"GBP\"}", "19.99", "GBP", 1999 },
        { "{\"customerId\":\"c-1\",\"amount\":5000,\"currency\":\"JPY\"}", "5000", "JPY", 5000 },
        { "{\"customerId\":\"c-1\",\"amount\":\"1.234\",\"currency\":\"KWD\"}", "1.234", "KWD", 1234 },
        /* floats would turn this into 0.30000000000000004 */
        { "{\"customerId\":\"c-1\",\"amount\":0.3,\"currency\":\"USD\"}", "0.30", "USD", 30 },
        { "{\"customerId\":\"c-1\",\"amount\":999999999999.99,\"currency\":\"USD\"}", "999999999999.99", "USD",
          99999999999999LL },
        /* unknown fields ignored, any order, nested values skipped */
        { "{\"note\":{\"amount\":7},\"currency\":\"USD\",\"x\":[1,\"]\"],\"amount\":  12.5 ,\"customerId\":\"c\"}",
          "12.50", "USD", 1250 },
        { "{\"customerId\":\"c\",\"\\u0061mount\":2,\"currency\":\"USD\"}", "2.00", "USD", 200 },
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ob_order_req_t req;
        char           msg[256] = "";
        cr_assert_eq(ob_order_req_parse(ok[i].body, strlen(ok[i].body), &req, msg, sizeof(msg)), 0, "case %zu: %s",
                     i, msg);
        cr_expect_str_eq(req.amount, ok[i].amount, "case %zu", i);
        cr_expect_str_eq(req.cur->code, ok[i].cur, "case %zu", i);
        cr_expect_eq(req.minor, ok[i].minor, "case %zu", i);
    }
}

Test(money, parse_and_format_edges)
{
    const ob_currency_t *usd = ob_currency_find("USD"), *jpy = ob_currency_find("JPY");
    const char          *why;
    int64_t              m;
    char                 out[64];

    cr_assert_not_null(usd);
    cr_assert_null(ob_currency_find("usd"));
    cr_assert_eq(ob_money_parse("1000000000000", 13, usd, &m, &why), 0);
    cr_assert_eq(m, 100000000000000LL);
    cr_assert_eq(ob_money_parse("1000000000000.01", 16, usd, &m, &why), -1);
    cr_assert_eq(ob_money_parse("007", 3, usd, &m, &why), 0);
    cr_assert_eq(m, 700);
    cr_assert_eq(ob_money_parse("5.", 2, jpy, &m, &why), -1);
    cr_assert_eq(ob_money_parse("5.000", 5, jpy, &m, &why), 0);
    cr_assert_eq(m, 5);
    ob_money_format(5, 2, out, sizeof(out));
    cr_assert_str_eq(out, "0.05");
    ob_money_format(-12345, 2, out, sizeof(out));
    cr_assert_str_eq(out, "-123.45");
    ob_money_format(7, 0, out, sizeof(out));
    cr_assert_str_eq(out, "7");
    ob_money_format(1234, 3, out, sizeof(out));
    cr_assert_str_eq(out, "1.234");
}

Test(money, numeric_rescale_is_exact)
{
    char out[64];

    cr_assert_eq(ob_decimal_rescale("1234.5000", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "1234.50");
    cr_assert_eq(ob_decimal_rescale("0", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "0.00");
    cr_assert_eq(ob_decimal_rescale("-3.1", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "-3.10");
    cr_assert_eq(ob_decimal_rescale("5000.0000", 0, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "5000");
    cr_assert_eq(ob_decimal_rescale("123456789012345678.1200", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "123456789012345678.12");
    cr_assert_eq(ob_decimal_rescale("1.005", 2, out, sizeof(out)), -1);
    cr_assert_eq(ob_decimal_rescale("1e5", 2, out, sizeof(out)), -1);
}

Test(murmur2, matches_kafka_java_vectors)
{
    /* librdkafka src/rdmurmur2.c java_murmur2_results: the Java client's values */
    static const struct {
        const char *key;
        uint32_t    want;
    } v[] = {
        { "kafka", 0xd067cf64 }, { "giberish123456789", 0x8f552b0c }, { "1234", 0x9fc97b14 },
        { "234", 0xe7c009ca }, { "34", 0x873930da }, { "4", 0x5a4b5ca1 },
        { "PreAmbleWillBeRemoved,ThePrePartThatIs", 0x78424f1c }, { "reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62b377 },
        { "eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4e09e }, { "AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8b43f },
        { "", 0x106e08d9 },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        cr_expect_eq((uint32_t) ob_murmur2(v[i].key, strlen(v[i].key)), v[i].want, "key \"%s\"", v[i].key);
}

Test(murmur2, partition_equals_librdkafka_murmur2_partitioner)
{
    for (int i = 0; i < 2000; i++) {
        ob_uuid_t u;
        char      key[37];
        cr_assert_eq(ob_uuid_v7(&u), 0);
        ob_uuid_format(&u, key);
        for (int p = 1; p <= 64; p *= 2) {
            int32_t theirs = rd_kafka_msg_partitioner_murmur2(NULL, key, strlen(key), p + 3, NULL, NULL);
            cr_assert_eq(ob_partition_for(key, strlen(key), p + 3), theirs, "key %s P=%d", key, p + 3);
        }
    }
}

Test(uuid, v7_layout_and_round_trip)
{
    ob_uuid_t u, back;
    char      s[37];

    cr_assert_eq(ob_uuid_v7(&u), 0);
    ob_uuid_format(&u, s);
    cr_assert_eq(strlen(s), 36);
    cr_assert_eq(s[14], '7', "version nibble: %s", s);
    cr_assert(strchr("89ab", s[19]) != NULL, "variant: %s", s);
    cr_assert_eq(ob_uuid_parse(s, &back), 0);
    cr_assert_eq(memcmp(&u, &back, 16), 0);
    cr_assert_eq(ob_uuid_parse("not-a-uuid", &back), -1);
    cr_assert_eq(ob_uuid_parse("0190a0a0-0000-7000-8000-00000000000g", &back), -1);
    cr_assert_eq(ob_uuid_parse("0190a0a0x0000-7000-8000-000000000000", &back), -1);
}

static int
uuid_cmp(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(ob_uuid_t));
}

/* Forked processes sharing one segment: every id unique, each stream increasing,
 * and all ids together form one strictly increasing clock when sorted by time. */
Test(uuid, v7_unique_and_monotonic_across_processes)
{
    enum { PROCS = 4, EACH = 20000 };
    char      err[256], name[64];
    int       fds[PROCS][2];

    snprintf(name, sizeof(name), "uuid-%d", (int) getpid());
    ob_shm = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(ob_shm, "%s", err);
    for (int p = 0; p < PROCS; p++) {
        cr_assert_eq(pipe(fds[p]), 0);
        if (fork() == 0) {
            close(fds[p][0]);
            for (int i = 0; i < EACH; i++) {
                ob_uuid_t u;
                if (ob_uuid_v7(&u) != 0 || write(fds[p][1], &u, sizeof(u)) != sizeof(u))
                    _exit(1);
            }
            _exit(0);
        }
        close(fds[p][1]);
    }
    static ob_uuid_t all[PROCS * EACH];
    int              n = 0;
    for (int p = 0; p < PROCS; p++) {
        ob_uuid_t prev = { { 0 } };
        for (int i = 0; i < EACH; i++) {
            cr_assert_eq(read(fds[p][0], &all[n], sizeof(ob_uuid_t)), (ssize_t) sizeof(ob_uuid_t));
            /* the first 8 bytes are time + counter: strictly increasing per process */
            cr_assert_gt(memcmp(&all[n], &prev, 8), 0, "process %d went backwards at %d", p, i);
            prev = all[n++];
        }
        close(fds[p][0]);
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        wait(&st);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    /* the shared clock gives every id a distinct time+counter prefix */
    qsort(all, (size_t) n, sizeof(ob_uuid_t), uuid_cmp);
    for (int i = 1; i < n; i++)
        cr_assert_neq(memcmp(&all[i], &all[i - 1], 8), 0, "two ids share time+counter");
    ob_shm_close(ob_shm, 1);
    ob_shm = NULL;
}

static void
sample_event(ob_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    strcpy(ev->id, "0190a0a0-0000-7000-8000-000000000001");
    strcpy(ev->type, OB_EVENT_CREATED);
    strcpy(ev->aggregate_type, "order");
    strcpy(ev->aggregate_id, "0190a0a0-0000-7000-8000-0000000000aa");
    ev->seq = 1;
    ob_event_timestamp(1700000000123LL, ev->occurred_at);
    strcpy(ev->customer_id, "c-\"1\"");
    strcpy(ev->amount, "100.00");
    strcpy(ev->currency, "USD");
    strcpy(ev->status, "created");
}

Test(event, msgpack_and_json_round_trip)
{
    ob_event_t ev, back;
    char      *buf, err[128];
    size_t     len;

    sample_event(&ev);
    cr_assert_str_eq(ev.occurred_at, "2023-11-14T22:13:20.123Z");
    for (int json = 0; json <= 1; json++) {
        cr_assert_eq(ob_event_encode(&ev, json, &buf, &len), 0);
        cr_assert_eq(ob_event_decode(buf, len, json, &back, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(memcmp(&ev, &back, sizeof(ev)), 0, "json=%d round trip differs", json);
        free(buf);
    }
    cr_assert_eq(ob_event_decode("\xc1garbage", 8, 0, &back, err, sizeof(err)), -1);
    cr_assert_eq(ob_event_decode("{\"id\":1}", 8, 1, &back, err, sizeof(err)), -1);
}

Test(event, hostile_msgpack_headers_are_refused_without_allocating)
{
    ob_event_t ev;
    char       err[128];
    /* array32 claiming 2^32-1 elements; map32 likewise; str32 longer than the buffer */
    static const unsigned char arr[] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01 };
    static const unsigned char map[] = { 0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01, 0x02 };
    static const unsigned char str[] = { 0xdb, 0x00, 0x10, 0x00, 0x00, 'a' };
    static const unsigned char unused[] = { 0xc1 };

    cr_assert_eq(ob_event_decode(arr, sizeof(arr), 0, &ev, err, sizeof(err)), -1);
    cr_assert_eq(ob_event_decode(map, sizeof(map), 0, &ev, err, sizeof(err)), -1);
    cr_assert_eq(ob_event_decode(str, sizeof(str), 0, &ev, err, sizeof(err)), -1);
    cr_assert_eq(ob_event_decode(unused, sizeof(unused), 0, &ev, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "not a well-formed msgpack value");
}
