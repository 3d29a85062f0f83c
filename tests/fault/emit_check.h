/*
 * tests/fault/emit_check.h: the history checker for foreign writers, SQL
 * clients that call outboxd.emit inside transactions of their own, with
 * [routes] sending each aggregate type to a topic.
 *
 * Pure function, like checker.h, over three views gathered after the
 * outbox drained: what the writers saw (each emit call, its transaction's
 * outcome and when it began and ended), what the outbox holds, and every
 * topic an event may be routed to, read whole. It never talks to a
 * database or a broker, so its unit test can feed it each corruption.
 */
#ifndef OB_FAULT_EMIT_CHECK_H
#define OB_FAULT_EMIT_CHECK_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    OBE_COMMITTED,    /* COMMIT answered: the event must be published */
    OBE_ROLLED_BACK,  /* rolled back, or its transaction failed before COMMIT */
    OBE_UNKNOWN,      /* COMMIT sent, no answer: `committed_in_log` decides */
} obe_outcome_t;

/* Writers are numbered 0..OBE_MAX_WRITERS-1. */
#define OBE_MAX_WRITERS 64

/* One emit call as its writer saw it. */
typedef struct {
    char          event_id[40];   /* what emit returned */
    char          type[24];
    char          id[40];
    int           writer;
    long          n;              /* the writer's call counter: its calls in order */
    int64_t       begin_us;       /* its transaction: BEGIN sent */
    int64_t       end_us;         /*                 COMMIT (or ROLLBACK) answered */
    obe_outcome_t outcome;
    int           committed_in_log;   /* OBE_UNKNOWN only: txid_status() of its transaction said committed */
} obe_call_t;

/* One outbox row. */
typedef struct {
    char    event_id[40];
    char    type[24];
    char    id[40];
    int     published;
    int     partition;
    int64_t offset;     /* the Kafka offset the relay recorded, -1 when none */
} obe_row_t;

/* One Kafka record, in topic order per (topic, partition). */
typedef struct {
    int     topic;        /* index into obe_input_t.topics */
    int     partition;
    int64_t offset;
    char    event_id[40]; /* header event-id */
    char    type[24];     /* header aggregate-type */
    char    id[40];       /* key */
    int     seq;          /* header aggregate-seq */
    int     writer;       /* from the payload {"w": writer, "n": n}; -1 when unreadable */
    long    n;
} obe_kmsg_t;

/* One aggregate held back on purpose by the quarantine. */
typedef struct {
    char type[24];
    char id[40];
} obe_agg_t;

typedef struct {
    const obe_call_t *calls;
    size_t            ncalls;
    const obe_row_t  *rows;
    size_t            nrows;
    const obe_agg_t  *quarantined;
    size_t            nquarantined;
    const obe_kmsg_t *kmsgs;
    size_t            nkmsgs;
    int               partitions;
    /* topics[t] is where [routes] send route_types[t]; the last topic,
     * topics[ntopics - 1], takes every type without a route */
    const char *const *route_types;
    int                ntopics;
} obe_input_t;

typedef struct {
    /* history */
    long calls, committed, rolled_back, unknown;
    long unknown_committed, unknown_absent;    /* settled by the commit log, never by the outbox under test */
    /* faults: any of these non-zero fails the run */
    long lost;        /* committed, not on its topic */
    long phantom;     /* on a topic or in the outbox, never committed */
    long duplicate;   /* one seq of an aggregate given to two events; one event on two partitions */
    long violations;  /* seqs out of commit order, not 1..n, wrong topic or partition */
    long mismatch;    /* a record's key, type or payload is not what the writer emitted;
                         an offset the relay recorded holds another event */
    /* informational */
    long quarantined;
    long kafka_resends;
    long kmsgs;
    char first[1024];
} obe_result_t;

/* Fills *res; returns the number of faults. */
long obe_check(const obe_input_t *in, obe_result_t *res);

#endif
