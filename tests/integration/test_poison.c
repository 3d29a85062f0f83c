/*
 * tests/integration/test_poison.c: records the ledger consumer cannot book,
 * errors it must not mistake for them, and Kafka refusing it for good.
 * Real records are produced to a real topic; the real binary consumes them.
 */
#include "tests/integration/fixture.h"
#include "common/event.h"
#include "common/murmur2.h"
#include "common/util.h"
#include "common/uuid.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* An event value with the type given as raw bytes (it may hold NUL or bytes that are not UTF-8). */
static msgpack_sbuffer
pack_event(const char *type, size_t type_len, const char *order, int seq, const char *amount)
{
    msgpack_sbuffer sb;
    msgpack_packer  pk;
    ob_uuid_t       u;
    char            id[37], ts[32];

    cr_assert_eq(ob_uuid_v7(&u), 0);
    ob_uuid_format(&u, id);
    ob_event_timestamp(ob_wall_ms(), ts);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    pack_str(&pk, "id", 2);
    pack_str(&pk, id, 36);
    pack_str(&pk, "type", 4);
    pack_str(&pk, type, type_len);
    pack_str(&pk, "aggregate_type", 14);
    pack_str(&pk, "order", 5);
    pack_str(&pk, "aggregate_id", 12);
    pack_str(&pk, order, 36);
    pack_str(&pk, "seq", 3);
    msgpack_pack_int32(&pk, seq);
    pack_str(&pk, "occurred_at", 11);
    pack_str(&pk, ts, strlen(ts));
    pack_str(&pk, "data", 4);
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "customerId", 10);
    pack_str(&pk, "c-poison", 8);
    pack_str(&pk, "amount", 6);
    pack_str(&pk, amount, strlen(amount));
    pack_str(&pk, "currency", 8);
    pack_str(&pk, "USD", 3);
    pack_str(&pk, "status", 6);
    pack_str(&pk, seq == 1 ? "created" : "cancelled", seq == 1 ? 7 : 9);
    return sb;
}

/* Produces the event to its order's partition; the value's hex goes to hex (may be NULL). */
static void
produce_raw(const char *type, size_t type_len, const char *order, int seq, const char *amount, char *hex)
{
    msgpack_sbuffer sb = pack_event(type, type_len, order, seq, amount);

    obh_kafka_produce(&h, ob_partition_for(order, 36, h.partitions), order, sb.data, sb.size, "application/msgpack");
    for (size_t i = 0; hex != NULL && i < sb.size; i++)
        sprintf(hex + 2 * i, "%02x", (unsigned char) sb.data[i]);
    msgpack_sbuffer_destroy(&sb);
}

static void
produce(const char *type, const char *order, int seq, const char *amount)
{
    produce_raw(type, strlen(type), order, seq, amount, NULL);
}

/* Waits until the ledger's sql reaches want. */
static void
wait_scalar(const char *sql, long long want, int timeout_ms)
{
    obh_wait_scalar(&h, h.ledger_dsn, sql, want, timeout_ms);
}

static long long
dl_count(const char *where)
{
    char sql[1024];

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM ledger_dead_letter WHERE %s", where);
    return obh_scalar(h.ledger_dsn, sql);
}

static int
consumer_caught_up(obh_t *hh, void *arg)
{
    ob_shm_slot_t s;

    (void) arg;
    return obh_worker(hh, OB_KIND_CONSUMER, 0, &s) >= 0 && s.counters[OB_CTR_CONS_LAG] == 0 &&
           s.counters[OB_CTR_CONS_STALLED] == 0;
}

static int
replay(const char *a1, const char *a2, const char *a3, char *out, size_t len)
{
    const char *args[] = { "replay", "-c", h.conf, "--dead-letters", a1, a2, a3, NULL };

    return obh_run(args, out, len);
}

/* A rule the ledger enforces at COMMIT, which no per-event handler can catch:
 * the batch fails as a whole, so only applying one event per transaction
 * finds the one to blame. */
static const char *deferred_rule =
    "CREATE FUNCTION test_no_1313() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " IF NEW.amount = 13.13 THEN RAISE EXCEPTION 'amount 13.13 refused at commit' USING ERRCODE = 'check_violation';"
    " END IF; RETURN NULL; END $$;"
    "CREATE CONSTRAINT TRIGGER test_no_1313 AFTER INSERT ON ledger_entries DEFERRABLE INITIALLY DEFERRED"
    " FOR EACH ROW EXECUTE FUNCTION test_no_1313()";

