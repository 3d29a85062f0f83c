/*
 * workers/http/orders.c: the orders API (DESIGN §3).
 *
 * An order and its order.created event are written by one autocommitted
 * statement, so there is never an order without its event or the reverse;
 * the order id is a UUIDv7 made here so the event's partition (murmur2 of
 * the id) is known before the statement is sent. After the commit the
 * partition's counter in shm is bumped and its relay woken by a futex: no
 * NOTIFY, no extra round trip. A database failure is a 503 with
 * Retry-After; a retried request with the same Idempotency-Key gets the
 * first order back.
 */
#include "db.h"
#include "order_req.h"
#include "reply.h"
#include "routes.h"
#include "../../common/event.h"
#include "../../common/log.h"
#include "../../common/money.h"
#include "../../common/murmur2.h"
#include "../../common/pg.h"
#include "../../common/util.h"
#include "../../common/uuid.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_AFTER "Retry-After: 1\r\n"
#define IDEM_KEY_MAX 255

/*
 * Every write statement checks the synchronous_commit it will commit
 * under: with it off, an acknowledged order could vanish in a crash while
 * its event lives on in Kafka, so such writes are refused unless [orders]
 * unsafe_async_commit = yes.
 *
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

/* Columns of the get/get_by_key/lock statements, in order. */
enum { COL_ID, COL_CUSTOMER, COL_AMOUNT, COL_CURRENCY, COL_STATUS, COL_VERSION, COL_CREATED };

/* Prepared on every orderdb connection (db.c); here, beside what reads their results. */
const ob_http_stmt_t ob_orders_statements[] = {
    /* (orders inserted, events inserted, durable) */
    { "create",
      "WITH " DURABLE("$9") ", o AS ("
      "  INSERT INTO orders (id, customer_id, amount, currency, idempotency_key)"
      "  SELECT $1::uuid, $2, $3::numeric, $4, $5 FROM d WHERE d.ok"
      "  ON CONFLICT DO NOTHING RETURNING id"
      "), e AS ("
      "  INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload,"
      "   content_type, headers)"
      "  SELECT $6::uuid, 'order', o.id::text, 1, 'order.created', $7::int, $8::bytea, $10::text, $11::jsonb FROM o"
      "  RETURNING 1"
      ") SELECT (SELECT count(*) FROM o), (SELECT count(*) FROM e), (SELECT ok FROM d)" },
    /* [orders] max_backlog_age: the oldest pending event's age in ms (NULL: none), from
     * the outbox itself (true with every relay down), one index probe per partition */
    { "backlog_age",
      "SELECT (EXTRACT(EPOCH FROM now() - min(x.created_at)) * 1000)::bigint"
      " FROM generate_series(0, $1::int - 1) AS p(n), LATERAL (SELECT o.created_at FROM outboxd.outbox o"
      " WHERE NOT o.published AND o.partition = p.n AND NOT EXISTS (SELECT 1 FROM outboxd.outbox_quarantine q"
      "  WHERE q.aggregate_type = o.aggregate_type AND q.aggregate_id = o.aggregate_id)"     /* parked behind a quarantined event: not shippable */
      " ORDER BY o.id LIMIT 1) AS x" },
    /* after an ambiguous write: did the lost attempt commit this event? */
    { "event_exists", "SELECT count(*) FROM outboxd.outbox WHERE event_id = $1::uuid" },
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
      "  INSERT INTO outboxd.outbox (event_id, aggregate_type, aggregate_id, seq, event_type, partition, payload,"
      "   content_type, headers)"
      "  SELECT $2::uuid, 'order', u.id::text, u.version, 'order.cancelled', $3::int, $4::bytea, $7::text, $8::jsonb"
      "  FROM u WHERE u.version = $5::int RETURNING 1"
      ") SELECT (SELECT count(*) FROM e), (SELECT ok FROM d)" },
    /* (currency, sum, count) rows, as ob_http_totals_json (reply.c) reads them */
    { "total",
      "SELECT currency, sum(amount)::text, count(*) FROM orders WHERE status <> 'cancelled'"
      " GROUP BY ROLLUP (currency) ORDER BY currency NULLS LAST" },
    { NULL, NULL },
};

static int
orders_unavailable(struct mg_connection *conn, const char *why)
{
    return ob_http_unavailable(conn, "orders database unavailable, retry later", why);
}

