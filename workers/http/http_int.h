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

typedef struct {
    const ob_cfg_t *cfg;
    ob_shm_slot_t  *slot;
    int             index;
    int             port[OB_LISTEN_COUNT];   /* listener port, to route by server_port */
} ob_http_t;

/* Sends body (reference stolen) as JSON with status; extra headers end in \r\n. */
int ob_http_reply(struct mg_connection *conn, int status, json_t *body, const char *extra);
/* {"error": msg} with status. */
int ob_http_error(struct mg_connection *conn, int status, const char *msg);
/*
 * Reads the request body, refusing more than max bytes. Returns 0 with a
 * malloc'd NUL-terminated *body, or an HTTP status (413, 400) to answer.
 */
int ob_http_read_body(struct mg_connection *conn, size_t max, char **body, size_t *len);

/* Orders API on the orders listener; returns the status sent. */
int ob_orders_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri);

/* This thread's orderdb connection (opened, checked and prepared on first
 * use, re-opened after it broke); NULL with err when the database is away. */
PGconn *ob_http_db(ob_http_t *hw, char *err, size_t errlen);
/* 1 when this thread's connection may take writes (synchronous_commit ok). */
int ob_http_db_writable(void);
/* After a failed command: 503 for "database unavailable / try again", else 500.
 * Drops the connection when it is broken so the next request reconnects. */
int ob_http_db_failure(PGconn *pg, PGresult *r, char *err, size_t errlen);
/* civetweb exit_thread: closes this thread's connection. */
void ob_http_db_close_thread(void);

#endif
