/* tests/unit/test_event.c: the event codec (msgpack and JSON) and hostile msgpack input. */
#include "common/event.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

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
