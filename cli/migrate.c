/*
 * cli/migrate.c: `outboxd migrate`.
 *
 * Applies the migrations compiled into the binary (sql/<db>/NNNN_*.sql), in
 * version order, each in its own transaction together with its row in
 * schema_migrations, under an advisory lock so two migrators never race.
 * Running it twice changes nothing.
 */
#include "cmd.h"
#include "migrations.h"
#include "../common/log.h"
#include "../common/pg.h"
#include "../common/util.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIGRATE_LOCK_KEY "7411020001"   /* pg_advisory_xact_lock key: "outboxd migrate" */

static int
migrate_applied(PGconn *pg, int version, int *applied, char *err, size_t errlen)
{
    char        v[16];
    const char *params[1] = { v };
    PGresult   *r;

    snprintf(v, sizeof(v), "%d", version);
    r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    *applied = PQntuples(r) > 0;
    PQclear(r);
    return 0;
}

static int
migrate_one(PGconn *pg, const ob_migration_t *m, int *did, char *err, size_t errlen)
{
    char        v[16];
    const char *params[2] = { v, m->name };
    int         applied;
    PGresult   *r;

    *did = 0;
    if (ob_pg_exec(pg, "BEGIN", err, errlen) != 0)
        return -1;
    /* Transaction-scoped lock: released by COMMIT/ROLLBACK or a dropped connection. */
    if (ob_pg_exec(pg, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", err, errlen) != 0 ||
        migrate_applied(pg, m->version, &applied, err, errlen) != 0)
        goto fail;
    if (applied) {
        ob_pg_exec(pg, "ROLLBACK", err, errlen);
        return 0;
    }
    if (ob_pg_exec(pg, m->sql, err, errlen) != 0)
        goto fail;
    snprintf(v, sizeof(v), "%d", m->version);
    r = PQexecParams(pg, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, NULL, params, NULL,
                     NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        PQclear(r);
        goto fail;
    }
    PQclear(r);
    if (ob_pg_exec(pg, "COMMIT", err, errlen) != 0)
        return -1;
    *did = 1;
    return 0;
fail:
    {
        char ignore[8];
        ob_pg_exec(pg, "ROLLBACK", ignore, sizeof(ignore));
    }
    return -1;
}

/* Applies every migration for one database; prints one line per step. */
int
ob_migrate_db(const char *db, const char *dsn, char *err, size_t errlen)
{
    PGconn *pg = PQconnectdb(dsn);
    char    masked[OB_CFG_STR];
    int     applied = 0, last = 0;

    ob_log_mask_dsn(dsn, masked, sizeof(masked));
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "%s: cannot connect to %s: %s", db, masked, PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    if (ob_pg_exec(pg, "SET client_min_messages = warning", err, errlen) != 0 ||
        ob_pg_exec(pg,
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())",
                     err, errlen) != 0) {
        PQfinish(pg);
        return -1;
    }
    for (int i = 0; i < ob_migrations_count; i++) {
        const ob_migration_t *m = &ob_migrations[i];
        int                   did;
        if (strcmp(m->db, db) != 0)
            continue;
        if (migrate_one(pg, m, &did, err, errlen) != 0) {
            char tmp[512];
            ob_strlcpy(tmp, err, sizeof(tmp));
            snprintf(err, errlen, "%s: migration %s failed: %s", db, m->name, tmp);
            PQfinish(pg);
            return -1;
        }
        if (did) {
            printf("%s: applied %s\n", db, m->name);
            applied++;
        }
        last = m->version;
    }
    if (applied == 0)
        printf("%s: up to date (version %d)\n", db, last);
    PQfinish(pg);
    return 0;
}

int
ob_cmd_migrate(const ob_cfg_t *cfg, const char *orders_owner, const char *ledger_owner)
{
    char err[1024];
    int  missing;

    if (ob_migrate_db("orderdb", orders_owner ? orders_owner : cfg->orders.dsn, err, sizeof(err)) != 0 ||
        ob_migrate_db("ledgerdb", ledger_owner ? ledger_owner : cfg->ledger.dsn, err, sizeof(err)) != 0) {
        fprintf(stderr, "outboxd: %s\n", err);
        return 1;
    }
    /* the schema is there: can the roles outboxd runs as use it? */
    if ((missing = ob_roles_check(cfg)) > 0) {
        fprintf(stderr, "outboxd: migrated, but %d thing(s) the roles above need are missing; the workers would fail"
                        " on them\n", missing);
        return 1;
    }
    return 0;
}
