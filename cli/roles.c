/*
 * cli/roles.c: `outboxd migrate` checks the roles outboxd runs as.
 *
 * Least privilege: the HTTP workers ([orders] dsn) write orders and outbox
 * rows; the relays ([relay] dsn) read, mark and prune the outbox; the
 * consumers and the ledger API ([ledger] dsn) write the ledger; none is a
 * superuser. Each DSN is connected to as outboxd would, and the privileges
 * its role holds are asked of the server with has_table_privilege(), so
 * the check sees grants through role membership and PUBLIC as the workers
 * will. Nothing is granted or created here: creating a role needs
 * CREATEROLE, which the migrating DSN need not have, so a missing role or
 * privilege is printed with the statement that would fix it, for someone
 * who may run it.
 */
#include "cmd.h"
#include "../common/log.h"
#include "../common/util.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *table;
    const char *privileges;     /* comma-separated, as GRANT takes them */
} roles_need_t;

/* A table "outboxd" stands for the schema itself: USAGE, without which its tables cannot be named. */
static const roles_need_t http_needs[] = {
    { "outboxd", "USAGE" },
    { "orders", "SELECT, INSERT, UPDATE" },
    { "outboxd.outbox", "SELECT, INSERT" },
    { NULL, NULL },
};
static const roles_need_t relay_needs[] = {
    { "outboxd", "USAGE" },
    { "outboxd.outbox", "SELECT, UPDATE, DELETE" },
    { "outboxd.outbox_quarantine", "SELECT, INSERT" },
    { "outboxd.relay_slots", "SELECT, INSERT, UPDATE, DELETE" },
    { "outboxd.settings", "SELECT" },
    { "outboxd.routing", "SELECT, INSERT, UPDATE" },
    { NULL, NULL },
};
static const roles_need_t ledger_needs[] = {
    { "ledger_entries", "SELECT, INSERT" },
    { "ledger_orders", "SELECT, INSERT, UPDATE" },
    { "ledger_parked", "SELECT, INSERT, UPDATE, DELETE" },
    { "ledger_dead_letter", "SELECT, INSERT" },
    { "ledger_traces", "SELECT, INSERT" },
    { NULL, NULL },
};

/* One privilege of the comma-separated list at *p into out; 0 at the end. */
static int
roles_next_privilege(const char **p, char *out, size_t outlen)
{
    size_t n = 0;

    while (**p == ' ' || **p == ',')
        (*p)++;
    while (**p != '\0' && **p != ',' && n + 1 < outlen)
        out[n++] = *(*p)++;
    out[n] = '\0';
    return n > 0;
}

/* 1 when the connected role holds priv on table (or the schema outboxd); -1 when the server could not say. */
static int
roles_has(PGconn *pg, const char *table, const char *priv)
{
    const char *params[2] = { table, priv };
    PGresult   *r = PQexecParams(pg,
                                 strcmp(table, "outboxd") == 0 ? "SELECT has_schema_privilege(current_user, $1, $2)"
                                                               : "SELECT has_table_privilege(current_user, $1, $2)",
                                 2, NULL, params, NULL, NULL, 0);
    int         rc = PQresultStatus(r) == PGRES_TUPLES_OK ? strcmp(PQgetvalue(r, 0, 0), "t") == 0 : -1;

    PQclear(r);
    return rc;
}

/* Prints what the role lacks of needs, with the GRANT that gives it; returns how many. */
static int
roles_check_tables(PGconn *pg, const char *who, const char *role, const roles_need_t *needs)
{
    int missing = 0;

    for (const roles_need_t *n = needs; n->table != NULL; n++) {
        char        lacks[128] = "", priv[32];
        const char *p = n->privileges;
        while (roles_next_privilege(&p, priv, sizeof(priv))) {
            if (roles_has(pg, n->table, priv) == 1)
                continue;
            size_t used = strlen(lacks);
            snprintf(lacks + used, sizeof(lacks) - used, "%s%s", used ? ", " : "", priv);
        }
        if (lacks[0] == '\0')
            continue;
        printf("roles: %s: role %s lacks %s on %s; as its owner: GRANT %s ON %s%s TO %s;\n", who, role, lacks,
               n->table, lacks, strcmp(n->table, "outboxd") == 0 ? "SCHEMA " : "", n->table, role);
        missing++;
    }
    return missing;
}

