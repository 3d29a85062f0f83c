/*
 * shm/shm.h: the one POSIX shared-memory segment of an outboxd instance.
 *
 * Layout (fixed, versioned): a header, OB_SHM_SLOTS worker slots,
 * OB_SHM_PARTITIONS partition rows, and OB_SHM_TOPICS topics with a row per
 * partition each ([routes] send aggregate types to several topics, and
 * Kafka's offsets are per topic and partition). Everything the status page, /metrics and
 * `outboxd status` show is read from here, so they work with PostgreSQL and
 * Kafka down.
 *
 * Ownership of writes, so that no lock is ever needed:
 *   - header: the supervisor only (multi-field parts under hdr.seq);
 *   - slot identity (kind, index, pid, state, restarts, ...): the supervisor
 *     only, under slot.seq (a seqlock: readers retry, never block);
 *   - slot heartbeat, counters, owned-partition bits: the worker of that slot;
 *   - partition rows: the relay that owns the partition, except `committed`,
 *     which HTTP workers bump with an atomic add;
 *   - topic names: the supervisor, once each, before publishing ntopics (a
 *     name never changes or goes while the instance runs, so readers take
 *     the names below ntopics without a lock); a topic's partition rows: the
 *     relay that owns the partition.
 * A process that dies mid-write leaves at worst an odd seq on a slot that
 * the supervisor rewrites when it reaps; readers give up after a few tries.
 */
#ifndef OB_SHM_H
#define OB_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define OB_SHM_MAGIC      0x314d485344584f42ULL  /* "BOXDSHM1" */
#define OB_SHM_VERSION    3   /* 2: the topic table, last_offset per topic; 3: 80 counters, stage histograms */
#define OB_SHM_SLOTS      128
#define OB_SHM_PARTITIONS 256
#define OB_SHM_COUNTERS   80
#define OB_SHM_TOPICS     16   /* = OB_TOPICS_MAX (common/routes.h) */
#define OB_SHM_OWN_WORDS  (OB_SHM_PARTITIONS / 64)

typedef enum {
    OB_KIND_NONE = 0,
    OB_KIND_HTTP,
    OB_KIND_RELAY,
    OB_KIND_CONSUMER,
    OB_KIND_COUNT
} ob_kind_t;

typedef enum {
    OB_SLOT_EMPTY = 0,
    OB_SLOT_STARTING,    /* forked, no heartbeat of its own yet */
    OB_SLOT_RUNNING,
    OB_SLOT_STOPPING,    /* sent TERM, waiting for exit */
    OB_SLOT_BACKOFF,     /* exited, waiting for its restart time */
    OB_SLOT_CRASHLOOP,   /* backoff after several quick failures in a row */
    OB_SLOT_FATAL,       /* exited 2: not respawned until the next reload */
    OB_SLOT_STATE_COUNT
} ob_slot_state_t;

/* ob_shm_part_t.breaker */
typedef enum { OB_BREAKER_CLOSED = 0, OB_BREAKER_OPEN = 1, OB_BREAKER_HALF_OPEN = 2 } ob_breaker_t;

/* Per-kind meaning of slot counters[]. */
enum {
    OB_CTR_HTTP_REQ_2XX = 0, OB_CTR_HTTP_REQ_4XX, OB_CTR_HTTP_REQ_5XX, OB_CTR_HTTP_INFLIGHT,
    OB_CTR_HTTP_ORDERS_CREATED, OB_CTR_HTTP_DB_ERRORS, OB_CTR_HTTP_LAT_SUM_US,
    OB_CTR_HTTP_LAT_BASE = 8,        /* OB_HTTP_LAT_BUCKETS cumulative-free bucket counts */
    OB_CTR_HTTP_BODY_TIMEOUTS = 20,  /* bodies cut off at request_timeout_ms */
    OB_CTR_HTTP_BODY_REFUSED,        /* 503: every body slot of the listener was taken */
};
#define OB_HTTP_LAT_BUCKETS 12       /* <=1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500 ms, +Inf */
enum {
    OB_CTR_RELAY_BATCHES = 0, OB_CTR_RELAY_PUBLISHED, OB_CTR_RELAY_ERRORS, OB_CTR_RELAY_LOCKS_HELD,
    /* where a publish cycle's time goes, microseconds summed over cycles */
    OB_CTR_RELAY_CLAIM_US, OB_CTR_RELAY_KAFKA_US, OB_CTR_RELAY_MARK_US,
    /* mode wal */
    OB_CTR_RELAY_STREAMING,          /* 1 while the replication stream runs */
    OB_CTR_RELAY_CATCHUP,            /* 1 while a polling pass must run before streaming */
    OB_CTR_RELAY_SLOT_LAG_BYTES,     /* WAL between the server's end and the slot's confirmed position */
    OB_CTR_RELAY_SLOT_LAG_MS,        /* since the stream was last caught up */
    OB_CTR_RELAY_SLOT_INVALIDATIONS, /* slots found lost or gone, recreated */
    OB_CTR_RELAY_STREAMED,           /* events produced from the stream */
    /* the standby barrier */
    OB_CTR_RELAY_BARRIER,            /* 1 while it is on */
    OB_CTR_RELAY_BARRIER_US,         /* time spent waiting for the synchronous standby, summed */
    OB_CTR_RELAY_BARRIER_TIMEOUTS,   /* waits given up: the rows stayed pending */
};
enum {
    OB_CTR_CONS_APPLIED = 0, OB_CTR_CONS_DUPLICATES, OB_CTR_CONS_PARKED, OB_CTR_CONS_DEAD_LETTERS,
    OB_CTR_CONS_ASSIGNED, OB_CTR_CONS_LAG, OB_CTR_CONS_APPLY_LAG_MS,
    OB_CTR_CONS_STALLED,             /* 1: events wait and none was applied for [ledger] stall_after */
    OB_CTR_CONS_NO_PROGRESS_MS,      /* since the last applied batch, or since nothing waited */
    OB_CTR_CONS_OTHER_AGGREGATES,    /* events of other aggregate types, passed over */
};

