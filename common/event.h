/*
 * common/event.h: the event format (DESIGN §6).
 *
 * Value: a msgpack map {id, type, aggregate_type, aggregate_id, seq,
 * occurred_at, data}; `[kafka] format = json` gives the same map as JSON
 * for tools such as kcat. data carries the order as the API shows it, with
 * the amount as a decimal string (never a float).
 */
#ifndef OB_EVENT_H
#define OB_EVENT_H

#include <stddef.h>
#include <stdint.h>

#define OB_EVENT_CREATED   "order.created"
#define OB_EVENT_CANCELLED "order.cancelled"
/* The aggregate type of the built-in orders API's events, and the header that names every event's. */
#define OB_AGGREGATE_ORDER    "order"
#define OB_HDR_AGGREGATE_TYPE "aggregate-type"

typedef struct {
    char    id[37];              /* event id (UUIDv7) */
    char    type[32];
    char    aggregate_type[16];  /* "order" */
    char    aggregate_id[37];    /* order id */
    int32_t seq;                 /* 1 for created, version for later events */
    char    occurred_at[32];     /* RFC 3339 UTC, milliseconds */
    char    customer_id[129];
    char    amount[32];          /* decimal string, e.g. "100.00" */
    char    currency[4];
    char    status[16];
} ob_event_t;

/* Encodes ev; *out is malloc'd (caller frees). 0 or -1. */
int ob_event_encode(const ob_event_t *ev, int json, char **out, size_t *outlen);

/* Decodes a value (msgpack, or JSON when json != 0) into ev; -1 with err naming the problem. */
int ob_event_decode(const void *buf, size_t len, int json, ob_event_t *ev, char *err, size_t errlen);

/*
 * A W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex> (55 bytes), lower case,
 * ids not all zero, version not ff; a later version may carry more after a
 * '-' at byte 55, and its first 55 bytes are what is kept.
 */
#define OB_TRACEPARENT_LEN 55
int ob_traceparent_valid(const char *s, size_t len);

/* The content type of an encoded event: application/json or application/msgpack. */
const char *ob_event_content_type(int json);

/* RFC 3339 UTC with milliseconds for a wall-clock ms timestamp. */
void ob_event_timestamp(int64_t wall_ms, char out[32]);

#endif
