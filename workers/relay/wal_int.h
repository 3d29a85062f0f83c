/*
 * workers/relay/wal_int.h: mode wal's state, shared by its three files:
 * wal.c (when to stream and when to poll: the face the loop sees) over
 * wal_stream.c (the stream) over wal_slot.c (publication, slot and
 * catch-up flag, in SQL on the relay's session).
 */
#ifndef OB_WAL_INT_H
#define OB_WAL_INT_H

#include "relay_int.h"
#include "pgoutput.h"

#define WAL_WINDOW     16384     /* events produced and not yet settled */
#define WAL_MARK_BATCH 5000
#define WAL_MARK_MS    200
#define WAL_MARK_TRIES 50        /* x WAL_MARK_MS: how long a row may stay invisible */
#define WAL_STATUS_MS  1000      /* far inside wal_sender_timeout (60 s by default) */
#define WAL_CONFIRM_MS 20        /* least gap between two confirmations */
#define WAL_STEP_MS    100
#define WAL_RETRY_MS   1000
#define WAL_STALE_MS   30000     /* a seat's slot no relay held for this long is dropped */
/* With the standby barrier on, a transaction's events wait for its Commit: at most this many, or bytes */
#define WAL_HOLD_MAX   64
#define WAL_HOLD_BYTES (8u << 20)
/* PostgreSQL's timestamps count from 2000-01-01, Unix time from 1970 */
#define WAL_PG_EPOCH_US (INT64_C(946684800) * 1000000)

/* An event decoded and not yet produced: its transaction's Commit has not passed the barrier. */
typedef struct {
    ob_relay_row_t ev;
    char          *data;          /* payload, then headers: one allocation, owned */
    size_t         plen, hlen;
    int            has_headers;
    int            fits;          /* its fields fit the relay's bounds (else it is refused, as unheld) */
} wal_held_t;

typedef struct {
    int64_t             id;
    int64_t             offset;
    int64_t             acked_ms;
    int64_t             committed_us;   /* wall clock: its transaction's commit time, from the stream's Begin */
    int64_t             streamed_us;    /* wall clock: decoded and produced */
    int64_t             acked_us;
    int32_t             partition;
    int32_t             topic;          /* ob_relay_row_t.topic */
    ob_dr_state_t       state;
    rd_kafka_resp_err_t err;
} wal_ev_t;

struct ob_wal_s {
    char         slot[64], pub[64], filter[96];
    char         foreign_filter[96]; /* relay_slots' filter when another instance set it, else "" */
    int          ready;          /* publication and slot are as configured */
    int          catchup;        /* a polling pass must find nothing before streaming */
    int          slot_busy_logged;
    int          pub_wait_logged;
    int64_t      stale_since[OB_RELAY_SEATS_MAX]; /* seat 0's relay: when each seat's slot was first seen unused */
    int64_t      retry_at_ms;
    PGconn      *repl;
    int          streaming;
    int64_t      stopped_ms;     /* when the stream last stopped (lag while polling) */
    int          pipe[2];        /* librdkafka writes a byte when a delivery report is queued */
    rd_kafka_t  *pipe_rk;        /* the producer the pipe is attached to */

    /* events of this stream session: numbers in [done, next) are in flight */
    uint64_t     base, done, next, marked;
    wal_ev_t    *ring;
    ob_wal_commit_t *commits;    /* ring of commits not yet confirmed */
    uint64_t     chead, ctail;
    int          in_txn;
    int64_t      txn_commit_us;  /* the transaction being streamed: its commit time (Begin), Unix microseconds */
    ob_pgo_outbox_map_t map;
    int          have_map;
    uint64_t     received, target, confirmed;
    int64_t      last_confirm_ms, next_status_ms;
    int64_t      last_ack_ms;    /* last acknowledgement, or the stream's start */
    int          stalled;
    int          halted;         /* an event was refused before it left: nothing after it may be produced */
    int          txn_safe;       /* the barrier passed for the transaction being read: produce at once */
    wal_held_t   held[WAL_HOLD_MAX];
    int          nheld;
    size_t       held_bytes;

    ob_relay_mark_t marks[WAL_MARK_BATCH];
    uint64_t     mark_n[WAL_MARK_BATCH];      /* each mark's event number (the confirmation gate) */
    uint8_t      mark_tries[WAL_MARK_BATCH];
    unsigned char missing[WAL_MARK_BATCH];
    int          nmark;
    int64_t      mark_due_ms;

    char       **quar;           /* "type/id" of aggregates with a quarantined event, sorted: their events wait */
    int          nquar;
};

/* wal_slot.c */
/* The rule of ob_pg_check: the result when the statement succeeded (the caller clears it), else NULL, logged as
 * "wal: <what> failed". */
PGresult *ob_wal_query(ob_relay_t *rl, const char *sql, int n, const char *const *params, const char *what);
PGresult *ob_wal_exec(ob_relay_t *rl, const char *sql, const char *what);
/* Whether the relay holds the lock of every partition it owns. */
int  ob_wal_all_locks(ob_relay_t *rl);
void ob_wal_counter(ob_relay_t *rl, int ctr, uint64_t v);
/* OB_EXIT_OK, or why mode wal cannot run on this server. */
int  ob_wal_check_server(ob_relay_t *rl, char *err, size_t errlen);
/* Publication and slot as configured: 1 ready, 0 not now, -1 error. */
int  ob_wal_setup(ob_relay_t *rl);
/* Reads catchup_needed (and whether another instance set the filter); 0 or -1. */
int  ob_wal_read_flag(ob_relay_t *rl);
int  ob_wal_update_flag(ob_relay_t *rl, int needed);
void ob_wal_drop_stale_slots(ob_relay_t *rl);
/* Slot lag in bytes into shm; 1 when the slot is lost or missing (set-up must look again). */
int  ob_wal_slot_lag(ob_relay_t *rl);

/* wal_stream.c: forgets the quarantined aggregates the stream skips. */
void ob_wal_free_quarantine(struct ob_wal_s *w);
/* wal_stream.c: frees the events held for the barrier (a stopped stream reads them again). */
void ob_wal_drop_held(struct ob_wal_s *w);

#endif