/* Committed on the primary, not confirmed by its synchronous standby (db.c): the client must not take it as done. */
static int
orders_unconfirmed(struct mg_connection *conn, const char *what)
{
    ob_log(OB_LOG_WARN, "orders: %s committed locally but its wait for the synchronous standby was cancelled", what);
    return ob_http_unavailable(conn, "committed on the orders primary, but its synchronous standby did not confirm it"
                                     " (the wait was cancelled): a failover may lose it; outcome unknown",
                               "retry with the same Idempotency-Key, or read the order back once the standby is"
                               " streaming again");
}

static int
orders_db_error(ob_http_t *hw, struct mg_connection *conn, PGconn *pg, PGresult *r)
{
    char err[512];
    int  status = ob_http_db_failure(pg, r, err, sizeof(err));

    atomic_fetch_add(&hw->slot->counters[OB_CTR_HTTP_DB_ERRORS], 1);
    if (status == 503)
        return orders_unavailable(conn, err);
    ob_log(OB_LOG_ERROR, "orders: unexpected database error: %s", err);
    return ob_http_error(conn, 500, "internal error");
}

/* The order as the API shows it, from a row of get/get_by_key/lock. */
static json_t *
orders_row_json(PGresult *r, int row)
{
    const ob_currency_t *cur = ob_currency_find(PQgetvalue(r, row, COL_CURRENCY));
    char                 amount[64];

    if (cur == NULL || ob_decimal_rescale(PQgetvalue(r, row, COL_AMOUNT), cur->digits, amount, sizeof(amount)) != 0)
        ob_strlcpy(amount, PQgetvalue(r, row, COL_AMOUNT), sizeof(amount));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s}", "id", PQgetvalue(r, row, COL_ID), "customerId",
                     PQgetvalue(r, row, COL_CUSTOMER), "amount", amount, "currency", PQgetvalue(r, row, COL_CURRENCY),
                     "status", PQgetvalue(r, row, COL_STATUS), "version", atoi(PQgetvalue(r, row, COL_VERSION)),
                     "createdAt", PQgetvalue(r, row, COL_CREATED));
}

/* Announces a committed event: counter for status, futex wake for the owning relay. */
static void
orders_wake_relay(int partition)
{
    ob_shm_part_t *pt;
    int            owner;

    if (ob_shm == NULL || partition < 0 || partition >= OB_SHM_PARTITIONS)
        return;
    pt = &ob_shm->map->parts[partition];
    atomic_fetch_add(&pt->committed, 1);
    owner = atomic_load(&pt->owner_slot);
    if (owner >= 0 && owner < OB_SHM_SLOTS)
        ob_shm_wake(&ob_shm->map->slots[owner]);
}

/* A fresh UUIDv7 as text into out[37]; -1 without randomness. */
static int
orders_new_id(char *out)
{
    ob_uuid_t u;

    if (ob_uuid_v7(&u) != 0)
        return -1;
    ob_uuid_format(&u, out);
    return 0;
}

/* Builds the event event_id for an order; *payload is malloc'd. */
static int
orders_event(ob_http_t *hw, const char *type, const char *order_id, int seq, const char *customer,
             const char *amount, const char *currency, const char *status, const char *event_id, char **payload,
             size_t *len)
{
    ob_event_t ev;

    memset(&ev, 0, sizeof(ev));
    ob_strlcpy(ev.id, event_id, sizeof(ev.id));
    ob_strlcpy(ev.type, type, sizeof(ev.type));
    ob_strlcpy(ev.aggregate_type, "order", sizeof(ev.aggregate_type));
    ob_strlcpy(ev.aggregate_id, order_id, sizeof(ev.aggregate_id));
    ev.seq = seq;
    ob_event_timestamp(ob_wall_ms(), ev.occurred_at);
    ob_strlcpy(ev.customer_id, customer, sizeof(ev.customer_id));
    ob_strlcpy(ev.amount, amount, sizeof(ev.amount));
    ob_strlcpy(ev.currency, currency, sizeof(ev.currency));
    ob_strlcpy(ev.status, status, sizeof(ev.status));
    return ob_event_encode(&ev, strcmp(hw->cfg->kafka.format, "json") == 0, payload, len);
}

