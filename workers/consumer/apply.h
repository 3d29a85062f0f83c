/*
 * workers/consumer/apply.h: how a Kafka record becomes ledger entries, shared
 * by the consumer worker and `outboxd replay --dead-letters`, so a replayed
 * dead letter is judged exactly as the consumer judged it.
 *
 * A record is decoded and validated in C against what the ledger's columns
 * can hold before anything reaches SQL; the valid ones go to
 * ledger_apply_events() (sql/ledgerdb/0003) in one round trip. Errors are
 * classified by SQLSTATE: only data errors may dead-letter an event;
 * anything else means the database, not the event, is in trouble.
 */
#ifndef OB_CONS_APPLY_H
#define OB_CONS_APPLY_H

#include "../../common/cfg.h"
#include "../../common/event.h"
#include "../../common/rsig.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* ours (seven) and the up to 32 an event may carry (outboxd.emit), with room to spare */
#define OB_CONS_MAX_HEADERS 48

typedef enum {
    OB_CONS_OK = 0,
    OB_CONS_DATA,      /* the event's own fault (SQLSTATE 22, 23): dead-letter it */
    OB_CONS_TRANSIENT, /* serialization, deadlock, resources, I/O, cancel, internal: retry */
    OB_CONS_AWAY,      /* no answer, lost connection, server shutting down: retry */
    OB_CONS_OTHER,     /* privileges, missing objects, ...: a deployment fault, retry */
} ob_cons_class_t;

typedef struct {
    const char *name;        /* NUL-terminated, as librdkafka gives it */
    const void *value;       /* NULL: a header without a value */
    size_t      value_len;
} ob_cons_header_t;

/* One Kafka record, from the consumer's poll or from a stored dead letter. */
typedef struct {
    const char      *topic;
    int32_t          partition;
    int64_t          offset;
    const void      *key;    /* NULL: no key */
    size_t           key_len;
    const void      *value;  /* NULL: no value */
    size_t           value_len;
    int              nheaders;
    int              headers_dropped;   /* more than OB_CONS_MAX_HEADERS: refused */
    ob_cons_header_t headers[OB_CONS_MAX_HEADERS];
} ob_cons_record_t;

typedef struct {
    int     code;            /* > 0 booked (that many), 0 parked, -1 duplicate, -2 refused,
                              * -3 another aggregate type's event, not the ledger's: passed over */
    int     late;            /* parked successors the ledger dead-lettered */
    char    state[6];        /* SQLSTATE of a refusal by the ledger; "" when refused in C */
    char    why[256];        /* why refused, printable ASCII */
    int64_t occurred_ms;     /* the event's occurred_at, 0 if unknown */
} ob_cons_outcome_t;

/* What a record's signature must be for it to be booked (common/rsig.h). */
typedef struct {
    ob_rsig_keyring_t ring;     /* [kafka] verify_keys and signing_key; none: signatures are not checked */
    int               require;  /* [kafka] require_signature: unsigned records are refused too */
} ob_cons_trust_t;

/* The trust a config sets up. */
void ob_cons_trust_init(ob_cons_trust_t *t, const ob_cfg_t *cfg);

/* Judges r's signature by t; 0, or -1 with why. */
int ob_cons_verify(const ob_cons_trust_t *t, const ob_cons_record_t *r, char *why, size_t whylen);

/* The class of a failed statement's SQLSTATE; NULL or "" (no server answer) is OB_CONS_AWAY. */
ob_cons_class_t ob_cons_classify(const char *sqlstate);
const char     *ob_cons_class_name(ob_cons_class_t c);

/* Well-formed UTF-8: no overlong forms, surrogates, or code points past U+10FFFF. */
int ob_cons_utf8_valid(const char *s, size_t len);

/* Printable ASCII rendering of len bytes of s for error text: other bytes become \xNN. */
void ob_cons_printable(const char *s, size_t len, char *out, size_t outlen);

/*
 * Checks a decoded event against what the ledger can hold: every field
 * UTF-8, ids UUIDs, a known type for an "order", seq 1 for a create and
 * 2..INT32_MAX-1 otherwise, a known currency, an amount above 0, within
 * OB_MONEY_MAX_MAJOR and the currency's decimals. Rewrites ev->amount in
 * canonical form. 0, or -1 with why.
 */
int ob_cons_validate(ob_event_t *ev, char *why, size_t whylen);

/* Decodes (by the record's content-type header) and validates; 0, or -1 with why. */
int ob_cons_decode(const ob_cons_record_t *r, ob_event_t *ev, char *why, size_t whylen);

/*
 * Applies n records inside the caller's open transaction: refuses in C
 * invalid ones and those whose signature trust does not accept (trust may
 * be NULL: none checked), books the rest with one ledger_apply_events() call, stores
 * the records of parked events, and (dead_letter != 0) dead-letters every
 * refused one with its record. Fills out[n]. Returns OB_CONS_OK, or the
 * class of the statement that failed, with err and its SQLSTATE in state
 * (6 bytes, may be NULL); the transaction is then aborted and the caller
 * rolls back.
 */
ob_cons_class_t ob_cons_apply(PGconn *pg, const ob_cons_trust_t *trust, const ob_cons_record_t *recs, int n,
                              int dead_letter, ob_cons_outcome_t *out, char *state, char *err, size_t errlen);

/*
 * Inserts r into ledger_dead_letter with why and sqlstate (may be "").
 * bare != 0 stores only the coordinates: for when the record itself could
 * not be stored. Returns the class of the failure, OB_CONS_OK when stored.
 */
ob_cons_class_t ob_cons_dead_letter(PGconn *pg, const ob_cons_record_t *r, const char *why, const char *sqlstate,
                                    int bare, char *err, size_t errlen);

/* Runs a parameterless command; OB_CONS_OK or the failure's class, with err and its SQLSTATE (6 bytes, may be NULL). */
ob_cons_class_t ob_cons_exec(PGconn *pg, const char *sql, char *state, char *err, size_t errlen);

#endif
