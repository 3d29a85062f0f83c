/* common/event.c: msgpack and JSON encodings of one event; see event.h. */
#include "event.h"
#include "util.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The envelope nests one object; room for producers that add their own. */
#define OB_EVENT_JSON_DEPTH_MAX 32

void
ob_event_timestamp(int64_t wall_ms, char out[32])
{
    time_t    secs = (time_t) (wall_ms / 1000);
    struct tm tm;
    size_t    n;

    gmtime_r(&secs, &tm);
    n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int) (wall_ms % 1000));
}

static void
pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);

    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static int
event_encode_msgpack(const ob_event_t *ev, char **out, size_t *outlen)
{
    msgpack_sbuffer sb;
    msgpack_packer  pk;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    pack_str(&pk, "id");
    pack_str(&pk, ev->id);
    pack_str(&pk, "type");
    pack_str(&pk, ev->type);
    pack_str(&pk, "aggregate_type");
    pack_str(&pk, ev->aggregate_type);
    pack_str(&pk, "aggregate_id");
    pack_str(&pk, ev->aggregate_id);
    pack_str(&pk, "seq");
    msgpack_pack_int32(&pk, ev->seq);
    pack_str(&pk, "occurred_at");
    pack_str(&pk, ev->occurred_at);
    pack_str(&pk, "data");
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "customerId");
    pack_str(&pk, ev->customer_id);
    pack_str(&pk, "amount");
    pack_str(&pk, ev->amount);
    pack_str(&pk, "currency");
    pack_str(&pk, ev->currency);
    pack_str(&pk, "status");
    pack_str(&pk, ev->status);
    *out = sb.data;       /* ownership moves to the caller */
    *outlen = sb.size;
    return *out != NULL ? 0 : -1;
}

static int
event_encode_json(const ob_event_t *ev, char **out, size_t *outlen)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:{s:s, s:s, s:s, s:s}}", "id", ev->id, "type", ev->type,
                          "aggregate_type", ev->aggregate_type, "aggregate_id", ev->aggregate_id, "seq", (int) ev->seq,
                          "occurred_at", ev->occurred_at, "data", "customerId", ev->customer_id, "amount", ev->amount,
                          "currency", ev->currency, "status", ev->status);

    if (j == NULL)
        return -1;
    *out = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (*out == NULL)
        return -1;
    *outlen = strlen(*out);
    return 0;
}

int
ob_event_encode(const ob_event_t *ev, int json, char **out, size_t *outlen)
{
    return json ? event_encode_json(ev, out, outlen) : event_encode_msgpack(ev, out, outlen);
}

/*
 * Copies a msgpack string into a fixed field; -1 if absent, not a string or
 * too long, -2 if it holds a NUL byte: the C string would silently end
 * there, so "order.created\0junk" would pass for "order.created".
 */
static int
mp_copy(const msgpack_object *o, char *dst, size_t dstlen)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= dstlen)
        return -1;
    if (memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL)
        return -2;
    memcpy(dst, o->via.str.ptr, o->via.str.size);
    dst[o->via.str.size] = '\0';
    return 0;
}

static const msgpack_object *
mp_get(const msgpack_object *map, const char *key)
{
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, kv->key.via.str.size) == 0)
            return &kv->val;
    }
    return NULL;
}

