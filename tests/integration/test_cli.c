/*
 * tests/integration/test_cli.c: the command line as an operator and a
 * package meet it: --version, help on every command, usage errors, the
 * generated man pages, and the refusal to run against an older schema.
 */
#include "tests/integration/fixture.h"
#include "common/cfg.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The repository's VERSION, the one place the version lives. */
static void
version_file(char *out, size_t outlen)
{
    FILE *f = fopen("VERSION", "r");

    cr_assert_not_null(f, "VERSION: run tests from the repository root");
    cr_assert_not_null(fgets(out, (int) outlen, f));
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

Test(cli, version_names_the_release_and_the_linked_libraries)
{
    char        out[4096], want[64], ver[32];
    const char *args[] = { "--version", NULL };

    version_file(ver, sizeof(ver));
    cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "%s", out);
    snprintf(want, sizeof(want), "outboxd %s\n", ver);
    cr_assert(strncmp(out, want, strlen(want)) == 0, "want \"%s\" first, got:\n%s", want, out);
    cr_assert(strstr(out, "\nlibrdkafka 2.") != NULL && strstr(out, "\nlibpq 1") != NULL &&
              strstr(out, "\ncivetweb 1.") != NULL, "%s", out);
}

Test(cli, help_and_dash_dash_help_exit_0_on_every_command)
{
    static const char *cmds[] = { "status", "migrate", "reconcile", "replay", "config-reference", "manpage", "help" };
    char               out[8192], want[64];

    for (size_t i = 0; i < OB_ARRAY_LEN(cmds); i++) {
        const char *help[] = { "help", cmds[i], NULL };
        const char *dash[] = { cmds[i], "--help", NULL };
        snprintf(want, sizeof(want), "usage: outboxd %s", cmds[i]);
        cr_assert_eq(obh_run(help, out, sizeof(out)), 0, "help %s: %s", cmds[i], out);
        cr_assert(strstr(out, want) != NULL, "help %s: %s", cmds[i], out);
        cr_assert_eq(obh_run(dash, out, sizeof(out)), 0, "%s --help: %s", cmds[i], out);
        cr_assert(strstr(out, want) != NULL, "%s --help: %s", cmds[i], out);
    }
    const char *all[] = { "help", NULL };
    const char *dash[] = { "--help", NULL };
    cr_assert_eq(obh_run(all, out, sizeof(out)), 0, "%s", out);
    for (size_t i = 0; i < OB_ARRAY_LEN(cmds); i++) {
        snprintf(want, sizeof(want), "outboxd %s", cmds[i]);
        cr_assert(strstr(out, want) != NULL, "help lists no %s: %s", cmds[i], out);
    }
    cr_assert_eq(obh_run(dash, out, sizeof(out)), 0, "%s", out);
    /* stars inside a code span are text: -t shows secrets as *** */
    cr_assert(strstr(out, "(secrets as ***)") != NULL, "--help lost the stars of `***`: %s", out);
}

Test(cli, usage_errors_exit_2_with_a_sentence)
{
    static const char *const cases[][4] = {
        { "help", "bogus", NULL }, { "bogus", NULL }, { "status", "--bogus", NULL },
        { "manpage", "9", NULL },  { "help", "a", "b", NULL }, { "--relays", "x", NULL },
        { "config-reference", "extra", NULL }, { "help", "", NULL },
    };
    char out[8192];

    for (size_t i = 0; i < OB_ARRAY_LEN(cases); i++) {
        cr_assert_eq(obh_run(cases[i], out, sizeof(out)), 2, "%s %s: %s", cases[i][0], cases[i][1], out);
        cr_assert(strlen(out) > 10, "%s %s said nothing", cases[i][0], cases[i][1]);
    }
}

/* outboxd.conf(5) comes from the key table: every key is a term of the page. */
Test(cli, man_pages_carry_every_key_and_every_command)
{
    static char out[1 << 18];
    const char *five[] = { "manpage", "5", NULL };
    const char *eight[] = { "manpage", "8", NULL };
    char        term[128];

    cr_assert_eq(obh_run(five, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, ".TH \"outboxd.conf\" \"5\"") != NULL, "%.300s", out);
    for (size_t i = 0; i < ob_cfg_key_count(); i++) {
        ob_cfg_key_info_t k;
        ob_cfg_key_info(i, &k);
        snprintf(term, sizeof(term), ".TP\n\\fB%s\\fR", k.key);
        cr_assert(strstr(out, term) != NULL, "outboxd.conf(5) lacks [%s] %s", k.section, k.key);
    }
    cr_assert(strstr(out, ".SH \"[routes]\"") != NULL, "no [routes] section");
    cr_assert_eq(obh_run(eight, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, ".TH \"outboxd\" \"8\"") != NULL && strstr(out, ".SS \"replay\"") != NULL &&
              strstr(out, "\\-\\-dead\\-letters") != NULL && strstr(out, ".SH \"SIGNALS\"") != NULL, "%.600s", out);
}

