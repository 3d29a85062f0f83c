/*
 * tests/integration/test_wal.c: relay mode wal against the real PostgreSQL
 * (logical replication, pgoutput) and the real broker: streaming, slot
 * safety (unbounded retention refused, invalidation survived), quarantine
 * and replay through the polling pass, and the decoder against frames a
 * real server sent (which also writes the unit tests' fixtures when
 * OB_CAPTURE_FIXTURES names a directory).
 */
#include "tests/integration/fixture.h"
#include "common/murmur2.h"
#include "common/pg.h"
#include "common/util.h"
#include "common/uuid.h"
#include "workers/relay/pgoutput.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAL "[relay]\nmode = wal\n"

static void
wal_teardown(void)
{
    /* the slot-safety tests change a server setting: always put it back */
    obh_sql(STACK_ORDERS "postgres", "ALTER SYSTEM RESET max_slot_wal_keep_size");
    obh_sql(STACK_ORDERS "postgres", "SELECT pg_reload_conf()");
    teardown();
}

static int
all_published(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0;
}

static void
reload(const char *extra)
{
    obh_write_conf(&h, extra);
    kill(h.pid, SIGHUP);
}

static int
relays_gone(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_count(hh, OB_KIND_RELAY) == 0;
}

static void
check_kafka(int events)
{
    int        n;
    obh_msg_t *m = obh_kafka_read_all(&h, events, obh_ms(30000), &n);

    obh_check_log(&h, m, n, events);
    free(m);
}

Test(wal, streams_events_in_order_marks_them_and_confirms_the_slot, .init = setup, .fini = wal_teardown)
{
    static char ids[200][37];
    char        lsn[64], sql[256];
    PGresult   *r;
    PGconn     *pg;

    start(WAL "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n");
    obh_wait_streaming(&h, 2);
    obh_insert_events(&h, 200, 3, ids);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "events not all marked published; log %s", h.log);
    check_kafka(600);
    /* the stream carried them, not a polling pass */
    cr_assert_geq(obh_relay_counter(&h, 0, OB_CTR_RELAY_STREAMED) + obh_relay_counter(&h, 1, OB_CTR_RELAY_STREAMED), 600);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE kafka_offset IS NULL"), 0);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.relay_slots WHERE NOT catchup_needed"), 2);
    /* both slots confirm past the inserts once Kafka acknowledged them */
    pg = obh_pg(h.orders_dsn);
    r = PQexec(pg, "SELECT pg_current_wal_lsn()::text");
    ob_strlcpy(lsn, PQgetvalue(r, 0, 0), sizeof(lsn));
    PQclear(r);
    PQfinish(pg);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
             " AND confirmed_flush_lsn >= '%s'::pg_lsn",
             lsn);
    for (int64_t t0 = ob_now_ms(); obh_scalar(h.orders_dsn, sql) < 2; ob_sleep_ms(50))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(15000), "slots never confirmed %s; log %s", lsn, h.log);
}

/* Writers that never pause, each on its own connection, one event per transaction. */
typedef struct {
    char       dsn[256];
    int        partitions;
    atomic_int stop;
    atomic_int written;
    atomic_int failed;
} steady_t;

enum { STEADY_WRITERS = 4 };

static void *
steady_writer(void *arg)
{
    steady_t *s = arg;
    PGconn   *pg = PQconnectdb(s->dsn);

    /* no flush per commit: a row lands every few microseconds, faster than any relay cycle */
    PQclear(PQexec(pg, "SET synchronous_commit = off"));
    while (PQstatus(pg) == CONNECTION_OK && !atomic_load(&s->stop)) {
        ob_uuid_t u;
        char      id[37], part[16];
        if (ob_uuid_v7(&u) != 0)
            break;
        ob_uuid_format(&u, id);
        snprintf(part, sizeof(part), "%d", ob_partition_for(id, 36, s->partitions));
        const char *params[2] = { id, part };
        PGresult   *r = PQexecParams(pg,
                                     "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq,"
                                     " event_type, partition, payload) VALUES (gen_random_uuid(), 'order', $1, 1,"
                                     " 'order.test', $2::int, 'steady')",
                                     2, NULL, params, NULL, NULL, 0);
        atomic_fetch_add(PQresultStatus(r) == PGRES_COMMAND_OK ? &s->written : &s->failed, 1);
        PQclear(r);
    }
    if (PQstatus(pg) != CONNECTION_OK)
        atomic_fetch_add(&s->failed, 1);
    PQfinish(pg);
    return NULL;
}

