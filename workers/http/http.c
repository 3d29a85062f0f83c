/*
 * workers/http/http.c: HTTP worker (civetweb), one of H.
 *
 * NOTES
 *   What it does: serves the orders API on the orders listener (orders.c),
 *   and /healthcheck on every listener, accepting from the sockets the
 *   supervisor opened (bind.c). The ledger API (issue 7) and admin pages
 *   (issue 8) are routed here by listener. The main thread only heartbeats
 *   and waits for signals; civetweb's threads serve.
 *
 *   What it owns: a civetweb context and its threads; one orderdb
 *   connection per thread (db.c).
 *
 *   Signals: blocked in civetweb's threads, handled by the main thread:
 *   TERM/INT stop accepting and finish in-flight requests (mg_stop), exit 0.
 *
 *   Exit codes: 0 asked to stop; 1 civetweb could not start.
 */
#include "http_int.h"
#include "../../common/log.h"
#include "../../common/money.h"
#include "../../common/pg.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const int lat_bounds_ms[OB_HTTP_LAT_BUCKETS - 1] = { 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500 };

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
                 status == 413 ? "Connection: close\r\n" : "");
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
ob_http_read_body(struct mg_connection *conn, size_t max, char **body, size_t *len)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    size_t                        cap, used = 0;
    char                         *buf;

    *body = NULL;
    *len = 0;
    if (ri->content_length > (long long) max)
        return 413;   /* refused before reading a byte of it */
    cap = ri->content_length >= 0 ? (size_t) ri->content_length : max + 1;
    buf = malloc(cap + 1);
    if (buf == NULL)
        return 413;
    for (;;) {
        int n = mg_read(conn, buf + used, cap - used);
        if (n < 0) {
            free(buf);
            return 400;
        }
        if (n == 0)
            break;
        used += (size_t) n;
        if (used == cap)
            break;
    }
    if (used > max) {      /* chunked body that kept going */
        free(buf);
        return 413;
    }
    buf[used] = '\0';
    *body = buf;
    *len = used;
    return 0;
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

json_t *
ob_http_totals_json(PGresult *r)
{
    json_t *by = json_object();
    json_t *out = json_pack("{s:s, s:i, s:o}", "total", "0.00", "count", 0, "byCurrency", by);
    char    buf[64];
    int     digits = 2;

    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, 0))
            continue;
        const ob_currency_t *cur = ob_currency_find(PQgetvalue(r, i, 0));
        int                  d = cur ? cur->digits : 4;
        if (d > digits)
            digits = d;
        if (ob_decimal_rescale(PQgetvalue(r, i, 1), d, buf, sizeof(buf)) != 0)
            ob_strlcpy(buf, PQgetvalue(r, i, 1), sizeof(buf));
        json_object_set_new(by, PQgetvalue(r, i, 0), json_string(buf));
    }
    for (int i = 0; i < PQntuples(r); i++) {
        if (!PQgetisnull(r, i, 0))
            continue;    /* the ROLLUP row: every currency together */
        if (ob_decimal_rescale(PQgetvalue(r, i, 1), digits, buf, sizeof(buf)) != 0)
            ob_strlcpy(buf, PQgetvalue(r, i, 1), sizeof(buf));
        json_object_set_new(out, "total", json_string(buf));
        json_object_set_new(out, "count", json_integer(atoll(PQgetvalue(r, i, 2))));
    }
    return out;
}

static void
http_count(ob_http_t *hw, int status, int64_t elapsed_us)
{
    int64_t elapsed_ms = elapsed_us / 1000;

    int k = status < 400 ? OB_CTR_HTTP_REQ_2XX : status < 500 ? OB_CTR_HTTP_REQ_4XX : OB_CTR_HTTP_REQ_5XX;
    int b = 0;

    atomic_fetch_add(&hw->slot->counters[k], 1);
    while (b < OB_HTTP_LAT_BUCKETS - 1 && elapsed_ms > lat_bounds_ms[b])
        b++;
    atomic_fetch_add(&hw->slot->counters[OB_CTR_HTTP_LAT_BASE + b], 1);
    atomic_fetch_add(&hw->slot->counters[OB_CTR_HTTP_LAT_SUM_US], (uint64_t) elapsed_us);
}