Test(poison, each_bad_record_is_dead_lettered_with_the_record_the_rest_booked_and_a_fixed_one_replays,
     .init = setup, .fini = teardown, .timeout = 180)
{
    char a[37], b[37], c[37], d[37], e[37], f[37], g[37], hh[37], k[37], j[37];
    char hex_utf8[1024], sql[2048], out[8192];

    obh_kafka_create_topic(&h, 0);
    obh_sql(h.ledger_dsn, deferred_rule);
    char *ids[] = { a, b, c, d, e, f, g, hh, k, j };
    for (size_t i = 0; i < OB_ARRAY_LEN(ids); i++)
        obh_new_uuid(ids[i]);
    produce(OB_EVENT_CREATED, a, 1, "10.00");
    produce_raw("order.cancel\xff\xfeled", 17, a, 2, "10.00", hex_utf8);   /* type not UTF-8 */
    produce(OB_EVENT_CANCELLED, b, 2, "99999999999999999999.99");          /* parked, amount past numeric(20,4) */
    produce(OB_EVENT_CREATED, b, 1, "20.00");
    produce(OB_EVENT_CREATED, c, 1, "12345678901234567.00");               /* booked, amount past numeric(20,4) */
    produce(OB_EVENT_CREATED, d, 1, "13.13");                              /* refused at COMMIT */
    produce(OB_EVENT_CANCELLED, d, 2, "13.13");                            /* parked behind it */
    produce_raw("order.created\0junk", 18, e, 1, "4.00", NULL);             /* NUL smuggled into the type */
    produce(OB_EVENT_CREATED, k, 3, "6.00");                               /* a create is always seq 1 */
    produce(OB_EVENT_CREATED, f, 1, "5.00");
    produce(OB_EVENT_CREATED, g, 1, "7.50");
    produce(OB_EVENT_CREATED, hh, 1, "3.25");
    produce(OB_EVENT_CANCELLED, hh, 2, "3.25");
    start("[workers]\nhttp = 0\nrelays = 0\nconsumers = 1\n");

    /* every good event booked: a, b, f, g, and hh's charge and credit note */
    wait_scalar("SELECT count(*) FROM ledger_entries", 6, 30000);
    wait_scalar("SELECT count(*) FROM ledger_dead_letter", 6, 10000);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT sum(amount) * 100 FROM ledger_entries"), 4250);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_parked"), 1);
    /* d's charge failed the whole batch at COMMIT: only one event per transaction could pin it */
    cr_assert_gt(obh_log_count(&h, "applying it one event at a time"), 0, "no per-event fallback; log %s", h.log);
    /* each dead letter holds its record: value, key, headers, coordinates */
    cr_assert_eq(dl_count("kafka_value IS NOT NULL AND kafka_key IS NOT NULL AND kafka_topic <> '' AND kafka_offset >= 0"
                          " AND kafka_header_keys[1] = convert_to('content-type', 'UTF8')"
                          " AND kafka_header_values[1] = convert_to('application/msgpack', 'UTF8')"),
                 6);
    snprintf(sql, sizeof(sql), "encode(kafka_value, 'hex') = '%s' AND kafka_key = convert_to('%s', 'UTF8') "
                               "AND error LIKE '%%not valid UTF-8%%'", hex_utf8, a);
    cr_assert_eq(dl_count(sql), 1, "the non-UTF-8 type; log %s", h.log);
    snprintf(sql, sizeof(sql), "kafka_key = convert_to('%s', 'UTF8') AND error LIKE '%%amount%%'", b);
    cr_assert_eq(dl_count(sql), 1, "b's oversized amount");
    snprintf(sql, sizeof(sql), "kafka_key = convert_to('%s', 'UTF8') AND error LIKE '%%amount%%'", c);
    cr_assert_eq(dl_count(sql), 1, "c's oversized amount");
    snprintf(sql, sizeof(sql), "kafka_key = convert_to('%s', 'UTF8') AND sqlstate = '23514'"
                               " AND error LIKE '%%refused at commit%%'", d);
    cr_assert_eq(dl_count(sql), 1, "d's charge refused at commit");
    snprintf(sql, sizeof(sql), "kafka_key = convert_to('%s', 'UTF8') AND error LIKE '%%NUL%%'", e);
    cr_assert_eq(dl_count(sql), 1, "e's NUL in the type");
    snprintf(sql, sizeof(sql), "kafka_key = convert_to('%s', 'UTF8') AND error LIKE '%%seq%%'", k);
    cr_assert_eq(dl_count(sql), 1, "k's create with seq 3");

    /* and the consumer moved on */
    produce(OB_EVENT_CREATED, j, 1, "1.00");
    wait_scalar("SELECT count(*) FROM ledger_entries", 7, 20000);
    cr_assert(obh_poll(consumer_caught_up, &h, NULL, obh_ms(10000)), "consumer lag or stalled never cleared");
    ob_shm_slot_t s;
    cr_assert_geq(obh_worker(&h, OB_KIND_CONSUMER, 0, &s), 0);
    cr_assert_eq(s.counters[OB_CTR_CONS_DEAD_LETTERS], 6);

    /* the rule is fixed; a dry run changes nothing and says what would happen */
    obh_sql(h.ledger_dsn, "DROP TRIGGER test_no_1313 ON ledger_entries");
    cr_assert_eq(replay("--all", "--dry-run", NULL, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "dry run (nothing changed): 1 dead letter(s) applied, 5 still fail") != NULL, "%s", out);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter"), 6);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_entries"), 7);
    /* one by id: d's charge books, and its parked cancel with it */
    snprintf(sql, sizeof(sql),
             "SELECT id FROM ledger_dead_letter WHERE kafka_key = convert_to('%s', 'UTF8')", d);
    char id[32];
    snprintf(id, sizeof(id), "%lld", obh_scalar(h.ledger_dsn, sql));
    cr_assert_eq(replay("--id", id, NULL, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "1 dead letter(s) applied, 0 still fail") != NULL, "%s", out);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter"), 5);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_parked"), 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM ledger_entries WHERE order_id = '%s' AND "
                               "(kind = 'charge' AND seq = 1 OR kind = 'credit_note' AND seq = 2)", d);
    cr_assert_eq(obh_scalar(h.ledger_dsn, sql), 2);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT sum(amount) * 100 FROM ledger_entries"), 4350);
    /* the rest still fail: kept, with their new error and a replay count */
    cr_assert_eq(replay("--all", NULL, NULL, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "0 dead letter(s) applied, 5 still fail") != NULL, "%s", out);
    cr_assert_eq(dl_count("replays = 1 AND last_replay_at IS NOT NULL AND error <> ''"), 5);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_entries"), 9);
    cr_log_info("poison: 6 dead-lettered with their records, 7 booked (42.50 + 1.00), replay booked 2 more");
}