/*
 * Where an event's time goes, stage by stage (DESIGN §2): a histogram per
 * stage in a worker's counters[], from OB_CTR_STAGE_BASE, OB_STAGE_WIDTH
 * counters each: OB_STAGE_BUCKETS counts (not cumulative), then the sum in
 * microseconds. A relay keeps two stages, a consumer three.
 */
#define OB_STAGE_BUCKETS  12         /* <= 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 250, 1000 ms, +Inf */
#define OB_STAGE_WIDTH    (OB_STAGE_BUCKETS + 1)
#define OB_CTR_STAGE_BASE 32
enum {
    /* relay: the row's commit (see DESIGN §2 for the clock of each mode) -> claimed or streamed */
    OB_STAGE_RELAY_CLAIM = 0,
    /* relay: claimed or streamed -> Kafka's acknowledgement */
    OB_STAGE_RELAY_ACK,
    OB_STAGE_RELAY_COUNT,
};
enum {
    /* consumer: the record's timestamp (the relay's produce) -> fetched by the consumer */
    OB_STAGE_CONS_FETCH = 0,
    /* consumer: fetched -> its ledger transaction committed */
    OB_STAGE_CONS_APPLY,
    /* consumer: the event's occurred_at (the order's commit, near enough) -> ledger committed */
    OB_STAGE_CONS_TOTAL,
    OB_STAGE_CONS_COUNT,
};
_Static_assert(OB_CTR_STAGE_BASE >= OB_CTR_HTTP_BODY_REFUSED + 1, "stage histograms after the HTTP counters");
_Static_assert(OB_CTR_STAGE_BASE + OB_STAGE_CONS_COUNT * OB_STAGE_WIDTH <= OB_SHM_COUNTERS, "stages fit counters[]");
/* Upper bounds of the buckets but the last (+Inf), in microseconds. */
extern const int64_t ob_stage_bounds_us[OB_STAGE_BUCKETS - 1];

typedef struct {
    _Atomic uint32_t seq;            /* seqlock over the fields down to reason[] */
    int32_t          kind;
    int32_t          index;
    int32_t          pid;
    int32_t          state;
    uint32_t         generation;     /* config generation it was started with */
    int64_t          started_wall_ms;
    uint32_t         restarts;
    int32_t          last_status;    /* raw wait status of the last exit, -1 none */
    char             reason[160];    /* why fatal / last exit, human readable */

    /* written by the worker itself */
    _Atomic int64_t  heartbeat_ms;   /* CLOCK_MONOTONIC ms */
    _Atomic uint32_t wake;           /* futex word: bump + FUTEX_WAKE to wake the worker */
    _Atomic uint64_t owned[OB_SHM_OWN_WORDS];  /* partitions this relay holds the lock for */
    _Atomic uint64_t counters[OB_SHM_COUNTERS];
    char             note[160];      /* worker's last words before exit 2 */
} ob_shm_slot_t;

typedef struct {
    _Atomic int32_t  owner_slot;     /* -1: no relay holds it */
    _Atomic int32_t  breaker;        /* 0 closed, 1 open, 2 half-open */
    _Atomic uint64_t committed;      /* events committed (bumped by HTTP workers) */
    _Atomic uint64_t pending;        /* relay's latest estimate */
    _Atomic int64_t  oldest_pending_ms;
    _Atomic uint64_t produced;       /* all topics */
    _Atomic uint64_t errors;
} ob_shm_part_t;

typedef struct {
    _Atomic uint64_t produced;
    _Atomic int64_t  last_offset;    /* -1: nothing produced yet */
} ob_shm_tpart_t;

