/*
 * workers/http/order_req.h: validation of a POST /orders body.
 * Pure (no I/O), so every rule has a unit test.
 */
#ifndef OB_ORDER_REQ_H
#define OB_ORDER_REQ_H

#include "../../common/money.h"

#include <stddef.h>
#include <stdint.h>

#define OB_CUSTOMER_ID_MAX 128
/* An order is a flat object; room for clients that add nested metadata. */
#define OB_ORDER_JSON_DEPTH_MAX 32

typedef struct {
    char                 customer_id[OB_CUSTOMER_ID_MAX + 1];
    const ob_currency_t *cur;
    int64_t              minor;      /* amount in minor units */
    char                 amount[32]; /* the same, as the canonical decimal string */
} ob_order_req_t;

/*
 * Parses and validates {"customerId": "...", "amount": 100 | "100.00",
 * "currency": "USD"}; unknown fields are ignored. Returns 0, or 400 with msg
 * holding the JSON-ready message that names the field.
 */
int ob_order_req_parse(const char *body, size_t len, ob_order_req_t *req, char *msg, size_t msglen);

/* Room for {"traceparent":"<55 characters>"}. */
#define OB_TRACE_HEADERS_MAX 96

/*
 * A W3C traceparent request header (version-traceid-parentid-flags, lower
 * case hex, ids not all zero, version not ff) as the event's headers object
 * {"traceparent": "..."} in out; "" when hdr is NULL. 0, or 400 with msg.
 */
int ob_order_traceparent(const char *hdr, char out[OB_TRACE_HEADERS_MAX], char *msg, size_t msglen);

/*
 * Finds the raw text of a top-level member's value in a JSON object that is
 * already known to be valid. jansson turns numbers into doubles; reading the
 * digits ourselves keeps money out of floating point.
 */
int ob_json_raw_member(const char *json, size_t len, const char *key, const char **val, size_t *vallen);

#endif