/*
 * The pass used to end only with a cycle that found nothing, which writers
 * that never pause never allow: the relay polled for ever. A cycle that took
 * everything its snapshot showed is as complete.
 */
Test(wal, a_polling_pass_under_writes_that_never_pause_still_hands_over_to_the_stream, .init = setup,
     .fini = wal_teardown)
{
    static steady_t s;
    pthread_t       th[STEADY_WRITERS];
    int64_t         t0;

    ob_strlcpy(s.dsn, h.orders_dsn, sizeof(s.dsn));
    s.partitions = h.partitions;
    for (int i = 0; i < STEADY_WRITERS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, steady_writer, &s), 0);
    for (t0 = ob_now_ms(); atomic_load(&s.written) < 500; ob_sleep_ms(10))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(15000), "the writers wrote %d rows in 15 s", atomic_load(&s.written));
    start(WAL "[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n");
    obh_wait_streaming(&h, 1);
    /* the stream, not the pass, carries the writes from here on */
    for (t0 = ob_now_ms(); obh_relay_counter(&h, 0, OB_CTR_RELAY_STREAMED) < 100; ob_sleep_ms(20))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(15000), "streaming but nothing streamed; log %s", h.log);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < STEADY_WRITERS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&s.failed), 0, "%d writes failed", atomic_load(&s.failed));
    cr_log_info("steady writers: %d rows", atomic_load(&s.written));
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "events not all published; log %s", h.log);
    check_kafka(atomic_load(&s.written));
}

Test(wal, refuses_to_start_when_a_slot_could_keep_wal_without_bound, .init = setup, .fini = wal_teardown)
{
    obh_sql(STACK_ORDERS "postgres", "ALTER SYSTEM SET max_slot_wal_keep_size = -1");
    obh_sql(STACK_ORDERS "postgres", "SELECT pg_reload_conf()");
    start(WAL "[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n");
    for (int64_t t0 = ob_now_ms(); obh_log_count(&h, "max_slot_wal_keep_size = -1") == 0; ob_sleep_ms(50))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(15000), "no refusal in log %s", h.log);
    cr_assert(obh_poll(relays_gone, &h, NULL, obh_ms(10000)), "the relay was restarted after a fatal refusal");
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM pg_replication_slots WHERE database = "
                                          "current_database()"),
                 0, "a slot was created although retention is unbounded");
}

/* WAL past max_slot_wal_keep_size while no relay runs: the slot is invalidated at a checkpoint. */
static void
invalidate_slot(void)
{
    obh_sql(STACK_ORDERS "postgres", "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
    obh_sql(STACK_ORDERS "postgres", "SELECT pg_reload_conf()");
    obh_sql(h.orders_dsn, "CREATE TABLE wal_filler (x text)");
    for (int64_t t0 = ob_now_ms();
         obh_scalar(h.orders_dsn, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
                                  " AND wal_status = 'lost'") == 0;) {
        cr_assert_lt(ob_now_ms() - t0, obh_ms(30000), "the slot was never invalidated");
        obh_sql(h.orders_dsn, "INSERT INTO wal_filler SELECT repeat('x', 200) FROM generate_series(1, 5000)");
        obh_sql(h.orders_dsn, "SELECT pg_switch_wal()");
        obh_sql(h.orders_dsn, "CHECKPOINT");
    }
    obh_sql(STACK_ORDERS "postgres", "ALTER SYSTEM RESET max_slot_wal_keep_size");
    obh_sql(STACK_ORDERS "postgres", "SELECT pg_reload_conf()");
}

Test(wal, invalidated_slot_falls_back_to_polling_and_loses_nothing, .init = setup, .fini = wal_teardown)
{
    static char ids[100][37];

    start(WAL "[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n");
    obh_wait_streaming(&h, 1);
    obh_insert_events(&h, 25, 2, ids);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "first events not published; log %s", h.log);
    /* relays off; events keep arriving; the slot falls too far behind */
    reload(WAL "[workers]\nhttp = 0\nrelays = 0\nconsumers = 0\n");
    cr_assert(obh_poll(relays_gone, &h, NULL, obh_ms(30000)), "relay did not stop");
    obh_insert_events(&h, 50, 2, ids);
    invalidate_slot();
    reload(WAL "[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n");
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "pending events not sent; log %s", h.log);
    check_kafka(150);
    cr_assert_geq(obh_log_count(&h, "was invalidated"), 1, "no loud log line; log %s", h.log);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT invalidations FROM outboxd.relay_slots"), 1);
    obh_wait_streaming(&h, 1);
    cr_assert_eq(obh_relay_counter(&h, 0, OB_CTR_RELAY_SLOT_INVALIDATIONS), 1);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM pg_replication_slots WHERE database ="
                                          " current_database() AND wal_status <> 'lost'"),
                 1, "the slot was not recreated");
    /* and the new slot streams */
    obh_insert_events(&h, 10, 1, ids);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "events after the recovery not sent");
    check_kafka(160);
}

