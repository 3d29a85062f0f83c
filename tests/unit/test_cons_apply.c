/* tests/unit/test_cons_apply.c: the ledger consumer's checks that need no database. */
#include "workers/consumer/apply.h"
#include "common/event.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

Test(cons_utf8, accepts_well_formed_text)
{
    static const char *ok[] = { "", "order.created", "caf\xc3\xa9", "\xe2\x82\xac 5", "\xf0\x9f\x98\x80",
                                "\xf4\x8f\xbf\xbf" /* U+10FFFF */ };

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        cr_assert(ob_cons_utf8_valid(ok[i], strlen(ok[i])), "refused #%zu", i);
}

Test(cons_utf8, refuses_every_malformed_kind)
{
    static const char *bad[] = {
        "\xff",              /* never a UTF-8 byte */
        "\x80",              /* lone continuation */
        "\xc0\x80",          /* overlong NUL */
        "\xc1\xbf",          /* overlong */
        "\xe0\x80\x80",      /* overlong */
        "\xed\xa0\x80",      /* surrogate U+D800 */
        "\xf4\x90\x80\x80",  /* past U+10FFFF */
        "\xe2\x82",          /* truncated */
        "a\xe2\x82z",        /* broken in the middle */
        "order.cancel\xff\xfeled",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(ob_cons_utf8_valid(bad[i], strlen(bad[i])), "accepted #%zu", i);
}

Test(cons_printable, escapes_everything_but_printable_ascii)
{
    char out[64];

    ob_cons_printable("a\xff" "b\\\n", 5, out, sizeof(out));
    cr_assert_str_eq(out, "a\\xffb\\x5c\\x0a");
    ob_cons_printable("abcdef", 6, out, 4);
    cr_assert_str_eq(out, "abc");
    ob_cons_printable("\xff\xff", 2, out, 6);
    cr_assert_str_eq(out, "\\xff", "an escape is never cut in half");
}

static ob_event_t
good_event(const char *type, int seq, const char *amount, const char *currency)
{
    ob_event_t ev;

    memset(&ev, 0, sizeof(ev));
    strcpy(ev.id, "0190a0a0-0000-7000-8000-000000000001");
    strcpy(ev.aggregate_id, "0190a0a0-0000-7000-8000-0000000000aa");
    strcpy(ev.aggregate_type, "order");
    strcpy(ev.type, type);
    ev.seq = seq;
    strcpy(ev.occurred_at, "2026-01-02T03:04:05.678Z");
    strcpy(ev.customer_id, "c-1");
    strcpy(ev.amount, amount);
    strcpy(ev.currency, currency);
    strcpy(ev.status, "created");
    return ev;
}

Test(cons_validate, accepts_real_events_and_canonicalizes_the_amount)
{
    char       why[256];
    ob_event_t ev = good_event(OB_EVENT_CREATED, 1, "100.5", "USD");

    cr_assert_eq(ob_cons_validate(&ev, why, sizeof(why)), 0, "%s", why);
    cr_assert_str_eq(ev.amount, "100.50");
    ev = good_event(OB_EVENT_CANCELLED, 2, "1.000", "USD");
    cr_assert_eq(ob_cons_validate(&ev, why, sizeof(why)), 0, "%s", why);
    cr_assert_str_eq(ev.amount, "1.00");
    ev = good_event(OB_EVENT_CREATED, 1, "1000000000000", "JPY");
    cr_assert_eq(ob_cons_validate(&ev, why, sizeof(why)), 0, "%s", why);
    ev = good_event(OB_EVENT_CREATED, 1, "0.001", "KWD");
    cr_assert_eq(ob_cons_validate(&ev, why, sizeof(why)), 0, "%s", why);
    cr_assert_str_eq(ev.amount, "0.001");
}

typedef struct {
    const char *type;
    int         seq;
    const char *amount, *currency, *field, *value, *why;
} refusal_t;

Test(cons_validate, refuses_what_the_ledger_cannot_hold_and_says_why)
{
    static const refusal_t cases[] = {
        { OB_EVENT_CREATED, 1, "99999999999999999999.99", "USD", NULL, NULL, "too large" },   /* past numeric(20,4) */
        { OB_EVENT_CREATED, 1, "1000000000000.01", "USD", NULL, NULL, "too large" },
        { OB_EVENT_CREATED, 1, "1.001", "USD", NULL, NULL, "decimal places" },
        { OB_EVENT_CREATED, 1, "1.5", "JPY", NULL, NULL, "no minor unit" },
        { OB_EVENT_CREATED, 1, "0", "USD", NULL, NULL, "greater than 0" },
        { OB_EVENT_CREATED, 1, "-3.00", "USD", NULL, NULL, "greater than 0" },
        { OB_EVENT_CREATED, 1, "1e5", "USD", NULL, NULL, "exponent" },
        { OB_EVENT_CREATED, 1, "1.00", "usd", NULL, NULL, "currency \"usd\"" },
        { OB_EVENT_CREATED, 1, "1.00", "XXX", NULL, NULL, "currency \"XXX\"" },
        { OB_EVENT_CREATED, 2, "1.00", "USD", NULL, NULL, "seq 2 out of range for order.created" },
        { OB_EVENT_CANCELLED, 1, "1.00", "USD", NULL, NULL, "seq 1 out of range for order.cancelled" },
        { OB_EVENT_CANCELLED, INT32_MAX, "1.00", "USD", NULL, NULL, "out of range" },
        { "order.refunded", 1, "1.00", "USD", NULL, NULL, "unknown event type \"order.refunded\"" },
        { "order.cr\xff" "eated", 1, "1.00", "USD", NULL, NULL, "field type is not valid UTF-8: \"order.cr\\xffeated\"" },
        { OB_EVENT_CREATED, 1, "1.00", "USD", "customer", "c-\xc0\x80", "field customerId is not valid UTF-8" },
        { OB_EVENT_CREATED, 1, "1.00", "USD", "aggregate_type", "customer", "aggregate_type \"customer\"" },
        { OB_EVENT_CREATED, 1, "1.00", "USD", "id", "not-a-uuid", "not a UUID" },
        { OB_EVENT_CREATED, 1, "1.00", "USD", "status", "\xed\xa0\x80", "field status is not valid UTF-8" },
    };
    char why[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const refusal_t *c = &cases[i];
        ob_event_t       ev = good_event(c->type, c->seq, c->amount, c->currency);
        if (c->field && strcmp(c->field, "customer") == 0)
            strcpy(ev.customer_id, c->value);
        else if (c->field && strcmp(c->field, "aggregate_type") == 0)
            strcpy(ev.aggregate_type, c->value);
        else if (c->field && strcmp(c->field, "id") == 0)
            strcpy(ev.id, c->value);
        else if (c->field && strcmp(c->field, "status") == 0)
            strcpy(ev.status, c->value);
        why[0] = '\0';
        cr_assert_eq(ob_cons_validate(&ev, why, sizeof(why)), -1, "case %zu accepted", i);
        cr_assert(strstr(why, c->why) != NULL, "case %zu: \"%s\" does not say \"%s\"", i, why, c->why);
        cr_assert(ob_cons_utf8_valid(why, strlen(why)), "case %zu: the reason itself is not UTF-8", i);
    }
}

Test(cons_classify, only_data_errors_are_the_events_fault)
{
    static const struct {
        const char     *state;
        ob_cons_class_t want;
    } cases[] = {
        { "22003", OB_CONS_DATA },      { "22021", OB_CONS_DATA },      { "22000", OB_CONS_DATA },
        { "23505", OB_CONS_DATA },      { "23514", OB_CONS_DATA },      { "40001", OB_CONS_TRANSIENT },
        { "40P01", OB_CONS_TRANSIENT }, { "53100", OB_CONS_TRANSIENT }, { "53200", OB_CONS_TRANSIENT },
        { "53300", OB_CONS_TRANSIENT }, { "58030", OB_CONS_TRANSIENT }, { "57014", OB_CONS_TRANSIENT },
        { "55P03", OB_CONS_TRANSIENT }, { "XX000", OB_CONS_TRANSIENT }, { "57P01", OB_CONS_AWAY },
        { "57P03", OB_CONS_AWAY },      { "08006", OB_CONS_AWAY },      { "08001", OB_CONS_AWAY },
        { "", OB_CONS_AWAY },           { NULL, OB_CONS_AWAY },         { "42501", OB_CONS_OTHER },
        { "42883", OB_CONS_OTHER },     { "P0001", OB_CONS_OTHER },     { "25P02", OB_CONS_OTHER },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(ob_cons_classify(cases[i].state), cases[i].want, "%s: %s", cases[i].state ? cases[i].state : "NULL",
                     ob_cons_class_name(ob_cons_classify(cases[i].state)));
}

/* A msgpack event whose type holds a NUL: the C string would end at it. */
Test(cons_decode, refuses_a_nul_inside_a_string_and_too_many_headers)
{
    ob_event_t       ev = good_event(OB_EVENT_CREATED, 1, "1.00", "USD");
    ob_cons_record_t r;
    char            *buf, why[256];
    size_t           len;

    cr_assert_eq(ob_event_encode(&ev, 0, &buf, &len), 0);
    char *p = memmem(buf, len, "order.created", 13);
    cr_assert_not_null(p);
    p[5] = '\0';                                  /* "order\0created" */
    memset(&r, 0, sizeof(r));
    r.topic = "t";
    r.value = buf;
    r.value_len = len;
    cr_assert_eq(ob_cons_decode(&r, &ev, why, sizeof(why)), -1);
    cr_assert(strstr(why, "field type contains a NUL byte") != NULL, "%s", why);
    p[5] = '.';
    cr_assert_eq(ob_cons_decode(&r, &ev, why, sizeof(why)), 0, "%s", why);
    r.headers_dropped = 1;
    cr_assert_eq(ob_cons_decode(&r, &ev, why, sizeof(why)), -1);
    cr_assert(strstr(why, "headers") != NULL, "%s", why);
    free(buf);
}

Test(cons_decode, follows_the_content_type_header)
{
    ob_event_t       ev = good_event(OB_EVENT_CREATED, 1, "2.50", "EUR");
    ob_cons_record_t r;
    char            *buf, why[256];
    size_t           len;

    cr_assert_eq(ob_event_encode(&ev, 1, &buf, &len), 0);
    memset(&r, 0, sizeof(r));
    r.topic = "t";
    r.value = buf;
    r.value_len = len;
    cr_assert_eq(ob_cons_decode(&r, &ev, why, sizeof(why)), -1, "JSON read as msgpack");
    r.nheaders = 1;
    r.headers[0] = (ob_cons_header_t) { "content-type", "application/json", 16 };
    cr_assert_eq(ob_cons_decode(&r, &ev, why, sizeof(why)), 0, "%s", why);
    cr_assert_str_eq(ev.amount, "2.50");
    free(buf);
}

/* A payload crafted apart from its record (another order, another event, another seq) is not booked. */
Test(cons_decode, refuses_a_payload_its_key_and_headers_do_not_agree_with)
{
    ob_event_t       ev = good_event(OB_EVENT_CANCELLED, 2, "3.00", "EUR"), out;
    ob_cons_record_t r;
    char            *buf, why[256];
    size_t           len;

    cr_assert_eq(ob_event_encode(&ev, 0, &buf, &len), 0);
    memset(&r, 0, sizeof(r));
    r.topic = "t";
    r.value = buf;
    r.value_len = len;
    r.key = ev.aggregate_id;
    r.key_len = strlen(ev.aggregate_id);
    r.nheaders = 4;
    r.headers[0] = (ob_cons_header_t) { "event-id", ev.id, strlen(ev.id) };
    r.headers[1] = (ob_cons_header_t) { "aggregate-seq", "2", 1 };
    r.headers[2] = (ob_cons_header_t) { "event-type", OB_EVENT_CANCELLED, strlen(OB_EVENT_CANCELLED) };
    r.headers[3] = (ob_cons_header_t) { "aggregate-type", "order", 5 };
    cr_assert_eq(ob_cons_decode(&r, &out, why, sizeof(why)), 0, "%s", why);

    r.key = "01a20000-0000-7000-8000-0000000000ff";
    cr_assert_eq(ob_cons_decode(&r, &out, why, sizeof(why)), -1, "another order's key");
    cr_assert(strstr(why, "key") != NULL, "%s", why);
    r.key = ev.aggregate_id;
    r.headers[1] = (ob_cons_header_t) { "aggregate-seq", "3", 1 };
    cr_assert_eq(ob_cons_decode(&r, &out, why, sizeof(why)), -1, "another seq");
    r.headers[1] = (ob_cons_header_t) { "aggregate-seq", "2", 1 };
    r.headers[3] = (ob_cons_header_t) { "aggregate-type", "ordr", 4 };
    cr_assert_eq(ob_cons_decode(&r, &out, why, sizeof(why)), -1, "another aggregate type");
    cr_assert(strstr(why, "headers disagree") != NULL, "%s", why);
    free(buf);
}
