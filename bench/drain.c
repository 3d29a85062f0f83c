/*
 * bench/drain.c: publishing a backlog, ours beside two baselines.
 *
 *   backlog  generates N order.created events exactly as the HTTP worker
 *            would (UUIDv7 ids, msgpack from ob_event_encode, partition =
 *            murmur2(order id) mod P) and bulk-loads them with binary COPY
 *            into outbox_backlog, a side table of the bench's orderdb;
 *   fill     copies the side table into outbox (one transaction, then
 *            VACUUM ANALYZE) before a publisher starts;
 *   drain    times outboxd's relays from their first published batch until
 *            no row is pending, sampling RSS all along;
 *   ceiling  produces the same messages from memory with librdkafka:
 *            what Kafka and the client library allow on this machine;
 *   naive    the seed's setInterval poller: every second, the 10 oldest
 *            pending rows, one awaited send each, one UPDATE.
 */
#include "bench/obbench.h"
#include "common/event.h"
#include "common/murmur2.h"
#include "common/util.h"
#include "common/uuid.h"

#include <arpa/inet.h>
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COPY_FLUSH (1 << 20)    /* hand COPY data to libpq a megabyte at a time */

/* ---- binary COPY ---------------------------------------------------------- */

typedef struct {
    PGconn *pg;
    char   *buf;
    size_t  used, cap;
} copy_t;

static void
copy_flush(copy_t *c)
{
    if (c->used > 0 && PQputCopyData(c->pg, c->buf, (int) c->used) != 1)
        bench_die("COPY: %s", PQerrorMessage(c->pg));
    c->used = 0;
}

static void
copy_put(copy_t *c, const void *p, size_t n)
{
    if (c->used + n > c->cap) {
        copy_flush(c);
        if (n > c->cap)
            bench_die("COPY: a %zu-byte field does not fit the buffer", n);
    }
    memcpy(c->buf + c->used, p, n);
    c->used += n;
}

static void
copy_i16(copy_t *c, int16_t v)
{
    uint16_t be = htons((uint16_t) v);

    copy_put(c, &be, 2);
}

static void
copy_i32(copy_t *c, int32_t v)
{
    uint32_t be = htonl((uint32_t) v);

    copy_put(c, &be, 4);
}

/* One field: length word, then the bytes (binary COPY sends text as its bytes). */
static void
copy_field(copy_t *c, const void *p, size_t n)
{
    copy_i32(c, (int32_t) n);
    copy_put(c, p, n);
}