Test(wal, streamed_oversized_event_is_quarantined_by_a_polling_pass_and_replay_delivers, .init = setup,
     .fini = wal_teardown)
{
    static char ids[20][37];
    char        out[1024];

    obh_kafka_create_topic(&h, 20000);
    start(WAL "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n");
    obh_wait_streaming(&h, 2);
    /* one transaction whose order 0 has a first event too large for the topic */
    obh_insert_events_ex(&h, 20, 2, ids, 1, 50000);
    for (int64_t t0 = ob_now_ms(); obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine") < 1;
         ob_sleep_ms(50))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(30000), "nothing quarantined; log %s", h.log);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine WHERE seq = 1"
                                          " AND error LIKE '%MSG_SIZE_TOO_LARGE%max.message.bytes%'"),
                 1);
    for (int64_t t0 = ob_now_ms(); obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE published") < 38;
         ob_sleep_ms(50))
        cr_assert_lt(ob_now_ms() - t0, obh_ms(30000), "other orders did not flow; log %s", h.log);
    /* its seq 2 stays parked while the stream runs again */
    obh_wait_streaming(&h, 2);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published"), 1);
    obh_kafka_set_max_message_bytes(&h, 1000000);
    const char *args[] = { "replay", "-c", h.conf, "--quarantined", NULL };
    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "replayed events not delivered; log %s", h.log);
    check_kafka(40);     /* order 0: seq 1 then seq 2 */
}

/* ---- the decoder against a real server's frames --------------------------------- */

static void
capture_write(const char *dir, int n, const char *buf, int len)
{
    char  path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%02d.bin", dir, n);
    f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(buf, 1, (size_t) len, f), (size_t) len);
    fclose(f);
}

/* One row as the decoder test prints it: what SQL and the decoder must agree on. */
#define ROW_FORMAT "%s %s %s %s %s %s %s %s %s %s\n"

static void
expected_rows(char *out, size_t outlen)
{
    PGconn   *pg = obh_pg(h.orders_dsn);
    PGresult *r = PQexec(pg, "SELECT id, partition, seq, event_id, aggregate_type, aggregate_id, event_type,"
                             " coalesce(content_type, '-'), coalesce(headers::text, '-'), encode(payload, 'hex')"
                             " FROM outboxd.outbox ORDER BY id");
    size_t    used = 0;

    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    out[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++)
        used += (size_t) snprintf(out + used, outlen - used, ROW_FORMAT, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                                  PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5),
                                  PQgetvalue(r, i, 6), PQgetvalue(r, i, 7), PQgetvalue(r, i, 8), PQgetvalue(r, i, 9));
    PQclear(r);
    PQfinish(pg);
}

/* A span as text ("-" for NULL) and as hex, for ROW_FORMAT. */
static const char *
span_text(ob_pgo_span_t s, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "%.*s", s.p ? (int) s.len : 1, s.p ? s.p : "-");
    return buf;
}

static const char *
span_hex(ob_pgo_span_t s, char *buf, size_t buflen)
{
    for (size_t i = 0; i < s.len && 2 * i + 2 < buflen; i++)
        snprintf(buf + 2 * i, 3, "%02x", (unsigned char) s.p[i]);
    buf[s.len ? 2 * s.len < buflen ? 2 * s.len : buflen - 1 : 0] = '\0';
    return buf;
}

