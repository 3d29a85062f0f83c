/*
 * tests/unit/test_pgoutput.c: the pgoutput decoder on frames a real
 * PostgreSQL 15 sent, and on what a server must never be trusted to send.
 *
 * Two captures, each a keepalive and then transactions of outbox inserts:
 * - fixtures/pgoutput-v2: outboxd.outbox, written by the integration test
 *   wal/decoder_reads_what_a_real_server_streams with OB_CAPTURE_FIXTURES
 *   set: three transactions of two order events, then one of two events
 *   outboxd.emit wrote (text ids, a content type, headers, bytes);
 * - fixtures/pgoutput: public.outbox as an outboxd before the schema
 *   outboxd streamed it (aggregate_id uuid, no content type or headers):
 *   WAL a slot may still hold when outboxd is upgraded under it.
 */
#include "common/util.h"
#include "workers/relay/pgoutput.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES    "tests/unit/fixtures/pgoutput-v2"
#define LEGACY      "tests/unit/fixtures/pgoutput"
#define NFRAMES     18
#define LEGACY_NFRAMES 14

typedef struct {
    char  *buf;
    size_t len;
} blob_t;

static blob_t frames[NFRAMES];
static int    nframes;

static blob_t
load(const char *path)
{
    FILE  *f = fopen(path, "rb");
    blob_t b = { 0 };

    cr_assert_not_null(f, "cannot open %s (run from the repository root)", path);
    fseek(f, 0, SEEK_END);
    b.len = (size_t) ftell(f);
    rewind(f);
    b.buf = malloc(b.len + 1);
    cr_assert_eq(fread(b.buf, 1, b.len, f), b.len);
    b.buf[b.len] = '\0';
    fclose(f);
    return b;
}

static void
load_set(const char *dir, int n)
{
    char path[256];

    nframes = n;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%02d.bin", dir, i);
        frames[i] = load(path);
    }
}

static void
setup(void)
{
    load_set(FIXTURES, NFRAMES);
}

static void
setup_legacy(void)
{
    load_set(LEGACY, LEGACY_NFRAMES);
}

static void
teardown(void)
{
    for (int i = 0; i < nframes; i++)
        free(frames[i].buf);
}

/* Frame i's logical message, decoded; asserts both layers succeed. */
static void
decode(int i, ob_pgo_frame_t *f, ob_pgo_msg_t *m)
{
    char err[256];

    cr_assert_eq(ob_pgo_frame(frames[i].buf, frames[i].len, f, err, sizeof(err)), 0, "frame %d: %s", i, err);
    cr_assert_eq(f->type, 'w', "frame %d", i);
    cr_assert_eq(ob_pgo_decode(f->data, f->len, m, err, sizeof(err)), 0, "frame %d: %s", i, err);
}

