/* common/pg.c: connection helpers. */
#include "pg.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* replication: NULL for a normal session, "database" for logical replication. */
static PGconn *
pg_connect(const char *dsn, const char *appname, const char *replication, char *err, size_t errlen)
{
    const char *keys[] = { "dbname", "application_name", "connect_timeout", replication ? "replication" : NULL, NULL };
    const char *vals[] = { dsn, appname, "5", replication, NULL };
    PGconn     *pg = PQconnectdbParams(keys, vals, 1);
    char        masked[512];

    if (pg != NULL && PQstatus(pg) == CONNECTION_OK)
        return pg;
    ob_log_mask_dsn(dsn, masked, sizeof(masked));
    snprintf(err, errlen, "cannot connect to %s: %s", masked, pg ? PQerrorMessage(pg) : "out of memory");
    /* libpq messages end in a newline; a log line must not */
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
    PQfinish(pg);
    return NULL;
}

PGconn *
ob_pg_connect(const char *dsn, const char *appname, char *err, size_t errlen)
{
    return pg_connect(dsn, appname, NULL, err, errlen);
}

PGconn *
ob_pg_connect_replication(const char *dsn, const char *appname, char *err, size_t errlen)
{
    return pg_connect(dsn, appname, "database", err, errlen);
}

int
ob_pg_exec(PGconn *pg, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, sql);
    int       ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
        size_t n = strlen(err);
        while (n > 0 && err[n - 1] == '\n')
            err[--n] = '\0';
    }
    PQclear(r);
    return ok ? 0 : -1;
}
