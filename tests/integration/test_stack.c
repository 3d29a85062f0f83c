/* tests/integration/test_stack.c: migrations and Kafka on the real local stack. */
#include "tests/harness.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

static obh_t h;

static void
setup_plain(void)
{
    obh_init(&h, 0);
}

static void
teardown(void)
{
    obh_cleanup(&h);
}

Test(stack, migrate_applies_once_then_is_a_no_op, .init = setup_plain, .fini = teardown)
{
    const char *args[] = { "migrate", "-c", h.conf, NULL };
    char        out[4096];

    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "outbox: applied 0001_tables") != NULL, "%s", out);
    cr_assert(strstr(out, "outbox: applied 0002_emit") != NULL, "%s", out);
    cr_assert(strstr(out, "outbox: applied 0003_routes") != NULL, "%s", out);
    cr_assert(strstr(out, "orderdb: applied 0001_init") != NULL, "%s", out);
    cr_assert(strstr(out, "ledgerdb: applied 0001_init") != NULL, "%s", out);
    cr_assert(strstr(out, "ledgerdb: applied 0002_apply") != NULL, "%s", out);
    cr_assert(strstr(out, "ledgerdb: applied 0003_poison") != NULL, "%s", out);
    cr_assert(strstr(out, "ledgerdb: applied 0004_traces") != NULL, "%s", out);
    cr_assert(strstr(out, "ledgerdb: applied 0005_apply_set") != NULL, "%s", out);
    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "outbox: up to date (version 3)") != NULL, "%s", out);
    cr_assert(strstr(out, "orderdb: up to date (version 1)") != NULL, "%s", out);
    cr_assert(strstr(out, "ledgerdb: up to date (version 5)") != NULL, "%s", out);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.schema_migrations"), 3);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM public.schema_migrations"), 1);
    cr_assert_eq(obh_scalar(h.orders_dsn,
                            "SELECT count(*) FROM information_schema.tables WHERE (table_schema, table_name) IN "
                            "(('public','orders'),('outboxd','outbox'),('outboxd','outbox_quarantine'),"
                            "('outboxd','relay_slots'))"),
                 4);
    cr_assert_eq(obh_scalar(h.ledger_dsn,
                            "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
                            "('ledger_entries','ledger_orders','ledger_parked','ledger_dead_letter')"),
                 4);
    /* the relay's read path must be a partial index on pending rows */
    cr_assert_eq(obh_scalar(h.orders_dsn,
                            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'outboxd' "
                            "AND indexname = 'outbox_pending' AND indexdef LIKE '%WHERE (NOT published)%'"),
                 1);
}

Test(stack, migrate_reports_an_unreachable_database, .init = setup_plain, .fini = teardown)
{
    char path[256], out[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/bad.conf", h.dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "[orders]\ndsn = postgresql://outboxd:topsecret@127.0.0.1:1/nowhere\n");
    fclose(f);
    const char *args[] = { "migrate", "-c", path, NULL };
    cr_assert_eq(obh_run(args, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, ": cannot connect to postgresql://outboxd:***@127.0.0.1:1/nowhere") != NULL, "%s", out);
    cr_assert(strstr(out, "topsecret") == NULL, "password leaked: %s", out);
}

static void
setup_migrated(void)
{
    obh_init(&h, 1);
}

Test(stack, ledger_entries_are_append_only, .init = setup_migrated, .fini = teardown)
{
    PGconn   *pg = obh_pg(h.ledger_dsn);
    PGresult *r;

    r = PQexec(pg, "INSERT INTO ledger_entries (event_id, order_id, seq, kind, amount, currency) VALUES "
                   "('0190a0a0-0000-7000-8000-000000000001', '0190a0a0-0000-7000-8000-0000000000aa', 1, "
                   "'charge', 10.50, 'USD')");
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    r = PQexec(pg, "UPDATE ledger_entries SET amount = 1");
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    cr_assert(strstr(PQresultErrorMessage(r), "append-only") != NULL, "%s", PQresultErrorMessage(r));
    PQclear(r);
    r = PQexec(pg, "DELETE FROM ledger_entries");
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    r = PQexec(pg, "TRUNCATE ledger_entries");
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    /* a second charge for the same order is refused whatever its event id */
    r = PQexec(pg, "INSERT INTO ledger_entries (event_id, order_id, seq, kind, amount, currency) VALUES "
                   "('0190a0a0-0000-7000-8000-000000000002', '0190a0a0-0000-7000-8000-0000000000aa', 1, "
                   "'charge', 10.50, 'USD')");
    cr_assert_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    PQfinish(pg);
    cr_assert_eq(obh_scalar(h.ledger_dsn, "SELECT count(*) FROM ledger_entries"), 1);
}

/* Creates the test topic, produces one keyed message, reads it back. */
Test(stack, kafka_round_trip_on_a_topic_of_our_own, .init = setup_plain, .fini = teardown)
{
    char             err[512];
    rd_kafka_conf_t *conf;
    const char      *value = "{\"type\":\"order.created\",\"seq\":1}";
    int64_t          deadline;

    h.partitions = 3;
    obh_kafka_create_topic(&h, 0);
    obh_kafka_produce(&h, 1, "order-1", value, strlen(value), NULL);

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:59092", err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", h.tag, err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tp, h.topic, 1)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(c, tp), 0);
    rd_kafka_topic_partition_list_destroy(tp);
    rd_kafka_message_t *m = NULL;
    deadline = ob_now_ms() + 15000;
    while (ob_now_ms() < deadline) {
        m = rd_kafka_consumer_poll(c, 200);
        if (m != NULL && m->err == 0)
            break;
        if (m != NULL)
            rd_kafka_message_destroy(m);
        m = NULL;
    }
    cr_assert_not_null(m, "message not read back within 15 s");
    cr_assert_eq(m->len, strlen(value));
    cr_assert_eq(memcmp(m->payload, value, m->len), 0);
    cr_assert_eq(m->key_len, 7);
    cr_assert_eq(m->partition, 1);
    rd_kafka_message_destroy(m);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
}
