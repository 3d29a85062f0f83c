/*
 * tests/integration/test_emit.c: events any service writes with
 * outboxd.emit from its own transaction (plain SQL over libpq, as a
 * service in any language would), published by the real binary to the
 * real broker and read back with their keys, partitions and headers.
 */
#include "tests/integration/fixture.h"
#include "common/murmur2.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACEPARENT "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/* One record read back, whole. */
typedef struct {
    int32_t partition;
    int64_t offset;
    char    key[256];
    char    value[512];
    size_t  value_len;
    char    event_id[40], seq[16], aggregate_type[80], content_type[140], traceparent[80], tenant[40], id[40];
} rec_t;

typedef struct {
    rec_t recs[64];
    int   n;
} recs_t;

static void
collect(const rd_kafka_message_t *m, void *arg)
{
    recs_t *rs = arg;
    rec_t  *r;

    cr_assert_lt(rs->n, 64, "more records than the test wrote");
    r = &rs->recs[rs->n++];
    memset(r, 0, sizeof(*r));
    r->partition = m->partition;
    r->offset = m->offset;
    snprintf(r->key, sizeof(r->key), "%.*s", (int) m->key_len, (const char *) m->key);
    r->value_len = m->len < sizeof(r->value) ? m->len : sizeof(r->value);
    memcpy(r->value, m->payload, r->value_len);
    obh_header(m, "event-id", r->event_id, sizeof(r->event_id));
    obh_header(m, "aggregate-seq", r->seq, sizeof(r->seq));
    obh_header(m, "aggregate-type", r->aggregate_type, sizeof(r->aggregate_type));
    obh_header(m, "content-type", r->content_type, sizeof(r->content_type));
    obh_header(m, "traceparent", r->traceparent, sizeof(r->traceparent));
    obh_header(m, "x-tenant", r->tenant, sizeof(r->tenant));
    obh_header(m, "id", r->id, sizeof(r->id));
}

/* Runs sql on pg (one statement); asserts it succeeded and returns the first value (static buffer). */
static const char *
one(PGconn *pg, const char *sql)
{
    static char out[256];
    PGresult   *r = PQexec(pg, sql);

    cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql,
              PQresultErrorMessage(r));
    snprintf(out, sizeof(out), "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return out;
}

static int
all_published(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0;
}

static const rec_t *
find_type(const recs_t *rs, const char *type)
{
    for (int i = 0; i < rs->n; i++)
        if (strcmp(rs->recs[i].aggregate_type, type) == 0)
            return &rs->recs[i];
    return NULL;
}

static void
commit_versus_rollback(const char *mode)
{
    PGconn *pg = obh_pg(h.orders_dsn);
    char    gone[40], extra[128];
    recs_t  rs = { .n = 0 };

    one(pg, "BEGIN");
    snprintf(gone, sizeof(gone), "%s", one(pg, "SELECT outboxd.emit('product', 'p-1', 'product.created', '{\"n\": 1}')"));
    one(pg, "ROLLBACK");
    one(pg, "BEGIN");
    one(pg, "SELECT outboxd.emit('product', 'p-1', 'product.created', '{\"n\":   2, \"a\": true}',"
            " '{\"traceparent\": \"" TRACEPARENT "\", \"x-tenant\": \"acme\"}')");
    one(pg, "SELECT outboxd.emit_bytes('stock', 'p-1', 'stock.changed', '\\x00ff'::bytea, 'application/x-protobuf')");
    one(pg, "COMMIT");
    PQfinish(pg);

    snprintf(extra, sizeof(extra), "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n[relay]\nmode = %s\n", mode);
    start(extra);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "not published; log %s", h.log);
    obh_kafka_each(&h, h.topic, h.partitions, 2, obh_ms(20000), collect, &rs);
    cr_assert_eq(rs.n, 2, "%d records: the rolled-back event must never exist", rs.n);
    for (int i = 0; i < rs.n; i++)
        cr_assert_str_neq(rs.recs[i].event_id, gone, "the rolled-back event was published");

    const rec_t *p = find_type(&rs, "product"), *s = find_type(&rs, "stock");
    int          part = ob_partition_for("p-1", 3, h.partitions);
    cr_assert(p != NULL && s != NULL, "aggregate-type headers: product and stock");
    cr_assert_str_eq(p->key, "p-1");
    cr_assert_eq(p->partition, part, "murmur2 of the key, as Kafka's Java partitioner");
    cr_assert_eq(s->partition, part);
    cr_assert_str_eq(p->seq, "1", "the rollback gave its seq back");
    cr_assert_str_eq(s->seq, "1", "(stock, p-1) is another aggregate than (product, p-1)");
    cr_assert_str_eq(p->content_type, "application/json");
    cr_assert_eq(p->value_len, strlen("{\"a\": true, \"n\": 2}"));
    cr_assert(memcmp(p->value, "{\"a\": true, \"n\": 2}", p->value_len) == 0, "jsonb, normalised: %.*s",
              (int) p->value_len, p->value);
    cr_assert_str_eq(p->traceparent, TRACEPARENT);
    cr_assert_str_eq(p->tenant, "acme");
    cr_assert_str_eq(s->content_type, "application/x-protobuf");
    cr_assert(s->value_len == 2 && memcmp(s->value, "\x00\xff", 2) == 0, "the exact bytes given");
    cr_assert_str_eq(s->traceparent, "");
}

