/*
 * workers/http/db.c: one orderdb connection per civetweb thread.
 *
 * A connection is opened lazily by the thread that needs it, with its
 * statements prepared once and a statement timeout, so a request costs one
 * round trip. A broken connection is dropped and re-opened by the next
 * request: the worker never needs a restart to recover from a database
 * restart. Each connection checks synchronous_commit: with it off, an
 * acknowledged order could vanish in a crash while its event lives on in
 * Kafka, so writes are refused unless [orders] unsafe_async_commit = yes.
 */
#include "http_int.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/util.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    PGconn *pg;
    int     writable;
} http_db_t;

static __thread http_db_t tl_db;

static const struct {
    const char *name, *sql;
} statements[] = {
    { "create",
      "WITH o AS ("
      "  INSERT INTO orders (id, customer_id, amount, currency, idempotency_key)"
      "  VALUES ($1::uuid, $2, $3::numeric, $4, $5)"
      "  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
      "), e AS ("
      "  INSERT INTO outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload)"
      "  SELECT $6::uuid, 'order', o.id, 1, 'order.created', $7::int, $8::bytea FROM o RETURNING 1"
      ") SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM e)" },
    { "get",
      "SELECT id, customer_id, amount::text, currency, status, version, created_at FROM orders WHERE id = $1::uuid" },
    { "get_by_key",
      "SELECT id, customer_id, amount::text, currency, status, version, created_at FROM orders"
      " WHERE idempotency_key = $1" },
    /* cancel, step 1 (inside BEGIN): the row lock orders this order's events */
    { "lock",
      "SELECT id, customer_id, amount::text, currency, status, version, created_at FROM orders"
      " WHERE id = $1::uuid FOR UPDATE" },
    /* cancel, step 2: new version and its event in one statement */
    { "cancel",
      "WITH u AS (UPDATE orders SET status = 'cancelled', version = version + 1, updated_at = now()"
      "  WHERE id = $1::uuid AND status = 'created' RETURNING id, version)"
      " INSERT INTO outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload)"
      " SELECT $2::uuid, 'order', u.id, u.version, 'order.cancelled', $3::int, $4::bytea FROM u"
      " WHERE u.version = $5::int RETURNING 1" },
    { "total",
      "SELECT currency, sum(amount)::text, count(*) FROM orders WHERE status <> 'cancelled'"
      " GROUP BY ROLLUP (currency) ORDER BY currency NULLS LAST" },
};

static int
db_prepare(PGconn *pg, char *err, size_t errlen)
{
    for (size_t i = 0; i < OB_ARRAY_LEN(statements); i++) {
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

/* Whether commits on this connection are durable before we answer 201. */
static int
db_check_sync_commit(ob_http_t *hw, PGconn *pg)
{
    PGresult *r = PQexec(pg, "SHOW synchronous_commit");
    int       off = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "off") == 0;

    PQclear(r);
    if (!off)
        return 1;
    if (hw->cfg->orders.unsafe_async_commit) {
        ob_log(OB_LOG_WARN, "synchronous_commit is off on orderdb; accepting writes (unsafe_async_commit = yes)");
        return 1;
    }
    ob_log(OB_LOG_ERROR, "synchronous_commit is off on orderdb: refusing writes (set [orders] unsafe_async_commit"
                         " = yes to accept the risk)");
    return 0;
}

PGconn *
ob_http_db(ob_http_t *hw, char *err, size_t errlen)
{
    char dsn[OB_CFG_STR + 64], app[48];

    if (tl_db.pg != NULL && PQstatus(tl_db.pg) == CONNECTION_OK)
        return tl_db.pg;
    ob_http_db_close_thread();
    /* statement_timeout bounds how long a request can hold a thread */
    snprintf(dsn, sizeof(dsn), "%s", hw->cfg->orders.dsn);
    snprintf(app, sizeof(app), "outboxd http %d", hw->index);
    tl_db.pg = ob_pg_connect(dsn, app, err, errlen);
    if (tl_db.pg == NULL)
        return NULL;
    char set[96];
    snprintf(set, sizeof(set), "SET statement_timeout = %d", hw->cfg->orders.statement_timeout_ms);
    if (ob_pg_exec(tl_db.pg, set, err, errlen) != 0 || db_prepare(tl_db.pg, err, errlen) != 0) {
        ob_http_db_close_thread();
        return NULL;
    }
    tl_db.writable = db_check_sync_commit(hw, tl_db.pg);
    return tl_db.pg;
}

int
ob_http_db_writable(void)
{
    return tl_db.writable;
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
        ob_http_db_close_thread();
    return status;
}

void
ob_http_db_close_thread(void)
{
    if (tl_db.pg != NULL)
        PQfinish(tl_db.pg);
    tl_db.pg = NULL;
    tl_db.writable = 0;
}