static void
copy_begin(copy_t *c, PGconn *pg, const char *sql)
{
    static const char sig[] = "PGCOPY\n\377\r\n";   /* 11 bytes with its NUL */
    PGresult         *r = PQexec(pg, sql);

    if (PQresultStatus(r) != PGRES_COPY_IN)
        bench_die("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    c->pg = pg;
    c->cap = COPY_FLUSH;
    c->used = 0;
    c->buf = malloc(c->cap);
    if (c->buf == NULL)
        bench_die("out of memory");
    copy_put(c, sig, 11);
    copy_i32(c, 0);      /* flags */
    copy_i32(c, 0);      /* header extension length */
}

static void
copy_end(copy_t *c)
{
    PGresult *r;

    copy_i16(c, -1);     /* trailer */
    copy_flush(c);
    if (PQputCopyEnd(c->pg, NULL) != 1)
        bench_die("COPY end: %s", PQerrorMessage(c->pg));
    while ((r = PQgetResult(c->pg)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            bench_die("COPY: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
    free(c->buf);
}

/* ---- backlog --------------------------------------------------------------- */

/* Event i of the backlog: the body post_order.lua would send for request i. */
static void
backlog_event(long i, int partitions, ob_uuid_t *order, ob_uuid_t *event, ob_event_t *ev, int *partition)
{
    memset(ev, 0, sizeof(*ev));
    if (ob_uuid_v7(order) != 0 || ob_uuid_v7(event) != 0)
        bench_die("no randomness for UUIDs");
    ob_uuid_format(event, ev->id);
    ob_uuid_format(order, ev->aggregate_id);
    ob_strlcpy(ev->type, OB_EVENT_CREATED, sizeof(ev->type));
    ob_strlcpy(ev->aggregate_type, "order", sizeof(ev->aggregate_type));
    ev->seq = 1;
    ob_event_timestamp(ob_wall_ms(), ev->occurred_at);
    snprintf(ev->customer_id, sizeof(ev->customer_id), "c-%ld", i % 1000);
    snprintf(ev->amount, sizeof(ev->amount), "%ld.%02ld", 1 + i % 500, i % 100);
    ob_strlcpy(ev->currency, "USD", sizeof(ev->currency));
    ob_strlcpy(ev->status, "created", sizeof(ev->status));
    *partition = ob_partition_for(ev->aggregate_id, 36, partitions);
}

/* backlog --dsn D --rows N [--partitions P]: (re)creates and fills outbox_backlog. */
int
cmd_backlog(int argc, char **argv)
{
    PGconn *pg = bench_pg(bench_opt_req(argc, argv, "--dsn"));
    long    rows = bench_opt_long(argc, argv, "--rows", 1000000);
    int     parts = (int) bench_opt_long(argc, argv, "--partitions", 12);
    double  t0 = bench_now(), bytes = 0;
    copy_t  c;

    bench_exec(pg, "DROP TABLE IF EXISTS outbox_backlog");
    bench_exec(pg, BENCH_BACKLOG_DDL);
    copy_begin(&c, pg, "COPY outbox_backlog FROM STDIN (FORMAT binary)");
    for (long i = 0; i < rows; i++) {
        ob_uuid_t  order, event;
        ob_event_t ev;
        int        partition;
        char      *payload;
        size_t     len;

        backlog_event(i, parts, &order, &event, &ev, &partition);
        if (ob_event_encode(&ev, 0, &payload, &len) != 0)
            bench_die("ob_event_encode failed");
        copy_i16(&c, 7);
        copy_field(&c, event.b, 16);
        copy_field(&c, "order", 5);
        copy_field(&c, ev.aggregate_id, strlen(ev.aggregate_id));
        copy_i32(&c, 4);
        copy_i32(&c, ev.seq);
        copy_field(&c, ev.type, strlen(ev.type));
        copy_i32(&c, 4);
        copy_i32(&c, partition);
        copy_field(&c, payload, len);
        bytes += (double) len;
        free(payload);
    }
    copy_end(&c);
    bench_exec(pg, "VACUUM ANALYZE outbox_backlog");
    double secs = bench_now() - t0;
    bench_note("backlog: %ld events loaded in %.1f s", rows, secs);
    bench_emit(json_pack("{s:I, s:f, s:f}", "rows", (json_int_t) rows, "load_seconds", secs, "payload_avg_bytes",
                         rows > 0 ? bytes / (double) rows : 0.0));
    PQfinish(pg);
    return 0;
}

/* ---- drain ------------------------------------------------------------------ */

static long long
topic_messages(const char *brokers, const char *topic, int partitions)
{
    rd_kafka_t *rk = bench_producer(brokers, 0, NULL);
    long long   sum = bench_topic_messages(rk, topic, partitions, NULL);

    rd_kafka_destroy(rk);
    return sum;
}

/*
 * Replaces outbox's rows with the backlog in one transaction, then VACUUM
 * ANALYZE: the state autovacuum leaves a table in while a backlog builds
 * up for a while (statistics that know the backlog, visibility map set).
 * Run with no publisher connected. Returns its seconds.
 */
static double
drain_fill(PGconn *pg, int streaming)
{
    double t0 = bench_now();

    if (streaming) {
        /* relay mode wal is already streaming: no TRUNCATE (its lock would stall
         * the relays' queries past the watchdog), and nothing after the COMMIT,
         * so the drain's clock starts when the transaction becomes visible */
        bench_exec(pg, "CHECKPOINT");
        bench_exec(pg, "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition,"
                       " payload) SELECT event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload"
                       " FROM outbox_backlog");
        return bench_now() - t0;
    }
    bench_exec(pg, "BEGIN");
    bench_exec(pg, "TRUNCATE outboxd.outbox");
    /* A heap scan of a table filled by one COPY and never updated returns
     * rows in load order, so ids follow generation order without a sort. */
    bench_exec(pg, "INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition,"
                   " payload) SELECT event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload"
                   " FROM outbox_backlog");
    bench_exec(pg, "COMMIT");
    bench_exec(pg, "VACUUM ANALYZE outboxd.outbox");
    bench_exec(pg, "CHECKPOINT");     /* no run pays for the fill's dirty pages */
    return bench_now() - t0;
}

/* fill --dsn D [--streaming 1]: the backlog into outbox, before a publisher
 * starts; with --streaming 1, in one transaction into an empty outbox that
 * relays in mode wal already stream from. */
int
cmd_fill(int argc, char **argv)
{
    PGconn *pg = bench_pg(bench_opt_req(argc, argv, "--dsn"));
    int     streaming = bench_opt_long(argc, argv, "--streaming", 0) != 0;

    bench_note("fill: backlog copied into outbox%s in %.1f s", streaming ? " (one transaction)" : " and vacuumed",
               drain_fill(pg, streaming));
    PQfinish(pg);
    return 0;
}

/* Autovacuum and autoanalyze runs on outbox so far: they change plans mid-drain. */
static void
drain_autovacuums(PGconn *pg, long long *vacuums, long long *analyzes)
{
    *vacuums = bench_scalar(pg, "SELECT autovacuum_count FROM pg_stat_user_tables WHERE schemaname = 'outboxd'"
                                " AND relname = 'outbox'");
    *analyzes = bench_scalar(pg, "SELECT autoanalyze_count FROM pg_stat_user_tables WHERE schemaname = 'outboxd'"
                                 " AND relname = 'outbox'");
}

typedef struct {
    double start;          /* attached: outboxd has just started */
    double first;          /* first batch marked published, with the share settled */
    long   first_rows;     /* published at `first` */
    double end;            /* none pending; < 0 on timeout */
    long   done;           /* published by the end */
} drain_clock_t;

#define DRAIN_HOSTS 4

/*
 * The outboxd instances a drain watches: one, or one per host of section
 * 10, given as comma-separated --name and --pid lists in the same order.
 */
typedef struct {
    int       n;
    int       partitions;
    char     *names;                 /* the --name list, cut in place */
    char     *name[DRAIN_HOSTS];
    ob_shm_t *shm[DRAIN_HOSTS];
    uint64_t  at_first[DRAIN_HOSTS]; /* each one's published counter when the clock started */
} drain_hosts_t;

static void
drain_attach(drain_hosts_t *h, const char *names, const char *pids)
{
    char *save = NULL, *pid_end = NULL;

    if ((h->names = strdup(names)) == NULL)
        bench_die("out of memory");
    for (char *t = strtok_r(h->names, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (h->n == DRAIN_HOSTS)
            bench_die("drain: at most %d instances", DRAIN_HOSTS);
        long pid = strtol(pids, &pid_end, 10);
        if (pid_end == pids)
            bench_die("drain: --pid names fewer instances than --name");
        pids = *pid_end == ',' ? pid_end + 1 : pid_end;
        h->name[h->n] = t;
        h->shm[h->n++] = bench_attach(t, (int) pid, 10);
    }
    if (h->n == 0)
        bench_die("drain: --name is empty");
}

static uint64_t
drain_sum(const drain_hosts_t *h, int counter)
{
    uint64_t sum = 0;

    for (int i = 0; i < h->n; i++)
        sum += bench_counter_sum(h->shm[i], OB_KIND_RELAY, counter);
    return sum;
}

/* Partitions whose lock a running relay of this instance holds. */
static int
drain_owned(ob_shm_t *shm, int partitions)
{
    int n = 0;

    for (int p = 0; p < partitions; p++)
        for (int i = 0; i < OB_SHM_SLOTS; i++) {
            ob_shm_slot_t *s = &shm->map->slots[i];
            if (s->kind == OB_KIND_RELAY && s->state == OB_SLOT_RUNNING && ob_shm_is_owned(s, p)) {
                n++;
                break;
            }
        }
    return n;
}

/*
 * Every partition owned, and by the instances fairly (within one). Until
 * then the relays of whichever instance took the first seats publish
 * everything: a cold start, not the shared topology a drain measures.
 */
static int
drain_settled(const drain_hosts_t *h)
{
    int sum = 0, lo = h->partitions, hi = 0;

    for (int i = 0; i < h->n; i++) {
        int n = drain_owned(h->shm[i], h->partitions);
        sum += n;
        lo = n < lo ? n : lo;
        hi = n > hi ? n : hi;
    }
    return sum == h->partitions && hi - lo <= 1;
}

/* Each instance's share: what it published in all and since the clock
 * started, and the partitions it owns (taken at the end, before anyone stops). */
static json_t *
drain_hosts_json(const drain_hosts_t *h)
{
    json_t *a = json_array();

    for (int i = 0; i < h->n; i++)
    {
        uint64_t published = bench_counter_sum(h->shm[i], OB_KIND_RELAY, OB_CTR_RELAY_PUBLISHED);
        json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:i}", "name", h->name[i], "published",
                                           (json_int_t) published, "published_timed",
                                           (json_int_t) (published - h->at_first[i]), "partitions",
                                           drain_owned(h->shm[i], h->partitions)));
    }
    return a;
}

/* Polls the relays' published counter (cheap), then lets SQL confirm. */
static void
drain_wait(PGconn *pg, drain_hosts_t *h, long rows, double timeout, bench_rss_t *rss, bench_cpu_t *cpu,
           drain_clock_t *c)
{
    double next_note = c->start + 5;

    c->first = c->end = -1;
    for (int tick = 0;; tick++) {
        double now = bench_now();
        c->done = (long) drain_sum(h, OB_CTR_RELAY_PUBLISHED);
        if (c->first < 0 && c->done > 0 && drain_settled(h)) {
            c->first = now;
            c->first_rows = c->done;
            for (int i = 0; i < h->n; i++)
                h->at_first[i] = bench_counter_sum(h->shm[i], OB_KIND_RELAY, OB_CTR_RELAY_PUBLISHED);
        }
        if (tick % 2 == 0) {
            for (int i = 0; i < h->n; i++)
                bench_rss_sample(h->shm[i], rss);
            bench_cpu_sample(cpu);
        }
        if (c->done >= rows && bench_scalar(pg, "SELECT count(*) FROM outboxd.outbox WHERE NOT published") == 0) {
            c->end = now;
            return;
        }
        if (now - c->start > timeout)
            return;
        if (now > next_note) {
            bench_note("drain: %ld of %ld published (%.0f/s)", c->done, rows, (double) c->done / (now - c->start));
            next_note = now + 5;
        }
        bench_sleep(c->done >= rows ? 0.25 : 0.05);
    }
}

/*
 * drain --name N[,N...] --pid P[,P...] --dsn D --rows R [--timeout S]
 *       [--brokers B --topic T] [--partitions P] [--kafka-pid K]
 * Run right after starting outboxd (relays only) on a filled outbox; with
 * several names, the instances (hosts) share the backlog and are counted
 * together. The rate counts from the first published batch once every
 * partition is owned, fairly among the instances, so process start-up
 * (fork, topic check, connections, locks, seats: shown apart) is not
 * mistaken for publishing speed.
 */
int
cmd_drain(int argc, char **argv)
{
    const char   *dsn = bench_opt_req(argc, argv, "--dsn"), *topic = bench_opt(argc, argv, "--topic", NULL);
    drain_hosts_t h = { .partitions = (int) bench_opt_long(argc, argv, "--partitions", 12) };
    PGconn       *pg = bench_pg(dsn);
    long          rows = bench_opt_long(argc, argv, "--rows", 1000000);
    double        timeout = bench_opt_double(argc, argv, "--timeout", 600);
    drain_clock_t c = { 0 };
    bench_rss_t   rss = { 0 };
    long long     av0, aa0, av1, aa1;

    drain_attach(&h, bench_opt_req(argc, argv, "--name"), bench_opt(argc, argv, "--pid", "0"));
    c.start = bench_now();
    bench_cpu_t *cpu = bench_cpu_start(h.shm[0], dsn, NULL, (pid_t) bench_opt_long(argc, argv, "--kafka-pid", 0));
    for (int i = 1; i < h.n; i++)
        bench_cpu_add_shm(cpu, h.shm[i]);
    drain_autovacuums(pg, &av0, &aa0);
    drain_wait(pg, &h, rows, timeout, &rss, cpu, &c);
    drain_autovacuums(pg, &av1, &aa1);
    json_t *hosts = drain_hosts_json(&h);
    int    timed_out = c.end < 0;
    double end = timed_out ? bench_now() : c.end, from = c.first;
    long   counted = (timed_out ? c.done : rows) - c.first_rows;
    if (timed_out)
        bench_note("drain: timed out after %.0f s with %ld of %ld published", end - c.start, c.done, rows);
    if (c.first < 0 && c.done > 0)
        bench_die("drain: %ld published, but the partitions were never all owned, fairly, in %.0f s", c.done, timeout);
    if (c.first < 0)
        bench_die("drain: nothing was published in %.0f s", timeout);
    if (counted <= 0 || end <= from) {
        from = c.start;     /* all of it in the first batch we saw (tiny sizes): count from the start */
        counted = rows;
    }
    json_t *out = json_pack("{s:I, s:I, s:b, s:f, s:f, s:f, s:I, s:I}", "rows", (json_int_t) rows, "published",
                            (json_int_t) c.done, "timed_out", timed_out, "startup_seconds", c.first - c.start,
                            "seconds", end - from, "events_per_s", (double) counted / (end - from),
                            "autovacuums", (json_int_t) (av1 - av0), "autoanalyzes", (json_int_t) (aa1 - aa0));
    if (topic != NULL)
        json_object_set_new(out, "topic_messages",
                            json_integer(topic_messages(bench_opt_req(argc, argv, "--brokers"), topic, h.partitions)));
    /* the relays' own account of where a cycle's time went */
    double claim = (double) drain_sum(&h, OB_CTR_RELAY_CLAIM_US);
    double kafka = (double) drain_sum(&h, OB_CTR_RELAY_KAFKA_US);
    double mark = (double) drain_sum(&h, OB_CTR_RELAY_MARK_US);
    double cycle = claim + kafka + mark > 0 ? claim + kafka + mark : 1;
    json_object_set_new(out, "cycle_share", json_pack("{s:f, s:f, s:f}", "claim", claim / cycle, "kafka",
                                                      kafka / cycle, "mark", mark / cycle));
    json_object_set_new(out, "hosts", hosts);
    json_object_set_new(out, "rss", bench_rss_json(&rss));
    json_object_set_new(out, "cpu", bench_cpu_end(cpu));
    bench_emit(out);
    PQfinish(pg);
    for (int i = 0; i < h.n; i++)
        ob_shm_close(h.shm[i], 0);
    free(h.names);
    return 0;
}

/* ---- reading rows for Kafka ----------------------------------------------- */

/* Columns of row_sql results, fetched in binary so payloads come as bytes. */
enum { COL_ID, COL_PART, COL_SEQ, COL_EVENT, COL_ORDER, COL_TYPE, COL_PAYLOAD };

/*
 * Produces row i of r like the relay does (explicit partition, key = order
 * id, the same five headers, payload copied). QUEUE_FULL waits for room.
 */
static void
produce_row(rd_kafka_t *rk, const char *topic, PGresult *r, int i, void *opaque)
{
    char                seq[16];
    rd_kafka_resp_err_t e;

    snprintf(seq, sizeof(seq), "%d", ob_be32(PQgetvalue(r, i, COL_SEQ)));
    for (;;) {
        e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(ob_be32(PQgetvalue(r, i, COL_PART))),
            RD_KAFKA_V_KEY(PQgetvalue(r, i, COL_ORDER), (size_t) PQgetlength(r, i, COL_ORDER)),
            RD_KAFKA_V_VALUE(PQgetvalue(r, i, COL_PAYLOAD), (size_t) PQgetlength(r, i, COL_PAYLOAD)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(opaque),
            RD_KAFKA_V_HEADER("event-id", PQgetvalue(r, i, COL_EVENT), -1),
            RD_KAFKA_V_HEADER("event-type", PQgetvalue(r, i, COL_TYPE), -1),
            RD_KAFKA_V_HEADER("aggregate-id", PQgetvalue(r, i, COL_ORDER), -1),
            RD_KAFKA_V_HEADER("aggregate-seq", seq, -1),
            RD_KAFKA_V_HEADER("content-type", "application/msgpack", -1), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rk, 10);
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        bench_die("produce: %s", rd_kafka_err2str(e));
}

static PGresult *
select_rows(PGconn *pg, const char *sql)
{
    PGresult *r = PQexecParams(pg, sql, 0, NULL, NULL, NULL, NULL, 1);

    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        bench_die("%s: %s", sql, PQresultErrorMessage(r));
    return r;
}

/* Delivery reports: count failures; a ceiling with losses is no ceiling. */
static void
count_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    long *failed = opaque;

    (void) rk;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        (*failed)++;
}

/* ---- ceiling --------------------------------------------------------------- */

/* ceiling --dsn D --brokers B --topic T: the backlog's messages, from memory. */
int
cmd_ceiling(int argc, char **argv)
{
    PGconn          *pg = bench_pg(bench_opt_req(argc, argv, "--dsn"));
    const char      *topic = bench_opt_req(argc, argv, "--topic");
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    long             failed = 0;
    PGresult        *r;

    rd_kafka_conf_set_dr_msg_cb(conf, count_dr);
    rd_kafka_conf_set_opaque(conf, &failed);
    rd_kafka_t *rk = bench_producer(bench_opt_req(argc, argv, "--brokers"), 1, conf);
    /* untimed: get the messages into memory first */
    r = select_rows(pg, "SELECT 0::bigint, partition, seq, event_id::text, aggregate_id::text, event_type, payload"
                        " FROM outbox_backlog");
    int n = PQntuples(r);
    /* warm-up: metadata and the idempotent producer id, which outboxd's
     * relays also have before their first batch */
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 0, NULL, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        bench_die("ceiling: no metadata from %s", bench_opt_req(argc, argv, "--brokers"));
    rd_kafka_metadata_destroy(md);
    double t0 = bench_now();
    for (int i = 0; i < n; i++) {
        produce_row(rk, topic, r, i, NULL);
        if (i % 1000 == 0)
            rd_kafka_poll(rk, 0);        /* serve delivery reports as we go, like a real client */
    }
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        bench_die("ceiling: flush timed out");
    double secs = bench_now() - t0;
    if (failed > 0)
        bench_die("ceiling: %ld of %d messages failed", failed, n);
    bench_note("ceiling: %d messages in %.2f s", n, secs);
    bench_emit(json_pack("{s:i, s:f, s:f}", "rows", n, "seconds", secs, "events_per_s", (double) n / secs));
    PQclear(r);
    rd_kafka_destroy(rk);
    PQfinish(pg);
    return 0;
}

/* ---- naive poller ------------------------------------------------------------ */

/* One setInterval tick: the oldest pending rows, one awaited send each, one UPDATE. */
static int
naive_tick(PGconn *pg, rd_kafka_t *rk, const char *topic, const char *limit, long *failed)
{
    const char *params[1] = { limit };
    PGresult   *r = PQexecParams(pg,
                                 "SELECT id, partition, seq, event_id::text, aggregate_id::text, event_type, payload"
                                 " FROM outboxd.outbox WHERE NOT published ORDER BY id LIMIT $1::int",
                                 1, NULL, params, NULL, NULL, 1);
    char        ids[64 * 24] = "{";
    size_t      used = 1;
    int         n;

    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        bench_die("naive select: %s", PQresultErrorMessage(r));
    n = PQntuples(r);
    for (int i = 0; i < n && i < 64; i++) {
        long before = *failed;
        produce_row(rk, topic, r, i, NULL);
        rd_kafka_flush(rk, 10000);       /* `await producer.send(...)` */
        if (*failed == before)
            used += (size_t) snprintf(ids + used, sizeof(ids) - used, "%s%lld", used > 1 ? "," : "",
                                      (long long) ob_be64(PQgetvalue(r, i, COL_ID)));
    }
    PQclear(r);
    snprintf(ids + used, sizeof(ids) - used, "}");
    params[0] = ids;
    r = PQexecParams(pg,
                     "UPDATE outboxd.outbox SET published = true, published_at = now() WHERE id = ANY($1::bigint[])",
                     1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        bench_die("naive update: %s", PQresultErrorMessage(r));
    n = atoi(PQcmdTuples(r));
    PQclear(r);
    return n;
}

/*
 * naive --dsn D --brokers B --topic T --seconds S [--interval-ms 1000] [--limit 10]
 * Ticks on a fixed schedule like setInterval (a slow tick delays the next,
 * never overlaps it) until S seconds have passed.
 */
int
cmd_naive(int argc, char **argv)
{
    PGconn          *pg = bench_pg(bench_opt_req(argc, argv, "--dsn"));
    const char      *topic = bench_opt_req(argc, argv, "--topic");
    double           seconds = bench_opt_double(argc, argv, "--seconds", 20);
    double           interval = bench_opt_double(argc, argv, "--interval-ms", 1000) / 1000.0;
    const char      *limit = bench_opt(argc, argv, "--limit", "10");
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    long             failed = 0, published = 0;
    int              ticks = 0;

    if (atoi(limit) < 1 || atoi(limit) > 64)
        bench_die("naive: --limit must be 1..64");
    rd_kafka_conf_set_dr_msg_cb(conf, count_dr);
    rd_kafka_conf_set_opaque(conf, &failed);
    rd_kafka_t *rk = bench_producer(bench_opt_req(argc, argv, "--brokers"), 0, conf);
    double t0 = bench_now();
    while (bench_now() - t0 < seconds) {
        double due = t0 + ticks * interval;
        if (bench_now() < due)
            bench_sleep(due - bench_now());
        if (bench_now() - t0 >= seconds)
            break;
        published += naive_tick(pg, rk, topic, limit, &failed);
        ticks++;
    }
    double secs = bench_now() - t0;
    bench_note("naive: %ld events in %.1f s (%d ticks)", published, secs, ticks);
    bench_emit(json_pack("{s:I, s:f, s:f, s:i, s:I, s:I}", "published", (json_int_t) published, "seconds", secs,
                         "events_per_s", (double) published / secs, "ticks", ticks, "failed", (json_int_t) failed,
                         "stopped_wall_ms", (json_int_t) ob_wall_ms()));
    rd_kafka_destroy(rk);
    PQfinish(pg);
    return 0;
}