Test(emit, committed_events_are_published_rolled_back_ones_never_exist, .init = setup, .fini = teardown)
{
    commit_versus_rollback("partitioned");
}

Test(emit, committed_events_are_streamed_rolled_back_ones_never_exist, .init = setup, .fini = teardown)
{
    commit_versus_rollback("wal");
}

Test(emit, partition_agrees_with_java_vectors_and_the_c_hash, .init = setup, .fini = teardown)
{
    /* Kafka's UtilsTest.testMurmur2 */
    static const struct {
        const char *key;
        int         want;
    } java[] = { { "21", -973932308 }, { "foobar", -790332482 }, { "a-little-bit-long-string", -985981536 },
                 { "a-little-bit-longer-string", -1486304829 },
                 { "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971 }, { "abc", 479470107 } };
    static const int parts[] = { 1, 7, 12, 256 };
    PGconn          *pg = obh_pg(h.orders_dsn);
    char             sql[512], key[300];

    for (size_t i = 0; i < sizeof(java) / sizeof(java[0]); i++) {
        snprintf(sql, sizeof(sql), "SELECT outboxd.murmur2(convert_to('%s', 'UTF8'))", java[i].key);
        cr_assert_eq(atoi(one(pg, sql)), java[i].want, "murmur2(\"%s\")", java[i].key);
        cr_assert_eq(ob_murmur2(java[i].key, strlen(java[i].key)), java[i].want, "C murmur2(\"%s\")", java[i].key);
    }
    /* every length up to 255 bytes (each tail case), multi-byte UTF-8 included */
    for (int len = 1; len <= 255; len++) {
        for (int i = 0; i < len; i++)
            key[i] = (char) ('a' + (i * 7 + len) % 26);
        key[len] = '\0';
        if (len % 5 == 0 && len >= 2)
            memcpy(key + len - 2, "\xc3\xa9", 2);   /* é */
        for (size_t k = 0; k < sizeof(parts) / sizeof(parts[0]); k++) {
            snprintf(sql, sizeof(sql), "SELECT outboxd.kafka_partition('%s', %d)", key, parts[k]);
            cr_assert_eq(atoi(one(pg, sql)), ob_partition_for(key, strlen(key), parts[k]), "key of %d bytes, P=%d",
                         len, parts[k]);
        }
    }
    PQfinish(pg);
}

/* Eight writers of one aggregate; each notes its number while it holds the aggregate's lock. */
typedef struct {
    int             n;
    pthread_mutex_t *mu;
    int            *order, *norder;
    int             rollback;
} writer_t;

static void *
writer(void *arg)
{
    writer_t *w = arg;
    PGconn   *pg = obh_pg(h.orders_dsn);
    char      sql[256];

    one(pg, "BEGIN");
    snprintf(sql, sizeof(sql), "SELECT outboxd.emit('account', 'acct-7', 'account.posted', '{\"n\": %d}')", w->n);
    one(pg, sql);
    /* emit returned: this transaction holds the aggregate's row lock until it ends, so the
     * order writers get here in is the order they commit in */
    if (!w->rollback) {
        pthread_mutex_lock(w->mu);
        w->order[(*w->norder)++] = w->n;
        pthread_mutex_unlock(w->mu);
    }
    one(pg, "SELECT pg_sleep(0.02)");
    one(pg, w->rollback ? "ROLLBACK" : "COMMIT");
    PQfinish(pg);
    return NULL;
}

static void
concurrent_writers(const char *mode)
{
    pthread_t       t[9];
    writer_t        w[9];
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int             order[9], norder = 0;
    recs_t          rs = { .n = 0 };
    char            extra[128];

    snprintf(extra, sizeof(extra), "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n[relay]\nmode = %s\n", mode);
    start(extra);     /* running: the writers' events are published as they commit */
    if (strcmp(mode, "wal") == 0)
        obh_wait_streaming(&h, 2);   /* the stream, not the polling pass before it, carries them */
    for (int i = 0; i < 9; i++) {
        w[i] = (writer_t) { i + 1, &mu, order, &norder, i == 4 };
        cr_assert_eq(pthread_create(&t[i], NULL, writer, &w[i]), 0);
    }
    for (int i = 0; i < 9; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(norder, 8);
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "not published; log %s", h.log);
    obh_kafka_each(&h, h.topic, h.partitions, 8, obh_ms(20000), collect, &rs);
    cr_assert_eq(rs.n, 8, "8 committed, 1 rolled back: %d records", rs.n);
    for (int i = 0; i < 8; i++) {
        char want[32];
        cr_assert_eq(rs.recs[i].partition, rs.recs[0].partition, "one aggregate, one partition");
        cr_assert_eq(atoi(rs.recs[i].seq), i + 1, "seq without a gap where the rollback was");
        snprintf(want, sizeof(want), "{\"n\": %d}", order[i]);
        cr_assert(rs.recs[i].value_len == strlen(want) && memcmp(rs.recs[i].value, want, strlen(want)) == 0,
                  "record %d is %.*s, but the %d-th commit was writer %d", i, (int) rs.recs[i].value_len,
                  rs.recs[i].value, i + 1, order[i]);
    }
}

Test(emit, eight_concurrent_transactions_on_one_aggregate_publish_in_commit_order, .init = setup, .fini = teardown)
{
    concurrent_writers("partitioned");
}

Test(emit, eight_concurrent_transactions_on_one_aggregate_stream_in_commit_order, .init = setup, .fini = teardown)
{
    concurrent_writers("wal");
}

Test(emit, bad_arguments_get_errors_that_say_what_is_wrong, .init = setup, .fini = teardown)
{
    static const struct {
        const char *sql, *state, *says;
    } bad[] = {
        { "SELECT outboxd.emit('product', '', 'x', '{}')", "22023", "aggregate_id must not be empty" },
        /* the orders API is served here: its events are the ledger's to book, nobody else's to write */
        { "SELECT outboxd.emit('order', '01a20000-0000-7000-8000-0000000000aa', 'order.cancelled', '{}')", "22023",
          "aggregate type 'order' is reserved" },
        { "SELECT outboxd.emit('', '1', 'x', '{}')", "22023", "aggregate_type must be 1 to 64 characters" },
        { "SELECT outboxd.emit('pro duct', '1', 'x', '{}')", "22023", "aggregate_type must be" },
        { "SELECT outboxd.emit('product', repeat('x', 256), 'x', '{}')", "22023", "aggregate_id is 256 bytes" },
        { "SELECT outboxd.emit('product', '1', '', '{}')", "22023", "event_type must be 1 to 128 bytes" },
        { "SELECT outboxd.emit('product', '1', 'x', NULL)", "22023", "payload must not be NULL" },
        { "SELECT outboxd.emit('product', '1', 'x', '{}', '[1, 2]')", "22023", "headers must be a JSON object" },
        { "SELECT outboxd.emit('product', '1', 'x', '{}', '{\"a\": 1}')", "22023", "header 'a' must be a string" },
        { "SELECT outboxd.emit('product', '1', 'x', '{}', '{\"event-id\": \"x\"}')", "22023",
          "header name 'event-id' is set by outboxd itself" },
        { "SELECT outboxd.emit_bytes('product', '1', 'x', '\\x00', '')", "22023", "content_type must be" },
        { "SELECT outboxd.emit('product', '1', 'x', jsonb_build_object('a', repeat('x', 2000)))", "54000",
          "more than the limit of 1000" },
        /* a writer past the function: the table's checks hold the relay's bounds too */
        { "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload)"
          " VALUES (gen_random_uuid(), 'product', repeat('x', 300), 1, 'x', 0, '\\x00')",
          "23514", "outbox_aggregate_id_check" },
    };
    PGconn *pg;

    obh_sql(h.orders_dsn, "UPDATE outboxd.settings SET max_event_bytes = 1000");
    pg = obh_pg(h.orders_dsn);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        PGresult   *r = PQexec(pg, bad[i].sql);
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        cr_expect_eq(PQresultStatus(r), PGRES_FATAL_ERROR, "accepted: %s", bad[i].sql);
        cr_expect_str_eq(st ? st : "", bad[i].state, "%s: %s", bad[i].sql, PQresultErrorMessage(r));
        cr_expect(strstr(PQresultErrorMessage(r), bad[i].says) != NULL, "%s: %s", bad[i].sql,
                  PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(pg);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox"), 0);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.aggregate_seq"), 0, "no seq was taken");
}

Test(emit, a_role_may_emit_without_writing_the_outbox, .init = setup, .fini = teardown)
{
    char    role[64], sql[512], dsn[320];
    PGconn *pg;

    snprintf(role, sizeof(role), "emitter_%s", h.tag);
    snprintf(sql, sizeof(sql), "DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN", role, role);
    obh_sql(h.orders_dsn, sql);
    snprintf(sql, sizeof(sql),
             "GRANT USAGE ON SCHEMA outboxd TO %s;"
             " GRANT EXECUTE ON FUNCTION outboxd.emit(text, text, text, jsonb, jsonb) TO %s",
             role, role);
    obh_sql(h.orders_dsn, sql);
    snprintf(dsn, sizeof(dsn), "postgresql://%s@127.0.0.1:55432/%s", role, h.orders_db);
    pg = obh_pg(dsn);
    one(pg, "SELECT outboxd.emit('product', '9', 'product.created', '{}')");
    PGresult *r = PQexec(pg, "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type,"
                             " partition, payload) VALUES (gen_random_uuid(), 'product', '9', 2, 'x', 0, '\\x00')");
    cr_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501", "%s", PQresultErrorMessage(r));
    PQclear(r);
    r = PQexec(pg, "SELECT outboxd.emit_bytes('product', '9', 'x', '\\x00', 'a/b')");
    cr_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501", "only what was granted: %s",
                     PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox"), 1);
    snprintf(sql, sizeof(sql), "DROP OWNED BY %s; DROP ROLE %s", role, role);
    obh_sql(h.orders_dsn, sql);
}

/* What an upgraded and a fresh database must agree on: columns, constraints, indexes of the schema outboxd. */
static char *
catalog(const char *dsn)
{
    PGconn    *pg = obh_pg(dsn);
    PGresult  *r = PQexec(pg,
                          "SELECT string_agg(x, E'\\n' ORDER BY x) FROM ("
                          " SELECT 'col ' || attrelid::regclass || ' ' || attnum || ' ' || attname || ' '"
                          "   || format_type(atttypid, atttypmod) || ' ' || attnotnull"
                          "   || coalesce(' ' || pg_get_expr(d.adbin, d.adrelid), '') AS x"
                          " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
                          " WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'outboxd'::regnamespace"
                          "   AND relkind = 'r') AND attnum > 0 AND NOT attisdropped"
                          " UNION ALL SELECT 'con ' || conrelid::regclass || ' ' || conname || ' '"
                          "   || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'outboxd'::regnamespace"
                          " UNION ALL SELECT 'idx ' || pg_get_indexdef(indexrelid) FROM pg_index"
                          "   WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'outboxd'::regnamespace)"
                          " UNION ALL SELECT 'fn ' || p.oid::regprocedure FROM pg_proc p"
                          "   WHERE pronamespace = 'outboxd'::regnamespace) s");
    char      *out;

    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return out;
}

static char *
read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    long  n;
    char *buf;

    cr_assert_not_null(f, "%s (run from the repository root)", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t) n + 1);
    cr_assert_eq(fread(buf, 1, (size_t) n, f), (size_t) n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

Test(emit, an_older_public_outbox_is_moved_and_matches_a_fresh_install)
{
    obh_t       fresh;
    char       *legacy, out[4096], *a, *b;
    const char *args[] = { "migrate", "-c", h.conf, NULL };

    obh_init(&h, 0);
    obh_init(&fresh, 1);
    obh_write_conf(&h, "");
    obh_sql(h.orders_dsn, "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                          " applied_at timestamptz NOT NULL DEFAULT now());"
                          " INSERT INTO schema_migrations (version, name) VALUES (1, '0001_init'), (2, '0002_relay_slots')");
    legacy = read_file("tests/fixtures/orderdb_legacy_v2.sql");
    obh_sql(h.orders_dsn, legacy);
    free(legacy);
    obh_sql(h.orders_dsn, "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition,"
                          " payload) VALUES ('01a20000-0000-7000-8000-000000000001', 'order',"
                          " '01a20000-0000-7000-8000-0000000000aa', 1, 'order.created', 3, '\\x01')");
    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "outbox: applied 0001_tables") != NULL, "%s", out);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                                          " AND tablename IN ('outbox', 'outbox_quarantine', 'relay_slots')"),
                 0, "moved out of public");
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE aggregate_type = 'order'"
                                          " AND aggregate_id = '01a20000-0000-7000-8000-0000000000aa' AND seq = 1"),
                 1, "the older row kept, its id now text");
    a = catalog(h.orders_dsn);
    b = catalog(fresh.orders_dsn);
    cr_assert_str_eq(a, b, "an upgraded database differs from a fresh one");
    free(a);
    free(b);
    obh_cleanup(&fresh);
    obh_cleanup(&h);
}