/*
 * Before acknowledging a write we did not see commit (a lost reply, an
 * Idempotency-Key replay): a backend cancelled or terminated while it
 * waited for a synchronous standby has committed locally only, and its row
 * is visible. Committing a transaction of our own, later in the WAL, waits
 * for the standby past it under the session's synchronous_commit. It must
 * write WAL: PostgreSQL waits only for a commit that did, and an xid alone
 * (pg_current_xact_id(), used before) writes none, so a replay was
 * answered at once. A transactional logical message does (no table, no
 * privilege; pgoutput does not send it). 0, or the status sent.
 */
static int
orders_settle(ob_http_t *hw, struct mg_connection *conn, PGconn *pg)
{
    PGresult *r;
    int       status = 0;

    (void) ob_http_db_unconfirmed(pg);
    r = PQexec(pg, "SELECT pg_logical_emit_message(true, 'outboxd.settle', '')");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        status = orders_db_error(hw, conn, pg, r);
    else if (ob_http_db_unconfirmed(pg))
        status = orders_unconfirmed(conn, "a replayed request's wait");
    PQclear(r);
    return status;
}

/* Answers a replay of an Idempotency-Key with the first order (or 422 if the body differs). */
static int
orders_replay(ob_http_t *hw, struct mg_connection *conn, PGconn *pg, const char *key, const ob_order_req_t *req)
{
    const char *params[1] = { key };
    PGresult   *r = PQexecPrepared(pg, "get_by_key", 1, params, NULL, NULL, 0);
    int         status;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        status = orders_db_error(hw, conn, pg, r);
        PQclear(r);
        return status;
    }
    if (PQntuples(r) == 0) {
        /* the conflicting insert rolled back between our two statements */
        PQclear(r);
        return orders_unavailable(conn, "idempotency key vanished between insert and read");
    }
    json_t *order = orders_row_json(r, 0);
    const char *amount = json_string_value(json_object_get(order, "amount"));
    if (strcmp(PQgetvalue(r, 0, COL_CUSTOMER), req->customer_id) != 0 ||
        strcmp(PQgetvalue(r, 0, COL_CURRENCY), req->cur->code) != 0 || strcmp(amount, req->amount) != 0) {
        json_decref(order);
        PQclear(r);
        return ob_http_error(conn, 422, "Idempotency-Key was already used with a different request");
    }
    PQclear(r);
    if ((status = orders_settle(hw, conn, pg)) != 0) {
        json_decref(order);
        return status;
    }
    return ob_http_reply(conn, 200, order, NULL);
}

/*
 * When the oldest pending event was committed, on our monotonic clock (0:
 * none pending), shared by the worker's threads and read at most once a
 * second. Kept as a point in time, not an age, so a reading a second old
 * still ages: every HTTP worker then gives the same answer.
 */
static _Atomic int64_t backlog_read_ms = 0;
static _Atomic int64_t backlog_oldest_ms = 0;

/*
 * Age in seconds of the oldest event not yet in Kafka, from the outbox
 * itself. The relays' statistics in shm would do without a query, but they
 * stop (stale, or zero) exactly when no relay is alive to ship anything,
 * which is when refusing matters most. The database computes the age with
 * its own clock, so no clock skew between hosts enters.
 */
