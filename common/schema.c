/* common/schema.c: refuse a schema older than the binary (schema.h). */
#include "schema.h"
#include "migrations.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The outbox stream keeps its versions inside its own schema, so they never
 * meet a user's schema_migrations; the built-in orders and ledger tables use
 * public's.
 */
const char *
ob_schema_table(const char *stream)
{
    return strcmp(stream, "outbox") == 0 ? "outboxd.schema_migrations" : "public.schema_migrations";
}

int
ob_schema_required(const char *stream)
{
    int v = 0;

    for (int i = 0; i < ob_migrations_count; i++)
        if (strcmp(ob_migrations[i].db, stream) == 0 && ob_migrations[i].version > v)
            v = ob_migrations[i].version;
    return v;
}

int
ob_schema_check(PGconn *pg, const char *stream, char *err, size_t errlen)
{
    const char *params[1] = { ob_schema_table(stream) };
    int         need = ob_schema_required(stream), have = 0;
    PGresult   *r;

    /* to_regclass: a database never migrated has no table, which is version 0, not an error */
    r = PQexecParams(pg, "SELECT to_regclass($1) IS NOT NULL", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s schema version: %s", stream, PQresultErrorMessage(r));
        PQclear(r);
        return PQstatus(pg) == CONNECTION_OK ? OB_EXIT_FATAL : OB_EXIT_RETRY;
    }
    int exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (exists) {
        char sql[96];
        snprintf(sql, sizeof(sql), "SELECT coalesce(max(version), 0) FROM %s", ob_schema_table(stream));
        r = PQexec(pg, sql);
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state != NULL && strcmp(state, "42501") == 0) {
            snprintf(err, errlen, "this role cannot read %s to see the %s schema's version: run `outboxd migrate`,"
                     " which grants SELECT on it to every role", ob_schema_table(stream), stream);
            PQclear(r);
            return OB_EXIT_FATAL;
        }
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(err, errlen, "%s schema version: %s", stream, PQresultErrorMessage(r));
            PQclear(r);
            return PQstatus(pg) == CONNECTION_OK ? OB_EXIT_FATAL : OB_EXIT_RETRY;
        }
        have = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    if (have >= need)
        return OB_EXIT_OK;
    snprintf(err, errlen,
             "the %s schema of database \"%s\" is at version %d and this outboxd needs %d:"
             " run `outboxd migrate` with this configuration before starting it", stream, PQdb(pg), have, need);
    return OB_EXIT_FATAL;
}
