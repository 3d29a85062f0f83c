/*
 * workers/relay/pgoutput.c: see pgoutput.h. Message layouts are those of
 * PostgreSQL's "Logical Replication Message Formats" (protocol 1).
 */
#include "pgoutput.h"
#include "../../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define PG_EPOCH_UNIX_MS 946684800000LL   /* 2000-01-01 in Unix milliseconds */

/* PostgreSQL type oids of the outbox columns we decode in binary. */
#define OID_BYTEA 17
#define OID_INT8  20
#define OID_INT4  23
#define OID_TEXT  25
#define OID_UUID  2950
#define OID_JSONB 3802

/* A bounds-checked reader over one message. */
typedef struct {
    const char *p;
    size_t      left;
    int         bad;
} rd_t;

static const char *
rd_take(rd_t *r, size_t n)
{
    const char *p = r->p;

    if (r->bad || n > r->left) {
        r->bad = 1;
        return NULL;
    }
    r->p += n;
    r->left -= n;
    return p;
}

static uint8_t
rd_u8(rd_t *r)
{
    const char *p = rd_take(r, 1);
    return p ? (uint8_t) p[0] : 0;
}

static uint16_t
rd_u16(rd_t *r)
{
    const unsigned char *p = (const unsigned char *) rd_take(r, 2);
    return p ? (uint16_t) (p[0] << 8 | p[1]) : 0;
}

static uint32_t
rd_u32(rd_t *r)
{
    const char *p = rd_take(r, 4);
    return p ? (uint32_t) ob_be32(p) : 0;
}

static uint64_t
rd_u64(rd_t *r)
{
    const char *p = rd_take(r, 8);
    return p ? (uint64_t) ob_be64(p) : 0;
}

/* A NUL-terminated string, copied (truncated) into out. */
static void
rd_str(rd_t *r, char *out, size_t outlen)
{
    const char *nul = r->bad ? NULL : memchr(r->p, '\0', r->left);
    size_t      n;

    if (nul == NULL) {
        r->bad = 1;
        out[0] = '\0';
        return;
    }
    n = (size_t) (nul - r->p);
    ob_strlcpy(out, r->p, n + 1 < outlen ? n + 1 : outlen);
    rd_take(r, n + 1);
}

int
ob_pgo_frame(const char *buf, size_t len, ob_pgo_frame_t *f, char *err, size_t errlen)
{
    rd_t r = { buf, len, 0 };

    memset(f, 0, sizeof(*f));
    f->type = (char) rd_u8(&r);
    if (f->type == 'w') {
        f->wal_start = rd_u64(&r);
        f->wal_end = rd_u64(&r);
        f->send_time = (int64_t) rd_u64(&r);
        f->data = r.p;
        f->len = r.left;
    } else if (f->type == 'k') {
        f->wal_end = rd_u64(&r);
        f->send_time = (int64_t) rd_u64(&r);
        f->reply_requested = rd_u8(&r);
    } else {
        snprintf(err, errlen, "replication frame of unknown type 0x%02x (%zu bytes)", (unsigned char) f->type, len);
        return -1;
    }
    if (r.bad) {
        snprintf(err, errlen, "replication frame '%c' truncated (%zu bytes)", f->type, len);
        return -1;
    }
    return 0;
}

static void
decode_relation(rd_t *r, ob_pgo_relation_t *rel)
{
    rel->relid = rd_u32(r);
    rd_str(r, rel->nspname, sizeof(rel->nspname));
    rd_str(r, rel->relname, sizeof(rel->relname));
    rd_u8(r);                           /* replica identity: irrelevant to inserts */
    rel->ncols = rd_u16(r);
    if (rel->ncols > OB_PGO_MAX_COLS) {
        r->bad = 2;
        return;
    }
    for (int i = 0; i < rel->ncols && !r->bad; i++) {
        rd_u8(r);                       /* flags: part of the key */
        rd_str(r, rel->names[i], sizeof(rel->names[i]));
        rel->types[i] = rd_u32(r);
        rd_u32(r);                      /* typmod */
    }
}

static void
decode_tuple(rd_t *r, ob_pgo_msg_t *m)
{
    m->ncols = rd_u16(r);
    if (m->ncols > OB_PGO_MAX_COLS) {
        r->bad = 2;
        return;
    }
    for (int i = 0; i < m->ncols && !r->bad; i++) {
        ob_pgo_value_t *v = &m->values[i];
        v->kind = (char) rd_u8(r);
        v->p = NULL;
        v->len = 0;
        if (v->kind == 't' || v->kind == 'b') {
            v->len = rd_u32(r);
            v->p = rd_take(r, v->len);
        } else if (v->kind != 'n' && v->kind != 'u') {
            r->bad = 3;
        }
    }
}

