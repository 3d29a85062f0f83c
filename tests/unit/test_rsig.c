/* tests/unit/test_rsig.c: record signatures (common/rsig.h) and their config keys. */
#include "tests/unit/cfg_text.h"
#include "common/cfg.h"
#include "common/rsig.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEX32 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define ORDER "0190e0a5-7b3c-7d2e-8f10-1234567890ab"
#define EVENT "0190e0a5-7b3c-7d2e-8f10-aaaaaaaaaaaa"
#define VALUE "{\"id\":\"x\",\"seq\":1}"

/*
 * The vector was made outside this code, with the shell and openssl 3.0:
 *   f() { printf '%08x' ${#1} | xxd -r -p; printf '%s' "$1"; }
 *   { f outboxd-sig-v1; f k1; f ORDER; f VALUE; f event-id; f EVENT; f event-type; f order.created;
 *     f aggregate-id; f ORDER; f aggregate-seq; f 1; f content-type; f application/json; } > canon.bin
 *   openssl dgst -sha256 -mac HMAC -macopt hexkey:HEX32 canon.bin
 * (ORDER, EVENT, VALUE and HEX32 as defined above; canon.bin is 283 bytes.)
 * The second: the same, but content-type's value absent (printf 'ffffffff' | xxd -r -p).
 */
#define MAC_VECTOR        "0a829601c7d28e01948158b5f693b2b1e3a7f74af1d5238a69d2ae8a70e4d718"
#define MAC_VECTOR_NO_CT  "81f531476e940fa1fa526e6e228d6596fa760d1b0e627241783572f7f6eb6bc4"

static void
covered(ob_rsig_hdr_t c[OB_RSIG_NCOVERED], const char *ctype)
{
    const char *v[OB_RSIG_NCOVERED] = { EVENT, "order.created", ORDER, "1", ctype };

    for (int i = 0; i < OB_RSIG_NCOVERED; i++)
        c[i] = (ob_rsig_hdr_t) { ob_rsig_covered[i], v[i], v[i] ? strlen(v[i]) : 0 };
}

static ob_rsig_key_t
key(const char *spec)
{
    ob_rsig_key_t k;
    const char   *why = NULL;

    cr_assert_eq(ob_rsig_parse_key(spec, &k, &why), 0, "%s: %s", spec, why);
    return k;
}

