/*
 * cli/migrate.c: `outboxd migrate`.
 *
 * Applies the migrations compiled into the binary (sql/<stream>/NNNN_*.sql),
 * in version order, each in its own transaction together with its row in
 * the stream's table of applied versions, under an advisory lock so two
 * migrators never race. Running it twice changes nothing.
 *
 * Three streams (DESIGN §7): `outbox`, the schema outboxd that any service's
 * database needs, tracked inside that schema so it never meets a user's own
 * schema_migrations; `orderdb`, the built-in orders API's table, only when
 * that API is on; `ledgerdb`, only when consumers or the ledger API run.
 */
#include "cmd.h"
#include "../common/migrations.h"
#include "../common/schema.h"
#include "../common/log.h"
#include "../common/pg.h"
#include "../common/routing.h"
#include "../common/util.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIGRATE_LOCK_KEY "7411020001"   /* pg_advisory_xact_lock key: "outboxd migrate" */

/*
 * The tables of applied versions (ob_schema_table) are named with their
 * schema, and the session migrates with search_path = public: for a role
 * called outboxd, the default "$user", public would otherwise put orderdb's
 * tables, and find its versions, in the schema outboxd.
 */

static int
migrate_applied(PGconn *pg, const char *db, int version, int *applied, char *err, size_t errlen)
{
    char        v[16], sql[128];
    const char *params[1] = { v };
    PGresult   *r;

    snprintf(v, sizeof(v), "%d", version);
    snprintf(sql, sizeof(sql), "SELECT 1 FROM %s WHERE version = $1", ob_schema_table(db));
    r = PQexecParams(pg, sql, 1, NULL, params, NULL, NULL, 0);
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
    char        v[16], sql[128];
    const char *params[2] = { v, m->name };
    int         applied;
    PGresult   *r;

    *did = 0;
    if (ob_pg_exec(pg, "BEGIN", err, errlen) != 0)
        return -1;
    /* Transaction-scoped lock: released by COMMIT/ROLLBACK or a dropped connection. */
    if (ob_pg_exec(pg, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", err, errlen) != 0 ||
        migrate_applied(pg, m->db, m->version, &applied, err, errlen) != 0)
        goto fail;
    if (applied) {
        ob_pg_exec(pg, "ROLLBACK", err, errlen);
        return 0;
    }
    if (ob_pg_exec(pg, m->sql, err, errlen) != 0)
        goto fail;
    snprintf(v, sizeof(v), "%d", m->version);
    snprintf(sql, sizeof(sql), "INSERT INTO %s (version, name) VALUES ($1, $2)", ob_schema_table(m->db));
    r = PQexecParams(pg, sql, 2, NULL, params, NULL, NULL, 0);
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

/*
 * An older outboxd migrated with the session's own search_path. Where that
 * put its tables outside public (a role's own "$user" schema, a DSN's
 * options), migrating into public would start an empty second copy beside
 * them: refuse, and say where they are. 0, or -1 with err.
 */
static int
migrate_where_before(PGconn *pg, const char *db, char *err, size_t errlen)
{
    PGresult *r = ob_pg_query(pg,
                              "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                              " WHERE c.oid = to_regclass('schema_migrations')"
                              " AND n.nspname NOT IN ('public', 'outboxd')",
                              0, NULL, NULL, err, errlen);
    int       rc = r == NULL ? -1 : 0;

    if (r != NULL && PQntuples(r) > 0) {
        snprintf(err, errlen, "%s: an older migration's schema_migrations is in the schema %s, not public; move its"
                              " tables to public (ALTER TABLE ... SET SCHEMA public) before migrating", db,
                 PQgetvalue(r, 0, 0));
        rc = -1;
    }
    PQclear(r);
    return rc;
}

/* Applies every migration for one database; prints one line per step. */
int
ob_migrate_db(const char *db, const char *dsn, char *err, size_t errlen)
{
    PGconn *pg = PQconnectdb(dsn);
    char    masked[OB_CFG_STR], ddl[512];
    int     applied = 0, last = 0;

    ob_log_mask_dsn(dsn, masked, sizeof(masked));
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "%s: cannot connect to %s: %s", db, masked, PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    /* every worker's role reads the version (common/schema.c): version numbers are no secret */
    snprintf(ddl, sizeof(ddl),
             "%sCREATE TABLE IF NOT EXISTS %s (version integer PRIMARY KEY, name text NOT NULL,"
             " applied_at timestamptz NOT NULL DEFAULT now()); GRANT SELECT ON %s TO PUBLIC",
             strcmp(db, "outbox") == 0 ? "CREATE SCHEMA IF NOT EXISTS outboxd; " : "", ob_schema_table(db),
             ob_schema_table(db));
    if (ob_pg_exec(pg, "SET client_min_messages = warning", err, errlen) != 0 ||
        (strcmp(db, "outbox") != 0 && migrate_where_before(pg, db, err, errlen) != 0) ||
        ob_pg_exec(pg, "SET search_path = public", err, errlen) != 0 ||
        ob_pg_exec(pg, ddl, err, errlen) != 0) {
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

/*
 * Keeps outboxd.settings equal to the configuration. The partition count
 * never changes once written: one aggregate's events hashed with two counts
 * would land in two partitions and lose their order.
 */
static int
migrate_settings(const char *dsn, const ob_cfg_t *cfg, char *err, size_t errlen)
{
    char        parts[16], maxb[16];
    /* the orders API's events are the ledger's: nobody else may emit them */
    const char *params[3] = { parts, maxb, ob_cfg_order_reserved(cfg) ? "{order}" : "{}" };
    PGconn     *pg = PQconnectdb(dsn);
    PGresult   *r;
    int         rc = -1;

    snprintf(parts, sizeof(parts), "%d", cfg->kafka.partitions);
    snprintf(maxb, sizeof(maxb), "%d", cfg->kafka.max_event_bytes);
    if (PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "outbox: settings: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    r = PQexecParams(pg,
                     "INSERT INTO outboxd.settings AS s (partitions, max_event_bytes, reserved_types)"
                     " VALUES ($1::int, $2::int, $3::text[])"
                     " ON CONFLICT (singleton) DO UPDATE SET max_event_bytes = EXCLUDED.max_event_bytes,"
                     " reserved_types = EXCLUDED.reserved_types, updated_at = now()"
                     " WHERE s.partitions = EXCLUDED.partitions RETURNING partitions",
                     3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        snprintf(err, errlen, "outbox: settings: %s", PQresultErrorMessage(r));
    else if (PQntuples(r) == 0)
        snprintf(err, errlen,
                 "outbox: outboxd.settings holds another partition count than [kafka] partitions = %d; the count"
                 " cannot change under existing events (set [kafka] partitions back to the topic's count)",
                 cfg->kafka.partitions);
    else if (ob_routing_sync(pg, cfg, err, errlen) != 0) {
        char tmp[512];
        ob_strlcpy(tmp, err, sizeof(tmp));
        snprintf(err, errlen, "outbox: routing: %s", tmp);
    } else
        rc = 0;
    PQclear(r);
    PQfinish(pg);
    return rc;
}

int
ob_cmd_migrate(const ob_cfg_t *cfg, const char *orders_owner, const char *ledger_owner)
{
    const char *orders_dsn = orders_owner ? orders_owner : cfg->orders.dsn;
    char        err[1024];
    int         missing;

    if (ob_migrate_db("outbox", orders_dsn, err, sizeof(err)) != 0 ||
        migrate_settings(orders_dsn, cfg, err, sizeof(err)) != 0 ||
        (ob_cfg_orders_api(cfg) && ob_migrate_db("orderdb", orders_dsn, err, sizeof(err)) != 0) ||
        (ob_cfg_ledger_used(cfg) &&
         ob_migrate_db("ledgerdb", ledger_owner ? ledger_owner : cfg->ledger.dsn, err, sizeof(err)) != 0)) {
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

/* One stream's gate: 0 let it start, -1 refuse (said why). */
static int
gate_one(const char *stream, const char *dsn)
{
    char    err[1024];
    PGconn *pg = ob_pg_connect(dsn, "outboxd schema check", err, sizeof(err));
    int     rc;

    if (pg == NULL) {
        /* a database that is down at boot must not keep the daemon down: the workers retry and check it */
        fprintf(stderr, "outboxd: warning: the %s schema's version is not checked now (%s); the relays and"
                        " consumers check it when they connect\n", stream, err);
        return 0;
    }
    rc = ob_schema_check(pg, stream, err, sizeof(err));
    PQfinish(pg);
    if (rc == OB_EXIT_FATAL) {
        fprintf(stderr, "outboxd: refusing to start: %s\n", err);
        return -1;
    }
    if (rc != OB_EXIT_OK)
        fprintf(stderr, "outboxd: warning: %s; the relays and consumers check it when they connect\n", err);
    return 0;
}

int
ob_cmd_schema_gate(const ob_cfg_t *cfg)
{
    if (cfg->workers.relays > 0 && gate_one("outbox", ob_cfg_relay_dsn(cfg)) != 0)
        return -1;
    if (ob_cfg_orders_api(cfg) && (gate_one("outbox", cfg->orders.dsn) != 0 || gate_one("orderdb", cfg->orders.dsn) != 0))
        return -1;
    if (ob_cfg_ledger_used(cfg) && gate_one("ledgerdb", cfg->ledger.dsn) != 0)
        return -1;
    return 0;
}
