/*
 * workers/http/db.c: one orderdb and one ledgerdb connection per civetweb thread.
 *
 * A connection is opened lazily by the thread that needs it, with its
 * statements prepared once and a statement timeout, so a request costs one
 * round trip. A broken connection is dropped and re-opened by the next
 * request: the worker never needs a restart to recover from a database
 * restart. Every write statement checks the synchronous_commit it will
 * commit under (see DURABLE): with it off, an acknowledged order could
 * vanish in a crash while its event lives on in Kafka, so such writes are
 * refused unless [orders] unsafe_async_commit = yes.
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
} http_db_t;

static __thread http_db_t tl_db[OB_DB_COUNT];

typedef struct {
    const char *name, *sql;
} http_stmt_t;

/*
 * Whether this statement's commit will be durable before we answer: read in
 * the write statement itself, so a server reload that turns
 * synchronous_commit off (a backend applies it between commands) is seen
 * by the next write on every pooled connection, at no extra round trip.
 * `local` does not wait for a configured synchronous standby, so a
 * failover loses what it acknowledged: refused as well. Nothing is forced
 * per session, so a stronger server setting (remote_apply) stays in force.
 * $D is [orders] unsafe_async_commit.
 */
#define DURABLE(D)                                                                                              \
    "d AS (SELECT " D "::boolean OR (current_setting('synchronous_commit') <> 'off' AND"                      \
    " (current_setting('synchronous_commit') <> 'local' OR current_setting('synchronous_standby_names') = ''))" \
    " AS ok)"

static const http_stmt_t orders_statements[] = {
    /* (orders inserted, events inserted, durable) */
    { "create",
      "WITH " DURABLE("$9") ", o AS ("
      "  INSERT INTO orders (id, customer_id, amount, currency, idempotency_key)"
      "  SELECT $1::uuid, $2, $3::numeric, $4, $5 FROM d WHERE d.ok"
      "  ON CONFLICT DO NOTHING RETURNING id"
      "), e AS ("
      "  INSERT INTO outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload)"
      "  SELECT $6::uuid, 'order', o.id, 1, 'order.created', $7::int, $8::bytea FROM o RETURNING 1"
      ") SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM e), (SELECT ok FROM d)" },
    /* [orders] max_backlog_age: the oldest pending event's age in ms (NULL: none), from
     * the outbox itself (true with every relay down), one index probe per partition */
    { "backlog_age",
      "SELECT (EXTRACT(EPOCH FROM now() - min(x.created_at)) * 1000)::bigint"
      " FROM generate_series(0, $1::int - 1) AS p(n), LATERAL (SELECT o.created_at FROM outbox o"
      " WHERE NOT o.published AND o.partition = p.n AND NOT EXISTS (SELECT 1 FROM outbox_quarantine q"
      "  WHERE q.aggregate_id = o.aggregate_id)"     /* parked behind a quarantined event: not shippable */
      " ORDER BY o.id LIMIT 1) AS x" },
    /* after an ambiguous write: did the lost attempt commit this event? */
    { "event_exists", "SELECT count(*) FROM outbox WHERE event_id = $1::uuid" },
    { "get",
      "SELECT id, customer_id, amount::text, currency, status, version, created_at FROM orders WHERE id = $1::uuid" },
    { "get_by_key",
      "SELECT id, customer_id, amount::text, currency, status, version, created_at FROM orders"
      " WHERE idempotency_key = $1" },
    /* cancel, step 1 (inside BEGIN): the row lock orders this order's events */
    { "lock",
      "SELECT id, customer_id, amount::text, currency, status, version, created_at FROM orders"
      " WHERE id = $1::uuid FOR UPDATE" },
    /* cancel, step 2: new version and its event in one statement; (events inserted, durable) */
    { "cancel",
      "WITH " DURABLE("$6") ", u AS (UPDATE orders SET status = 'cancelled', version = version + 1,"
      "  updated_at = now() WHERE id = $1::uuid AND status = 'created' AND (SELECT ok FROM d)"
      "  RETURNING id, version"
      "), e AS ("
      "  INSERT INTO outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload)"
      "  SELECT $2::uuid, 'order', u.id, u.version, 'order.cancelled', $3::int, $4::bytea FROM u"
      "  WHERE u.version = $5::int RETURNING 1"
      ") SELECT (SELECT count(*) FROM e), (SELECT ok FROM d)" },
    { "total",
      "SELECT currency, sum(amount)::text, count(*) FROM orders WHERE status <> 'cancelled'"
      " GROUP BY ROLLUP (currency) ORDER BY currency NULLS LAST" },
    { NULL, NULL },
};

static const http_stmt_t ledger_statements[] = {
    /* count = orders booked and not reversed, as /orders/total counts orders not cancelled */
    { "total",
      "SELECT currency, sum(amount)::text,"
      " count(*) FILTER (WHERE kind = 'charge') - count(*) FILTER (WHERE kind = 'credit_note')"
      " FROM ledger_entries GROUP BY ROLLUP (currency) ORDER BY currency NULLS LAST" },
    { "entries",
      "SELECT id, event_id, seq, kind, amount::text, currency, reverses_entry_id, created_at, kafka_partition,"
      " kafka_offset FROM ledger_entries WHERE order_id = $1::uuid ORDER BY seq" },
    { NULL, NULL },
};

static int
db_prepare(PGconn *pg, const http_stmt_t *statements, char *err, size_t errlen)
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
    /* statement_timeout bounds how long a request can hold a thread */
    snprintf(set, sizeof(set), "SET statement_timeout = %d", hw->cfg->orders.statement_timeout_ms);
    if (ob_pg_exec(db->pg, set, err, errlen) != 0 ||
        db_prepare(db->pg, which == OB_DB_ORDERS ? orders_statements : ledger_statements, err, errlen) != 0) {
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