int
ob_pgo_decode(const char *buf, size_t len, ob_pgo_msg_t *m, char *err, size_t errlen)
{
    rd_t r = { buf, len, 0 };

    m->tag = (char) rd_u8(&r);
    m->kind = OB_PGO_SKIPPED;
    switch (m->tag) {
    case 'B':
        m->kind = OB_PGO_BEGIN;
        m->lsn = rd_u64(&r);
        m->ts = (int64_t) rd_u64(&r);
        m->xid = rd_u32(&r);
        break;
    case 'C':
        m->kind = OB_PGO_COMMIT;
        rd_u8(&r);                      /* flags, unused */
        m->lsn = rd_u64(&r);
        m->end_lsn = rd_u64(&r);
        m->ts = (int64_t) rd_u64(&r);
        break;
    case 'R':
        m->kind = OB_PGO_RELATION;
        decode_relation(&r, &m->rel);
        break;
    case 'I':
        m->kind = OB_PGO_INSERT;
        m->relid = rd_u32(&r);
        if (rd_u8(&r) != 'N')
            r.bad = 4;
        decode_tuple(&r, m);
        break;
    case 'O': case 'Y': case 'U': case 'D': case 'T': case 'M':
        break;                          /* origin, type, update, delete, truncate, message: not ours */
    default:
        snprintf(err, errlen, "pgoutput message of unknown type 0x%02x", (unsigned char) m->tag);
        return -1;
    }
    if (r.bad) {
        snprintf(err, errlen, "pgoutput message '%c' (%zu bytes) is %s", m->tag, len,
                 r.bad == 2 ? "wider than " OB_STR(OB_PGO_MAX_COLS) " columns"
                 : r.bad == 3 ? "malformed (unknown column kind)"
                 : r.bad == 4 ? "malformed (no new tuple)" : "truncated");
        return -1;
    }
    return 0;
}

int
ob_pgo_is_outbox(const ob_pgo_relation_t *rel)
{
    return strcmp(rel->relname, "outbox") == 0 &&
           (strcmp(rel->nspname, "outboxd") == 0 || strcmp(rel->nspname, "public") == 0);
}

int
ob_pgo_outbox_map(const ob_pgo_relation_t *rel, ob_pgo_outbox_map_t *map, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        uint32_t    type;
        int         optional;     /* absent from the older public.outbox */
    } want[OB_OBX_NCOLS] = {
        [OB_OBX_ID] = { "id", OID_INT8, 0 },
        [OB_OBX_PARTITION] = { "partition", OID_INT4, 0 },
        [OB_OBX_SEQ] = { "seq", OID_INT4, 0 },
        [OB_OBX_EVENT_ID] = { "event_id", OID_UUID, 0 },
        [OB_OBX_AGGREGATE_TYPE] = { "aggregate_type", OID_TEXT, 0 },
        [OB_OBX_AGGREGATE_ID] = { "aggregate_id", OID_TEXT, 0 },
        [OB_OBX_EVENT_TYPE] = { "event_type", OID_TEXT, 0 },
        [OB_OBX_PAYLOAD] = { "payload", OID_BYTEA, 0 },
        [OB_OBX_CONTENT_TYPE] = { "content_type", OID_TEXT, 1 },
        [OB_OBX_HEADERS] = { "headers", OID_JSONB, 1 },
    };

    map->relid = rel->relid;
    map->aggregate_id_uuid = 0;
    for (int k = 0; k < OB_OBX_NCOLS; k++) {
        map->col[k] = -1;
        for (int i = 0; i < rel->ncols; i++)
            if (strcmp(rel->names[i], want[k].name) == 0)
                map->col[k] = i;
        if (map->col[k] < 0 && want[k].optional)
            continue;
        if (map->col[k] < 0) {
            snprintf(err, errlen, "relation %s.%s has no column %s", rel->nspname, rel->relname, want[k].name);
            return -1;
        }
        uint32_t got = rel->types[map->col[k]];
        if (k == OB_OBX_AGGREGATE_ID && got == OID_UUID) {
            map->aggregate_id_uuid = 1;
            continue;
        }
        if (got != want[k].type) {
            snprintf(err, errlen, "column %s.%s.%s has type oid %u, expected %u", rel->nspname, rel->relname,
                     want[k].name, got, want[k].type);
            return -1;
        }
    }
    return 0;
}