static int
relay_refused(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_log_count(hh, "outboxd.settings says 7 partitions") > 0 && obh_count(hh, OB_KIND_RELAY) == 0;
}

Test(emit, relay_and_migrate_refuse_a_partition_count_settings_does_not_hold, .init = setup, .fini = teardown)
{
    char        out[4096];
    const char *args[] = { "migrate", "-c", h.conf, NULL };

    obh_write_conf(&h, "[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n");
    obh_sql(h.orders_dsn, "UPDATE outboxd.settings SET partitions = 7");
    cr_assert_eq(obh_run(args, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "outboxd.settings holds another partition count") != NULL, "%s", out);
    obh_start(&h, NULL);
    cr_assert(obh_poll(relay_refused, &h, NULL, obh_ms(15000)), "relay not refused, or respawned; log %s", h.log);
}

/* The deployment of the README's "Use it with your own service": a database outboxd did not make. */
#define RELAY_ONLY                                                                                                   \
    "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n[orders]\nlisten =\n[ledger]\nlisten =\n"

Test(emit, relay_only_against_a_database_without_the_orders_table)
{
    char        out[4096], body[8192];
    const char *args[] = { "migrate", "-c", h.conf, NULL };
    recs_t      rs = { .n = 0 };

    obh_init(&h, 0);
    /* the user's own tables, one named like ours: the schema outboxd keeps them apart */
    obh_sql(h.orders_dsn, "CREATE TABLE outbox (id serial PRIMARY KEY, note text);"
                          " CREATE TABLE orders (sku text PRIMARY KEY, qty int)");
    obh_write_conf(&h, RELAY_ONLY);
    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "outbox: applied 0002_emit") != NULL, "%s", out);
    cr_assert(strstr(out, "orderdb") == NULL && strstr(out, "ledgerdb") == NULL, "only the outbox schema: %s", out);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM information_schema.columns"
                                          " WHERE table_schema = 'public' AND table_name = 'orders'"),
                 2, "the user's orders table is theirs, untouched");
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), 0);

    obh_start(&h, NULL);
    obh_sql(h.orders_dsn, "BEGIN; INSERT INTO orders VALUES ('sku-1', 3);"
                          " SELECT outboxd.emit('stock', 'sku-1', 'stock.changed', '{\"qty\": 3}'); COMMIT");
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "not published; log %s", h.log);
    obh_kafka_each(&h, h.topic, h.partitions, 1, obh_ms(20000), collect, &rs);
    cr_assert_eq(rs.n, 1);
    cr_assert_str_eq(rs.recs[0].key, "sku-1");
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM public.outbox"), 0, "the user's outbox untouched");

    /* scraped and health-checked although no API runs; the APIs' ports stay closed */
    cr_assert_eq(obh_http(h.admin_port, "GET", "/healthcheck", NULL, NULL, body, sizeof(body), NULL, 0), 200);
    cr_assert_eq(obh_http(h.admin_port, "GET", "/status.json", NULL, NULL, body, sizeof(body), NULL, 0), 200);
    cr_assert_eq(obh_http(h.admin_port, "GET", "/metrics", NULL, NULL, body, sizeof(body), NULL, 0), 200);
    cr_assert(strstr(body, "outboxd_relay_published_total") != NULL, "%.300s", body);
    cr_assert_lt(obh_http(h.orders_port, "GET", "/healthcheck", NULL, NULL, body, sizeof(body), NULL, 0), 0);
    obh_cleanup(&h);
}