Test(rsig, canonical_bytes_and_mac_match_the_independent_vector)
{
    ob_rsig_key_t k = key("k1:hex:" HEX32);
    ob_rsig_hdr_t c[OB_RSIG_NCOVERED];
    char          sig[OB_RSIG_VALUE_LEN + 1];

    covered(c, "application/json");
    cr_assert_eq(ob_rsig_canonical("k1", ORDER, strlen(ORDER), VALUE, strlen(VALUE), c, NULL, 0), 283);
    cr_assert_eq(ob_rsig_sign(&k, ORDER, strlen(ORDER), VALUE, strlen(VALUE), c, sig), 0);
    cr_assert_str_eq(sig, "k1:" MAC_VECTOR);
    covered(c, NULL);
    cr_assert_eq(ob_rsig_sign(&k, ORDER, strlen(ORDER), VALUE, strlen(VALUE), c, sig), 0);
    cr_assert_str_eq(sig, "k1:" MAC_VECTOR_NO_CT, "an absent header is not an empty one");
    /* the same secret in base64 is the same key */
    ob_rsig_key_t b = key("k1:base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    cr_assert_eq(b.len, 32);
    cr_assert_eq(memcmp(b.secret, k.secret, 32), 0);
}

/* A record as the relay sends it, headers in a mutable array. */
typedef struct {
    char          key[64], value[64], vals[OB_RSIG_NCOVERED][64], sig[OB_RSIG_VALUE_LEN + 1];
    ob_rsig_hdr_t hdrs[OB_RSIG_NCOVERED + 2];
    int           n;
} rec_t;

static void
rec_make(rec_t *r, const ob_rsig_key_t *k)
{
    const char   *v[OB_RSIG_NCOVERED] = { EVENT, "order.created", ORDER, "1", "application/msgpack" };
    ob_rsig_hdr_t c[OB_RSIG_NCOVERED];

    memset(r, 0, sizeof(*r));
    strcpy(r->key, ORDER);
    strcpy(r->value, VALUE);
    for (int i = 0; i < OB_RSIG_NCOVERED; i++) {
        strcpy(r->vals[i], v[i]);
        c[i] = r->hdrs[i] = (ob_rsig_hdr_t) { ob_rsig_covered[i], r->vals[i], strlen(r->vals[i]) };
    }
    r->n = OB_RSIG_NCOVERED;
    if (k == NULL)
        return;
    cr_assert_eq(ob_rsig_sign(k, r->key, strlen(r->key), r->value, strlen(r->value), c, r->sig), 0);
    r->hdrs[r->n++] = (ob_rsig_hdr_t) { OB_RSIG_HEADER, r->sig, strlen(r->sig) };
}

static int
rec_verify(const ob_rsig_keyring_t *ring, int require, rec_t *r, char *why, size_t whylen)
{
    return ob_rsig_verify(ring, require, r->key, strlen(r->key), r->value, strlen(r->value), r->hdrs, r->n, why,
                          whylen);
}

static ob_rsig_keyring_t
ring_of(const char *spec)
{
    ob_rsig_keyring_t ring = { 0 };
    const char       *why = NULL;

    cr_assert_eq(ob_rsig_parse_keys(spec, &ring, &why), 0, "%s", why);
    return ring;
}

Test(rsig, tampering_with_key_value_or_any_covered_header_is_a_bad_signature)
{
    ob_rsig_key_t     k = key("k1:hex:" HEX32);
    ob_rsig_keyring_t ring = ring_of("k1:hex:" HEX32);
    rec_t             r;
    char              why[256];

    rec_make(&r, &k);
    cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), 0, "%s", why);
    r.key[0] ^= 1;
    cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), -1, "key tampered");
    cr_assert(strstr(why, "bad signature") != NULL, "%s", why);
    rec_make(&r, &k);
    r.value[5] ^= 1;
    cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), -1, "value tampered");
    for (int i = 0; i < OB_RSIG_NCOVERED; i++) {
        rec_make(&r, &k);
        r.vals[i][0] ^= 1;
        cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), -1, "header %s tampered", ob_rsig_covered[i]);
        cr_assert(strstr(why, "bad signature (key id 'k1')") != NULL, "%s", why);
        rec_make(&r, &k);
        r.hdrs[i] = r.hdrs[--r.n];      /* header dropped (the signature moves into its place) */
        cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), -1, "header %s dropped", ob_rsig_covered[i]);
    }
    /* a second copy of a covered header: the decoder could read the other one */
    rec_make(&r, &k);
    r.hdrs[r.n++] = (ob_rsig_hdr_t) { "content-type", "application/json", 16 };
    cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), -1);
    cr_assert(strstr(why, "'content-type' given twice") != NULL, "%s", why);
    /* a signature of the wrong shape, and a forged one */
    rec_make(&r, &k);
    r.sig[10] = 'z';
    cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), -1);
    cr_assert(strstr(why, "malformed") != NULL, "%s", why);
    rec_make(&r, &k);
    r.sig[strlen(r.sig) - 1] = r.sig[strlen(r.sig) - 1] == '0' ? '1' : '0';
    cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), -1);
    cr_assert(strstr(why, "bad signature") != NULL, "%s", why);
    /* an uncovered header of someone else's does not matter */
    rec_make(&r, &k);
    r.hdrs[r.n++] = (ob_rsig_hdr_t) { "traceparent", "00-ab", 5 };
    cr_assert_eq(rec_verify(&ring, 1, &r, why, sizeof(why)), 0, "%s", why);
}