static void
uuid_text(const unsigned char *b, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int               o = 0;

    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

/*
 * The value of outbox column k into *out: binary and exactly want bytes (0 =
 * any length). A NULL is accepted only where nullable says so, and an
 * optional column the relation lacks reads as NULL. 0, or -1.
 */
static int
row_value(const ob_pgo_msg_t *ins, const ob_pgo_outbox_map_t *map, int k, uint32_t want, int nullable,
          ob_pgo_span_t *out)
{
    int c = map->col[k];

    *out = (ob_pgo_span_t) { NULL, 0 };
    if (c < 0)
        return nullable ? 0 : -1;
    if (c >= ins->ncols)
        return -1;
    if (ins->values[c].kind == 'n')
        return nullable ? 0 : -1;
    if (ins->values[c].kind != 'b' || (want && ins->values[c].len != want))
        return -1;
    *out = (ob_pgo_span_t) { ins->values[c].p, ins->values[c].len };
    return 0;
}

/* jsonb's binary form is a version byte (1) and the JSON text. 0, or -1. */
static int
row_jsonb(ob_pgo_span_t *v)
{
    if (v->p == NULL)
        return 0;
    if (v->len < 1 || v->p[0] != 1)
        return -1;
    v->p++;
    v->len--;
    return 0;
}

int
ob_pgo_outbox_row(const ob_pgo_msg_t *ins, const ob_pgo_outbox_map_t *map, ob_pgo_outbox_row_t *row,
                  char *err, size_t errlen)
{
    ob_pgo_span_t id, part, seq, eid;
    int           bad = ins->relid != map->relid;

    bad = bad || row_value(ins, map, OB_OBX_ID, 8, 0, &id) || row_value(ins, map, OB_OBX_PARTITION, 4, 0, &part) ||
          row_value(ins, map, OB_OBX_SEQ, 4, 0, &seq) || row_value(ins, map, OB_OBX_EVENT_ID, 16, 0, &eid) ||
          row_value(ins, map, OB_OBX_AGGREGATE_TYPE, 0, 0, &row->aggregate_type) ||
          row_value(ins, map, OB_OBX_AGGREGATE_ID, map->aggregate_id_uuid ? 16 : 0, 0, &row->aggregate_id) ||
          row_value(ins, map, OB_OBX_EVENT_TYPE, 0, 0, &row->event_type) ||
          row_value(ins, map, OB_OBX_PAYLOAD, 0, 0, &row->payload) ||
          row_value(ins, map, OB_OBX_CONTENT_TYPE, 0, 1, &row->content_type) ||
          row_value(ins, map, OB_OBX_HEADERS, 0, 1, &row->headers) || row_jsonb(&row->headers);
    if (bad) {
        snprintf(err, errlen, "outbox insert (relation %u, %d columns) lacks a binary value of the expected size",
                 ins->relid, ins->ncols);
        return -1;
    }
    row->id = ob_be64(id.p);
    row->partition = ob_be32(part.p);
    row->seq = ob_be32(seq.p);
    uuid_text((const unsigned char *) eid.p, row->event_id);
    if (map->aggregate_id_uuid) {
        /* the row is used where it was decoded: the span may point into it */
        uuid_text((const unsigned char *) row->aggregate_id.p, row->aggregate_uuid);
        row->aggregate_id = (ob_pgo_span_t) { row->aggregate_uuid, 36 };
    }
    return 0;
}

static void
put_u64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char) (v & 0xff);
}

size_t
ob_pgo_status_update(char *out, uint64_t written, uint64_t flushed, int64_t now_pg_us, int reply)
{
    out[0] = 'r';
    put_u64(out + 1, written);
    put_u64(out + 9, flushed);
    put_u64(out + 17, flushed);     /* applied: for us, flushed is applied */
    put_u64(out + 25, (uint64_t) now_pg_us);
    out[33] = (char) (reply ? 1 : 0);
    return 34;
}

int64_t
ob_pgo_pg_time(int64_t unix_ms)
{
    return (unix_ms - PG_EPOCH_UNIX_MS) * 1000;
}

void
ob_pgo_lsn_format(uint64_t lsn, char *out, size_t outlen)
{
    snprintf(out, outlen, "%" PRIX32 "/%" PRIX32, (uint32_t) (lsn >> 32), (uint32_t) lsn);
}

int
ob_pgo_lsn_parse(const char *s, uint64_t *lsn)
{
    unsigned int hi, lo;
    int          used = 0;

    if (s == NULL || sscanf(s, "%X/%X%n", &hi, &lo, &used) != 2 || s[used] != '\0')
        return -1;
    *lsn = (uint64_t) hi << 32 | lo;
    return 0;
}