static int64_t
orders_backlog_age_s(ob_http_t *hw)
{
    int64_t now = ob_now_ms(), last = atomic_load(&backlog_read_ms), oldest;
    char    err[256], parts[16];
    PGconn *pg;

    if (now - last >= 1000 && atomic_compare_exchange_strong(&backlog_read_ms, &last, now) &&
        (pg = ob_http_db(hw, OB_DB_ORDERS, err, sizeof(err))) != NULL) {
        snprintf(parts, sizeof(parts), "%d", hw->cfg->kafka.partitions);
        const char *params[1] = { parts };
        PGresult   *r = PQexecPrepared(pg, "backlog_age", 1, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            atomic_store(&backlog_oldest_ms, PQgetisnull(r, 0, 0) ? 0 : now - atoll(PQgetvalue(r, 0, 0)));
        else
            ob_http_db_failure(pg, r, err, sizeof(err));     /* the write will find out */
        PQclear(r);
    }
    oldest = atomic_load(&backlog_oldest_ms);
    return oldest != 0 && now > oldest ? (now - oldest) / 1000 : 0;
}

/* [orders] max_backlog_age: refuse new work nobody can ship. */
static int
orders_backpressure(ob_http_t *hw, struct mg_connection *conn)
{
    int64_t age;
    char    msg[256];

    if (hw->cfg->orders.max_backlog_age_s <= 0 || (age = orders_backlog_age_s(hw)) <= hw->cfg->orders.max_backlog_age_s)
        return 0;
    snprintf(msg, sizeof(msg),
             "backlog: the oldest event not yet in Kafka is %lld s old (max_backlog_age %d s); retry later",
             (long long) age, hw->cfg->orders.max_backlog_age_s);
    ob_http_reply(conn, 503, json_pack("{s:s}", "error", msg), RETRY_AFTER);
    return 503;
}

/* The write statement found its commit would not be durable, and wrote nothing. */
static int
orders_refuse_async(struct mg_connection *conn)
{
    return ob_http_unavailable(conn, "synchronous_commit is off (or local with a synchronous standby) on the orders"
                                     " database; writes refused",
                               "set synchronous_commit on the orders database, or [orders] unsafe_async_commit = yes"
                               " to accept the risk");
}

/* The content type of the events this worker encodes, stored with each ([kafka] format may change later). */
static const char *
orders_content_type(const ob_http_t *hw)
{
    return ob_event_content_type(strcmp(hw->cfg->kafka.format, "json") == 0);
}

/* "t"/"f": the statements' $D parameter of DURABLE. */
static const char *
orders_allow_async(const ob_http_t *hw)
{
    return hw->cfg->orders.unsafe_async_commit ? "t" : "f";
}

/*
 * Idempotency-Key: 1 to 255 bytes of printable ASCII (space to tilde). Keys
 * are global, not per customer; PostgreSQL would refuse bytes that are not
 * UTF-8 with an error of its own (22021), and control bytes have no place
 * in a header value.
 */
static int
orders_key_invalid(const char *key)
{
    size_t n = strlen(key);

    if (n == 0 || n > IDEM_KEY_MAX)
        return 1;
    for (const unsigned char *c = (const unsigned char *) key; *c; c++)
        if (*c < 0x20 || *c > 0x7e)
            return 1;
    return 0;
}

/*
 * The create statement inserted nothing: 0 when the order is the one a lost
 * attempt committed, else the status sent (the key's first order, or 422).
 */
static int
orders_create_conflict(ob_http_t *hw, struct mg_connection *conn, PGconn *pg, const char *order_id, const char *key,
                       const ob_order_req_t *req, int attempt)
{
    if (attempt > 0) {
        const char *params[1] = { order_id };
        PGresult   *r = PQexecPrepared(pg, "get", 1, params, NULL, NULL, 0);
        int         status;
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            status = orders_db_error(hw, conn, pg, r);
            PQclear(r);
            return status;
        }
        status = PQntuples(r);
        PQclear(r);
        if (status == 1)     /* the attempt whose reply was lost committed: it is ours */
            return orders_settle(hw, conn, pg);
    }
    if (key == NULL)
        return orders_unavailable(conn, "create inserted nothing and the order is not there");
    return orders_replay(hw, conn, pg, key, req);
}

/*
 * One autocommitted statement writes the order and its event. When the
 * connection breaks before the reply, the outcome is unknown: the statement
 * is sent once more on a fresh connection with the same ids, and finding
 * the order already there means the first one committed.
 */
static int
orders_create_write(ob_http_t *hw, struct mg_connection *conn, const char *const *params, const int *lens,
                    const int *fmts, const char *order_id, const char *key, const ob_order_req_t *req)
{
    char      err[512];
    PGconn   *pg;
    PGresult *r;
    int       status;

    for (int attempt = 0;; attempt++) {
        if ((pg = ob_http_db(hw, OB_DB_ORDERS, err, sizeof(err))) == NULL)
            return orders_unavailable(conn, err);
        (void) ob_http_db_unconfirmed(pg);     /* only this write's warnings count */
        r = PQexecPrepared(pg, "create", 11, params, lens, fmts, 0);
        if (ob_http_db_lost(hw, pg, r, attempt)) {
            ob_log(OB_LOG_WARN, "orders: connection lost during create of %s; retrying once", order_id);
            PQclear(r);
            ob_http_db_failure(pg, NULL, err, sizeof(err));
            continue;
        }
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            status = orders_db_error(hw, conn, pg, r);
            PQclear(r);
            return status;
        }
        int inserted = atoi(PQgetvalue(r, 0, 0)), durable = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
        PQclear(r);
        if (!durable)
            return orders_refuse_async(conn);
        if (!inserted)
            return orders_create_conflict(hw, conn, pg, order_id, key, req, attempt);
        if (ob_http_db_unconfirmed(pg))
            return orders_unconfirmed(conn, "create");
        return 0;
    }
}

