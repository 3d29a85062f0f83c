/*
 * workers/relay/relay_int.h: internals shared by the relay's files.
 *
 * The files call one way only: relay.c (the loop) on top; the engines
 * beside each other below it, polling (publish.c) and streaming (wal.c
 * over wal_stream.c over wal_slot.c), neither calling the other; under
 * both what they share: producer.c, mark.c, upkeep.c, barrier.c, share.c and the pure rules of
 * outcome.c; topic.c and pgoutput.c at the bottom. Where a lower file must
 * reach up (a delivery report, the polling pass of mode wal), the caller
 * passes a function down.
 */
#ifndef OB_RELAY_INT_H
#define OB_RELAY_INT_H

#include "../../common/cfg.h"
#include "../../shm/shm.h"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>


/* Advisory lock classes (first key of pg_try_advisory_lock(int, int)) on orderdb: partition p's, and seat s's. */
#define OB_RELAY_LOCK_CLASS 0x6f627872   /* "obxr" */
#define OB_RELAY_SEAT_CLASS 0x6f627873   /* "obxs" */
#define OB_RELAY_SEATS_MAX  1024         /* relays of every instance on one orderdb */

/* The bounds sql/outbox/0001_tables.sql checks: a value the relay could not copy whole is refused, not cut. */
#define OB_AGG_TYPE_MAX     64
#define OB_AGG_ID_MAX       255
#define OB_EVENT_TYPE_MAX   128
#define OB_CONTENT_TYPE_MAX 128

/* Delivery outcome of one event: a row of the polled batch, or a streamed event. */
typedef enum { OB_DR_PENDING = 0, OB_DR_OK, OB_DR_REJECTED, OB_DR_RETRY } ob_dr_state_t;

typedef struct {
    int64_t      id;          /* outbox id */
    int32_t      partition;
    int32_t      topic;       /* index into ob_relay_t.topics, set by ob_relay_produce */
    int32_t      seq;
    ob_dr_state_t state;
    int          refused;     /* refused before it left (no route, bad headers, too long): it is its own culprit */
    int          held;        /* not sent: an earlier row of its partition was refused (polling) */
    int64_t      offset;
    int64_t      acked_ms;    /* wall clock of Kafka's acknowledgement */
    int64_t      created_us;  /* wall clock: the row's created_at (its writer's transaction start) */
    int64_t      claimed_us;  /* wall clock: the claim returned it */
    int64_t      acked_us;    /* wall clock: Kafka's acknowledgement */
    char         event_id[37];
    char         aggregate_type[OB_AGG_TYPE_MAX + 1];
    char         aggregate_id[OB_AGG_ID_MAX + 1];
    char         event_type[OB_EVENT_TYPE_MAX + 1];
    char         content_type[OB_CONTENT_TYPE_MAX + 1];   /* "" : outboxd's own encoding, per [kafka] format */
    char         error[160];
} ob_relay_row_t;

/* What a record carries besides the row's fields: bytes that point into a result or a message. */
typedef struct {
    const void *payload;
    size_t      len;
    const char *headers;      /* JSON object of string values, or NULL */
    size_t      hlen;
} ob_relay_body_t;

/* A commit seen in the stream (mode wal), waiting for its events to be marked. */
typedef struct {
    uint64_t end_lsn;
    uint64_t upto;               /* events numbered below this belong to it or earlier */
    int64_t  recv_ms;
} ob_wal_commit_t;

/* A share computed from the seats (share.c), before it is applied. */
typedef struct {
    int seat, members, rank, nparts;
    int parts[OB_SHM_PARTITIONS];
} ob_share_plan_t;

