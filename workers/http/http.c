/*
 * workers/http/http.c: HTTP worker (civetweb), one of H.
 *
 * NOTES
 *   What it does (so far): serves GET /healthcheck on the orders, ledger
 *   and admin listeners, accepting from the sockets the supervisor opened
 *   (see bind.c), and heartbeats from its main thread. The orders API
 *   (issue 5), ledger API (issue 7) and admin pages (issue 8) are routed
 *   here by listener.
 *
 *   What it owns: a civetweb context and its threads.
 *
 *   Signals: blocked in civetweb's threads, handled by the main thread:
 *   TERM/INT stop accepting and finish in-flight requests (mg_stop), exit 0.
 *
 *   Exit codes: 0 asked to stop; 1 civetweb could not start.
 */
#include "../../common/listen.h"
#include "../../common/log.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/worker.h"

#include <civetweb.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const ob_cfg_t *cfg;
    ob_shm_slot_t  *slot;
    int             index;
    int             port[OB_LISTEN_COUNT];   /* listener port, to route by server_port */
} ob_http_t;

static int
http_send_json(struct mg_connection *conn, int status, const char *body)
{
    size_t len = strlen(body);

    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-store\r\n\r\n",
              status, mg_get_response_code_text(conn, status), len);
    mg_write(conn, body, len);
    return status;
}

static void
http_count(ob_http_t *hw, int status)
{
    int k = status < 400 ? OB_CTR_HTTP_REQ_2XX : status < 500 ? OB_CTR_HTTP_REQ_4XX : OB_CTR_HTTP_REQ_5XX;

    atomic_fetch_add(&hw->slot->counters[k], 1);
}

/*
 * One handler for every request (civetweb's begin_request, installed before
 * mg_start so no request can slip past it): routes by listener, then by
 * method and path. Returns the status sent.
 */
static int
http_handle(struct mg_connection *conn)
{
    ob_http_t                    *hw = mg_get_user_data(mg_get_context(conn));
    const struct mg_request_info *ri = mg_get_request_info(conn);
    int                           status;

    atomic_fetch_add(&hw->slot->counters[OB_CTR_HTTP_INFLIGHT], 1);
    if (strcmp(ri->local_uri, "/healthcheck") == 0 && strcmp(ri->request_method, "GET") == 0)
        status = http_send_json(conn, 200, "{\"status\":\"ok\"}");
    else
        status = http_send_json(conn, 404, "{\"error\":\"no such route\"}");
    http_count(hw, status);
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

/* "127.0.0.1:3000,127.0.0.1:4000,..." from the listeners the supervisor opened. */
static void
http_ports_option(ob_http_t *hw, char *out, size_t outlen)
{
    size_t used = 0;

    out[0] = '\0';
    for (int i = 0; i < OB_LISTEN_COUNT; i++) {
        if (ob_listeners[i].fd < 0)
            continue;
        int n = snprintf(out + used, outlen - used, "%s%s", used ? "," : "", ob_listeners[i].addr);
        if (n > 0 && used + (size_t) n < outlen)
            used += (size_t) n;
        char host[128];
        ob_parse_hostport(ob_listeners[i].addr, host, sizeof(host), &hw->port[i]);
    }
}

int
ob_http_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index)
{
    ob_http_t           hw = { .cfg = cfg, .slot = slot, .index = index };
    struct mg_callbacks cb;
    struct mg_context  *ctx;
    char                ports[512];
    sigset_t            old;

    http_ports_option(&hw, ports, sizeof(ports));
    const char *opts[] = {
        "listening_ports", ports,
        "num_threads", "16",
        "request_timeout_ms", "10000",      /* a slowloris client loses its thread after 10 s */
        "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", "5000",
        "max_request_size", "16384",        /* request line + headers */
        NULL,
    };
    memset(&cb, 0, sizeof(cb));
    cb.log_message = http_log_message;
    cb.begin_request = http_handle;
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
