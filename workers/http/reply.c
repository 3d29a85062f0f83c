/*
 * workers/http/reply.c: how every route answers.
 *
 * Below the routes and above the connections: orders.c, ledger.c and
 * admin.c answer through these, and the dispatcher (http.c) for what it
 * refuses before a route runs; nothing here calls back up.
 */
#include "db.h"
#include "deadline.h"
#include "reply.h"
#include "../../common/log.h"
#include "../../common/money.h"
#include "../../common/pg.h"
#include "../../common/util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Set once by the main thread when the worker stops; read by every server thread. */
static atomic_int reply_draining;

void
ob_http_drain_begin(void)
{
    atomic_store(&reply_draining, 1);
}

const char *
ob_http_close_header(void)
{
    return atomic_load(&reply_draining) ? "Connection: close\r\n" : "";
}

int
ob_http_reply(struct mg_connection *conn, int status, json_t *body, const char *extra)
{
    char  *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    size_t len = text ? strlen(text) : 0;
    char   head[512];
    int    n;

    /* One write for head and body: two small writes meet Nagle and the
     * client's delayed ACK and cost 40 ms per request. */
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                 "Cache-Control: no-store\r\n%s%s\r\n",
                 status, mg_get_response_code_text(conn, status), len + 1, extra ? extra : "",
                 status == 413 || ob_http_deadline_expired() ? "Connection: close\r\n" : ob_http_close_header());
    char *msg = malloc((size_t) n + len + 1);
    if (msg != NULL) {
        memcpy(msg, head, (size_t) n);
        if (text != NULL)
            memcpy(msg + n, text, len);
        msg[(size_t) n + len] = '\n';
        mg_write(conn, msg, (size_t) n + len + 1);
        free(msg);
    }
    free(text);
    json_decref(body);
    return status;
}

int
ob_http_error(struct mg_connection *conn, int status, const char *msg)
{
    return ob_http_reply(conn, status, json_pack("{s:s}", "error", msg), NULL);
}

int
ob_http_unavailable(struct mg_connection *conn, const char *what, const char *why)
{
    ob_log(OB_LOG_WARN, "%s: %s", what, why);
    return ob_http_reply(conn, 503, json_pack("{s:s}", "error", what), "Retry-After: 1\r\n");
}

int
ob_http_ready(ob_http_t *hw, struct mg_connection *conn, ob_db_id_t which)
{
    char    err[512];
    PGconn *pg = ob_http_db(hw, which, err, sizeof(err));

    if (pg == NULL || ob_pg_exec(pg, "SELECT 1", err, sizeof(err)) != 0) {
        if (pg != NULL)
            ob_http_db_failure(pg, NULL, err, sizeof(err));
        return ob_http_reply(conn, 503, json_pack("{s:s}", "status", "database unavailable"), "Retry-After: 1\r\n");
    }
    return ob_http_reply(conn, 200, json_pack("{s:s}", "status", "ready"), NULL);
}

/* A NUMERIC text that is zero ("0", "0.0000", "-0.00"). */
static int
totals_is_zero(const char *numeric)
{
    for (const char *p = numeric + (*numeric == '-'); *p; p++)
        if (*p != '0' && *p != '.')
            return 0;
    return 1;
}

/*
 * byCurrency is the contract: one sum per currency, at its own scale. A
 * sum across currencies means nothing, so "total" (with "currency") is
 * there only when a single currency is counted, the seed's single-currency
 * view, and is "0.00" when nothing is. A currency whose rows net to zero
 * with nothing counted (every ledger charge reversed) is left out, as
 * /orders/total leaves out a currency whose orders were all cancelled, so
 * the two endpoints compare directly.
 */
json_t *
ob_http_totals_json(PGresult *r)
{
    json_t     *by = json_object(), *out = json_object();
    const char *only = NULL;
    long long   count = 0;
    char        buf[64];

    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, 0)) {
            count = atoll(PQgetvalue(r, i, 2));    /* the ROLLUP row: every currency together */
            continue;
        }
        if (atoll(PQgetvalue(r, i, 2)) == 0 && totals_is_zero(PQgetvalue(r, i, 1)))
            continue;
        const ob_currency_t *cur = ob_currency_find(PQgetvalue(r, i, 0));
        if (ob_decimal_rescale(PQgetvalue(r, i, 1), cur ? cur->digits : 4, buf, sizeof(buf)) != 0)
            ob_strlcpy(buf, PQgetvalue(r, i, 1), sizeof(buf));
        json_object_set_new(by, PQgetvalue(r, i, 0), json_string(buf));
        only = PQgetvalue(r, i, 0);
    }
    if (json_object_size(by) == 1) {
        json_object_set(out, "total", json_object_get(by, only));
        json_object_set_new(out, "currency", json_string(only));
    } else if (json_object_size(by) == 0) {
        json_object_set_new(out, "total", json_string("0.00"));
    }
    json_object_set_new(out, "count", json_integer(count));
    json_object_set_new(out, "byCurrency", by);
    return out;
}