typedef struct {
    const ob_cfg_t *cfg;
    ob_shm_slot_t  *slot;
    int             index;
    PGconn         *pg;
    rd_kafka_t     *rk;
    int             ntopics;                      /* what ob_cfg_topics gives, checked at start */
    const char     *topics[OB_TOPICS_MAX + 1];
    int             shm_topic[OB_TOPICS_MAX + 1]; /* each one's row in shm's topic table, or -1 */
    int64_t         max_bytes[OB_TOPICS_MAX + 1]; /* each one's max.message.bytes as last read; 0 unknown */
    int             compressed;                   /* a compression codec is set: record sizes are not checked */
    int             seat;                         /* share.c: seat lock held on pg, -1 none */
    int             share_seat;                   /* the seat the share below was computed for, -1 none */
    int             members;                      /* seats held when last read: relays of every instance */
    int             rank;                         /* this relay's place among them, -1 none */
    int             nparts;                       /* the share: partitions p with p % members = rank */
    int             parts[OB_SHM_PARTITIONS];
    unsigned char   in_share[OB_SHM_PARTITIONS];
    unsigned char   held[OB_SHM_PARTITIONS];      /* advisory lock held on pg */
    int64_t         next_tick_ms;                 /* locks, stats */
    int64_t         next_janitor_ms;
    int64_t         next_stats_ms;

    /* the batch in hand: claimed rows, produced, waiting for delivery reports */
    ob_relay_row_t *rows;
    int             nrows;
    int             cap;
    int             outstanding;                  /* delivery reports not yet seen */
    int64_t         claimed_us;                   /* wall clock: the batch in hand came back from its claim */
    uint32_t        batch_gen;                    /* which batch a delivery report belongs to */

    ob_breaker_t    breaker;
    int64_t         breaker_until_ms;             /* open: no claims before this */
    int64_t         breaker_backoff_ms;
    int             fatal;                        /* producer raised a fatal error */
    int             more;                         /* last cycle filled a batch: go again at once */
    int             wait_ms;                      /* the sleep before the next poll (ob_relay_poll_wait) */
    uint32_t        wake_seen;                    /* the wake word when the last sleep began */
    /* Kafka fails a whole produce request when one record in it is too
     * large, so a rejection in a multi-row batch names no culprit: the
     * partition then sends one row per cycle for this many rows. */
    int             isolate[OB_SHM_PARTITIONS];
    struct ob_wal_s *wal;                         /* mode wal: the stream's state (wal.c) */
    int             barrier;                      /* the standby barrier is on (barrier.c) */
    uint64_t        barrier_safe;                 /* WAL below this is on a synchronous standby */
    int64_t         barrier_warned_ms;
    int             barrier_held;                 /* the last cycle let its rows go for the barrier: not "none found" */
} ob_relay_t;

/* ------------------------------------------------------------------------ */
/* outcome.c: the delivery rules, pure (no connection, no producer)          */
/* ------------------------------------------------------------------------ */

/* A delivery error no retry can cure (too large, invalid). */
int ob_relay_permanent(rd_kafka_resp_err_t e);
/*
 * What a delivery report, or a produce refused before it left (offset -1),
 * means for its event. Success without an offset is not acknowledged
 * (RETRY). With why, the reason for any outcome but OK.
 */
ob_dr_state_t ob_relay_outcome(rd_kafka_resp_err_t e, int64_t offset, char *why, size_t whylen);

/* What the mark step does with one row of a settled polled batch. */
typedef enum {
    OB_MARK_SKIP = 0,      /* its partition stopped at an earlier row: stays pending */
    OB_MARK_PUBLISHED,     /* acknowledged: marked with its offset */
    OB_MARK_QUARANTINE,    /* rejected alone: it is the culprit */
    OB_MARK_ISOLATE,       /* rejected with others: its partition goes one row per cycle */
    OB_MARK_RETRY,         /* not acknowledged: its partition stops here */
} ob_mark_plan_t;

/*
 * one_group: the batch had one LIMIT for all partitions (skip_locked), so
 * it is one group for isolation; otherwise each partition is a group.
 */
/* Rows of the batch in partition's group. */
int  ob_relay_rows_in(const ob_relay_row_t *rows, int n, int partition, int one_group);
/* plan[i] for each of rows[0..n), in claim order (a partition's rows together, by id). */
void ob_relay_plan_marks(const ob_relay_row_t *rows, int n, int one_group, unsigned char *plan);
/*
 * Culprit isolation: isolate[k] (k = partition, or 0 for one group) is how
 * many more rows group k sends one per cycle. rows[i] was planned ISOLATE:
 * its group now isolates every row the batch had of it.
 */
void ob_relay_isolation_begin(int *isolate, const ob_relay_row_t *rows, int n, int i, int one_group);
/*
 * How long a relay sleeps (unless woken) after a poll that found `found`
 * rows, when the sleep before it was prev_ms: min_ms after rows, doubling
 * while polls come back empty, never above max_ms (poll_interval_ms).
 * min_ms 0, or not below max_ms: always max_ms.
 */
int  ob_relay_poll_wait(int prev_ms, int found, int min_ms, int max_ms);
/* The claim LIMIT of group key: 1 while isolating, else batch. */
int  ob_relay_claim_limit(const int *isolate, int key, int batch);
/*
 * settled[k] (OB_SHM_PARTITIONS of them) = 1 for each isolating group whose
 * single row of this batch settled (acknowledged or rejected); a row to
 * retry does not count.
 */
void ob_relay_isolation_settled(const ob_relay_row_t *rows, int n, int one_group, const int *isolate,
                                unsigned char *settled);
