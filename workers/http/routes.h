/*
 * workers/http/routes.h: each listener's routes, called by the dispatcher
 * (http.c) only. Each returns the status it sent.
 */
#ifndef OB_HTTP_ROUTES_H
#define OB_HTTP_ROUTES_H

#include "http_int.h"

#include <civetweb.h>
#include <stddef.h>

/*
 * Orders API on the orders listener (orders.c). body, len: the request's
 * body, read whole by the dispatcher before the route runs (NULL, 0 when it
 * has none); NUL-terminated, owned by the request.
 */
int ob_orders_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri, const char *body,
                    size_t len);
/* orders.c's statements, for its database's connections. */
extern const ob_http_stmt_t ob_orders_statements[];
/* Ledger API on the ledger listener (ledger.c). */
int ob_ledger_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri);
/* ledger.c's statements, for its database's connections. */
extern const ob_http_stmt_t ob_ledger_statements[];
/* Status page, status.json and metrics on the admin listener, from shm only (admin.c). */
int ob_admin_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri);

#endif
