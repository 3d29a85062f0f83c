/* common/pg.c: connection helpers. */
#include "pg.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* replication: NULL for a normal session, "database" for logical replication. */
static PGconn *
pg_connect(const char *dsn, const char *appname, const char *replication, char *err, size_t errlen)
{
    /* before dbname, so a DSN's own connect_timeout wins (a multi-host DSN may want less); after it, ours */
    const char *keys[] = { "connect_timeout", "dbname", "application_name", replication ? "replication" : NULL, NULL };
    const char *vals[] = { "5", dsn, appname, replication, NULL };
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

PGresult *
ob_pg_check(PGconn *pg, PGresult *r, char *state, char *err, size_t errlen)
{
    ExecStatusType st = PQresultStatus(r);
    const char    *code, *msg;

    if (r != NULL && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)) {
        if (state != NULL)
            state[0] = '\0';
        return r;
    }
    code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    snprintf(err, errlen, "%s", msg ? msg : r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
    for (size_t n = strlen(err); n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '); n--)
        err[n - 1] = '\0';
    if (err[0] == '\0')
        snprintf(err, errlen, "%s", PQstatus(pg) != CONNECTION_OK ? "connection lost" : "statement failed");
    if (state != NULL)
        snprintf(state, 6, "%s", code ? code : "");
    PQclear(r);
    return NULL;
}

PGresult *
ob_pg_query(PGconn *pg, const char *sql, int n, const char *const *params, char *state, char *err, size_t errlen)
{
    return ob_pg_check(pg, PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0), state, err, errlen);
}

long
ob_pg_command(PGconn *pg, const char *sql, int n, const char *const *params, char *state, char *err, size_t errlen)
{
    PGresult *r = ob_pg_query(pg, sql, n, params, state, err, errlen);
    long      rows;

    if (r == NULL)
        return -1;
    rows = atol(PQcmdTuples(r));    /* "" for a statement that names no rows: 0 */
    PQclear(r);
    return rows;
}

int
ob_pg_exec(PGconn *pg, const char *sql, char *err, size_t errlen)
{
    PGresult *r = ob_pg_check(pg, PQexec(pg, sql), NULL, err, errlen);

    if (r == NULL)
        return -1;
    PQclear(r);
    return 0;
}

/*
 * PostgreSQL raises it as a plain WARNING (SQLSTATE 01000, "the transaction
 * has already committed locally, but might not have been replicated").
 * 01000 is any warning's default code (the wraparound warning, a trigger's
 * RAISE WARNING), so the function that raised it must be the synchronous
 * wait's; that field is not translated, the message is.
 */
int
ob_pg_syncrep_cancelled(const PGresult *notice)
{
    const char *sev = PQresultErrorField(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *state = PQresultErrorField(notice, PG_DIAG_SQLSTATE);
    const char *fn = PQresultErrorField(notice, PG_DIAG_SOURCE_FUNCTION);

    return sev != NULL && strcmp(sev, "WARNING") == 0 && state != NULL && strcmp(state, "01000") == 0 && fn != NULL &&
           strcmp(fn, "SyncRepWaitForLSN") == 0;
}
