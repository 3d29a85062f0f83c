/*
 * tests/fault/fault.h: the fault suite's fixture.
 *
 * A scenario starts the real build/outboxd on databases and a topic of its
 * own (tests/harness.h), starts client processes that record every
 * request's outcome, injects one fault, heals it, waits (bounded) for order
 * totals and ledger totals to agree, then gathers orderdb, the outbox, the
 * whole Kafka topic and the ledger and hands them to the checker.
 */
#ifndef OB_FAULT_H
#define OB_FAULT_H

#include "tests/fault/checker.h"
#include "tests/fault/emit_check.h"
#include "tests/harness.h"

#include <stdatomic.h>
#include <stdint.h>

#define FX_MAX_CLIENTS 8

typedef struct {
    int clients;
    int pace_ms;        /* pause between one client's requests */
    int cancel_pct;     /* share of requests that cancel one of the client's own orders */
    int max_requests;   /* per client; 0 = until fx_load_stop() */
    int timeout_ms;     /* per attempt: past it the outcome is unknown */
    int retries;        /* further attempts, same Idempotency-Key, while unavailable */
    int port;           /* 0 = the fixture's orders port */
    const char *addr;   /* the listener's address, NULL = 127.0.0.1 (another host: scripts/netns.sh) */
} fx_load_opts_t;

/* Shared with the client processes. */
typedef struct {
    atomic_int  stop;
    atomic_long acked;
    atomic_long attempts;
    atomic_int  done;      /* clients that finished their max_requests */
} fx_shared_t;

typedef struct {
    obh_t          h;
    const char    *scenario;
    int            long_tier;     /* OB_CHAOS_LONG=1: longer loads, more faults */
    fx_shared_t   *sh;
    pid_t          clients[FX_MAX_CLIENTS];
    int            nclients;
    int64_t        healed_ms;     /* when the last fault was healed */
    double         converge_s;    /* heal -> totals agree; negative when they never did */
    obc_result_t   res;
} fx_t;

/* Fixture life: databases, topic, config (extra INI appended), start. */
void fx_setup(fx_t *fx, const char *scenario);
void fx_start(fx_t *fx, const char *extra);
void fx_teardown(fx_t *fx);

/* Load: forks the clients; stop asks them to finish and reaps them;
 * wait_done waits until every client finished its max_requests. */
void fx_load_start(fx_t *fx, const fx_load_opts_t *o);
void fx_load_stop(fx_t *fx);
void fx_load_wait_done(fx_t *fx, int timeout_ms);
/* Waits until `more` further requests were acknowledged; 1 if they were. */
int  fx_wait_acked(fx_t *fx, long more, int timeout_ms);

/* Internal to the fixture: the clients' shared counters, and their
 * history files read back. */
fx_shared_t *fx_shared_new(void);
size_t       fx_history(fx_t *fx, obc_req_t **out);

/* Waits (bounded) until done(fx), setting converge_s from the heal. */
void fx_wait_until(fx_t *fx, int (*done)(fx_t *), int timeout_ms);
/* Reads a topic whole (every partition up to its high watermark), handing
 * each record to each() in offset order per partition; returns how many. */
size_t fx_read_topic(fx_t *fx, const char *topic, void (*each)(const rd_kafka_message_t *m, void *arg), void *arg);
/* Rows of sql on pg, asserted; n + 1 zeroed elements of size bytes, asserted. */
PGresult *fx_rows(PGconn *pg, const char *sql);
void     *fx_alloc(size_t n, size_t size);
/* Room for element n of *v (elements of size bytes, *cap of them): doubles when full. */
void      fx_grow(void **v, size_t *cap, size_t n, size_t size);

/* In a forked client: its history file dir/<prefix>.<index>, line-buffered
 * so it is whole whatever happens to the system under test, and random()
 * seeded apart from its siblings'. Exits the child when it cannot. */
FILE *fx_client_history(fx_t *fx, const char *prefix, int index);

/* One row of var/chaos/report.md (columns of scripts/chaos_report.sh). */
typedef struct {
    long attempts, requests, acked, unavailable, unknown_committed, unknown_absent, bad;
    long lost, phantom, duplicate, violations, mismatch;
} fx_row_t;
void fx_report_append(fx_t *fx, const fx_row_t *row, const char *verdict);

/*
 * Foreign writers (emit_load.c): SQL clients calling outboxd.emit in
 * transactions of their own, one to three calls each, of types picked at
 * random with one aggregate id per transaction, ids "0".."aggregates-1" so
 * writers contend on the same aggregates; rollback_pct of them roll back.
 * They share fx_load_stop() and the acked counter (committed transactions).
 */
typedef struct {
    int                writers;
    int                aggregates;
    int                rollback_pct;
    int                pace_ms;
    const char *const *types;
    int                ntypes;
} fx_emit_opts_t;

void fx_emit_start(fx_t *fx, const fx_emit_opts_t *o);
size_t fx_emit_history(fx_t *fx, obe_call_t **out);
/* Stops the writers, waits for the outbox to drain, reads the outbox and
 * topics[0..ntopics-1] (route_types[t] routed to topics[t], the last one the
 * default) and runs obe_check; returns the faults. */
long fx_emit_verify(fx_t *fx, const char *const *topics, const char *const *route_types, int ntopics,
                    int converge_ms, obe_result_t *res);
/* Append the report row and assert a clean foreign-writer run (no faults,
 * drained, commits and rollbacks, nothing quarantined), or, for a negative
 * control, that the checker flagged `count` (> 0) of `what`. */
void fx_emit_assert_clean(fx_t *fx, const obe_result_t *res);
void fx_emit_assert_flagged(fx_t *fx, const obe_result_t *res, long count, const char *what);

/* Marks the fault healed now. */
void fx_healed(fx_t *fx);
/* Scales a count or duration for the long tier. */
int  fx_n(const fx_t *fx, int short_n, int long_n);

/* Waits (bounded) for totals to agree, gathers everything, runs the
 * checker, appends the report row, returns the number of faults. */
long fx_verify(fx_t *fx, int converge_timeout_ms);

/* Asserts a clean run: no faults, no 500s, converged. */
void fx_assert_clean(fx_t *fx);

/* Negative controls: asserts the checker flagged `count` (> 0) of `what`. */
void fx_assert_flagged(fx_t *fx, long count, const char *what);

/* Helpers for the faults themselves. */
void  fx_kafka_restart(void);          /* scripts/stack.sh up: starts what is down */
void  fx_pg_restart(const char *which); /* fast shutdown and start of one cluster */
pid_t fx_kill_worker(fx_t *fx, int kind, int index, int sig);   /* returns the pid signalled */

#endif
