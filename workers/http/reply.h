/*
 * workers/http/reply.h: how the routes answer (reply.c): JSON replies and
 * errors, 503s, /readyz and the totals shape the orders and ledger APIs
 * share.
 */
#ifndef OB_HTTP_REPLY_H
#define OB_HTTP_REPLY_H

#include "http_int.h"

#include <civetweb.h>
#include <jansson.h>
#include <libpq-fe.h>

/* Sends body (reference stolen) as JSON with status; extra headers end in \r\n. */
int ob_http_reply(struct mg_connection *conn, int status, json_t *body, const char *extra);
/* A stopping worker asks keep-alive clients to reconnect, to a worker that stays: every later reply says
 * "Connection: close" (ob_http_close_header, "" until then). */
void        ob_http_drain_begin(void);
const char *ob_http_close_header(void);
/* {"error": msg} with status. */
int ob_http_error(struct mg_connection *conn, int status, const char *msg);
/* 503 {"error": what} with Retry-After, logging why. */
int ob_http_unavailable(struct mg_connection *conn, const char *what, const char *why);
/* GET /readyz for one database. */
int ob_http_ready(ob_http_t *hw, struct mg_connection *conn, ob_db_id_t which);
/* {"total","count","byCurrency"} from rows (currency, sum text, count) of a
 * GROUP BY ROLLUP (currency): the same shape for orders and ledger. */
json_t *ob_http_totals_json(PGresult *r);

#endif
