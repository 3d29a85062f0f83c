/*
 * workers/http/admin.c: the operator's view on the admin listener:
 * /status (HTML, refreshes itself), /status.json, /metrics (Prometheus).
 * Everything comes from the shm segment, so it answers while PostgreSQL and
 * Kafka are down. With [admin] token set, requests must carry
 * "Authorization: Bearer <token>" (compared in constant time).
 */
#include "reply.h"
#include "routes.h"
#include "../../common/status.h"

#include <stdlib.h>
#include <string.h>

static int
admin_authorized(ob_http_t *hw, struct mg_connection *conn)
{
    const char *want = hw->cfg->admin.token, *got = mg_get_header(conn, "Authorization");
    size_t      wl = strlen(want);
    unsigned    diff = 0;

    if (wl == 0)
        return 1;
    if (got == NULL || strncmp(got, "Bearer ", 7) != 0 || strlen(got + 7) != wl)
        return 0;
    for (size_t i = 0; i < wl; i++)
        diff |= (unsigned) (got[7 + i] ^ want[i]);
    return diff == 0;
}

static int
admin_send(struct mg_connection *conn, const char *ctype, char *body)
{
    size_t len = body ? strlen(body) : 0;

    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n%s\r\n", ctype,
              len, ob_http_close_header());
    mg_write(conn, body ? body : "", len);
    free(body);
    return 200;
}

int
ob_admin_route(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri)
{
    static __thread ob_status_t *view;    /* large: one per thread, reused */
    const char                  *uri = ri->local_uri;

    if (!admin_authorized(hw, conn))
        return ob_http_reply(conn, 401, json_pack("{s:s}", "error", "bearer token required"),
                             "WWW-Authenticate: Bearer\r\n");
    if (strcmp(ri->request_method, "GET") != 0)
        return ob_http_reply(conn, 405, json_pack("{s:s}", "error", "method not allowed"), "Allow: GET\r\n");
    if (strcmp(uri, "/status") != 0 && strcmp(uri, "/") != 0 && strcmp(uri, "/status.json") != 0 &&
        strcmp(uri, "/metrics") != 0)
        return ob_http_error(conn, 404, "no such route");
    if (view == NULL && (view = malloc(sizeof(*view))) == NULL)
        return ob_http_error(conn, 500, "out of memory");
    ob_status_collect(ob_shm, view);
    if (strcmp(uri, "/metrics") == 0)
        return admin_send(conn, "text/plain; version=0.0.4; charset=utf-8", ob_status_metrics(view));
    if (strcmp(uri, "/status.json") == 0)
        return ob_http_reply(conn, 200, ob_status_json(view), NULL);
    return admin_send(conn, "text/html; charset=utf-8", ob_status_html(view));
}
