/*
 * tests/harness/sql.c: SQL helpers on the stack's PostgreSQL clusters. Each
 * call opens its own connection, so a helper never inherits a session a
 * test or a fault left in a strange state.
 */
#include "tests/harness.h"
#include "tests/harness/harness_int.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>


int
obh_orders_ha(void)
{
    const char *hosts = getenv("OB_TEST_ORDERS_HOSTS");

    return hosts != NULL && hosts[0] != '\0';
}

void
obh_orders_dsn(char *out, size_t outlen, const char *db)
{
    /* connect_timeout: a frozen host (SIGSTOP) would hold a connect for ever */
    if (obh_orders_ha())
        snprintf(out, outlen, "postgresql://outboxd@%s/%s?target_session_attrs=read-write&connect_timeout=2",
                 getenv("OB_TEST_ORDERS_HOSTS"), db);
    else
        snprintf(out, outlen, STACK_ORDERS "%s", db);
}

PGconn *
obh_pg(const char *dsn)
{
    PGconn *pg = PQconnectdb(dsn);

    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "connect %s: %s", dsn, PQerrorMessage(pg));
    return pg;
}

void
obh_sql(const char *dsn, const char *sql)
{
    PGconn   *pg = obh_pg(dsn);
    PGresult *r = PQexec(pg, sql);

    cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
              PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);
}

long long
obh_scalar(const char *dsn, const char *sql)
{
    PGconn   *pg = obh_pg(dsn);
    PGresult *r = PQexec(pg, sql);
    long long v;

    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    cr_assert_gt(PQntuples(r), 0, "%s: no rows", sql);
    v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return v;
}


typedef struct {
    const char *dsn, *sql;
    long long   want;
} obh_scalar_cond_t;

static int
obh_scalar_is(obh_t *h, void *arg)
{
    obh_scalar_cond_t *c = arg;

    (void) h;
    return obh_scalar(c->dsn, c->sql) == c->want;
}

void
obh_wait_scalar(obh_t *h, const char *dsn, const char *sql, long long want, int timeout_ms)
{
    obh_scalar_cond_t c = { dsn, sql, want };

    cr_assert(obh_poll(obh_scalar_is, h, &c, obh_ms(timeout_ms)), "never reached %lld for: %s (now %lld); log %s", want,
              sql, obh_scalar(dsn, sql), h->log);
}

/* A database with replication slots cannot be dropped, and a slot left behind keeps WAL. */
void
obh_drop_slots(obh_t *h)
{
    char sql[512], admin[256];

    obh_orders_dsn(admin, sizeof(admin), "postgres");
    snprintf(sql, sizeof(sql),
             "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '%s' AND active",
             h->orders_db);
    obh_sql(admin, sql);
    for (int tries = 0; tries < 50; tries++) {
        snprintf(sql, sizeof(sql),
                 "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '%s'"
                 " AND NOT active",
                 h->orders_db);
        obh_sql(admin, sql);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM pg_replication_slots WHERE database = '%s'", h->orders_db);
        if (obh_scalar(admin, sql) == 0)
            return;
        usleep(100 * 1000);    /* a terminated walsender lets go of its slot within moments */
    }
}

void
obh_db_allow(obh_t *h, int ledger, int allow)
{
    const char *db = ledger ? h->ledger_db : h->orders_db;
    char        sql[256], admin[256];

    if (ledger)
        snprintf(admin, sizeof(admin), STACK_LEDGER "postgres");
    else
        obh_orders_dsn(admin, sizeof(admin), "postgres");

    snprintf(sql, sizeof(sql), "ALTER DATABASE %s ALLOW_CONNECTIONS %s", db, allow ? "true" : "false");
    obh_sql(admin, sql);
    if (!allow) {
        snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'", db);
        obh_sql(admin, sql);
    }
}