/* Mode wal: REPLICATION, and ownership of outboxd.outbox (ALTER PUBLICATION ... SET TABLE needs it on PostgreSQL 15). */
static int
roles_check_wal(PGconn *pg, const char *role)
{
    PGresult *r = PQexec(pg, "SELECT r.rolreplication, pg_get_userbyid(c.relowner) = current_user,"
                             " has_database_privilege(current_user, current_database(), 'CREATE')"
                             " FROM pg_roles r, pg_class c WHERE r.rolname = current_user AND c.oid = 'outboxd.outbox'::regclass");
    int       missing = 0;

    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        printf("roles: relay: cannot read role %s's attributes: %s", role, PQresultErrorMessage(r));
        PQclear(r);
        return 1;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0 && ++missing)
        printf("roles: relay: mode wal needs REPLICATION; as a superuser: ALTER ROLE %s REPLICATION;\n", role);
    if (strcmp(PQgetvalue(r, 0, 1), "t") != 0 && ++missing)
        printf("roles: relay: mode wal re-filters its publications, which PostgreSQL 15 allows only the table's"
               " owner; as the owner: ALTER TABLE outboxd.outbox OWNER TO %s;\n", role);
    if (strcmp(PQgetvalue(r, 0, 2), "t") != 0 && ++missing)
        printf("roles: relay: mode wal creates publications; as the database's owner: GRANT CREATE ON DATABASE"
               " <orderdb> TO %s;\n", role);
    PQclear(r);
    return missing;
}

/* Connects with dsn as outboxd would and checks the role's needs; returns how many things are missing. */
static int
roles_check(const char *who, const char *dsn, const roles_need_t *needs, int wal)
{
    char      masked[OB_CFG_STR], role[128];
    PGconn   *pg = PQconnectdb(dsn);
    PGresult *r;
    int       missing;

    ob_log_mask_dsn(dsn, masked, sizeof(masked));
    if (PQstatus(pg) != CONNECTION_OK) {
        printf("roles: %s: cannot connect with %s: %s", who, masked, PQerrorMessage(pg));
        printf("roles: %s: if its role does not exist, someone with CREATEROLE must create it"
               " (CREATE ROLE <name> LOGIN PASSWORD '...'); outboxd never does\n", who);
        PQfinish(pg);
        return 1;
    }
    r = PQexec(pg, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        printf("roles: %s: cannot read the role of %s: %s", who, masked, PQresultErrorMessage(r));
        PQclear(r);
        PQfinish(pg);
        return 1;
    }
    ob_strlcpy(role, PQgetvalue(r, 0, 0), sizeof(role));
    if (strcmp(PQgetvalue(r, 0, 1), "t") == 0) {
        printf("roles: %s: role %s is a superuser: it can do everything, least privilege would give it only what"
               " it needs (docs/DESIGN.md §8)\n", who, role);
        PQclear(r);
        PQfinish(pg);
        return 0;
    }
    PQclear(r);
    missing = roles_check_tables(pg, who, role, needs) + (wal ? roles_check_wal(pg, role) : 0);
    if (missing == 0)
        printf("roles: %s: role %s has what it needs\n", who, role);
    PQfinish(pg);
    return missing;
}

/*
 * outboxd.emit runs as its owner (SECURITY DEFINER): the owner must be able
 * to write what emit writes. It loses that when the outbox is given to the
 * relay role for mode wal, since ownership takes the old owner's grants.
 */
static int
roles_check_emit(const char *dsn)
{
    static const char *need[][2] = { { "outboxd.outbox", "INSERT" }, { "outboxd.aggregate_seq", "INSERT, UPDATE" },
                                     { "outboxd.settings", "SELECT" }, { "outboxd.routing", "SELECT" } };
    PGconn   *pg = PQconnectdb(dsn);
    int       missing = 0;

    for (size_t i = 0; PQstatus(pg) == CONNECTION_OK && i < sizeof(need) / sizeof(need[0]); i++) {
        const char *params[2] = { need[i][0], need[i][1] };
        PGresult   *r = PQexecParams(pg,
                                     "SELECT pg_get_userbyid(proowner), has_table_privilege(proowner, $1, $2)"
                                     " FROM pg_proc WHERE oid = 'outboxd.emit_bytes(text, text, text, bytea, text, jsonb)'"
                                     "::regprocedure",
                                     2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            printf("roles: emit: cannot read outboxd.emit_bytes' owner: %s", PQresultErrorMessage(r));
            missing++;
        } else if (strcmp(PQgetvalue(r, 0, 1), "t") != 0) {
            printf("roles: emit: outboxd.emit runs as its owner %s, which lacks %s on %s; as the table's owner:"
                   " GRANT %s ON %s TO %s;\n", PQgetvalue(r, 0, 0), need[i][1], need[i][0], need[i][1], need[i][0],
                   PQgetvalue(r, 0, 0));
            missing++;
        }
        PQclear(r);
    }
    PQfinish(pg);
    return missing;
}

int
ob_roles_check(const ob_cfg_t *cfg)
{
    /* relay-only: the HTTP workers serve at most the admin pages and need no table */
    int missing = ob_cfg_orders_api(cfg) ? roles_check("orders (HTTP workers, [orders] dsn)", cfg->orders.dsn,
                                                       http_needs, 0)
                                         : 0;

    if (cfg->workers.relays > 0)
        missing += roles_check("relay ([relay] dsn)", ob_cfg_relay_dsn(cfg), relay_needs,
                               cfg->relay.mode == OB_RELAY_WAL);
    if (ob_cfg_ledger_used(cfg))
        missing += roles_check("ledger (consumers and ledger API, [ledger] dsn)", cfg->ledger.dsn, ledger_needs, 0);
    return missing + roles_check_emit(cfg->orders.dsn);
}
