/*
 * tests/fault/checker.h: the fault suite's history checker.
 *
 * Pure function over four views of one run, gathered after the system
 * converged (or gave up converging): what clients were told (history), what
 * orderdb holds (orders, outbox, quarantine), what Kafka holds (the whole
 * topic from the beginning) and what the ledger holds. It counts every way
 * those can disagree. It never talks to a database itself, so its unit test
 * can feed it each kind of corruption and see it flagged.
 *
 * Amounts are int64 in 1/10000 of the currency unit, the scale of
 * numeric(20,4) in both databases: exact, never a float.
 */
#ifndef OB_FAULT_CHECKER_H
#define OB_FAULT_CHECKER_H

#include <stddef.h>
#include <stdint.h>

typedef enum { OBC_CREATE, OBC_CANCEL } obc_op_t;

typedef enum {
    OBC_OK,          /* 2xx: the client was told it happened */
    OBC_REFUSED,     /* 4xx: the client was told it did not happen */
    OBC_UNAVAILABLE, /* 503, timeout, reset: the client does not know */
    OBC_BAD,         /* 500 or any other 5xx: a bug by itself */
} obc_outcome_t;

/* One request as the client saw it (its last attempt, after retries with
 * the same Idempotency-Key). */
typedef struct {
    obc_op_t      op;
    obc_outcome_t outcome;
    int           status;       /* HTTP status, or -errno */
    char          key[64];      /* Idempotency-Key (creates) */
    char          order[40];    /* order id: from the 201 body, or the cancelled order */
    int64_t       amount;       /* requested, 1/10000 units (creates) */
} obc_req_t;

typedef struct {
    char    id[40];
    char    key[64];
    int64_t amount;
    int     cancelled;
} obc_order_t;

typedef struct {
    char    event_id[40];
    char    order[40];
    int     seq;
    int     published;
    int     partition;
    int64_t offset;       /* the Kafka offset the relay recorded, -1 when none */
} obc_outbox_t;

typedef struct {
    char    event_id[40];
    char    order[40];
    int     seq;
    int     partition;
    int64_t offset;
} obc_kmsg_t;

typedef enum { OBC_CHARGE, OBC_CREDIT_NOTE } obc_kind_t;

typedef struct {
    int64_t    id;            /* ledger_entries.id: the order entries were booked in */
    char       event_id[40];
    char       order[40];
    int        seq;
    obc_kind_t kind;
    int64_t    amount;
} obc_entry_t;

typedef struct {
    const obc_req_t    *reqs;
    size_t              nreqs;
    const obc_order_t  *orders;
    size_t              norders;
    const obc_outbox_t *outbox;      /* live outbox rows */
    size_t              noutbox;
    const char        (*quarantined)[40];   /* order ids with a quarantined event */
    size_t              nquarantined;
    const obc_kmsg_t   *kmsgs;       /* in topic order per partition (offset ascending) */
    size_t              nkmsgs;
    const obc_entry_t  *entries;
    size_t              nentries;
} obc_input_t;

typedef struct {
    /* history */
    long requests, acked, refused, unavailable, bad_status;
    long unknown_committed, unknown_absent;   /* unavailable creates resolved against orderdb */
    /* faults: any of these non-zero fails the run */
    long lost;          /* acknowledged or committed, but missing downstream */
    long phantom;       /* downstream, but never committed (or refused) upstream */
    long duplicate;     /* two charges, two credit notes, one event booked twice */
    long violations;    /* an order's events out of seq order, or split over partitions */
    long mismatch;      /* ledger amount differs from the order */
    /* informational */
    long quarantined;   /* orders held back on purpose by quarantine */
    long kafka_resends; /* at-least-once re-sends in the log, harmless */
    long orders, entries, kmsgs;
    char first[1024];   /* the first few problems, for the failure message */
} obc_result_t;

/* Fills *res; returns the number of faults (lost + phantom + duplicate +
 * violations + mismatch). */
long obc_check(const obc_input_t *in, obc_result_t *res);

/* Parses "123.4500" / "-12" into 1/10000 units; -1 on anything else. */
int obc_parse_amount(const char *s, int64_t *out);

#endif
