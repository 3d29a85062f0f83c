/*
 * tests/integration/test_roles.c: outboxd run with least privilege.
 *
 * Three roles made for the test (names carry its tag: roles are cluster
 * wide, and tests must not meet each other's; HTTP's and the relay's on the
 * orders cluster, the ledger's on the ledger cluster), granted exactly what
 * docs/least-privilege.sql says, none a superuser. `outboxd migrate`
 * (as the owner) then says they have what they need, a revoked privilege
 * is named with the GRANT that fixes it, and the real binary takes an order
 * through to the ledger on those roles alone.
 */
#include "tests/integration/fixture.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_ADMIN "postgresql://outboxd@127.0.0.1:55433/"

static char role[3][64];      /* http, relay, ledger */
static char owner_orders[256], owner_ledger[256];

static void
roles_sql(const char *admin, const char *fmt, const char *name)
{
    char sql[256];

    snprintf(sql, sizeof(sql), fmt, name);
    obh_sql(admin, sql);
}

/* Runs the @db part of docs/least-privilege.sql against dsn with the test's role names. */
static void
apply_doc(const char *section, const char *dsn)
{
    FILE *f = fopen("docs/least-privilege.sql", "r");
    char  line[512], out[1024];
    int   in = 0;

    cr_assert_not_null(f, "docs/least-privilege.sql (tests run from the repository root)");
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "-- @", 4) == 0)
            in = strncmp(line + 4, section, strlen(section)) == 0;
        if (!in || strncmp(line, "GRANT", 5) != 0)
            continue;
        size_t n = 0;
        for (const char *p = line; *p && *p != '\n' && n + 64 < sizeof(out); p++) {
            const char *names[3] = { ":\"http\"", ":\"relay\"", ":\"ledger\"" };
            int         hit = -1;
            for (int i = 0; i < 3; i++)
                if (strncmp(p, names[i], strlen(names[i])) == 0)
                    hit = i;
            if (hit < 0) {
                out[n++] = *p;
                continue;
            }
            n += (size_t) snprintf(out + n, sizeof(out) - n, "\"%s\"", role[hit]);
            p += strlen(names[hit]) - 1;
        }
        out[n] = '\0';
        obh_sql(dsn, out);
    }
    fclose(f);
}

static void
roles_setup(void)
{
    const char *kinds[3] = { "http", "relay", "ledger" };

    setup();
    for (int i = 0; i < 3; i++) {
        snprintf(role[i], sizeof(role[i]), "ob_%s_%s", h.tag, kinds[i]);
        roles_sql(i == 2 ? LEDGER_ADMIN "postgres" : STACK_ORDERS "postgres", "CREATE ROLE \"%s\" LOGIN", role[i]);
    }
    apply_doc("orderdb", h.orders_dsn);
    apply_doc("ledgerdb", h.ledger_dsn);
    ob_strlcpy(owner_orders, h.orders_dsn, sizeof(owner_orders));
    ob_strlcpy(owner_ledger, h.ledger_dsn, sizeof(owner_ledger));
}

static void
roles_teardown(void)
{
    /* the databases go first: then nothing depends on the roles any more */
    ob_strlcpy(h.orders_dsn, owner_orders, sizeof(h.orders_dsn));
    ob_strlcpy(h.ledger_dsn, owner_ledger, sizeof(h.ledger_dsn));
    teardown();
    for (int i = 0; i < 3; i++)
        if (role[i][0] != '\0')
            roles_sql(i == 2 ? LEDGER_ADMIN "postgres" : STACK_ORDERS "postgres", "DROP ROLE IF EXISTS \"%s\"", role[i]);
}

/* The config with each worker kind on its own role. */
static void
write_role_conf(const char *extra)
{
    char relay_conf[1024];

    snprintf(h.orders_dsn, sizeof(h.orders_dsn), "postgresql://%s@127.0.0.1:55432/%s", role[0], h.orders_db);
    snprintf(h.ledger_dsn, sizeof(h.ledger_dsn), "postgresql://%s@127.0.0.1:55433/%s", role[2], h.ledger_db);
    snprintf(relay_conf, sizeof(relay_conf), "[relay]\ndsn = postgresql://%s@127.0.0.1:55432/%s\n%s", role[1],
             h.orders_db, extra);
    obh_write_conf(&h, relay_conf);
    ob_strlcpy(h.orders_dsn, owner_orders, sizeof(h.orders_dsn));
    ob_strlcpy(h.ledger_dsn, owner_ledger, sizeof(h.ledger_dsn));
}