/* Big-endian unsigned of n bytes at p. */
static uint64_t
mp_be(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * Walks one msgpack value at *p without allocating, refusing any container
 * that claims more elements than bytes remain. msgpack-c's unpacker sizes
 * its zone from the declared counts, so a 5-byte array header claiming 2^32
 * elements would make it ask for ~100 GB: a poison message must be a dead
 * letter, not an allocation storm. Returns 0 and advances *p, or -1.
 */
static int
mp_skip(const uint8_t **p, const uint8_t *end, int depth)
{
    static const int8_t fixed[32] = {
        /* 0xc0..0xdf: payload bytes after the type byte; -1 = handled below */
        0, -2, 0, 0, -1, -1, -1, -1, -1, -1, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 2, 3, 5, 9, 17, -1, -1, -1, -1, -1, -1, -1,
    };
    const uint8_t *q = *p;
    uint64_t       count = 0, len = 0;
    uint8_t        t;

    if (q >= end || depth > 32)
        return -1;
    t = *q++;
    if (t <= 0x7f || t >= 0xe0) {
        *p = q;
        return 0;
    }
    if (t >= 0xa0 && t <= 0xbf)
        len = t & 0x1f;
    else if (t >= 0x80 && t <= 0x8f)
        count = 2u * (t & 0x0f);
    else if (t >= 0x90 && t <= 0x9f)
        count = t & 0x0f;
    else if (fixed[t - 0xc0] >= 0)
        len = (uint64_t) fixed[t - 0xc0];
    else if (fixed[t - 0xc0] == -2)
        return -1;     /* 0xc1 is never used */
    else {
        static const int lenbytes[] = { [0xc4 - 0xc4] = 1, 2, 4, 1, 2, 4 };   /* bin8/16/32, ext8/16/32 */
        int              nb;
        if (t >= 0xc4 && t <= 0xc9)
            nb = lenbytes[t - 0xc4];
        else if (t >= 0xd9 && t <= 0xdb)
            nb = 1 << (t - 0xd9);
        else
            nb = t == 0xdc || t == 0xde ? 2 : 4;
        if ((size_t) (end - q) < (size_t) nb)
            return -1;
        uint64_t n = mp_be(q, nb);
        q += nb;
        if (t >= 0xdc)
            count = t >= 0xde ? 2 * n : n;
        else
            len = n + (t >= 0xc7 && t <= 0xc9);    /* ext carries a type byte */
    }
    if (len > (uint64_t) (end - q) || count > (uint64_t) (end - q))
        return -1;
    q += len;
    for (uint64_t i = 0; i < count; i++)
        if (mp_skip(&q, end, depth + 1) != 0)
            return -1;
    *p = q;
    return 0;
}

static int
event_decode_msgpack(const void *buf, size_t len, ob_event_t *ev, char *err, size_t errlen)
{
    msgpack_unpacked u;
    size_t           off = 0;
    int              rc = -1;
    const uint8_t   *p = buf;

    if (mp_skip(&p, p + len, 0) != 0 || p != (const uint8_t *) buf + len) {
        snprintf(err, errlen, "not a well-formed msgpack value");
        return -1;
    }
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "not a msgpack map");
        goto done;
    }
    const msgpack_object *m = &u.data, *data = mp_get(m, "data"), *seq = mp_get(m, "seq");
    static const char    *names[] = { "id", "type", "aggregate_type", "aggregate_id", "occurred_at" };
    char                 *fields[] = { ev->id, ev->type, ev->aggregate_type, ev->aggregate_id, ev->occurred_at };
    size_t                sizes[] = { sizeof(ev->id), sizeof(ev->type), sizeof(ev->aggregate_type),
                                      sizeof(ev->aggregate_id), sizeof(ev->occurred_at) };
    for (size_t i = 0; i < OB_ARRAY_LEN(names); i++) {
        int c = mp_copy(mp_get(m, names[i]), fields[i], sizes[i]);
        if (c != 0) {
            snprintf(err, errlen, "field %s %s", names[i], c == -2 ? "contains a NUL byte" : "missing or invalid");
            goto done;
        }
    }
    if (seq == NULL || seq->type != MSGPACK_OBJECT_POSITIVE_INTEGER || seq->via.u64 > INT32_MAX) {
        snprintf(err, errlen, "field seq missing or invalid");
        goto done;
    }
    ev->seq = (int32_t) seq->via.u64;
    static const char *dnames[] = { "customerId", "amount", "currency", "status" };
    char              *dfields[] = { ev->customer_id, ev->amount, ev->currency, ev->status };
    size_t             dsizes[] = { sizeof(ev->customer_id), sizeof(ev->amount), sizeof(ev->currency),
                                    sizeof(ev->status) };
    for (size_t i = 0; i < OB_ARRAY_LEN(dnames); i++) {
        int c = mp_copy(mp_get(data, dnames[i]), dfields[i], dsizes[i]);
        if (c != 0) {
            snprintf(err, errlen, "data.%s %s", dnames[i], c == -2 ? "contains a NUL byte" : "missing or invalid");
            goto done;
        }
    }
    rc = 0;