static int
orders_create(ob_http_t *hw, struct mg_connection *conn, const char *body, size_t len)
{
    ob_order_req_t req;
    char          *payload = NULL, msg[512], order_id[37], event_id[37], part[16], trace[OB_TRACE_HEADERS_MAX];
    size_t         plen;
    const char    *key = mg_get_header(conn, "Idempotency-Key");
    int            status, partition;

    status = ob_order_req_parse(body ? body : "", len, &req, msg, sizeof(msg));
    if (status != 0)
        return ob_http_error(conn, status, msg);
    if (key != NULL && orders_key_invalid(key))
        return ob_http_error(conn, 400, "Idempotency-Key: must be 1 to 255 bytes of printable ASCII (0x20-0x7E)");
    if (ob_order_traceparent(mg_get_header(conn, "traceparent"), trace, msg, sizeof(msg)) != 0)
        return ob_http_error(conn, 400, msg);
    if ((status = orders_backpressure(hw, conn)) != 0)
        return status;
    if (orders_new_id(order_id) != 0 || orders_new_id(event_id) != 0)
        return ob_http_error(conn, 500, "no randomness for an order id");
    partition = ob_partition_for(order_id, strlen(order_id), hw->cfg->kafka.partitions);
    if (orders_event(hw, OB_EVENT_CREATED, order_id, 1, req.customer_id, req.amount, req.cur->code, "created",
                     event_id, &payload, &plen) != 0)
        return ob_http_error(conn, 500, "could not encode the event");
    snprintf(part, sizeof(part), "%d", partition);
    const char *params[11] = { order_id, req.customer_id, req.amount, req.cur->code, key, event_id, part, payload,
                               orders_allow_async(hw), orders_content_type(hw), trace[0] ? trace : NULL };
    int         lens[11] = { 0, 0, 0, 0, 0, 0, 0, (int) plen, 0, 0, 0 };
    int         fmts[11] = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 };
    status = orders_create_write(hw, conn, params, lens, fmts, order_id, key, &req);
    free(payload);
    if (status != 0)
        return status;
    orders_wake_relay(partition);
    atomic_fetch_add(&hw->slot->counters[OB_CTR_HTTP_ORDERS_CREATED], 1);
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "id", order_id, "customerId", req.customer_id,
                            "amount", req.amount, "currency", req.cur->code, "status", "created", "version", 1);
    return ob_http_reply(conn, 201, out, NULL);
}

static int
orders_get(ob_http_t *hw, struct mg_connection *conn, const char *id)
{
    const char *params[1] = { id };
    char        err[512];
    PGconn     *pg;
    PGresult   *r = ob_http_read(hw, OB_DB_ORDERS, "get", 1, params, &pg, err, sizeof(err));
    int         status;

    if (r == NULL)
        return orders_unavailable(conn, err);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        status = orders_db_error(hw, conn, pg, r);
    else if (PQntuples(r) == 0)
        status = ob_http_error(conn, 404, "no such order");
    else
        status = ob_http_reply(conn, 200, orders_row_json(r, 0), NULL);
    PQclear(r);
    return status;
}

/* Runs a parameterless command inside the cancel transaction; NULL on success. */
static PGresult *
orders_tx(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);

    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        PQclear(r);
        return NULL;
    }
    return r;
}

/* A cancel attempt that must be repeated on a fresh connection (nothing sent to the client). */
#define CANCEL_RETRY (-1)

static int
orders_cancel_fail(ob_http_t *hw, struct mg_connection *conn, PGconn *pg, PGresult *r, int attempt)
{
    int status;

    /* broken before COMMIT: the transaction died with the connection */
    if (attempt == 0 && PQstatus(pg) != CONNECTION_OK) {
        char err[512];
        PQclear(r);
        ob_http_db_failure(pg, NULL, err, sizeof(err));
        return CANCEL_RETRY;
    }
    /* read before orders_db_error, which closes (frees) a broken connection */
    int alive = PQstatus(pg) == CONNECTION_OK;
    status = orders_db_error(hw, conn, pg, r);
    PQclear(r);
    if (alive)
        PQclear(orders_tx(pg, "ROLLBACK"));
    return status;
}

/* 1 when event_id is in the outbox: a retried cancel finding its own effect. */
static int
orders_event_exists(PGconn *pg, const char *event_id)
{
    const char *params[1] = { event_id };
    PGresult   *r = PQexecPrepared(pg, "event_exists", 1, params, NULL, NULL, 0);
    int         found = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) == 1;

    PQclear(r);
    return found;
}

