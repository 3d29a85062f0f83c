/*
 * tests/fuzz/fuzz_order_req.c: libFuzzer-style target for everything that
 * reads untrusted bytes on the request path: the POST /orders body parser
 * (jansson + the raw amount scanner + money parsing), UUID path ids and
 * the event decoder the consumer will run on Kafka values.
 *
 * Beyond "does not crash", it checks invariants: an accepted body has a
 * positive amount whose canonical text parses back to the same minor units.
 */
#include "common/event.h"
#include "common/money.h"
#include "common/uuid.h"
#include "workers/http/order_req.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_accepted(const ob_order_req_t *req)
{
    int64_t     back;
    const char *why;

    if (req->minor <= 0 || req->customer_id[0] == '\0' || req->cur == NULL)
        abort();
    if (ob_money_parse(req->amount, strlen(req->amount), req->cur, &back, &why) != 0 || back != req->minor)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ob_order_req_t req;
    ob_event_t     ev;
    ob_uuid_t      u;
    char           msg[512], *copy = malloc(size + 1);

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    if (ob_order_req_parse((const char *) data, size, &req, msg, sizeof(msg)) == 0)
        check_accepted(&req);
    else if (msg[0] == '\0')
        abort();     /* every refusal must say why */
    ob_uuid_parse(copy, &u);
    ob_event_decode(data, size, 0, &ev, msg, sizeof(msg));
    ob_event_decode(data, size, 1, &ev, msg, sizeof(msg));
    free(copy);
    return 0;
}