static int
http_dispatch(ob_http_t *hw, struct mg_connection *conn, const struct mg_request_info *ri)
{
    if (strcmp(ri->local_uri, "/healthcheck") == 0)
        return ob_http_reply(conn, 200, json_pack("{s:s}", "status", "ok"), NULL);
    if (ri->server_port == hw->port[OB_LISTEN_ORDERS])
        return ob_orders_route(hw, conn, ri);
    if (ri->server_port == hw->port[OB_LISTEN_LEDGER])
        return ob_ledger_route(hw, conn, ri);
    if (ri->server_port == hw->port[OB_LISTEN_ADMIN])
        return ob_admin_route(hw, conn, ri);
    return ob_http_error(conn, 404, "no such route");
}

/*
 * civetweb's begin_request, installed before mg_start so no request can slip
 * past it: every request is answered here. Returns the status sent.
 */
static int
http_handle(struct mg_connection *conn)
{
    ob_http_t                    *hw = mg_get_user_data(mg_get_context(conn));
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct timespec               t0, t1;
    int                           status;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    atomic_fetch_add(&hw->slot->counters[OB_CTR_HTTP_INFLIGHT], 1);
    status = http_dispatch(hw, conn, ri);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    http_count(hw, status, (t1.tv_sec - t0.tv_sec) * 1000000LL + (t1.tv_nsec - t0.tv_nsec) / 1000);
    atomic_fetch_sub(&hw->slot->counters[OB_CTR_HTTP_INFLIGHT], 1);
    return status;
}

static int
http_log_message(const struct mg_connection *conn, const char *message)
{
    (void) conn;
    ob_log(OB_LOG_WARN, "civetweb: %s", message);
    return 1;
}

static void
http_exit_thread(const struct mg_context *ctx, int thread_type, void *thread_pointer)
{
    (void) ctx;
    (void) thread_type;
    (void) thread_pointer;
    ob_http_db_close_thread();
}

/* "127.0.0.1:3000,127.0.0.1:4000,..." from the listeners the supervisor opened. */
static void
http_ports_option(ob_http_t *hw, char *out, size_t outlen)
{
    size_t used = 0;

    out[0] = '\0';
    for (int i = 0; i < OB_LISTEN_COUNT; i++) {
        char host[128];
        if (ob_listeners[i].fd < 0)
            continue;
        int n = snprintf(out + used, outlen - used, "%s%s", used ? "," : "", ob_listeners[i].addr);
        if (n > 0 && used + (size_t) n < outlen)
            used += (size_t) n;
        ob_parse_hostport(ob_listeners[i].addr, host, sizeof(host), &hw->port[i]);
    }
}

int
ob_http_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index)
{
    ob_http_t           hw = { .cfg = cfg, .slot = slot, .index = index };
    struct mg_callbacks cb;
    struct mg_context  *ctx;
    char                ports[512], threads[16], timeout[16];
    sigset_t            old;

    http_ports_option(&hw, ports, sizeof(ports));
    snprintf(threads, sizeof(threads), "%d", cfg->orders.threads);
    snprintf(timeout, sizeof(timeout), "%d", cfg->orders.request_timeout_ms);
    const char *opts[] = {
        "listening_ports", ports,
        "num_threads", threads,
        "request_timeout_ms", timeout,      /* a slowloris client loses its thread after this */
        "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", "5000",
        "max_request_size", "16384",        /* request line + headers */
        "tcp_nodelay", "1",
        NULL,
    };
    memset(&cb, 0, sizeof(cb));
    cb.log_message = http_log_message;
    cb.begin_request = http_handle;
    cb.exit_thread = http_exit_thread;
    ob_listen_adopting = 1;
    mg_init_library(0);
    /* Threads inherit the mask: only this thread takes TERM/HUP/... */
    ob_sig_block(&old);
    ctx = mg_start(&cb, &hw, opts);
    ob_sig_restore(&old);
    if (ctx == NULL) {
        ob_worker_note(slot, "civetweb failed to start on %s", ports);
        ob_log(OB_LOG_ERROR, "civetweb failed to start on %s", ports);
        return OB_EXIT_RETRY;
    }
    ob_log(OB_LOG_INFO, "http worker %d serving %s", index, ports);
    while (!ob_sig_term && !ob_sig_quit) {
        if (ob_sig_reopen) {
            ob_sig_reopen = 0;
            ob_log_reopen();
        }
        ob_sig_reload = ob_sig_child = 0;
        ob_shm_beat(slot);
        ob_sig_wait(250);
    }
    mg_stop(ctx);       /* stops accepting, lets in-flight requests finish */
    mg_exit_library();
    return OB_EXIT_OK;
}