/* Fails every insert into the ledger with the SQLSTATE in test_fail_with, while a row is there. */
static const char *failing_rule =
    "CREATE TABLE test_fail_with (code text);"
    "CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE c text; BEGIN"
    " SELECT code INTO c FROM test_fail_with LIMIT 1;"
    " IF c IS NOT NULL THEN RAISE EXCEPTION 'injected failure %', c USING ERRCODE = c; END IF;"
    " RETURN NEW; END $$;"
    "CREATE TRIGGER test_fail BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION test_fail()";

static int
log_has(obh_t *hh, void *arg)
{
    return obh_log_count(hh, arg) > 0;
}

/* 1 when status --json and /metrics both say consumer 0 is stalled, 0 when both say it is not, -1 otherwise. */
static int
stalled_everywhere(obh_t *hh)
{
    static char body[1 << 18];
    char        out[65536];
    const char *args[] = { "status", "--json", "-c", hh->conf, NULL };
    int         json = -1, metric = -1;

    if (obh_run(args, out, sizeof(out)) == 0) {
        json_t *j = json_loads(out, 0, NULL), *w;
        size_t  i;
        json_array_foreach(json_object_get(j, "workers"), i, w)
            if (strcmp(json_string_value(json_object_get(w, "kind")), "consumer") == 0)
                json = json_is_true(json_object_get(json_object_get(w, "counters"), "stalled"));
        json_decref(j);
    }
    if (obh_http(hh->admin_port, "GET", "/metrics", NULL, NULL, body, sizeof(body), NULL, 0) == 200)
        metric = strstr(body, "\noutboxd_consumer_stalled{worker=\"0\"} 1\n") != NULL   ? 1
                 : strstr(body, "\noutboxd_consumer_stalled{worker=\"0\"} 0\n") != NULL ? 0
                                                                                       : -1;
    return json == metric ? json : -1;
}

static int
is_stalled(obh_t *hh, void *arg)
{
    (void) arg;
    return stalled_everywhere(hh) == 1;
}

static int
is_not_stalled(obh_t *hh, void *arg)
{
    (void) arg;
    return stalled_everywhere(hh) == 0;
}