/* Counts the settled groups down; 1 while any group is still isolating (no sleep between its rows). */
int  ob_relay_isolation_step(int *isolate, const unsigned char *settled);
/* Whether a partition filled its batch: then there is probably more waiting. */
int  ob_relay_batch_full(const ob_relay_row_t *rows, int n, int batch);
/* Whether a row of the batch was held back, not sent: the next cycle comes at once. */
int  ob_relay_any_held(const ob_relay_row_t *rows, int n);
/* The bytes one record header takes on the wire. */
size_t ob_relay_header_size(size_t namelen, size_t vallen);
/*
 * The wire size of a record batch holding this record alone, uncompressed
 * (hdrbytes: its nhdr headers' ob_relay_header_size): what a broker holds
 * to the topic's max.message.bytes.
 */
size_t ob_relay_record_size(size_t keylen, size_t vallen, size_t nhdr, size_t hdrbytes);

/*
 * Sharing partitions between the relays of every instance (share.c).
 * seats[0..n) are the seats held, ascending; mine is this relay's. Its
 * share is the partitions p with p % n = its rank among them: parts
 * (ascending) and the count returned; 0 with *rank -1 when mine is not
 * among them.
 */
int  ob_relay_share(const int *seats, int n, int mine, int partitions, int *parts, int *rank);
/* The seat mine should move down to (the lowest one free) when it is the highest and above n-1; else -1. */
int  ob_relay_seat_hole(const int *seats, int n, int mine);

/*
 * Mode wal's confirmation gate. Events are numbered in stream order;
 * mark_n[0..nmark) are the numbers of marks not yet done, oldest first.
 * Returns the first event not marked: nothing at or past it is confirmed.
 */
uint64_t ob_relay_marked_upto(const uint64_t *mark_n, int nmark, uint64_t done);
/*
 * Pops the commits of ring[*head..tail) (cap slots) whose events all lie
 * below marked; returns the end LSN to confirm (target if none popped).
 */
uint64_t ob_relay_gate(const ob_wal_commit_t *ring, uint64_t cap, uint64_t *head, uint64_t tail, uint64_t marked,
                       uint64_t target);

/* ------------------------------------------------------------------------ */
/* topic.c                                                                   */
/* ------------------------------------------------------------------------ */

/* OB_EXIT_OK when the topic has `partitions` partitions (creating it if
 * absent), OB_EXIT_RETRY when Kafka did not answer, OB_EXIT_FATAL when the
 * count differs. */
int ob_relay_check_topic(rd_kafka_t *rk, const char *topic, int partitions, char *err, size_t errlen);
/*
 * limits[t] = topics[t]'s max.message.bytes (0 where Kafka did not say,
 * with why in err). -1 when no answer came within timeout_ms.
 */