static void
decoded_row(const ob_pgo_outbox_row_t *row, char *out, size_t outlen)
{
    char id[24], part[16], seq[16], t[5][320], hex[1024];

    snprintf(id, sizeof(id), "%lld", (long long) row->id);
    snprintf(part, sizeof(part), "%d", row->partition);
    snprintf(seq, sizeof(seq), "%d", row->seq);
    snprintf(out, outlen, ROW_FORMAT, id, part, seq, row->event_id,
             span_text(row->aggregate_type, t[0], sizeof(t[0])), span_text(row->aggregate_id, t[1], sizeof(t[1])),
             span_text(row->event_type, t[2], sizeof(t[2])), span_text(row->content_type, t[3], sizeof(t[3])),
             span_text(row->headers, t[4], sizeof(t[4])), span_hex(row->payload, hex, sizeof(hex)));
}

/* Events of other aggregates, by outboxd.emit: text ids, a content type, headers, bytes that are no text. */
static void
emit_foreign_events(void)
{
    obh_sql(h.orders_dsn,
            "BEGIN;"
            " SELECT outboxd.emit('product', 'sku-42', 'product.repriced', '{\"price\": \"9.90\", \"id\": 42}',"
            "   '{\"traceparent\": \"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}');"
            " SELECT outboxd.emit_bytes('stock', 'sku-42', 'stock.changed', '\\x00ff10'::bytea, 'application/x-protobuf');"
            " COMMIT");
}

Test(wal, decoder_reads_what_a_real_server_streams, .init = setup, .fini = wal_teardown)
{
    static char ids[3][37];
    const char *dir = getenv("OB_CAPTURE_FIXTURES");
    char        slot[96], cmd[256], err[256], want[4096], got[4096] = "";
    size_t      used = 0;
    int         frames = 0, inserts = 0, committed = 0;
    ob_pgo_outbox_map_t map = { 0 };

    snprintf(slot, sizeof(slot), "ob_%s_capture", h.tag);
    obh_sql(h.orders_dsn, "CREATE PUBLICATION capture FOR TABLE outboxd.outbox WITH (publish = 'insert')");
    snprintf(cmd, sizeof(cmd), "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", slot);
    obh_sql(h.orders_dsn, cmd);
    obh_insert_events(&h, 3, 2, ids);
    emit_foreign_events();
    expected_rows(want, sizeof(want));

    PGconn *repl = ob_pg_connect_replication(h.orders_dsn, "outboxd test capture", err, sizeof(err));
    cr_assert_not_null(repl, "%s", err);
    snprintf(cmd, sizeof(cmd),
             "START_REPLICATION SLOT %s LOGICAL 0/0 (proto_version '1', publication_names 'capture', binary 'true')",
             slot);
    PGresult *r = PQexec(repl, cmd);
    cr_assert_eq(PQresultStatus(r), PGRES_COPY_BOTH, "%s", PQresultErrorMessage(r));
    PQclear(r);
    while (!(inserts == 8 && committed)) {
        char          *buf = NULL;
        int            len = PQgetCopyData(repl, &buf, 0);
        ob_pgo_frame_t f;
        ob_pgo_msg_t   m;

        cr_assert_gt(len, 0, "stream ended: %s", PQerrorMessage(repl));
        cr_assert_eq(ob_pgo_frame(buf, (size_t) len, &f, err, sizeof(err)), 0, "%s", err);
        if (dir != NULL)
            capture_write(dir, frames, buf, len);
        frames++;
        if (f.type == 'w') {
            cr_assert_eq(ob_pgo_decode(f.data, f.len, &m, err, sizeof(err)), 0, "%s", err);
            committed = m.kind == OB_PGO_COMMIT;
            if (m.kind == OB_PGO_RELATION)
                cr_assert_eq(ob_pgo_outbox_map(&m.rel, &map, err, sizeof(err)), 0, "%s", err);
            if (m.kind == OB_PGO_INSERT) {
                ob_pgo_outbox_row_t row;
                cr_assert_eq(ob_pgo_outbox_row(&m, &map, &row, err, sizeof(err)), 0, "%s", err);
                decoded_row(&row, got + used, sizeof(got) - used);
                used += strlen(got + used);
                inserts++;
            }
        }
        PQfreemem(buf);
    }
    PQfinish(repl);
    cr_assert_str_eq(got, want, "decoded rows differ from SQL");
    if (dir != NULL) {
        char  path[512];
        FILE *f;
        snprintf(path, sizeof(path), "%s/expected.txt", dir);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(want, f);
        fclose(f);
    }
}