static int
other_aggregate_passed_over(obh_t *hh, void *arg)
{
    uint64_t seen = 0;

    (void) arg;
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t s;
        if (ob_shm_slot_snapshot(&hh->shm->map->slots[i], &s) == 0 && s.kind == OB_KIND_CONSUMER)
            seen += atomic_load(&s.counters[OB_CTR_CONS_OTHER_AGGREGATES]);
    }
    return seen >= 2 && obh_scalar(hh->ledger_dsn, "SELECT count(*) FROM ledger_entries") == 1;
}

/* Another service's events share the topic with orders: the ledger books the order, and neither
 * books nor dead-letters the rest, even one that carries its own traceparent. */
Test(emit, the_ledger_passes_over_other_aggregates_events, .init = setup, .fini = teardown)
{
    char resp[1024];

    start("[workers]\nhttp = 1\nrelays = 1\nconsumers = 1\n");
    obh_sql(h.orders_dsn, "SELECT outboxd.emit('product', 'sku-9', 'product.created', '{\"price\": \"1.00\"}',"
                          " '{\"traceparent\": \"" TRACEPARENT "\"}')");
    cr_assert_eq(obh_http(h.orders_port, "POST", "/orders", "traceparent: " TRACEPARENT "\r\n",
                          "{\"customerId\":\"c\",\"amount\":\"2.50\",\"currency\":\"EUR\"}", resp, sizeof(resp), NULL, 0),
                 201, "%s", resp);
    obh_sql(h.orders_dsn, "SELECT outboxd.emit_bytes('stock', 'sku-9', 'stock.changed', '\\x00', 'a/b')");
    cr_assert(obh_poll(other_aggregate_passed_over, &h, NULL, obh_ms(30000)), "log %s", h.log);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter"), 0);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE aggregate_type = 'order'"
                                          " AND headers->>'traceparent' = '" TRACEPARENT "'"),
                 1, "the order's traceparent is stored with its event");
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_traces t JOIN ledger_entries e USING (event_id)"
                                          " WHERE t.traceparent = '" TRACEPARENT "'"),
                 1, "and kept with its ledger entry: the trace crosses the outbox");
}