int ob_relay_topic_limits(rd_kafka_t *rk, const char *const *topics, int n, int64_t *limits, int timeout_ms,
                          char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* producer.c                                                                */
/* ------------------------------------------------------------------------ */

/* librdkafka's delivery-report callback; its opaque is the ob_relay_t. */
typedef void (*ob_relay_dr_cb)(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/* The producer, with the caller's delivery-report callback; NULL with err. */
rd_kafka_t *ob_relay_producer_new(ob_relay_t *rl, ob_relay_dr_cb dr, char *err, size_t errlen);
/* Reads every topic's max.message.bytes (at start): a record larger is refused before it leaves. */
void ob_relay_read_limits(ob_relay_t *rl);
/* Produces one event (same key, headers, payload in every mode). */
rd_kafka_resp_err_t ob_relay_produce(ob_relay_t *rl, ob_relay_row_t *row, const ob_relay_body_t *b,
                                     void *opaque);
/* Copies n bytes of a text value into dst (dstlen with its NUL); -1, copying nothing, when it does not fit. */
int ob_relay_field(char *dst, size_t dstlen, const char *src, size_t n);

/* ------------------------------------------------------------------------ */
/* barrier.c: nothing produced before a synchronous standby has it           */
/* ------------------------------------------------------------------------ */

/* After each connect and every second: whether the barrier is on ([relay] standby_barrier, the
 * server's synchronous_standby_names). OB_EXIT_OK, or RETRY/FATAL with err. */
int ob_barrier_setup(ob_relay_t *rl, char *err, size_t errlen);
/*
 * 1 once a synchronous standby has every commit seen so far (at once when
 * the barrier is off, or when lsn, a streamed commit's end, is known to be
 * there); 0 when none confirmed within a second (nothing may be produced:
 * the caller gives up its rows); -1 the session failed. lsn 0: unknown.
 */
int ob_barrier_wait(ob_relay_t *rl, uint64_t lsn);

/* ------------------------------------------------------------------------ */
/* share.c: seats and partition locks, on the relay's orderdb session        */
/* ------------------------------------------------------------------------ */

/*
 * Once a tick: takes a seat (or moves it down into a hole), reads the
 * seats held and computes this relay's share into plan. 1 when it differs
 * from the share in force (the caller stops what publishes it, then
 * ob_share_apply), 0 when not, -1 the session failed (err).
 */
int  ob_share_plan(ob_relay_t *rl, ob_share_plan_t *plan, char *err, size_t errlen);
/* Releases the partitions the plan leaves out and puts it in force; 0, or -1 the session failed. */
int  ob_share_apply(ob_relay_t *rl, const ob_share_plan_t *plan, char *err, size_t errlen);
/* Takes the lock of every partition of the share not held yet (another relay may still hold it); 0 or -1. */
int  ob_share_lock(ob_relay_t *rl, char *err, size_t errlen);
/* The session is gone, and with it the seat and every lock: forgets them, in shm too. */
void ob_share_forget(ob_relay_t *rl);

/* ------------------------------------------------------------------------ */
/* mark.c                                                                    */
/* ------------------------------------------------------------------------ */

/* One acknowledged event to mark published. */
typedef struct {
    int64_t id, offset, acked_ms;
} ob_relay_mark_t;

/* Marks rows published with their offsets and acknowledgement times; 0 or
 * -1. With missing, sets missing[i] for rows it did not find. */
int  ob_relay_mark_rows(ob_relay_t *rl, const ob_relay_mark_t *m, int n, unsigned char *missing);
/* Per-partition figures of an acknowledged event, in shm. */
void ob_relay_count_produced(const ob_relay_t *rl, int topic, int partition, int64_t offset);
/* An acknowledged event's stage times (wall clock, microseconds) into the relay's histograms. */
void ob_relay_count_stages(const ob_relay_t *rl, int64_t committed_us, int64_t claimed_us, int64_t acked_us);
/* Whether a statement succeeded; logs a failure under what, and clears r. */
int  ob_relay_sql_ok(PGconn *pg, PGresult *r, const char *what);

/* ------------------------------------------------------------------------ */
/* upkeep.c                                                                  */
/* ------------------------------------------------------------------------ */

/* The circuit breaker's new state, in the relay and in shm. */
void ob_relay_set_breaker(ob_relay_t *rl, ob_breaker_t b);
/* "{1,4,7}": the held partitions as an int[] literal for the caller to free (NULL out of memory); *n says how many. */
char *ob_relay_held_array(const ob_relay_t *rl, int *n);
/* Pending count and oldest pending age per partition in scope, into shm. */
void ob_relay_stats(ob_relay_t *rl);
/* Deletes published rows older than retention, a few batches per call. */
void ob_relay_janitor(ob_relay_t *rl);

/* ------------------------------------------------------------------------ */
/* publish.c: polling                                                        */
/* ------------------------------------------------------------------------ */

/* One claim-produce-wait-mark cycle. Returns the number of rows claimed (a
 * full batch means "go again at once"), or -1 when the database connection
 * failed (the caller drops its locks and reconnects). */
int  ob_relay_cycle(ob_relay_t *rl);
/* A delivery report whose opaque (v) is a polled row's. */
void ob_relay_polled_dr(ob_relay_t *rl, uint64_t v, rd_kafka_resp_err_t err, int64_t offset);

/* ------------------------------------------------------------------------ */
/* wal.c, wal_stream.c: mode wal                                             */
/* ------------------------------------------------------------------------ */

/*
 * Delivery reports of streamed events carry OB_WAL_OPAQUE_TAG in their
 * opaque, so neither engine ever takes the other's report for its own.
 */
#define OB_WAL_OPAQUE_TAG (UINT64_C(1) << 63)
int  ob_wal_init(ob_relay_t *rl, char *err, size_t errlen);
void ob_wal_free(ob_relay_t *rl);
/* The share changed (its stream already stopped): slot, publication and filter follow it. */
void ob_wal_reshare(ob_relay_t *rl);
/* Once a tick: publication and slot set up, catch-up flag, slot lag. */
void ob_wal_tick(ob_relay_t *rl, int stats_due);
/* Whether the stream runs (or may start now) instead of a polling cycle. */
int  ob_wal_streams(ob_relay_t *rl);
/* A polling cycle (cycle) in mode wal: the catch-up pass ends once one finds nothing. */
int  ob_wal_poll_cycle(ob_relay_t *rl, int (*cycle)(ob_relay_t *rl));
/* wal_stream.c: runs the stream for up to ~100 ms. -1 when the orderdb session failed. */
int  ob_wal_step(ob_relay_t *rl);
/* wal_stream.c: stops the stream: finish (wait for Kafka, mark, confirm) or drop at once. */
void ob_wal_stop(ob_relay_t *rl, int finish);
/* wal_stream.c: a delivery report of streamed event number n. */
void ob_wal_dr(ob_relay_t *rl, uint64_t n, rd_kafka_resp_err_t err, int64_t offset);

#endif
