/*
 * common/rsig.h: HMAC-SHA256 record signatures (DESIGN §6, "Signature").
 *
 * Defence in depth against foreign producers: the relay signs the key, the
 * value and our headers of every record it produces; the ledger consumer
 * dead-letters records that are badly signed, signed with a key it does
 * not know, or (with [kafka] require_signature) not signed at all.
 *
 * Canonical bytes, each field as a 4-byte big-endian length and its bytes
 * (an absent field, or a header without a value, is the length 0xffffffff
 * and no bytes, so absent and empty differ):
 *
 *   field("outboxd-sig-v1") field(key id) field(key) field(value)
 *   then, in this order, field(name) field(value) for each of
 *   event-id, event-type, aggregate-id, aggregate-seq, content-type.
 *
 * Header `outboxd-signature` = "<key id>:<HMAC-SHA256 in 64 lower-case hex>".
 */
#ifndef OB_RSIG_H
#define OB_RSIG_H

#include <stddef.h>

#define OB_RSIG_HEADER      "outboxd-signature"
#define OB_RSIG_ID_MAX      32        /* key id: 1-32 of [A-Za-z0-9_.-] */
#define OB_RSIG_SECRET_MIN  32
#define OB_RSIG_SECRET_MAX  64        /* HMAC-SHA256's block: longer keys gain nothing */
#define OB_RSIG_MAX_KEYS    8         /* [kafka] verify_keys */
#define OB_RSIG_VALUE_LEN   (OB_RSIG_ID_MAX + 1 + 64)
#define OB_RSIG_NCOVERED    5

typedef struct {
    char          id[OB_RSIG_ID_MAX + 1];
    unsigned char secret[OB_RSIG_SECRET_MAX];
    int           len;               /* 0: no key */
} ob_rsig_key_t;

/* verify_keys plus the signing key: what a consumer accepts. */
typedef struct {
    int          n;
    ob_rsig_key_t keys[OB_RSIG_MAX_KEYS + 1];
} ob_rsig_keyring_t;

/* One record header, as librdkafka gives it (value NULL: no value). */
typedef struct {
    const char *name;
    const void *value;
    size_t      len;
} ob_rsig_hdr_t;

/* The covered header names, in canonical order. */
extern const char *const ob_rsig_covered[OB_RSIG_NCOVERED];

/*
 * "<id>:hex:<hex>" or "<id>:base64:<base64>", the secret 32-64 bytes.
 * 0, or -1 with *why (which never quotes the secret).
 */
int ob_rsig_parse_key(const char *s, ob_rsig_key_t *k, const char **why);

/* A comma-separated list of keys, added to ring (ids unique). 0, or -1 with *why. */
int ob_rsig_parse_keys(const char *s, ob_rsig_keyring_t *ring, const char **why);

/* ring := verify, plus signing when its id is not there; -1 when the id is there with another secret. */
int ob_rsig_ring_merge(const ob_rsig_keyring_t *verify, const ob_rsig_key_t *signing, ob_rsig_keyring_t *ring);

/*
 * The canonical bytes of a record for key id kid, covered[i] being the
 * value of ob_rsig_covered[i] (value NULL: absent). Writes up to cap bytes
 * to out (may be NULL) and returns the full length.
 */
size_t ob_rsig_canonical(const char *kid, const void *key, size_t key_len, const void *value, size_t value_len,
                        const ob_rsig_hdr_t covered[OB_RSIG_NCOVERED], unsigned char *out, size_t cap);

/* The signature header's value for a record (NUL-terminated). 0, or -1 (out of memory, crypto). */
int ob_rsig_sign(const ob_rsig_key_t *k, const void *key, size_t key_len, const void *value, size_t value_len,
                const ob_rsig_hdr_t covered[OB_RSIG_NCOVERED], char out[OB_RSIG_VALUE_LEN + 1]);

/*
 * Judges a record by its headers (all of them, as received): 0 when
 * signed by a key of ring, or unsigned and require == 0; -1 with why
 * ("unsigned record", "unknown signing key id 'k2'", "bad signature", ...).
 * A covered header or the signature given twice is refused: the MAC and
 * the decoder could otherwise read different copies.
 */
int ob_rsig_verify(const ob_rsig_keyring_t *ring, int require, const void *key, size_t key_len, const void *value,
                  size_t value_len, const ob_rsig_hdr_t *hdrs, int nhdrs, char *why, size_t whylen);

#endif