/* A consumer written for Debezium's outbox router (StringConverter key, BinaryDataConverter value,
 * header id) reads our records unchanged. */
Test(emit, compat_debezium_adds_the_id_header_with_the_raw_key_and_value, .init = setup, .fini = teardown)
{
    recs_t rs = { .n = 0 };
    char   event[40];
    PGconn *pg = obh_pg(h.orders_dsn);

    snprintf(event, sizeof(event), "%s", one(pg, "SELECT outboxd.emit('invoice', 'inv-1', 'invoice.issued', '{\"total\": \"5.00\"}')"));
    PQfinish(pg);
    start("[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n[kafka]\ncompat = debezium\n");
    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "not published; log %s", h.log);
    obh_kafka_each(&h, h.topic, h.partitions, 1, obh_ms(20000), collect, &rs);
    cr_assert_eq(rs.n, 1);
    cr_assert_str_eq(rs.recs[0].id, event, "Debezium's header id is the event id");
    cr_assert_str_eq(rs.recs[0].event_id, event);
    cr_assert_str_eq(rs.recs[0].key, "inv-1", "the key as a plain string");
    cr_assert(rs.recs[0].value_len == strlen("{\"total\": \"5.00\"}") &&
              memcmp(rs.recs[0].value, "{\"total\": \"5.00\"}", rs.recs[0].value_len) == 0,
              "the value is the payload's bytes");
}

