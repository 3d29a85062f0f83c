/* common/pg.c: connection helpers. */
#include "pg.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* [postgres] peer_timeout_s of this process; the default until a worker sets it */
static int pg_peer_timeout_s = 10;

void
ob_pg_set_peer_timeout(int seconds)
{
    pg_peer_timeout_s = seconds >= 2 ? seconds : 2;
}

/* Keepalive timing that gives up a silent peer after about pg_peer_timeout_s: idle t/2, then 3 probes t/6 apart. */
static void
pg_keepalive_timing(int *idle, int *interval, int *count)
{
    *count = 3;
    *idle = pg_peer_timeout_s / 2;
    *interval = (pg_peer_timeout_s - *idle) / *count;
    if (*interval < 1)
        *interval = 1;
}

/*
 * The server's end of the same bound, on this session: without it a
 * backend whose client vanished (a host cut off) keeps its advisory locks
 * until the kernel's keepalive (2 h) or retransmission (about 15 min)
 * timeouts. All four are user-settable. Not fatal: a pooler may refuse SET.
 */
static void
pg_server_keepalives(PGconn *pg)
{
    char      sql[256];
    int       idle, interval, count;
    PGresult *r;

    pg_keepalive_timing(&idle, &interval, &count);
    snprintf(sql, sizeof(sql),
             "SET tcp_keepalives_idle = %d; SET tcp_keepalives_interval = %d; SET tcp_keepalives_count = %d;"
             " SET tcp_user_timeout = %d",
             idle, interval, count, pg_peer_timeout_s * 1000);
    r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        ob_log(OB_LOG_WARN, "the server's keepalives could not be set on this session (%s): a cut-off client's session"
                            " lasts until the server's own TCP timeouts",
               PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                                                              : PQerrorMessage(pg));
    PQclear(r);
}

/* replication: NULL for a normal session, "database" for logical replication. */
static PGconn *
pg_connect(const char *dsn, const char *appname, const char *replication, char *err, size_t errlen)
{
    char idle[16], interval[16], count[16], user_timeout[16];
    int  ki, kn, kc;

    pg_keepalive_timing(&ki, &kn, &kc);
    snprintf(idle, sizeof(idle), "%d", ki);
    snprintf(interval, sizeof(interval), "%d", kn);
    snprintf(count, sizeof(count), "%d", kc);
    snprintf(user_timeout, sizeof(user_timeout), "%d", pg_peer_timeout_s * 1000);
    /* before dbname, so a DSN's own connect_timeout and keepalives win (a multi-host DSN may want less); after
     * it, ours. Keepalives bound a wait on an idle socket, tcp_user_timeout one on unacknowledged data: without
     * both a relay could block in libpq for the kernel's retransmission timeout, about 15 minutes. */
    const char *keys[] = { "connect_timeout",   "keepalives",       "keepalives_idle",
                           "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                           "dbname",            "application_name", replication ? "replication" : NULL,
                           NULL };
    const char *vals[] = { "5", "1", idle, interval, count, user_timeout, dsn, appname, replication, NULL };
    PGconn     *pg = PQconnectdbParams(keys, vals, 1);
    char        masked[512];

    if (pg != NULL && PQstatus(pg) == CONNECTION_OK) {
        pg_server_keepalives(pg);
        return pg;
    }
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
