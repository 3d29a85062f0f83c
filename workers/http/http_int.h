/* workers/http/http_int.h: internals shared by the HTTP worker's files. */
#ifndef OB_HTTP_INT_H
#define OB_HTTP_INT_H

#include "../../common/cfg.h"
#include "../../common/listen.h"
#include "../../shm/shm.h"

#include <civetweb.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { OB_DB_ORDERS = 0, OB_DB_LEDGER, OB_DB_COUNT } ob_db_id_t;

typedef struct {
    const ob_cfg_t *cfg;
    ob_shm_slot_t  *slot;
    int             index;
} ob_http_t;

/*
 * The whole-request deadline (deadline.c). begin: a request starts, due by
 * deadline_ms (monotonic). arm(mode) says how civetweb's next reads of
 * this thread's connection may wait: WAIT_NOW takes what has arrived,
 * WAIT_BRIEF what arrives within OB_HTTP_BRIEF_MS (a body sent right
 * behind its headers),
 * WAIT_DEADLINE waits until the deadline, WAIT_ANY is civetweb's own
 * behaviour (and libpq's, on the same thread). abandon: read no more of
 * this body (civetweb then closes the connection). expired: the time ran
 * out or the body was abandoned. end: request done.
 */
enum { OB_HTTP_WAIT_ANY = 0, OB_HTTP_WAIT_DEADLINE, OB_HTTP_WAIT_NOW, OB_HTTP_WAIT_BRIEF };
#define OB_HTTP_BRIEF_MS 10
void ob_http_deadline_begin(int64_t deadline_ms);
void ob_http_deadline_arm(int mode);
void ob_http_deadline_abandon(void);
int  ob_http_deadline_expired(void);
void ob_http_deadline_end(void);

/* Sends body (reference stolen) as JSON with status; extra headers end in \r\n. */
int ob_http_reply(struct mg_connection *conn, int status, json_t *body, const char *extra);
/* {"error": msg} with status. */
int ob_http_error(struct mg_connection *conn, int status, const char *msg);
/*
 * The request's body, read before the handler ran (NULL, 0 when it has
 * none); NUL-terminated, owned by the request, freed when it ends.
 */
void ob_http_body(const char **body, size_t *len);

/* Orders API on the orders listener; returns the status sent. */
int ob_orders_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri);
/* Status page, status.json and metrics on the admin listener, from shm only. */
int ob_admin_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri);
/* Ledger API on the ledger listener; returns the status sent. */
int ob_ledger_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri);

/* {"total","count","byCurrency"} from rows (currency, sum text, count) of a
 * GROUP BY ROLLUP (currency): the same shape for orders and ledger. */
json_t *ob_http_totals_json(PGresult *r);
/* 503 {"error": what} with Retry-After, logging why. */
int ob_http_unavailable(struct mg_connection *conn, const char *what, const char *why);
/* GET /readyz for one database. */
int ob_http_ready(ob_http_t *hw, struct mg_connection *conn, ob_db_id_t which);

/* This thread's connection to orderdb or ledgerdb (opened, checked and
 * prepared on first use, re-opened after it broke); NULL with err when the
 * database is away. */
PGconn *ob_http_db(ob_http_t *hw, ob_db_id_t which, char *err, size_t errlen);
/* Runs a prepared read-only statement, retrying once on a fresh connection
 * if the pooled one was dead. NULL (err set) when no connection could be
 * made; otherwise the result, whose status the caller checks, with *pg the
 * connection it ran on. */
PGresult *ob_http_read(ob_http_t *hw, ob_db_id_t which, const char *stmt, int nparams, const char *const *params,
                       PGconn **pg, char *err, size_t errlen);
/* After a failed command: 503 for "database unavailable / try again", else 500.
 * Drops the connection when it is broken so the next request reconnects. */
int ob_http_db_failure(PGconn *pg, PGresult *r, char *err, size_t errlen);
/*
 * After a write on pg: 1 when its outcome is unknown and it may be retried
 * once (attempt 0 only) on a fresh connection: the connection broke before
 * the reply, so the write may or may not have committed. The retry must
 * recognise its own effect. [debug] fault = http_lose_write_reply drops
 * the connection after a reply to exercise this.
 */
int ob_http_db_lost(ob_http_t *hw, PGconn *pg, PGresult *r, int attempt);
/* civetweb exit_thread: closes this thread's connection. */
void ob_http_db_close_thread(void);

#endif
