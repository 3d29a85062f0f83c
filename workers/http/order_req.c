/* workers/http/order_req.c: see order_req.h. */
#include "order_req.h"
#include "../../common/event.h"
#include "../../common/util.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const char *
raw_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at the opening quote; returns just past the closing one. */
static const char *
raw_skip_string(const char *p, const char *end)
{
    for (p++; p < end && *p != '"'; p++)
        if (*p == '\\')
            p++;
    return p < end ? p + 1 : end;
}

static const char *
raw_skip_value(const char *p, const char *end)
{
    int depth = 0;

    if (p < end && *p == '"')
        return raw_skip_string(p, end);
    for (; p < end; p++) {
        if (*p == '"') {
            p = raw_skip_string(p, end) - 1;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (depth == 0)
                return p;
            if (--depth == 0)
                return p + 1;
        } else if (depth == 0 && (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
            return p;
        }
    }
    return p;
}

/* Decodes a key (simple escapes; \u only for ASCII) to compare it with want. */
static int
raw_key_equals(const char *p, const char *end, const char *want)
{
    size_t n = 0, wl = strlen(want);

    for (p++; p < end && *p != '"'; p++) {
        char c = *p;
        if (c == '\\' && p + 1 < end) {
            p++;
            if (*p == 'u' && p + 4 < end) {
                unsigned v = 0;
                if (sscanf(p + 1, "%4x", &v) != 1 || v > 0x7f)
                    return 0;
                c = (char) v;
                p += 4;
            } else {
                c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            }
        }
        if (n >= wl || want[n] != c)
            return 0;
        n++;
    }
    return n == wl;
}

int
ob_json_raw_member(const char *json, size_t len, const char *key, const char **val, size_t *vallen)
{
    const char *p = raw_ws(json, json + len), *end = json + len;

    if (p >= end || *p != '{')
        return -1;
    for (p = raw_ws(p + 1, end); p < end && *p == '"';) {
        int         match = raw_key_equals(p, end, key);
        const char *v;
        p = raw_ws(raw_skip_string(p, end), end);
        if (p >= end || *p != ':')
            return -1;
        v = raw_ws(p + 1, end);
        p = raw_skip_value(v, end);
        if (match) {
            *val = v;
            *vallen = (size_t) (p - v);
            return 0;
        }
        p = raw_ws(p, end);
        if (p < end && *p == ',')
            p = raw_ws(p + 1, end);
    }
    return -1;
}

static int
req_fail(char *msg, size_t msglen, const char *fmt, const char *a)
{
    snprintf(msg, msglen, fmt, a);
    return 400;
}

/*
 * The string value of a member, refusing embedded NULs: jansson keeps
 * "USD\u0000junk" whole (JSON_ALLOW_NUL, so the refusal can name the field),
 * and C would read it as "USD".
 */
static int
req_string(json_t *root, const char *name, const char **s, size_t *len, char *msg, size_t msglen)
{
    json_t *v = json_object_get(root, name);

    if (v == NULL || json_is_null(v)) {
        snprintf(msg, msglen, "%s: required", name);
        return 400;
    }
    if (!json_is_string(v)) {
        snprintf(msg, msglen, "%s: must be a string", name);
        return 400;
    }
    *s = json_string_value(v);
    *len = json_string_length(v);
    if (strlen(*s) != *len) {
        snprintf(msg, msglen, "%s: must not contain NUL", name);
        return 400;
    }
    return 0;
}

/*
 * Length of the control or separator character at s, 0 if none. jansson
 * hands over valid UTF-8 only, so a lead byte says how long it is. C0, DEL
 * and C1 controls, and U+2028/U+2029 (line breaks to JavaScript and to many
 * log readers) would let a customer id forge lines in what displays it.
 */
static int
req_control_at(const unsigned char *s)
{
    if (s[0] < 0x20 || s[0] == 0x7f)
        return 1;
    if (s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
        return 2;
    if (s[0] == 0xe2 && s[1] == 0x80 && (s[2] == 0xa8 || s[2] == 0xa9))
        return 3;
    return 0;
}

static int
req_customer(json_t *root, ob_order_req_t *req, char *msg, size_t msglen)
{
    const char *s;
    size_t      len;
    int         rc = req_string(root, "customerId", &s, &len, msg, msglen);

    if (rc != 0)
        return rc;
    if (len == 0)
        return req_fail(msg, msglen, "customerId: must not be empty%s", "");
    if (len > OB_CUSTOMER_ID_MAX)
        return req_fail(msg, msglen, "customerId: longer than 128 bytes%s", "");
    for (const unsigned char *c = (const unsigned char *) s; *c; c++)
        if (req_control_at(c) != 0)
            return req_fail(msg, msglen,
                            "customerId: must not contain control characters (U+0000-U+001F, U+007F-U+009F)"
                            " or line separators (U+2028, U+2029)%s",
                            "");
    ob_strlcpy(req->customer_id, s, sizeof(req->customer_id));
    return 0;
}

static int
req_currency(json_t *root, ob_order_req_t *req, char *msg, size_t msglen)
{
    const char *s;
    size_t      len;
    int         rc = req_string(root, "currency", &s, &len, msg, msglen);

    if (rc != 0)
        return rc;
    req->cur = ob_currency_find(s);
    if (req->cur == NULL) {
        char code[16];
        ob_strlcpy(code, s, sizeof(code));
        for (char *c = code; *c; c++)
            if ((unsigned char) *c < 0x20 || (unsigned char) *c >= 0x7f || *c == '"' || *c == '\\')
                *c = '?';
        return req_fail(msg, msglen, "currency: \"%s\" is not a supported ISO 4217 code", code);
    }
    return 0;
}

static int
req_amount(json_t *root, const char *body, size_t len, ob_order_req_t *req, char *msg, size_t msglen)
{
    json_t     *v = json_object_get(root, "amount");
    const char *text, *why = NULL;
    size_t      tlen;

    if (v == NULL || json_is_null(v))
        return req_fail(msg, msglen, "amount: required%s", "");
    if (json_is_string(v)) {
        text = json_string_value(v);
        tlen = json_string_length(v);
    } else if (json_is_number(v)) {
        if (ob_json_raw_member(body, len, "amount", &text, &tlen) != 0)
            return req_fail(msg, msglen, "amount: not a decimal number%s", "");
    } else {
        return req_fail(msg, msglen, "amount: must be a number or a decimal string%s", "");
    }
    if (ob_money_parse(text, tlen, req->cur, &req->minor, &why) != 0) {
        if (strcmp(why, "more decimal places than the currency allows") == 0) {
            snprintf(msg, msglen, "amount: %s allows at most %d decimal place%s", req->cur->code, req->cur->digits,
                     req->cur->digits == 1 ? "" : "s");
            return 400;
        }
        return req_fail(msg, msglen, "amount: %s", why);
    }
    ob_money_format(req->minor, req->cur->digits, req->amount, sizeof(req->amount));
    return 0;
}

int
ob_order_req_parse(const char *body, size_t len, ob_order_req_t *req, char *msg, size_t msglen)
{
    json_error_t je;
    json_t      *root;
    int          rc;

    memset(req, 0, sizeof(*req));
    if (len == 0)
        return req_fail(msg, msglen, "body: empty; expected a JSON object%s", "");
    if (ob_json_depth(body, len, OB_ORDER_JSON_DEPTH_MAX) > OB_ORDER_JSON_DEPTH_MAX)
        return req_fail(msg, msglen, "body: arrays and objects nested deeper than %s levels",
                        OB_STR(OB_ORDER_JSON_DEPTH_MAX));
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (root == NULL) {
        snprintf(msg, msglen, "body: invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        return 400;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return req_fail(msg, msglen, "body: expected a JSON object%s", "");
    }
    /* currency before amount: the amount's allowed decimals depend on it */
    rc = req_customer(root, req, msg, msglen);
    if (rc == 0)
        rc = req_currency(root, req, msg, msglen);
    if (rc == 0)
        rc = req_amount(root, body, len, req, msg, msglen);
    json_decref(root);
    return rc;
}

int
ob_order_traceparent(const char *hdr, char out[OB_TRACE_HEADERS_MAX], char *msg, size_t msglen)
{
    out[0] = '\0';
    if (hdr == NULL)
        return 0;
    if (!ob_traceparent_valid(hdr, strlen(hdr))) {
        snprintf(msg, msglen, "traceparent: expected W3C trace context version-traceid-parentid-flags"
                              " (00-<32 hex>-<16 hex>-<2 hex>, lower case, ids not all zero)");
        return 400;
    }
    snprintf(out, OB_TRACE_HEADERS_MAX, "{\"traceparent\":\"%.*s\"}", OB_TRACEPARENT_LEN, hdr);
    return 0;
}
