/*
 * workers/relay/pgoutput.h: decoder for what a logical replication
 * connection streams with the built-in pgoutput plugin, protocol version 1,
 * option binary (PostgreSQL 15): the CopyData frames (XLogData, keepalive)
 * and the logical messages inside XLogData (Begin, Relation, Insert,
 * Commit; the rest is recognised and skipped).
 *
 * Pure functions over byte buffers, no allocation: the relay and the unit
 * tests (fed frames captured from a real server) use the same code. Every
 * read is bounds-checked; a short or malformed message is an error with a
 * sentence, never a read past the buffer.
 */
#ifndef OB_PGOUTPUT_H
#define OB_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

#define OB_PGO_MAX_COLS 32

/* One CopyData frame of the replication stream. */
typedef struct {
    char        type;          /* 'w' XLogData, 'k' primary keepalive */
    uint64_t    wal_start;     /* w: where this message starts */
    uint64_t    wal_end;       /* w and k: the server's current end of WAL */
    int64_t     send_time;     /* microseconds since 2000-01-01 */
    int         reply_requested;
    const char *data;          /* w: the logical message */
    size_t      len;
} ob_pgo_frame_t;

typedef enum {
    OB_PGO_BEGIN, OB_PGO_COMMIT, OB_PGO_RELATION, OB_PGO_INSERT, OB_PGO_SKIPPED
} ob_pgo_kind_t;

/* A column value of an Insert: kind 'n' null, 'u' unchanged TOAST, 't' text, 'b' binary. */
typedef struct {
    char        kind;
    const char *p;             /* points into the message */
    uint32_t    len;
} ob_pgo_value_t;

typedef struct {
    uint32_t relid;
    char     nspname[64];
    char     relname[64];
    int      ncols;
    char     names[OB_PGO_MAX_COLS][64];
    uint32_t types[OB_PGO_MAX_COLS];
} ob_pgo_relation_t;

typedef struct {
    ob_pgo_kind_t     kind;
    char              tag;         /* the message's first byte, also for skipped ones */
    uint64_t          lsn;         /* Begin: final LSN of the transaction; Commit: commit LSN */
    uint64_t          end_lsn;     /* Commit: end of the commit record (what to confirm) */
    int64_t           ts;          /* Begin/Commit: commit time, microseconds since 2000-01-01 */
    uint32_t          xid;         /* Begin */
    uint32_t          relid;       /* Insert */
    int               ncols;       /* Insert */
    ob_pgo_value_t    values[OB_PGO_MAX_COLS];
    ob_pgo_relation_t rel;         /* Relation */
} ob_pgo_msg_t;

/* Parses one CopyData frame. 0, or -1 with a sentence in err. */
int ob_pgo_frame(const char *buf, size_t len, ob_pgo_frame_t *f, char *err, size_t errlen);

/* Parses one logical message (the data of an XLogData frame). 0, or -1 with err. */
int ob_pgo_decode(const char *buf, size_t len, ob_pgo_msg_t *m, char *err, size_t errlen);

/*
 * The outbox columns the relay needs, located by name in a Relation message
 * of outboxd.outbox and type-checked: id int8, partition int4, seq int4,
 * event_id uuid, aggregate_type text, aggregate_id text, event_type text,
 * payload bytea, content_type text, headers jsonb. A relation public.outbox
 * (WAL an outboxd before the schema outboxd wrote, still in a slot) has
 * aggregate_id uuid and neither of the last two: its rows decode too, so an
 * upgrade under a running stream loses nothing.
 */
enum { OB_OBX_ID, OB_OBX_PARTITION, OB_OBX_SEQ, OB_OBX_EVENT_ID, OB_OBX_AGGREGATE_TYPE, OB_OBX_AGGREGATE_ID,
       OB_OBX_EVENT_TYPE, OB_OBX_PAYLOAD, OB_OBX_CONTENT_TYPE, OB_OBX_HEADERS, OB_OBX_NCOLS };
typedef struct {
    uint32_t relid;
    int      col[OB_OBX_NCOLS];      /* -1: an optional column the relation lacks */
    int      aggregate_id_uuid;      /* the older shape: aggregate_id is a uuid */
} ob_pgo_outbox_map_t;

/* Whether a Relation message names the outbox: outboxd.outbox, or the older public.outbox. */
int ob_pgo_is_outbox(const ob_pgo_relation_t *rel);
int ob_pgo_outbox_map(const ob_pgo_relation_t *rel, ob_pgo_outbox_map_t *map, char *err, size_t errlen);

/* Bytes inside the message; p == NULL for SQL NULL. */
typedef struct {
    const char *p;
    size_t      len;
} ob_pgo_span_t;

/*
 * An outbox row decoded from an Insert (binary values). The spans point
 * into the message: the relay copies them into its own bounded buffers and
 * refuses (quarantines) a value that does not fit, never truncates it.
 */
typedef struct {
    int64_t       id;
    int32_t       partition;
    int32_t       seq;
    char          event_id[37];
    char          aggregate_uuid[37];   /* the older shape's aggregate_id, as text; aggregate_id spans it */
    ob_pgo_span_t aggregate_type;
    ob_pgo_span_t aggregate_id;
    ob_pgo_span_t event_type;
    ob_pgo_span_t payload;
    ob_pgo_span_t content_type;         /* NULL: outboxd's own encoding */
    ob_pgo_span_t headers;              /* jsonb as JSON text (its version byte dropped); NULL: none */
} ob_pgo_outbox_row_t;

int ob_pgo_outbox_row(const ob_pgo_msg_t *ins, const ob_pgo_outbox_map_t *map, ob_pgo_outbox_row_t *row,
                      char *err, size_t errlen);

/* Builds a standby status update ('r') confirming flush; returns its length (34). */
size_t ob_pgo_status_update(char *out, uint64_t written, uint64_t flushed, int64_t now_pg_us, int reply);

/* Microseconds since 2000-01-01 (PostgreSQL's epoch) from Unix milliseconds. */
int64_t ob_pgo_pg_time(int64_t unix_ms);

/* "16/B374D848" from an LSN, into out (at least 24 bytes); and back (0 / -1). */
void ob_pgo_lsn_format(uint64_t lsn, char *out, size_t outlen);
int  ob_pgo_lsn_parse(const char *s, uint64_t *lsn);

#endif