/* The locked row is not cancellable: 404, 409, or 200 when it is our own lost attempt's doing. */
static int
orders_cancel_done(ob_http_t *hw, struct mg_connection *conn, PGconn *pg, PGresult *r, const char *event_id,
                   int attempt)
{
    int     missing = PQntuples(r) == 0;
    json_t *order = missing ? NULL : orders_row_json(r, 0);

    PQclear(r);
    PQclear(orders_tx(pg, "ROLLBACK"));
    if (missing)
        return ob_http_error(conn, 404, "no such order");
    if (attempt > 0 && orders_event_exists(pg, event_id)) {
        int status = orders_settle(hw, conn, pg);
        if (status != 0) {
            json_decref(order);
            return status;
        }
        return ob_http_reply(conn, 200, order, NULL);
    }
    json_object_set_new(order, "error", json_string("order is already cancelled"));
    return ob_http_reply(conn, 409, order, NULL);
}

/*
 * One cancel transaction: BEGIN; lock the order row; encode
 * order.cancelled with the next version; update the row and insert the
 * event in one statement; COMMIT. The row lock makes event id order and
 * commit order agree per order. CANCEL_RETRY when the connection broke.
 */
static int
orders_cancel_tx(ob_http_t *hw, struct mg_connection *conn, PGconn *pg, const char *id, const char *event_id,
                 const char *trace, int attempt)
{
    const char *params[1] = { id };
    char        part[16], seq[16], *payload = NULL;
    size_t      plen;
    PGresult   *r;

    if ((r = orders_tx(pg, "BEGIN")) != NULL)
        return orders_cancel_fail(hw, conn, pg, r, attempt);
    r = PQexecPrepared(pg, "lock", 1, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return orders_cancel_fail(hw, conn, pg, r, attempt);
    if (PQntuples(r) == 0 || strcmp(PQgetvalue(r, 0, COL_STATUS), "cancelled") == 0)
        return orders_cancel_done(hw, conn, pg, r, event_id, attempt);
    int version = atoi(PQgetvalue(r, 0, COL_VERSION)) + 1;
    int partition = ob_partition_for(id, strlen(id), hw->cfg->kafka.partitions);
    json_t *order = orders_row_json(r, 0);
    const char *amount = json_string_value(json_object_get(order, "amount"));
    int enc = orders_event(hw, OB_EVENT_CANCELLED, id, version, PQgetvalue(r, 0, COL_CUSTOMER), amount,
                           PQgetvalue(r, 0, COL_CURRENCY), "cancelled", event_id, &payload, &plen);
    PQclear(r);
    if (enc != 0) {
        json_decref(order);
        PQclear(orders_tx(pg, "ROLLBACK"));
        return ob_http_error(conn, 500, "could not encode the event");
    }
    snprintf(part, sizeof(part), "%d", partition);
    snprintf(seq, sizeof(seq), "%d", version);
    const char *cparams[8] = { id, event_id, part, payload, seq, orders_allow_async(hw), orders_content_type(hw),
                               trace[0] ? trace : NULL };
    int         lens[8] = { 0, 0, 0, (int) plen, 0, 0, 0, 0 };
    int         fmts[8] = { 0, 0, 0, 1, 0, 0, 0, 0 };
    r = PQexecPrepared(pg, "cancel", 8, cparams, lens, fmts, 0);
    free(payload);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        json_decref(order);
        return orders_cancel_fail(hw, conn, pg, r, attempt);
    }
    int inserted = atoi(PQgetvalue(r, 0, 0)), durable = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    PQclear(r);
    if (!durable || inserted != 1) {
        json_decref(order);
        PQclear(orders_tx(pg, "ROLLBACK"));
        return durable ? ob_http_error(conn, 409, "order changed while cancelling; retry") : orders_refuse_async(conn);
    }
    (void) ob_http_db_unconfirmed(pg);
    r = PQexec(pg, "COMMIT");
    if (ob_http_db_lost(hw, pg, r, attempt)) {
        /* committed or not: the retry's lock tells, by finding this event */
        char err[512];
        json_decref(order);
        PQclear(r);
        ob_http_db_failure(pg, NULL, err, sizeof(err));
        return CANCEL_RETRY;
    }
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        json_decref(order);
        return orders_cancel_fail(hw, conn, pg, r, attempt);
    }
    PQclear(r);
    orders_wake_relay(partition);
    if (ob_http_db_unconfirmed(pg)) {
        json_decref(order);
        return orders_unconfirmed(conn, "cancel");
    }
    json_object_set_new(order, "status", json_string("cancelled"));
    json_object_set_new(order, "version", json_integer(version));
    return ob_http_reply(conn, 200, order, NULL);
}