Test(rsig, unsigned_and_unknown_key_ids_and_rotation)
{
    ob_rsig_key_t     k1 = key("k1:hex:" HEX32);
    ob_rsig_key_t     k2 = key("k2:base64:" "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    ob_rsig_keyring_t old = ring_of("k1:hex:" HEX32), both, only2 = { 0 };
    rec_t             r;
    char              why[256];

    /* unsigned: refused only when required */
    rec_make(&r, NULL);
    cr_assert_eq(rec_verify(&old, 0, &r, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(rec_verify(&old, 1, &r, why, sizeof(why)), -1);
    cr_assert(strncmp(why, "unsigned record", 15) == 0, "%s", why);
    /* rotation: the new signing key k2 with k1 still accepted takes both */
    cr_assert_eq(ob_rsig_ring_merge(&old, &k2, &both), 0);
    cr_assert_eq(both.n, 2);
    rec_make(&r, &k1);
    cr_assert_eq(rec_verify(&both, 1, &r, why, sizeof(why)), 0, "old record: %s", why);
    rec_make(&r, &k2);
    cr_assert_eq(rec_verify(&both, 1, &r, why, sizeof(why)), 0, "new record: %s", why);
    /* before the consumers know k2, and after k1 is retired */
    cr_assert_eq(rec_verify(&old, 1, &r, why, sizeof(why)), -1);
    cr_assert_str_eq(why, "unknown signing key id 'k2'");
    cr_assert_eq(ob_rsig_ring_merge(&only2, &k2, &only2), 0);
    rec_make(&r, &k1);
    cr_assert_eq(rec_verify(&only2, 1, &r, why, sizeof(why)), -1);
    cr_assert_str_eq(why, "unknown signing key id 'k1'");
    /* a record signed by k1's id with another secret */
    ob_rsig_key_t fake = key("k1:base64:" "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    rec_make(&r, &fake);
    cr_assert_eq(rec_verify(&both, 1, &r, why, sizeof(why)), -1);
    cr_assert_str_eq(why, "bad signature (key id 'k1')");
    /* the same id with two secrets cannot be merged */
    cr_assert_eq(ob_rsig_ring_merge(&old, &fake, &both), -1);
}


Test(rsig, config_keys_parse_and_errors_name_file_line_without_the_secret)
{
    static ob_cfg_t cfg;
    char            err[1024];
    const struct {
        const char *text, *want;
    } bad[] = {
        { "[kafka]\nsigning_key = k1:hex:" HEX32 "ab0\n", "secret is not hex" },
        { "[kafka]\nsigning_key = k1:hex:00112233\n", "secret too short" },
        { "[kafka]\nsigning_key = k1:base64:c2VjcmV0c2VjcmV0\n", "secret too short" },
        { "[kafka]\nsigning_key = k1:base64:!!!!" HEX32 "\n", "not padded base64" },
        { "[kafka]\nsigning_key = k:1:hex:" HEX32 "\n", "secret encoding" },
        { "[kafka]\nsigning_key = " HEX32 "\n", "expected <key id>:hex:<secret>" },
        { "[kafka]\nsigning_key = k/1:hex:" HEX32 "\n", "key id: use 1-32" },
        { "[kafka]\nverify_keys = k1:hex:" HEX32 ",\n  k1:hex:" HEX32 "\n", "the same key id twice" },
        { "[kafka]\nverify_keys = k1:hex:" HEX32 ", k2:hex:" HEX32 "zz\n", "secret is not hex" },
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(obu_load(bad[i].text, &cfg, err, sizeof(err)), -1, "accepted: %s", bad[i].text);
        cr_assert(strstr(err, bad[i].want) != NULL, "%s: %s", bad[i].text, err);
        cr_assert(strstr(err, ":2: [kafka] ") != NULL || strstr(err, ":3: [kafka] ") != NULL, "no file:line: %s",
                  err);
        cr_assert(strstr(err, HEX32) == NULL && strstr(err, "00112233") == NULL && strstr(err, "c2VjcmV0") == NULL,
                  "the secret is echoed: %s", err);
    }
    /* cross-key checks */
    cr_assert_eq(obu_load("[kafka]\nrequire_signature = yes\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, "require_signature = yes needs verify_keys or signing_key") != NULL, "%s", err);
    cr_assert_eq(obu_load("[kafka]\nsigning_key = k1:hex:" HEX32 "\nverify_keys = k1:base64:"
                      "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n", &cfg, err, sizeof(err)), -1);
    cr_assert(strstr(err, "key id 'k1' different secrets") != NULL, "%s", err);
    /* a rotation: several keys over continuation lines and repeated lines */
    cr_assert_eq(obu_load("[kafka]\nsigning_key = k3:hex:" HEX32 "\nverify_keys = k1:hex:" HEX32 ",\n"
                      "  k2:base64:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\nverify_keys = k3:hex:" HEX32 "\n"
                      "require_signature = yes\n", &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cfg.kafka.signing_key.id, "k3");
    cr_assert_eq(cfg.kafka.verify_keys.n, 3);
    cr_assert_str_eq(cfg.kafka.verify_keys.keys[1].id, "k2");
    cr_assert_eq(cfg.kafka.require_signature, 1);
    /* off by default */
    cr_assert_eq(obu_load("[kafka]\ntopic = t\n", &cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.kafka.signing_key.len, 0);
    cr_assert_eq(cfg.kafka.verify_keys.n, 0);
    cr_assert_eq(cfg.kafka.require_signature, 0);
}