/* The message tags of frames 1.. of the loaded capture. */
static void
transactions_in_order(const char *want)
{
    ob_pgo_frame_t    f;
    ob_pgo_msg_t      m;
    char              err[256];
    uint64_t          begin_lsn = 0, last_start = 0;

    cr_assert_eq(ob_pgo_frame(frames[0].buf, frames[0].len, &f, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(f.type, 'k');
    cr_assert_gt(f.wal_end, 0);
    cr_assert_eq((size_t) nframes, strlen(want) + 1);
    for (int i = 1; i < nframes; i++) {
        decode(i, &f, &m);
        cr_assert_eq(m.tag, want[i - 1], "frame %d is '%c', expected '%c'", i, m.tag, want[i - 1]);
        if (m.kind == OB_PGO_RELATION) {
            cr_assert_eq(f.wal_start, 0, "a Relation message is sent with no WAL position");
            continue;
        }
        cr_assert_geq(f.wal_start, last_start, "frame %d goes back in the WAL", i);
        last_start = f.wal_start;
        if (m.kind == OB_PGO_BEGIN)
            begin_lsn = m.lsn;
        if (m.kind == OB_PGO_COMMIT) {
            cr_assert_eq(m.lsn, begin_lsn, "Begin announces the commit LSN the Commit carries");
            cr_assert_gt(m.end_lsn, m.lsn);
            cr_assert_gt(m.ts, 0);
        }
    }
}

Test(pgoutput, keepalive_then_four_transactions_in_order, .init = setup, .fini = teardown)
{
    transactions_in_order("BRIICBIICBIICBIIC");
}

Test(pgoutput, older_public_outbox_keepalive_then_three_transactions, .init = setup_legacy, .fini = teardown)
{
    transactions_in_order("BRIICBIICBIIC");
}

static void
span_text(char *out, size_t outlen, ob_pgo_span_t s)
{
    snprintf(out, outlen, "%.*s", s.p ? (int) s.len : 1, s.p ? s.p : "-");
}

/* One decoded row as the integration test's SQL prints it (ROW_FORMAT of test_wal.c). */
static size_t
print_row(char *out, size_t outlen, const ob_pgo_outbox_row_t *row)
{
    char   t[5][320];
    size_t n;

    span_text(t[0], sizeof(t[0]), row->aggregate_type);
    span_text(t[1], sizeof(t[1]), row->aggregate_id);
    span_text(t[2], sizeof(t[2]), row->event_type);
    span_text(t[3], sizeof(t[3]), row->content_type);
    span_text(t[4], sizeof(t[4]), row->headers);
    n = (size_t) snprintf(out, outlen, "%lld %d %d %s %s %s %s %s %s ", (long long) row->id, row->partition,
                          row->seq, row->event_id, t[0], t[1], t[2], t[3], t[4]);
    for (size_t i = 0; i < row->payload.len; i++)
        n += (size_t) snprintf(out + n, outlen - n, "%02x", (unsigned char) row->payload.p[i]);
    return n + (size_t) snprintf(out + n, outlen - n, "\n");
}

/* The older capture's line: id partition seq event_id aggregate_id event_type payload. */
static size_t
print_legacy_row(char *out, size_t outlen, const ob_pgo_outbox_row_t *row)
{
    cr_assert_null(row->content_type.p);
    cr_assert_null(row->headers.p);
    return (size_t) snprintf(out, outlen, "%lld %d %d %s %.*s %.*s %.*s\n", (long long) row->id, row->partition,
                             row->seq, row->event_id, (int) row->aggregate_id.len, row->aggregate_id.p,
                             (int) row->event_type.len, row->event_type.p, (int) row->payload.len, row->payload.p);
}

/*
 * Maps the capture's Relation (frame 2, of nspname, with a uuid or text
 * aggregate id) and prints every Insert after it; equal to the rows SQL
 * returned when it was captured (dir/expected.txt).
 */
static void
inserts_equal_expected(const char *dir, const char *nspname, int uuid_id,
                       size_t (*print)(char *, size_t, const ob_pgo_outbox_row_t *))
{
    char                path[256], err[256], got[8192] = "";
    ob_pgo_outbox_map_t map;
    ob_pgo_frame_t      f;
    ob_pgo_msg_t        m;
    size_t              used = 0;
    blob_t              expected;

    snprintf(path, sizeof(path), "%s/expected.txt", dir);
    expected = load(path);
    decode(2, &f, &m);
    cr_assert_eq(m.kind, OB_PGO_RELATION);
    cr_assert_str_eq(m.rel.relname, "outbox");
    cr_assert_str_eq(m.rel.nspname, nspname);
    cr_assert(ob_pgo_is_outbox(&m.rel));
    cr_assert_eq(ob_pgo_outbox_map(&m.rel, &map, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(map.aggregate_id_uuid, uuid_id);
    for (int i = 3; i < nframes; i++) {
        ob_pgo_outbox_row_t row;
        decode(i, &f, &m);
        if (m.kind != OB_PGO_INSERT)
            continue;
        cr_assert_eq(ob_pgo_outbox_row(&m, &map, &row, err, sizeof(err)), 0, "frame %d: %s", i, err);
        used += print(got + used, sizeof(got) - used, &row);
    }
    cr_assert_str_eq(got, expected.buf);
    free(expected.buf);
}

Test(pgoutput, inserts_decode_to_the_rows_sql_returned, .init = setup, .fini = teardown)
{
    inserts_equal_expected(FIXTURES, "outboxd", 0, print_row);
}

/* The older shape's rows decode too, their uuid aggregate ids as text, without content type or headers. */
Test(pgoutput, older_public_outbox_rows_decode, .init = setup_legacy, .fini = teardown)
{
    inserts_equal_expected(LEGACY, "public", 1, print_legacy_row);
}

Test(pgoutput, only_outboxd_or_the_older_public_outbox_is_the_outbox)
{
    ob_pgo_relation_t rel = { .relid = 1 };

    strcpy(rel.relname, "outbox");
    strcpy(rel.nspname, "billing");
    cr_assert_not(ob_pgo_is_outbox(&rel), "a user's own billing.outbox is not ours");
    strcpy(rel.nspname, "outboxd");
    cr_assert(ob_pgo_is_outbox(&rel));
    strcpy(rel.relname, "outbox_quarantine");
    cr_assert_not(ob_pgo_is_outbox(&rel));
}

/* A copy of frame 2 (the Relation) with one byte sequence replaced. */
static blob_t
patched_relation(const char *from, const char *to)
{
    blob_t b = { malloc(frames[2].len), frames[2].len };
    char  *at;

    memcpy(b.buf, frames[2].buf, b.len);
    at = memmem(b.buf, b.len, from, strlen(from) + 1);
    cr_assert_not_null(at, "%s not in the Relation message", from);
    memcpy(at, to, strlen(to) + 1);
    return b;
}

static int
map_of(blob_t b, char *err, size_t errlen)
{
    ob_pgo_frame_t      f;
    ob_pgo_msg_t        m;
    ob_pgo_outbox_map_t map;

    cr_assert_eq(ob_pgo_frame(b.buf, b.len, &f, err, errlen), 0);
    cr_assert_eq(ob_pgo_decode(f.data, f.len, &m, err, errlen), 0);
    return ob_pgo_outbox_map(&m.rel, &map, err, errlen);
}

Test(pgoutput, relation_without_a_needed_column_is_refused, .init = setup, .fini = teardown)
{
    blob_t b = patched_relation("payload", "paylaod");
    char   err[256];

    cr_assert_eq(map_of(b, err, sizeof(err)), -1);
    cr_assert(strstr(err, "no column payload") != NULL, "%s", err);
    free(b.buf);
}

Test(pgoutput, relation_with_a_column_of_another_type_is_refused, .init = setup, .fini = teardown)
{
    blob_t b = patched_relation("seq", "seq");
    char  *type = memmem(b.buf, b.len, "seq", 4) + 4;   /* int4 oid 23 follows the name */
    char   err[256];

    cr_assert_eq(ob_be32(type), 23);
    type[3] = 20;                                           /* now int8 */
    cr_assert_eq(map_of(b, err, sizeof(err)), -1);
    cr_assert(strstr(err, "seq has type oid 20") != NULL, "%s", err);
    free(b.buf);
}

/* Every strict prefix of every frame fails cleanly; the copy is exactly that
 * long, so AddressSanitizer sees any read past it. */
Test(pgoutput, every_truncation_is_an_error_never_a_read_past_the_end, .init = setup, .fini = teardown)
{
    char err[256];

    for (int i = 0; i < nframes; i++) {
        for (size_t len = 0; len < frames[i].len; len++) {
            char          *cut = malloc(len ? len : 1);
            ob_pgo_frame_t f;
            ob_pgo_msg_t   m;
            int            rc;
            memcpy(cut, frames[i].buf, len);
            rc = ob_pgo_frame(cut, len, &f, err, sizeof(err));
            if (rc == 0 && f.type == 'w')
                rc = ob_pgo_decode(f.data, f.len, &m, err, sizeof(err));
            cr_assert_eq(rc, -1, "frame %d cut to %zu bytes was accepted", i, len);
            free(cut);
        }
    }
}

Test(pgoutput, unknown_message_and_absurd_column_counts_are_errors)
{
    ob_pgo_msg_t m;
    char         err[256];
    const char   unknown[] = { 'Z', 0, 0, 0, 0 };
    const char   wide[] = { 'I', 0, 0, 0x40, 0, 'N', 0x03, (char) 0xe8 };   /* 1000 columns */

    cr_assert_eq(ob_pgo_decode(unknown, sizeof(unknown), &m, err, sizeof(err)), -1);
    cr_assert(strstr(err, "unknown type 0x5a") != NULL, "%s", err);
    cr_assert_eq(ob_pgo_decode(wide, sizeof(wide), &m, err, sizeof(err)), -1);
    cr_assert(strstr(err, "wider than") != NULL, "%s", err);
}

Test(pgoutput, lsn_text_round_trips)
{
    uint64_t lsn;
    char     s[32];

    cr_assert_eq(ob_pgo_lsn_parse("16/B374D848", &lsn), 0);
    cr_assert_eq(lsn, UINT64_C(0x16B374D848));
    ob_pgo_lsn_format(lsn, s, sizeof(s));
    cr_assert_str_eq(s, "16/B374D848");
    cr_assert_eq(ob_pgo_lsn_parse("16/B374D848x", &lsn), -1);
    cr_assert_eq(ob_pgo_lsn_parse("nonsense", &lsn), -1);
}

Test(pgoutput, status_update_carries_flush_position_and_postgres_time)
{
    char   msg[34];
    size_t n = ob_pgo_status_update(msg, UINT64_C(0x200), UINT64_C(0x100), ob_pgo_pg_time(946684800000 + 1), 1);

    cr_assert_eq(n, 34);
    cr_assert_eq(msg[0], 'r');
    cr_assert_eq(ob_be64(msg + 1), 0x200, "written");
    cr_assert_eq(ob_be64(msg + 9), 0x100, "flushed");
    cr_assert_eq(ob_be64(msg + 17), 0x100, "applied");
    cr_assert_eq(ob_be64(msg + 25), 1000, "one millisecond after 2000-01-01, in microseconds");
    cr_assert_eq(msg[33], 1);
}