static int
two_quarantined(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine") == 2 &&
           obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0;
}

/* A writer past the table's checks (its owner dropped one) cannot make the relay send a second content-type,
 * or a key it would have to cut: such rows are quarantined, the rest is published. */
static void
rows_past_the_checks(const char *mode)
{
    char   extra[128];
    recs_t rs = { .n = 0 };

    obh_sql(h.orders_dsn, "ALTER TABLE outboxd.outbox DROP CONSTRAINT outbox_headers_check,"
                          " DROP CONSTRAINT outbox_aggregate_id_check");
    snprintf(extra, sizeof(extra), "[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n[relay]\nmode = %s\n", mode);
    start(extra);
    if (strcmp(mode, "wal") == 0)
        obh_wait_streaming(&h, 1);     /* the stream meets them, not the polling pass before it */
    obh_sql(h.orders_dsn, "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type,"
                          "   partition, payload, headers)"
                          " VALUES (gen_random_uuid(), 'product', 'p-1', 1, 'x', 0, '\\x00', '{\"content-type\": \"a/b\"}'),"
                          "        (gen_random_uuid(), 'product', repeat('k', 300), 1, 'x', 1, '\\x00', NULL),"
                          "        (gen_random_uuid(), 'product', 'p-2', 1, 'x', 2, '\\x00', '{\"fine\": \"yes\"}')");
    cr_assert(obh_poll(two_quarantined, &h, NULL, obh_ms(30000)),
              "the reserved header and the oversized key are quarantined, the rest published; log %s", h.log);
    obh_kafka_each(&h, h.topic, h.partitions, 1, obh_ms(20000), collect, &rs);
    cr_assert_geq(rs.n, 1);
    /* mode wal's polling pass, which quarantines what the stream refused, may send p-2 once more */
    for (int i = 0; i < rs.n; i++)
        cr_assert_str_eq(rs.recs[i].key, "p-2", "record %d of %d", i, rs.n);
}

