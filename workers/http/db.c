/*
 * workers/http/db.c: one orderdb and one ledgerdb connection per civetweb thread.
 *
 * A connection is opened lazily by the thread that needs it, with its
 * statements prepared once and a statement timeout, so a request costs one
 * round trip. The statements come with the worker's context (ob_http_t):
 * each sits in the route file that reads its result (orders.c, ledger.c),
 * so this file knows no query. A broken connection is dropped and
 * re-opened by the next request: the worker never needs a restart to
 * recover from a database restart.
 */
#include "db.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/util.h"

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

typedef struct {
    PGconn *pg;
    int     unconfirmed;     /* a WARNING came: a synchronous wait may have been cancelled */
} http_db_t;

static __thread http_db_t tl_db[OB_DB_COUNT];

/*
 * A commit whose wait for the synchronous standby is cancelled (a client
 * cancel, pg_cancel_backend) succeeds with only a WARNING: the standby may
 * lack it, and a failover would then lose an order its client was told
 * exists. libpq hands the warning to the notice receiver, not to the result.
 */
static void
db_notice(void *arg, const PGresult *r)
{
    if (ob_pg_syncrep_cancelled(r))
        ((http_db_t *) arg)->unconfirmed = 1;
}

int
ob_http_db_unconfirmed(PGconn *pg)
{
    for (int i = 0; i < OB_DB_COUNT; i++)
        if (tl_db[i].pg == pg && pg != NULL) {
            int was = tl_db[i].unconfirmed;
            tl_db[i].unconfirmed = 0;
            return was;
        }
    return 0;
}

static int
db_prepare(PGconn *pg, const ob_http_stmt_t *statements, char *err, size_t errlen)
{
    for (size_t i = 0; statements[i].name != NULL; i++) {
        PGresult *r = PQprepare(pg, statements[i].name, statements[i].sql, 0, NULL);
        int       ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            snprintf(err, errlen, "prepare %s: %s", statements[i].name, PQresultErrorMessage(r));
        PQclear(r);
        if (!ok)
            return -1;
    }
    return 0;
}

static void
db_close(int which)
{
    if (tl_db[which].pg != NULL)
        PQfinish(tl_db[which].pg);
    tl_db[which].pg = NULL;
}

/*
 * Whether an idle pooled connection is still there. A server that went
 * away (restart, pg_terminate_backend, failover) has sent its FATAL and
 * closed the socket, so the socket is readable: reading it then tells. The
 * request that would otherwise find out by failing gets a fresh connection
 * instead, so no client sees a 503 once the database is back. One poll()
 * of no wait per request.
 */
static int
db_alive(PGconn *pg)
{
    struct pollfd p = { .fd = PQsocket(pg), .events = POLLIN | POLLRDHUP };

    if (p.fd < 0)
        return 0;
    if (poll(&p, 1, 0) == 0)
        return 1;
    if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))
        return 0;
    return PQconsumeInput(pg) == 1 && PQstatus(pg) == CONNECTION_OK;
}

PGconn *
ob_http_db(ob_http_t *hw, ob_db_id_t which, char *err, size_t errlen)
{
    http_db_t *db = &tl_db[which];
    char       app[48], set[96];

    if (db->pg != NULL && PQstatus(db->pg) == CONNECTION_OK && db_alive(db->pg))
        return db->pg;
    db_close(which);
    snprintf(app, sizeof(app), "outboxd http %d", hw->index);
    db->pg = ob_pg_connect(which == OB_DB_ORDERS ? hw->cfg->orders.dsn : hw->cfg->ledger.dsn, app, err, errlen);
    if (db->pg == NULL)
        return NULL;
    db->unconfirmed = 0;
    PQsetNoticeReceiver(db->pg, db_notice, db);
    /* statement_timeout bounds how long a request can hold a thread */
    snprintf(set, sizeof(set), "SET statement_timeout = %d", hw->cfg->orders.statement_timeout_ms);
    if (ob_pg_exec(db->pg, set, err, errlen) != 0 ||
        db_prepare(db->pg, hw->statements[which], err, errlen) != 0) {
        db_close(which);
        return NULL;
    }
    return db->pg;
}

int
ob_http_db_failure(PGconn *pg, PGresult *r, char *err, size_t errlen)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int         status = 500;

    snprintf(err, errlen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
    size_t n = strlen(err);
    while (n > 0 && err[n - 1] == '\n')
        err[--n] = '\0';
    /* Unavailable or transient: connection (08), resources (53), operator
     * intervention and shutdowns (57, including statement timeouts),
     * serialization and deadlock (40), read-only after failover (25006). */
    if (PQstatus(pg) != CONNECTION_OK || state == NULL || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "53", 2) == 0 || strncmp(state, "57", 2) == 0 || strncmp(state, "40", 2) == 0 ||
        strcmp(state, "25006") == 0 || strcmp(state, "55P03") == 0)
        status = 503;
    if (PQstatus(pg) != CONNECTION_OK)
        for (int i = 0; i < OB_DB_COUNT; i++)
            if (tl_db[i].pg == pg)
                db_close(i);
    return status;
}

int
ob_http_db_lost(ob_http_t *hw, PGconn *pg, PGresult *r, int attempt)
{
    if (attempt > 0)
        return 0;
    if (hw->cfg->debug.fault == OB_FAULT_HTTP_LOSE_WRITE_REPLY && PQresultStatus(r) != PGRES_FATAL_ERROR) {
        shutdown(PQsocket(pg), SHUT_RDWR);     /* the reply is in; pretend it never came */
        return 1;
    }
    return PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK &&
           PQstatus(pg) != CONNECTION_OK;
}

void
ob_http_db_close_thread(void)
{
    for (int i = 0; i < OB_DB_COUNT; i++)
        db_close(i);
}

PGresult *
ob_http_read(ob_http_t *hw, ob_db_id_t which, const char *stmt, int nparams, const char *const *params, PGconn **pg,
             char *err, size_t errlen)
{
    PGresult *r = NULL;

    /* A read is safe to repeat: one retry on a fresh connection hides a
     * connection that died while idle (database restarted, backend killed). */
    for (int attempt = 0; attempt < 2; attempt++) {
        *pg = ob_http_db(hw, which, err, errlen);
        if (*pg == NULL)
            return NULL;
        r = PQexecPrepared(*pg, stmt, nparams, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK || PQstatus(*pg) == CONNECTION_OK || attempt == 1)
            return r;
        PQclear(r);
        db_close(which);
    }
    return r;
}