/* A cancel whose connection breaks is run once more, with the same event id. */
static int
orders_cancel(ob_http_t *hw, struct mg_connection *conn, const char *id)
{
    char event_id[37], err[512], trace[OB_TRACE_HEADERS_MAX];
    int  status = CANCEL_RETRY;

    if (ob_order_traceparent(mg_get_header(conn, "traceparent"), trace, err, sizeof(err)) != 0)
        return ob_http_error(conn, 400, err);
    if (orders_new_id(event_id) != 0)
        return ob_http_error(conn, 500, "no randomness for an event id");
    for (int attempt = 0; status == CANCEL_RETRY; attempt++) {
        PGconn *pg = ob_http_db(hw, OB_DB_ORDERS, err, sizeof(err));
        if (pg == NULL)
            return orders_unavailable(conn, err);
        if (attempt > 0)
            ob_log(OB_LOG_WARN, "orders: connection lost while cancelling %s; retrying once", id);
        status = orders_cancel_tx(hw, conn, pg, id, event_id, trace, attempt);
    }
    return status;
}

static int
orders_total(ob_http_t *hw, struct mg_connection *conn)
{
    char      err[512];
    PGconn   *pg;
    PGresult *r = ob_http_read(hw, OB_DB_ORDERS, "total", 0, NULL, &pg, err, sizeof(err));
    int       status;

    if (r == NULL)
        return orders_unavailable(conn, err);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        status = orders_db_error(hw, conn, pg, r);
    else
        status = ob_http_reply(conn, 200, ob_http_totals_json(r), NULL);
    PQclear(r);
    return status;
}

/* "/orders/<id>" or "/orders/<id>/cancel": copies <id>, returns 1 for cancel, 0 plain, -1 no match. */
static int
orders_path_id(const char *uri, char *id, size_t idlen)
{
    const char *rest = uri + strlen("/orders/");
    const char *slash = strchr(rest, '/');
    size_t      n = slash ? (size_t) (slash - rest) : strlen(rest);

    if (n == 0 || n >= idlen)
        return -1;
    memcpy(id, rest, n);
    id[n] = '\0';
    if (slash == NULL)
        return 0;
    return strcmp(slash, "/cancel") == 0 ? 1 : -1;
}

static int
orders_method_not_allowed(struct mg_connection *conn, const char *allow)
{
    char hdr[64];

    snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
    return ob_http_reply(conn, 405, json_pack("{s:s}", "error", "method not allowed"), hdr);
}

int
ob_orders_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri, const char *body,
                size_t len)
{
    const char *uri = ri->local_uri, *m = ri->request_method;
    int         is_get = strcmp(m, "GET") == 0, is_post = strcmp(m, "POST") == 0;
    char        id[64];
    ob_uuid_t   u;

    if (strcmp(uri, "/readyz") == 0)
        return is_get ? ob_http_ready(hw, conn, OB_DB_ORDERS) : orders_method_not_allowed(conn, "GET");
    if (strcmp(uri, "/orders") == 0)
        return is_post ? orders_create(hw, conn, body, len) : orders_method_not_allowed(conn, "POST");
    if (strcmp(uri, "/orders/total") == 0)
        return is_get ? orders_total(hw, conn) : orders_method_not_allowed(conn, "GET");
    if (strncmp(uri, "/orders/", 8) != 0)
        return ob_http_error(conn, 404, "no such route");
    int cancel = orders_path_id(uri, id, sizeof(id));
    if (cancel < 0)
        return ob_http_error(conn, 404, "no such route");
    if (ob_uuid_parse(id, &u) != 0)
        return ob_http_error(conn, 404, "no such order");
    ob_uuid_format(&u, id);   /* canonical lower case: the partition hash is over this text */
    if (cancel)
        return is_post ? orders_cancel(hw, conn, id) : orders_method_not_allowed(conn, "POST");
    return is_get ? orders_get(hw, conn, id) : orders_method_not_allowed(conn, "GET");
}