Test(emit, rows_past_the_tables_checks_are_quarantined_not_cut, .init = setup, .fini = teardown)
{
    rows_past_the_checks("partitioned");
}

Test(emit, rows_past_the_tables_checks_are_quarantined_not_cut_by_the_stream, .init = setup, .fini = teardown)
{
    rows_past_the_checks("wal");
}

static int
metric_has(obh_t *hh, void *arg)
{
    static char body[1 << 17];
    char        hdrs[512];

    return obh_http(hh->admin_port, "GET", "/metrics", NULL, NULL, body, sizeof(body), hdrs, sizeof(hdrs)) == 200 &&
           strstr(body, (const char *) arg) != NULL;
}

static int
routing_strict(obh_t *hh, void *arg)
{
    (void) arg;
    return obh_scalar(hh->orders_dsn, "SELECT count(*) FROM outboxd.routing WHERE strict_routes"
                                      " AND routed_types = '{product,stock}'") == 1;
}

/*
 * [routes] send each aggregate type to its own topic (created with the
 * configured partition count), with the same partition and key as on the
 * default topic; strict routes refuse an unrouted type in the caller's own
 * transaction; /metrics counts per topic.
 */
Test(emit, routes_send_aggregate_types_to_their_topics_and_strict_ones_refuse_the_rest, .init = setup,
     .fini = teardown)
{
    char    extra[768], product[96], stock[96], want[256];
    recs_t  rp = { .n = 0 }, rs = { .n = 0 };
    PGconn *pg;

    snprintf(product, sizeof(product), "%s-product", h.topic);
    snprintf(stock, sizeof(stock), "%s-stock", h.topic);
    snprintf(extra, sizeof(extra),
             "[workers]\nhttp = 0\nrelays = 2\nconsumers = 0\n[kafka]\nstrict_routes = yes\n"
             "[routes]\nproduct = %s\nstock = %s\n",
             product, stock);
    start(extra);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 0, 0, obh_ms(20000)), 0, "relay 0 not up; log %s", h.log);
    cr_assert(obh_poll(metric_has, &h, (void *) product, obh_ms(20000)), "no series for %s", product);
    /* migrate ran without the routes: relay 0 brings outboxd.routing up to date when it starts, as after a reload */
    cr_assert(obh_poll(routing_strict, &h, NULL, obh_ms(20000)), "outboxd.routing not synced; log %s", h.log);

    pg = obh_pg(h.orders_dsn);
    one(pg, "BEGIN");
    one(pg, "SELECT outboxd.emit('product', 'sku-9', 'product.repriced', '{\"price\": \"9.90\"}')");
    one(pg, "SELECT outboxd.emit('stock', 'sku-9', 'stock.changed', '{\"on_hand\": 3}')");
    one(pg, "SELECT outboxd.emit('product', 'sku-9', 'product.renamed', '{\"name\": \"b\"}')");
    one(pg, "COMMIT");
    PGresult *r = PQexec(pg, "SELECT outboxd.emit('coupon', 'c-1', 'coupon.issued', '{}')");
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR, "strict routes took an unrouted type");
    cr_assert(strstr(PQresultErrorMessage(r), "aggregate type 'coupon' has no route") != NULL, "%s",
              PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);

    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "not published; log %s", h.log);
    obh_kafka_each(&h, product, h.partitions, 2, obh_ms(20000), collect, &rp);
    obh_kafka_each(&h, stock, h.partitions, 1, obh_ms(20000), collect, &rs);
    cr_assert_eq(rp.n, 2, "%s holds %d records, want the 2 product events", product, rp.n);
    cr_assert_eq(rs.n, 1, "%s holds %d records, want the stock event", stock, rs.n);
    int part = ob_partition_for("sku-9", 5, h.partitions);
    for (int i = 0; i < rp.n; i++) {
        cr_assert_str_eq(rp.recs[i].aggregate_type, "product");
        cr_assert_str_eq(rp.recs[i].key, "sku-9");
        cr_assert_eq(rp.recs[i].partition, part);
    }
    cr_assert(rp.recs[0].offset < rp.recs[1].offset && strcmp(rp.recs[0].seq, "1") == 0 &&
                  strcmp(rp.recs[1].seq, "2") == 0,
              "product events out of commit order: seq %s then %s", rp.recs[0].seq, rp.recs[1].seq);
    cr_assert_str_eq(rs.recs[0].aggregate_type, "stock");
    cr_assert_eq(rs.recs[0].partition, part);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox_quarantine"), 0);
    snprintf(want, sizeof(want), "outboxd_topic_produced_total{topic=\"%s\",partition=\"%d\"} 2", product, part);
    cr_assert(obh_poll(metric_has, &h, want, obh_ms(10000)), "no %s", want);
}