/* Takes away the newest applied version of a stream; returns it. */
static int
drop_newest(const char *dsn, const char *table)
{
    char sql[256];
    int  v;

    snprintf(sql, sizeof(sql), "SELECT max(version) FROM %s", table);
    v = (int) obh_scalar(dsn, sql);
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE version = %d", table, v);
    obh_sql(dsn, sql);
    return v;
}

static int
fatal_with(int kind, const char *needle, char *reason, size_t len)
{
    ob_shm_slot_t s;

    for (int i = 0; i < OB_SHM_SLOTS; i++)
        if (ob_shm_slot_snapshot(&h.shm->map->slots[i], &s) == 0 && s.kind == kind && s.state == OB_SLOT_FATAL) {
            ob_strlcpy(reason, s.reason, len);
            return strstr(s.reason, needle) != NULL;
        }
    return 0;
}

/*
 * An upgrade restarts the unit before anyone runs migrate: the new binary
 * must refuse an older schema at start, and a worker that reconnects to a
 * database rolled back under it must stop rather than run against it.
 */
Test(cli, an_older_schema_is_refused_at_start_and_by_workers, .init = setup, .fini = teardown, .timeout = 120)
{
    const char *extra = "[workers]\nhttp = 0\nrelays = 1\nconsumers = 1\n";
    char        out[8192], reason[256] = "", sql[256];
    const char *run[] = { "-f", "-c", h.conf, NULL };

    obh_write_conf(&h, extra);
    int v = drop_newest(h.orders_dsn, "outboxd.schema_migrations");
    cr_assert_eq(obh_run(run, out, sizeof(out)), 2, "%s", out);
    cr_assert(strstr(out, "refusing to start") != NULL && strstr(out, "outbox schema") != NULL &&
              strstr(out, "run `outboxd migrate`") != NULL, "%s", out);
    snprintf(sql, sizeof(sql), "INSERT INTO outboxd.schema_migrations (version, name) VALUES (%d, 'back')", v);
    obh_sql(h.orders_dsn, sql);

    start(extra);
    ob_shm_slot_t s;
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_RELAY, 0, 0, obh_ms(20000)), 0, "relay not up; %s", h.log);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_CONSUMER, 0, 0, obh_ms(20000)), 0, "consumer not up; %s", h.log);
    drop_newest(h.orders_dsn, "outboxd.schema_migrations");
    drop_newest(h.ledger_dsn, "public.schema_migrations");
    cr_assert_geq(obh_worker(&h, OB_KIND_RELAY, 0, &s), 0);
    kill(s.pid, SIGKILL);
    cr_assert_geq(obh_worker(&h, OB_KIND_CONSUMER, 0, &s), 0);
    kill(s.pid, SIGKILL);
    int relay = 0, consumer = 0;
    for (int64_t t0 = ob_now_ms(); ob_now_ms() - t0 < obh_ms(20000) && !(relay && consumer); ob_sleep_ms(20)) {
        relay = relay || fatal_with(OB_KIND_RELAY, "outbox schema", reason, sizeof(reason));
        consumer = consumer || fatal_with(OB_KIND_CONSUMER, "ledgerdb schema", reason, sizeof(reason));
    }
    cr_assert(relay, "relay not fatal on an older outbox schema (last reason: %s); log %s", reason, h.log);
    cr_assert(consumer, "consumer not fatal on an older ledger schema (last reason: %s); log %s", reason, h.log);
    /* the alert rules' worker-fatal alert reads this series */
    static char body[1 << 18];
    cr_assert_eq(obh_http(h.admin_port, "GET", "/metrics", NULL, NULL, body, sizeof(body), NULL, 0), 200);
    cr_assert(strstr(body, "outboxd_worker_fatal{kind=\"relay\",worker=\"0\"} 1\n") != NULL &&
              strstr(body, "outboxd_worker_fatal{kind=\"consumer\",worker=\"0\"} 1\n") != NULL, "%.3000s", body);
}