done:
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int
js_copy(json_t *o, const char *key, char *dst, size_t dstlen)
{
    const char *s = json_string_value(json_object_get(o, key));

    if (s == NULL || strlen(s) >= dstlen)
        return -1;
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

static int
event_decode_json(const void *buf, size_t len, ob_event_t *ev, char *err, size_t errlen)
{
    json_error_t je;
    json_t      *j, *data;
    json_t      *seq;
    int          rc = -1;

    /* A record is a flat envelope with one nested object; deeper text is
     * nobody's event, and jansson's parser recurses once per level. */
    if (ob_json_depth(buf, len, OB_EVENT_JSON_DEPTH_MAX) > OB_EVENT_JSON_DEPTH_MAX) {
        snprintf(err, errlen, "JSON nested deeper than %d levels", OB_EVENT_JSON_DEPTH_MAX);
        return -1;
    }
    j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL || !json_is_object(j)) {
        snprintf(err, errlen, "not a JSON object");
        goto done;
    }
    data = json_object_get(j, "data");
    seq = json_object_get(j, "seq");
    if (js_copy(j, "id", ev->id, sizeof(ev->id)) || js_copy(j, "type", ev->type, sizeof(ev->type)) ||
        js_copy(j, "aggregate_type", ev->aggregate_type, sizeof(ev->aggregate_type)) ||
        js_copy(j, "aggregate_id", ev->aggregate_id, sizeof(ev->aggregate_id)) ||
        js_copy(j, "occurred_at", ev->occurred_at, sizeof(ev->occurred_at)) || !json_is_integer(seq) ||
        json_integer_value(seq) < 0 || json_integer_value(seq) > INT32_MAX || !json_is_object(data) ||
        js_copy(data, "customerId", ev->customer_id, sizeof(ev->customer_id)) ||
        js_copy(data, "amount", ev->amount, sizeof(ev->amount)) ||
        js_copy(data, "currency", ev->currency, sizeof(ev->currency)) ||
        js_copy(data, "status", ev->status, sizeof(ev->status))) {
        snprintf(err, errlen, "a field is missing or invalid");
        goto done;
    }
    ev->seq = (int32_t) json_integer_value(seq);
    rc = 0;
done:
    json_decref(j);
    return rc;
}

int
ob_event_decode(const void *buf, size_t len, int json, ob_event_t *ev, char *err, size_t errlen)
{
    memset(ev, 0, sizeof(*ev));
    return json ? event_decode_json(buf, len, ev, err, errlen) : event_decode_msgpack(buf, len, ev, err, errlen);
}

const char *
ob_event_content_type(int json)
{
    return json ? "application/json" : "application/msgpack";
}

/* n lower-case hex digits at p, not all zero when nonzero is set. */
static int
trace_hex(const char *p, int n, int nonzero)
{
    int any = 0;

    for (int i = 0; i < n; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
        any |= p[i] != '0';
    }
    return any || !nonzero;
}

int
ob_traceparent_valid(const char *s, size_t len)
{
    /* a later version may append fields after a '-': its first 55 bytes read as version 00's */
    int later = len > OB_TRACEPARENT_LEN && s[OB_TRACEPARENT_LEN] == '-' && strncmp(s, "00", 2) != 0;

    return (len == OB_TRACEPARENT_LEN || later) && s[2] == '-' && s[35] == '-' && s[52] == '-' && trace_hex(s, 2, 0) &&
           strncmp(s, "ff", 2) != 0 && trace_hex(s + 3, 32, 1) && trace_hex(s + 36, 16, 1) && trace_hex(s + 53, 2, 0);
}