Test(poison, transient_errors_retry_the_batch_never_dead_letter_and_a_stuck_consumer_says_stalled, .init = setup,
     .fini = teardown, .timeout = 120)
{
    static const char *codes[] = { "40001", "40P01", "53100", "58030" };
    char               order[3][37], sql[256], needle[64];

    obh_kafka_create_topic(&h, 0);
    obh_sql(h.ledger_dsn, failing_rule);
    obh_sql(h.ledger_dsn, "INSERT INTO test_fail_with VALUES ('40001')");
    for (int i = 0; i < 3; i++) {
        obh_new_uuid(order[i]);
        produce(OB_EVENT_CREATED, order[i], 1, "2.00");
    }
    start_http("[ledger]\nstall_after = 1s\n[workers]\nhttp = 1\nrelays = 0\nconsumers = 1\n");
    for (size_t i = 0; i < OB_ARRAY_LEN(codes); i++) {
        snprintf(sql, sizeof(sql), "UPDATE test_fail_with SET code = '%s'", codes[i]);
        obh_sql(h.ledger_dsn, sql);
        snprintf(needle, sizeof(needle), "SQLSTATE %s", codes[i]);
        cr_assert(obh_poll(log_has, &h, needle, obh_ms(15000)), "no retry after %s; log %s", codes[i], h.log);
        cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter"), 0, "%s dead-lettered",
                     codes[i]);
        cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_entries"), 0);
    }
    cr_assert(obh_poll(is_stalled, &h, NULL, obh_ms(10000)), "a consumer stuck on a batch never said stalled");
    /* transient: the batch is retried whole, never split to find someone to blame */
    cr_assert_eq(obh_log_count(&h, "one event at a time"), 0, "log %s", h.log);
    const char *st[] = { "status", "-c", h.conf, NULL };
    char        text[16384];
    cr_assert_eq(obh_run(st, text, sizeof(text)), 0);
    cr_assert(strstr(text, "STALLED: nothing applied for") != NULL, "%s", text);
    obh_sql(h.ledger_dsn, "DELETE FROM test_fail_with");
    wait_scalar("SELECT count(*) FROM ledger_entries", 3, 20000);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_dead_letter"), 0);
    cr_assert(obh_poll(is_not_stalled, &h, NULL, obh_ms(10000)), "stalled never cleared after the batch applied");
}

/* ---- item 13: fatal Kafka errors ---- */

typedef struct {
    rd_kafka_t *rk;
} intruder_t;

static int
consumer_fatal(obh_t *hh, void *arg)
{
    intruder_t   *in = arg;
    ob_shm_slot_t s;

    rd_kafka_message_t *m = rd_kafka_consumer_poll(in->rk, 10);
    if (m != NULL)
        rd_kafka_message_destroy(m);
    for (int i = 0; i < OB_SHM_SLOTS; i++)
        if (ob_shm_slot_snapshot(&hh->shm->map->slots[i], &s) == 0 && s.kind == OB_KIND_CONSUMER && s.index == 0 &&
            s.state == OB_SLOT_FATAL)
            return 1;
    return 0;
}

static int
consumer_assigned(obh_t *hh, void *arg)
{
    ob_shm_slot_t s;

    (void) arg;
    return obh_worker(hh, OB_KIND_CONSUMER, 0, &s) >= 0 && s.counters[OB_CTR_CONS_ASSIGNED] > 0;
}

Test(poison, a_fenced_consumer_exits_fatal_and_says_which_setting_to_change, .init = setup, .fini = teardown,
     .timeout = 120)
{
    char             instance[160], group[128], err[512];
    intruder_t       in;
    ob_shm_slot_t    s;

    obh_kafka_create_topic(&h, 0);
    start("[workers]\nhttp = 0\nrelays = 0\nconsumers = 1\n");
    cr_assert(obh_poll(consumer_assigned, &h, NULL, obh_ms(30000)), "consumer never assigned; log %s", h.log);
    /* another host with the same [supervisor] name: the same static member id */
    snprintf(instance, sizeof(instance), "outboxd-%s-consumer-0", h.name);
    snprintf(group, sizeof(group), "ledger-%s", h.tag);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", STACK_KAFKA, err, sizeof(err)), RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err)), RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "group.instance.id", instance, err, sizeof(err)), RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(conf, "session.timeout.ms", "6000", err, sizeof(err)), RD_KAFKA_CONF_OK);
    in.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(in.rk, "%s", err);
    rd_kafka_poll_set_consumer(in.rk);
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, h.topic, RD_KAFKA_PARTITION_UA);
    cr_assert_eq(rd_kafka_subscribe(in.rk, t), 0);
    rd_kafka_topic_partition_list_destroy(t);
    int fatal = obh_poll(consumer_fatal, &h, &in, obh_ms(30000));
    rd_kafka_destroy_flags(in.rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    cr_assert(fatal, "the fenced consumer never went fatal; log %s", h.log);
    for (int i = 0; i < OB_SHM_SLOTS; i++)
        if (ob_shm_slot_snapshot(&h.shm->map->slots[i], &s) == 0 && s.kind == OB_KIND_CONSUMER && s.index == 0)
            break;
    cr_assert(strstr(s.reason, "[supervisor] name") != NULL, "reason: %s", s.reason);
    cr_assert_gt(obh_log_count(&h, "give each host its own [supervisor] name"), 0, "log %s", h.log);
    cr_log_info("fenced consumer: %s", s.reason);
}
