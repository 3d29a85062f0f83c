/* workers/relay/relay_int.h: internals shared by the relay's files. */
#ifndef OB_RELAY_INT_H
#define OB_RELAY_INT_H

#include "../../common/cfg.h"
#include "../../shm/shm.h"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>


/* Delivery outcome of one row of the batch in hand (filled by the DR callback). */
typedef enum { OB_DR_PENDING = 0, OB_DR_OK, OB_DR_REJECTED, OB_DR_RETRY } ob_dr_state_t;

typedef struct {
    int64_t      id;          /* outbox id */
    int32_t      partition;
    int32_t      seq;
    ob_dr_state_t state;
    int64_t      offset;
    int64_t      acked_ms;    /* wall clock of Kafka's acknowledgement */
    char         event_id[37];
    char         aggregate_id[37];
    char         event_type[32];
    char         error[160];
} ob_relay_row_t;

typedef struct {
    const ob_cfg_t *cfg;
    ob_shm_slot_t  *slot;
    int             index;
    PGconn         *pg;
    rd_kafka_t     *rk;
    int             nparts;                       /* partitions assigned by p mod R = i */
    int             parts[OB_SHM_PARTITIONS];
    unsigned char   held[OB_SHM_PARTITIONS];      /* advisory lock held on pg */
    int64_t         next_tick_ms;                 /* locks, stats */
    int64_t         next_janitor_ms;
    int64_t         next_stats_ms;

    /* the batch in hand: claimed rows, produced, waiting for delivery reports */
    ob_relay_row_t *rows;
    int             nrows;
    int             cap;
    PGresult       *claimed;                      /* payloads point into it while in flight */
    int             outstanding;                  /* delivery reports not yet seen */
    uint32_t        batch_gen;                    /* which batch a delivery report belongs to */

    ob_breaker_t    breaker;
    int64_t         breaker_until_ms;             /* open: no claims before this */
    int64_t         breaker_backoff_ms;
    int             fatal;                        /* producer raised a fatal error */
    int             more;                         /* last cycle filled a batch: go again at once */
    /* Kafka fails a whole produce request when one record in it is too
     * large, so a rejection in a multi-row batch names no culprit: the
     * partition then sends one row per cycle for this many rows. */
    int             isolate[OB_SHM_PARTITIONS];
    struct ob_wal_s *wal;                         /* mode wal: the stream's state (wal.c) */
} ob_relay_t;

/* topic.c: OB_EXIT_OK when the topic has `partitions` partitions (creating
 * it if absent), OB_EXIT_RETRY when Kafka did not answer, OB_EXIT_FATAL
 * when the count differs. */
int ob_relay_check_topic(rd_kafka_t *rk, const char *topic, int partitions, char *err, size_t errlen);

/* publish.c: one claim-produce-wait-mark cycle. Returns the number of rows
 * claimed (a full batch means "go again at once"), or -1 when the database
 * connection failed (the caller drops its locks and reconnects). */
int  ob_relay_cycle(ob_relay_t *rl);
/* publish.c: the producer, with our delivery-report callback. */
rd_kafka_t *ob_relay_producer_new(ob_relay_t *rl, char *err, size_t errlen);
/* publish.c: pending count and oldest pending age per held partition, into shm. */
void ob_relay_stats(ob_relay_t *rl);
/* publish.c: deletes published rows older than retention, a few batches per call. */
void ob_relay_janitor(ob_relay_t *rl);
/* publish.c: produces one event (same key, headers, payload in every mode). */
rd_kafka_resp_err_t ob_relay_produce(ob_relay_t *rl, const ob_relay_row_t *row, const void *payload, size_t len,
                                     void *opaque);
/* One acknowledged event to mark published. */
typedef struct {
    int64_t id, offset, acked_ms;
} ob_relay_mark_t;

/* publish.c: marks rows published with their offsets and acknowledgement
 * times; 0 or -1. With missing, sets missing[i] for rows it did not find. */
int  ob_relay_mark_rows(ob_relay_t *rl, const ob_relay_mark_t *m, int n, unsigned char *missing);
void ob_relay_count_produced(int partition, int64_t offset);
/* publish.c: a delivery error no retry can cure (too large, invalid). */
int  ob_relay_permanent(rd_kafka_resp_err_t e);

/*
 * wal.c: relay mode wal. Delivery reports of streamed events carry
 * OB_WAL_OPAQUE_TAG in their opaque, so neither engine ever takes the
 * other's report for its own.
 */
#define OB_WAL_OPAQUE_TAG (UINT64_C(1) << 63)
int  ob_wal_init(ob_relay_t *rl, char *err, size_t errlen);
void ob_wal_free(ob_relay_t *rl);
/* Once a tick: publication and slot set up, catch-up flag, slot lag. */
void ob_wal_tick(ob_relay_t *rl, int stats_due);
/* Whether the stream runs (or may start now) instead of a polling cycle. */
int  ob_wal_streams(ob_relay_t *rl);
/* Runs the stream for up to ~100 ms. -1 when the orderdb session failed. */
int  ob_wal_step(ob_relay_t *rl);
/* A polling cycle in mode wal: the catch-up pass ends once one finds nothing. */
int  ob_wal_poll_cycle(ob_relay_t *rl);
/* Stops the stream: finish (wait for Kafka, mark, confirm) or drop at once. */
void ob_wal_stop(ob_relay_t *rl, int finish);
void ob_wal_dr(ob_relay_t *rl, uint64_t n, rd_kafka_resp_err_t err, int64_t offset);

/* relay.c */
void ob_relay_drop_locks(ob_relay_t *rl);
void ob_relay_set_breaker(ob_relay_t *rl, ob_breaker_t b);

#endif