static int
migrate(char *out, size_t outlen)
{
    const char *args[] = { "migrate", "-c", h.conf, "--orders-dsn", owner_orders, "--ledger-dsn", owner_ledger, NULL };

    return obh_run(args, out, outlen);
}

static int
ledger_has(obh_t *hh, void *arg)
{
    return obh_scalar(hh->ledger_dsn, "SELECT count(*) FROM ledger_entries") == *(int *) arg;
}

Test(roles, least_privilege_roles_are_checked_by_migrate_and_run_the_pipeline, .init = roles_setup,
     .fini = roles_teardown, .timeout = 120)
{
    char out[8192], resp[1024], path[128];
    int  two = 2;

    write_role_conf("[workers]\nhttp = 1\nrelays = 1\nconsumers = 1\n");
    int st = migrate(out, sizeof(out));
    cr_assert_eq(st, 0, "migrate with the documented grants: %d\n%s", st, out);
    for (int i = 0; i < 3; i++) {
        char want[128];
        snprintf(want, sizeof(want), "role %s has what it needs", role[i]);
        cr_assert(strstr(out, want) != NULL, "%s\n%s", want, out);
    }
    /* one privilege less: named, with the statement that gives it back */
    roles_sql(owner_orders, "REVOKE UPDATE ON outboxd.outbox FROM \"%s\"", role[1]);
    st = migrate(out, sizeof(out));
    cr_assert_eq(st, 1, "migrate with a privilege missing: %d\n%s", st, out);
    char want[256];
    snprintf(want, sizeof(want), "role %s lacks UPDATE on outboxd.outbox;", role[1]);
    cr_assert(strstr(out, want) != NULL, "%s", out);
    snprintf(want, sizeof(want), "GRANT UPDATE ON outboxd.outbox TO %s;", role[1]);
    cr_assert(strstr(out, want) != NULL, "%s", out);
    cr_assert(strstr(out, "1 thing(s) the roles above need are missing") != NULL, "%s", out);
    /* mode wal needs more of the relay's role, and says so */
    write_role_conf("mode = wal\n[workers]\nhttp = 1\nrelays = 1\nconsumers = 1\n");
    migrate(out, sizeof(out));
    snprintf(want, sizeof(want), "ALTER ROLE %s REPLICATION;", role[1]);
    cr_assert(strstr(out, want) != NULL, "%s", out);
    snprintf(want, sizeof(want), "ALTER TABLE outboxd.outbox OWNER TO %s;", role[1]);
    cr_assert(strstr(out, want) != NULL, "%s", out);

    /* with the documented grants back, the pipeline runs on the three roles */
    roles_sql(owner_orders, "GRANT UPDATE ON outboxd.outbox TO \"%s\"", role[1]);
    write_role_conf("[workers]\nhttp = 1\nrelays = 1\nconsumers = 1\n");
    obh_start(&h, NULL);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_HTTP, 0, 0, obh_ms(10000)), 0, "log %s", h.log);
    st = obh_http(h.orders_port, "POST", "/orders", "Idempotency-Key: roles-1\r\n",
                  "{\"customerId\":\"c\",\"amount\":\"12.50\",\"currency\":\"EUR\"}", resp, sizeof(resp), NULL, 0);
    cr_assert_eq(st, 201, "%d %s", st, resp);
    json_t *j = json_loads(resp, 0, NULL);
    snprintf(path, sizeof(path), "/orders/%s/cancel", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    cr_assert_eq(obh_http(h.orders_port, "POST", path, NULL, NULL, resp, sizeof(resp), NULL, 0), 200, "%s", resp);
    cr_assert(obh_poll(ledger_has, &h, &two, obh_ms(30000)), "charge and credit note not booked; log %s", h.log);
    cr_assert_eq(obh_scalar(h.orders_dsn, "SELECT count(*) FROM outboxd.outbox WHERE NOT published"), 0);
    cr_assert_eq(obh_log_count(&h, "permission denied"), 0, "log %s", h.log);
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(DISTINCT usename) FROM pg_stat_activity WHERE datname = '%s' AND usename"
                               " LIKE 'ob_%%'", h.orders_db);
    cr_assert_eq(obh_scalar(STACK_ORDERS "postgres", sql), 2, "HTTP and relay on their own roles");
}