typedef struct {
    char           name[256];
    ob_shm_tpart_t parts[OB_SHM_PARTITIONS];
} ob_shm_topic_t;

/* One second of instance-wide totals, sampled by the supervisor for sparklines. */
#define OB_SHM_RING 300
typedef struct {
    int64_t  wall_s;
    uint64_t committed;      /* events committed by HTTP workers, all partitions */
    uint64_t produced;       /* events acknowledged by Kafka */
    uint64_t applied;        /* events booked by consumers */
} ob_shm_rate_t;

typedef struct {
    uint64_t         magic;
    uint32_t         version;
    uint32_t         size;           /* bytes of the whole mapping */
    uint32_t         nslots;
    uint32_t         npartitions;
    _Atomic int32_t  sup_pid;
    int64_t          start_wall_ms;
    _Atomic uint64_t generation;     /* +1 per successful reload */
    _Atomic uint64_t uuid_clock;     /* last UUIDv7 (ms << 12 | counter), shared by all workers */
    _Atomic uint32_t seq;            /* seqlock over the fields below */
    uint64_t         cfg_digest;
    int32_t          partitions;     /* [kafka] partitions in force */
    int32_t          relays;         /* relay count in force */
    int32_t          reload_ok;      /* 1 ok, 0 failed, -1 never reloaded */
    int64_t          reload_wall_ms;
    char             reload_msg[256];
    char             name[64];
    char             cfg_path[256];
    _Atomic int32_t  ntopics;        /* topics[0..ntopics) are named */
    _Atomic uint32_t ring_seq;       /* seqlock over ring[] and ring_head */
    uint32_t         ring_head;      /* next entry to write */
    ob_shm_rate_t    ring[OB_SHM_RING];
} ob_shm_hdr_t;

typedef struct {
    ob_shm_hdr_t  hdr;
    ob_shm_slot_t slots[OB_SHM_SLOTS];
    ob_shm_part_t parts[OB_SHM_PARTITIONS];
    ob_shm_topic_t topics[OB_SHM_TOPICS];
} ob_shm_layout_t;

typedef struct {
    ob_shm_layout_t *map;
    size_t           size;
    int              writable;
    char             name[80];       /* "/outboxd-<name>" */
} ob_shm_t;

/* The mapping of this process (inherited across fork). */
extern ob_shm_t *ob_shm;

/*
 * Creates the segment O_EXCL, mode 0600. A leftover segment whose supervisor
 * pid is dead (or whose header is not ours) is unlinked and recreated; a live
 * one is an error ("already running").
 */
ob_shm_t *ob_shm_create(const char *name, char *err, size_t errlen);
/* Maps an existing segment read-only after checking magic, version and size. */
ob_shm_t *ob_shm_attach(const char *name, char *err, size_t errlen);
void      ob_shm_close(ob_shm_t *shm, int unlink_it);

/* Seqlock writer and reader halves. */
void     ob_shm_write_begin(_Atomic uint32_t *seq);
void     ob_shm_write_end(_Atomic uint32_t *seq);
uint32_t ob_shm_read_begin(_Atomic uint32_t *seq);
int      ob_shm_read_retry(_Atomic uint32_t *seq, uint32_t start);

/* Copies a slot's identity consistently; -1 when a writer kept it busy. */
int ob_shm_slot_snapshot(ob_shm_slot_t *slot, ob_shm_slot_t *out);
/* Copies the header consistently. */
int ob_shm_hdr_snapshot(ob_shm_hdr_t *hdr, ob_shm_hdr_t *out);

/* Worker side. */
void ob_shm_beat(ob_shm_slot_t *slot);
/* Counts us (negative: 0, a clock step) in stage histogram `stage` of the slot. */
void ob_shm_stage_add(ob_shm_slot_t *slot, int stage, int64_t us);
void ob_shm_set_owned(ob_shm_slot_t *slot, int partition, int owned);
int  ob_shm_is_owned(const ob_shm_slot_t *slot, int partition);
/* Wakes the worker sleeping on slot->wake; no syscall when nobody waits is not
 * guaranteed, but the call is a single futex syscall either way. */
void ob_shm_wake(ob_shm_slot_t *slot);
/* Sleeps until slot->wake differs from seen or timeout_ms passes. */
void ob_shm_wait(ob_shm_slot_t *slot, uint32_t seen, int timeout_ms);

/*
 * Supervisor side: names each of names[0..n) not yet in the table. -1 when
 * they would not fit (names are kept for the instance's life, so a reload
 * adding topics can run out); with dry_run nothing is written.
 */
int ob_shm_topics_add(ob_shm_t *shm, const char *const *names, int n, int dry_run);
/* The table index of topic, or -1. */
int ob_shm_topic_index(const ob_shm_t *shm, const char *topic);

const char *ob_kind_name(int kind);
const char *ob_slot_state_name(int state);

#endif
