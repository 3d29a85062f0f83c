/* common/rsig.c: see rsig.h. */
#include "rsig.h"
#include "util.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIG_CONTEXT "outboxd-sig-v1"
#define SIG_ABSENT  0xffffffffu

const char *const ob_rsig_covered[OB_RSIG_NCOVERED] = {
    "event-id", "event-type", "aggregate-id", "aggregate-seq", "content-type",
};

static int
sig_id_ok(const char *s, size_t n)
{
    if (n == 0 || n > OB_RSIG_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", s[i]) || s[i] == '\0')
            return 0;
    return 1;
}

static int
sig_hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes n hex digits into out (n/2 bytes); -1 on an odd count or a non-hex digit. */
static int
sig_unhex(const char *s, size_t n, unsigned char *out)
{
    if (n % 2 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = sig_hexval((unsigned char) s[i]), lo = sig_hexval((unsigned char) s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (unsigned char) (hi << 4 | lo);
    }
    return 0;
}

/* Standard padded base64 of n chars into out; the decoded length, or -1. */
static int
sig_unbase64(const char *s, size_t n, unsigned char *out, size_t cap)
{
    unsigned char tmp[OB_RSIG_SECRET_MAX * 2];
    int           len, pad = 0;

    if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof(tmp))
        return -1;
    /* EVP_DecodeBlock counts padding as zero bytes: take them off */
    pad = (s[n - 1] == '=') + (s[n - 2] == '=');
    len = EVP_DecodeBlock(tmp, (const unsigned char *) s, (int) n);
    if (len < 0 || len - pad < 0 || (size_t) (len - pad) > cap)
        return -1;
    memcpy(out, tmp, (size_t) (len - pad));
    OPENSSL_cleanse(tmp, sizeof(tmp));
    return len - pad;
}

int
ob_rsig_parse_key(const char *s, ob_rsig_key_t *k, const char **why)
{
    const char *c1 = strchr(s, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *sec;
    size_t      n;

    memset(k, 0, sizeof(*k));
    if (c1 == NULL || c2 == NULL) {
        *why = "expected <key id>:hex:<secret> or <key id>:base64:<secret>";
        return -1;
    }
    if (!sig_id_ok(s, (size_t) (c1 - s))) {
        *why = "key id: use 1-32 letters, digits, '_', '.' or '-'";
        return -1;
    }
    memcpy(k->id, s, (size_t) (c1 - s));
    sec = c2 + 1;
    n = strlen(sec);
    if ((size_t) (c2 - c1 - 1) == 3 && strncmp(c1 + 1, "hex", 3) == 0) {
        if (n > 2 * OB_RSIG_SECRET_MAX || sig_unhex(sec, n, k->secret) != 0) {
            *why = "secret is not hex (an even number of 0-9a-f digits, at most 64 bytes)";
            return -1;
        }
        k->len = (int) n / 2;
    } else if ((size_t) (c2 - c1 - 1) == 6 && strncmp(c1 + 1, "base64", 6) == 0) {
        k->len = sig_unbase64(sec, n, k->secret, sizeof(k->secret));
        if (k->len < 0) {
            *why = "secret is not padded base64 of at most 64 bytes";
            return -1;
        }
    } else {
        *why = "secret encoding: expected hex or base64 after the key id";
        return -1;
    }
    if (k->len < OB_RSIG_SECRET_MIN) {
        *why = "secret too short: at least 32 bytes (64 hex digits)";
        return -1;
    }
    return 0;
}

/* Trims spaces and tabs around [b, e). */
static void
sig_trim(const char **b, const char **e)
{
    while (*b < *e && (**b == ' ' || **b == '\t'))
        (*b)++;
    while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
        (*e)--;
}

int
ob_rsig_parse_keys(const char *s, ob_rsig_keyring_t *ring, const char **why)
{
    char one[512];

    for (const char *b = s; *b != '\0';) {
        const char *e = strchr(b, ','), *end = e ? e : b + strlen(b), *tb = b, *te = end;
        ob_rsig_key_t k;
        sig_trim(&tb, &te);
        if (te > tb) {
            if ((size_t) (te - tb) >= sizeof(one)) {
                *why = "a key is too long";
                return -1;
            }
            memcpy(one, tb, (size_t) (te - tb));
            one[te - tb] = '\0';
            int rc = ob_rsig_parse_key(one, &k, why);
            OPENSSL_cleanse(one, sizeof(one));
            if (rc != 0)
                return -1;
            for (int i = 0; i < ring->n; i++)
                if (strcmp(ring->keys[i].id, k.id) == 0) {
                    *why = "the same key id twice";
                    return -1;
                }
            if (ring->n >= OB_RSIG_MAX_KEYS) {
                *why = "at most 8 keys";
                return -1;
            }
            ring->keys[ring->n++] = k;
        }
        b = e ? e + 1 : end;
    }
    return 0;
}

int
ob_rsig_ring_merge(const ob_rsig_keyring_t *verify, const ob_rsig_key_t *signing, ob_rsig_keyring_t *ring)
{
    *ring = *verify;
    if (signing->len == 0)
        return 0;
    for (int i = 0; i < ring->n; i++)
        if (strcmp(ring->keys[i].id, signing->id) == 0)
            return ring->keys[i].len == signing->len && CRYPTO_memcmp(ring->keys[i].secret, signing->secret,
                                                                     (size_t) signing->len) == 0 ? 0 : -1;
    ring->keys[ring->n++] = *signing;
    return 0;
}

/* Appends field(p, n) at *at when it fits; always advances *at. */
static void
sig_field(unsigned char *out, size_t cap, size_t *at, const void *p, size_t n)
{
    uint32_t len = p == NULL ? SIG_ABSENT : (uint32_t) n;
    unsigned char be[4] = { (unsigned char) (len >> 24), (unsigned char) (len >> 16), (unsigned char) (len >> 8),
                            (unsigned char) len };

    if (out != NULL && *at + 4 <= cap)
        memcpy(out + *at, be, 4);
    *at += 4;
    if (p == NULL)
        return;
    if (out != NULL && *at + n <= cap)
        memcpy(out + *at, p, n);
    *at += n;
}

size_t
ob_rsig_canonical(const char *kid, const void *key, size_t key_len, const void *value, size_t value_len,
                 const ob_rsig_hdr_t covered[OB_RSIG_NCOVERED], unsigned char *out, size_t cap)
{
    size_t at = 0;

    sig_field(out, cap, &at, SIG_CONTEXT, strlen(SIG_CONTEXT));
    sig_field(out, cap, &at, kid, strlen(kid));
    sig_field(out, cap, &at, key, key_len);
    sig_field(out, cap, &at, value, value_len);
    for (int i = 0; i < OB_RSIG_NCOVERED; i++) {
        sig_field(out, cap, &at, ob_rsig_covered[i], strlen(ob_rsig_covered[i]));
        sig_field(out, cap, &at, covered[i].value, covered[i].len);
    }
    return at;
}

/* HMAC-SHA256 of the canonical bytes into mac[32]; 0 or -1. */
static int
sig_mac(const ob_rsig_key_t *k, const void *key, size_t key_len, const void *value, size_t value_len,
        const ob_rsig_hdr_t covered[OB_RSIG_NCOVERED], unsigned char mac[32])
{
    size_t         n = ob_rsig_canonical(k->id, key, key_len, value, value_len, covered, NULL, 0);
    unsigned char *buf = malloc(n ? n : 1);
    unsigned int   maclen = 0;
    int            ok;

    if (buf == NULL)
        return -1;
    ob_rsig_canonical(k->id, key, key_len, value, value_len, covered, buf, n);
    ok = HMAC(EVP_sha256(), k->secret, k->len, buf, n, mac, &maclen) != NULL && maclen == 32;
    free(buf);
    return ok ? 0 : -1;
}

int
ob_rsig_sign(const ob_rsig_key_t *k, const void *key, size_t key_len, const void *value, size_t value_len,
            const ob_rsig_hdr_t covered[OB_RSIG_NCOVERED], char out[OB_RSIG_VALUE_LEN + 1])
{
    unsigned char mac[32];
    size_t        at;

    if (sig_mac(k, key, key_len, value, value_len, covered, mac) != 0)
        return -1;
    at = (size_t) snprintf(out, OB_RSIG_VALUE_LEN + 1, "%s:", k->id);
    for (int i = 0; i < 32; i++)
        snprintf(out + at + 2 * (size_t) i, 3, "%02x", mac[i]);
    return 0;
}

/* Picks the covered headers and the signature out of hdrs; -1 with why when one is given twice. */
static int
sig_pick(const ob_rsig_hdr_t *hdrs, int n, ob_rsig_hdr_t covered[OB_RSIG_NCOVERED], const ob_rsig_hdr_t **sig,
         char *why, size_t whylen)
{
    int seen[OB_RSIG_NCOVERED] = { 0 };

    memset(covered, 0, sizeof(ob_rsig_hdr_t) * OB_RSIG_NCOVERED);
    *sig = NULL;
    for (int i = 0; i < n; i++) {
        if (strcmp(hdrs[i].name, OB_RSIG_HEADER) == 0) {
            if (*sig != NULL) {
                snprintf(why, whylen, "header '%s' given twice", OB_RSIG_HEADER);
                return -1;
            }
            *sig = &hdrs[i];
            continue;
        }
        for (int c = 0; c < OB_RSIG_NCOVERED; c++)
            if (strcmp(hdrs[i].name, ob_rsig_covered[c]) == 0) {
                if (seen[c]++) {
                    snprintf(why, whylen, "signed header '%s' given twice", ob_rsig_covered[c]);
                    return -1;
                }
                covered[c] = hdrs[i];
            }
    }
    return 0;
}

static const ob_rsig_key_t *
sig_find(const ob_rsig_keyring_t *ring, const char *id, size_t n)
{
    for (int i = 0; i < ring->n; i++)
        if (strlen(ring->keys[i].id) == n && memcmp(ring->keys[i].id, id, n) == 0)
            return &ring->keys[i];
    return NULL;
}

int
ob_rsig_verify(const ob_rsig_keyring_t *ring, int require, const void *key, size_t key_len, const void *value,
              size_t value_len, const ob_rsig_hdr_t *hdrs, int nhdrs, char *why, size_t whylen)
{
    ob_rsig_hdr_t        covered[OB_RSIG_NCOVERED];
    const ob_rsig_hdr_t *sig;
    const char         *v, *colon;
    const ob_rsig_key_t *k;
    unsigned char       want[32], got[32];

    if (sig_pick(hdrs, nhdrs, covered, &sig, why, whylen) != 0)
        return -1;
    if (sig == NULL || sig->value == NULL) {
        if (!require)
            return 0;
        snprintf(why, whylen, "unsigned record (no %s header; [kafka] require_signature = yes)", OB_RSIG_HEADER);
        return -1;
    }
    v = sig->value;
    colon = memchr(v, ':', sig->len);
    if (colon == NULL || !sig_id_ok(v, (size_t) (colon - v)) || sig->len - (size_t) (colon - v) - 1 != 64 ||
        sig_unhex(colon + 1, 64, got) != 0) {
        snprintf(why, whylen, "malformed %s header (expected <key id>:<64 hex digits>)", OB_RSIG_HEADER);
        return -1;
    }
    k = sig_find(ring, v, (size_t) (colon - v));
    if (k == NULL) {
        snprintf(why, whylen, "unknown signing key id '%.*s'", (int) (colon - v), v);
        return -1;
    }
    /* out of memory is no fault of the record's: the worker restarts and re-reads it */
    if (sig_mac(k, key, key_len, value, value_len, covered, want) != 0)
        abort();
    if (CRYPTO_memcmp(want, got, 32) != 0) {
        snprintf(why, whylen, "bad signature (key id '%s')", k->id);
        return -1;
    }
    return 0;
}