/* Emits n events of their own transaction, one every gap_ms, as a service would. */
static void
emit_paced(PGconn *pg, const char *prefix, int n, int gap_ms)
{
    char sql[256];

    for (int i = 0; i < n; i++) {
        snprintf(sql, sizeof(sql), "SELECT outboxd.emit('product', '%s-%d', 'product.created', '{\"n\": %d}')", prefix,
                 i, i);
        one(pg, sql);
        ob_sleep_ms(gap_ms);    /* the writer's pace, not a wait for the relay */
    }
}

/* The longest commit -> Kafka acknowledgement among the events of prefix, in ms, once all are published. */
static long long
slowest_ms(const char *prefix)
{
    char sql[256];

    cr_assert(obh_poll(all_published, &h, NULL, obh_ms(30000)), "not published; log %s", h.log);
    snprintf(sql, sizeof(sql),
             "SELECT (extract(epoch FROM max(published_at - created_at)) * 1000)::bigint FROM outboxd.outbox"
             " WHERE aggregate_id LIKE '%s-%%'", prefix);
    return obh_scalar(h.orders_dsn, sql);
}

/*
 * Rows written by any SQL client wake no relay. With a fixed 3 s interval a
 * steady writer's events wait for it; with poll_min_ms the relay, once it
 * found rows, polls again within milliseconds while they keep coming.
 */
Test(emit, a_steady_writer_is_polled_adaptively_not_at_the_idle_interval, .init = setup, .fini = teardown)
{
    PGconn *pg = obh_pg(h.orders_dsn);

    start("[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n[relay]\npoll_interval_ms = 3000\npoll_min_ms = 0\n");
    /* a first event found means the relay polls, and has just begun its 3 s sleep */
    emit_paced(pg, "sentinel", 1, 0);
    slowest_ms("sentinel");
    emit_paced(pg, "fixed", 40, 20);
    long long fixed = slowest_ms("fixed");
    cr_assert_gt(fixed, 1500, "the control: at a fixed 3 s interval some event waited %lld ms", fixed);
    cr_assert_eq(obh_stop(&h, obh_ms(10000)), 0, "outboxd did not stop; log %s", h.log);

    start("[workers]\nhttp = 0\nrelays = 1\nconsumers = 0\n[relay]\npoll_interval_ms = 3000\npoll_min_ms = 2\n");
    emit_paced(pg, "first", 1, 0);
    slowest_ms("first");      /* found after at most one idle interval; the relay is now polling fast */
    emit_paced(pg, "steady", 40, 20);
    long long steady = slowest_ms("steady");
    cr_assert_lt(steady, 1500, "polling adaptively, the slowest event waited %lld ms", steady);
    PQfinish(pg);
}
