/* tests/unit/test_orders.c: order request validation (workers/http/order_req.h), on a worker-sized stack too. */
#include "common/util.h"
#include "workers/http/order_req.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

Test(order_req, traceparent_becomes_the_events_headers_or_a_400)
{
    static const char *bad[] = {
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",                  /* no flags */
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",               /* upper case */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",               /* trace id all zero */
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",               /* parent id all zero */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",               /* version ff */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}",            /* would break out of JSON */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",             /* version 00 has no more */
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",              /* more, but not after a '-' */
        "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
    };
    char out[OB_TRACE_HEADERS_MAX], msg[256];

    cr_assert_eq(ob_order_traceparent(NULL, out, msg, sizeof(msg)), 0);
    cr_assert_str_eq(out, "", "no header, no headers");
    cr_assert_eq(ob_order_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", out, msg,
                                      sizeof(msg)), 0);
    cr_assert_str_eq(out, "{\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}");
    /* a later version's extra fields are not ours to read: its version-00 part is kept */
    cr_assert_eq(ob_order_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next", out,
                                      msg, sizeof(msg)), 0);
    cr_assert_str_eq(out, "{\"traceparent\":\"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        msg[0] = '\0';
        cr_expect_eq(ob_order_traceparent(bad[i], out, msg, sizeof(msg)), 400, "accepted \"%s\"", bad[i]);
        cr_expect(strstr(msg, "traceparent") != NULL, "%s", msg);
    }
}
