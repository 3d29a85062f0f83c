/* workers/http/order_req.c: see order_req.h. */
#include "order_req.h"
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

static int
req_customer(json_t *root, ob_order_req_t *req, char *msg, size_t msglen)
{
    json_t     *v = json_object_get(root, "customerId");
    const char *s;

    if (v == NULL || json_is_null(v))
        return req_fail(msg, msglen, "customerId: required%s", "");
    if (!json_is_string(v))
        return req_fail(msg, msglen, "customerId: must be a string%s", "");
    s = json_string_value(v);
    if (json_string_length(v) == 0)
        return req_fail(msg, msglen, "customerId: must not be empty%s", "");
    if (json_string_length(v) > OB_CUSTOMER_ID_MAX)
        return req_fail(msg, msglen, "customerId: longer than 128 bytes%s", "");
    if (strlen(s) != json_string_length(v))
        return req_fail(msg, msglen, "customerId: must not contain NUL%s", "");
    for (const unsigned char *c = (const unsigned char *) s; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return req_fail(msg, msglen, "customerId: must not contain control characters%s", "");
    ob_strlcpy(req->customer_id, s, sizeof(req->customer_id));
    return 0;
}

static int
req_currency(json_t *root, ob_order_req_t *req, char *msg, size_t msglen)
{
    json_t *v = json_object_get(root, "currency");

    if (v == NULL || json_is_null(v))
        return req_fail(msg, msglen, "currency: required%s", "");
    if (!json_is_string(v))
        return req_fail(msg, msglen, "currency: must be a string%s", "");
    req->cur = ob_currency_find(json_string_value(v));
    if (req->cur == NULL) {
        char code[16];
        ob_strlcpy(code, json_string_value(v), sizeof(code));
        for (char *c = code; *c; c++)
            if ((unsigned char) *c < 0x20 || *c == '"' || *c == '\\')
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
