/*
 * workers/http/http.c: HTTP worker (civetweb), one of H.
 *
 * NOTES
 *   What it does: serves the orders API (orders.c), the ledger API
 *   (ledger.c) and the status pages (admin.c), and /healthcheck on every
 *   listener, accepting from the sockets the supervisor opened (bind.c,
 *   common/listen.c).
 *   The main thread only heartbeats and waits for signals; civetweb's
 *   threads serve.
 *
 *   What it owns: one civetweb context per listener, each with its own
 *   threads, so one listener's clients cannot starve another's; one
 *   orderdb and one ledgerdb connection per thread (db.c).
 *
 *   Hostile clients: a request body must arrive whole within
 *   request_timeout_ms (deadline.c), and at most three quarters of a
 *   listener's threads may wait on bodies at once; the rest answer
 *   /healthcheck and requests without a body.
 *
 *   Signals: blocked in civetweb's threads, handled by the main thread:
 *   TERM/INT stop accepting, answer every connection already taken
 *   (http_drain), then mg_stop, exit 0.
 *
 *   Exit codes: 0 asked to stop; 1 civetweb could not start.
 */
#include "db.h"
#include "deadline.h"
#include "http_int.h"
#include "reply.h"
#include "routes.h"
#include "../../common/listen.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/worker.h"
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* A listener's civetweb context (its user data). */
typedef struct {
    ob_http_t         *hw;
    int                listener;      /* OB_LISTEN_* */
    int                body_max;      /* threads that may wait on bodies at once */
    atomic_int         body_readers;
    struct mg_context *mg;
} http_ctx_t;

static const int lat_bounds_ms[OB_HTTP_LAT_BUCKETS - 1] = { 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500 };

/* This thread's request body, read by http_body_read, passed to the route. */
static __thread char  *tl_body;
static __thread size_t tl_body_len;

/* Reads into buf until cap bytes, the end, or a read that would wait longer than mode allows. */
static size_t
http_read_some(struct mg_connection *conn, char *buf, size_t used, size_t cap, int mode)
{
    ob_http_deadline_arm(mode);
    while (used < cap) {
        int n = mg_read(conn, buf + used, cap - used);
        if (n <= 0)
            break;
        used += (size_t) n;
    }
    ob_http_deadline_arm(OB_HTTP_WAIT_ANY);
    return used;
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
http_dispatch(http_ctx_t *hc, struct mg_connection *conn, const struct mg_request_info *ri)
{
    if (strcmp(ri->local_uri, "/healthcheck") == 0)
        return ob_http_reply(conn, 200, json_pack("{s:s}", "status", "ok"), NULL);
    switch (hc->listener) {
    case OB_LISTEN_ORDERS:
        return ob_orders_route(hc->hw, conn, ri, tl_body, tl_body_len);
    case OB_LISTEN_LEDGER:
        return ob_ledger_route(hc->hw, conn, ri);
    case OB_LISTEN_ADMIN:
        return ob_admin_route(hc->hw, conn, ri);
    default:
        return ob_http_error(conn, 404, "no such route");
    }
}

/* Set while this thread's request holds one of its listener's body slots. */
static __thread http_ctx_t *tl_body_slot;

/*
 * A request whose body has not all arrived may wait on a slow client for up
 * to request_timeout_ms, so at most body_max of a listener's threads do
 * that at once; the others stay free for /healthcheck, reads, the status
 * page and prompt clients, whatever slow clients do with their bodies.
 */
static int
http_take_body_slot(http_ctx_t *hc)
{
    int n = atomic_load(&hc->body_readers);

    do {
        if (n >= hc->body_max)
            return 0;
    } while (!atomic_compare_exchange_weak(&hc->body_readers, &n, n + 1));
    tl_body_slot = hc;
    return 1;
}

static int
http_busy(http_ctx_t *hc, struct mg_connection *conn)
{
    char msg[160];

    ob_http_deadline_abandon();      /* reading it would take a thread we are keeping free */
    atomic_fetch_add(&hc->hw->slot->counters[OB_CTR_HTTP_BODY_REFUSED], 1);
    snprintf(msg, sizeof(msg), "busy: %d slow request bodies are already being received here; retry later",
             hc->body_max);
    return ob_http_reply(conn, 503, json_pack("{s:s}", "error", msg), "Retry-After: 1\r\n");
}

/*
 * Reads the whole body before any handler runs: first what has arrived
 * (a prompt client's body comes with its headers), then, holding a body
 * slot, the rest until the deadline. With every slot taken, a body that
 * is right behind its headers still gets a few milliseconds.
 * Returns 0, or the status it answered with.
 */
static int
http_body_read(http_ctx_t *hc, struct mg_connection *conn, const struct mg_request_info *ri)
{
    size_t max = (size_t) hc->hw->cfg->orders.max_body, cap, used = 0;
    int    chunked = ri->content_length < 0;

    if (ri->content_length > (long long) max) {
        /* refused unread; civetweb discards it within the deadline, in a slot */
        if (!http_take_body_slot(hc))
            return http_busy(hc, conn);
        return ob_http_error(conn, 413, "body larger than max_body");
    }
    cap = chunked ? max + 1 : (size_t) ri->content_length;
    tl_body = malloc(cap + 1);
    if (tl_body == NULL)
        return ob_http_error(conn, 413, "body larger than max_body");
    /* chunk framing is civetweb's, and a read cut short inside it is not
     * resumable: chunked bodies always wait in a slot */
    if (!chunked)
        used = http_read_some(conn, tl_body, 0, cap, OB_HTTP_WAIT_NOW);
    if (used < cap) {
        if (!http_take_body_slot(hc) &&
            (chunked || (used = http_read_some(conn, tl_body, used, cap, OB_HTTP_WAIT_BRIEF)) < cap))
            return http_busy(hc, conn);
        used = http_read_some(conn, tl_body, used, cap, OB_HTTP_WAIT_DEADLINE);
        if (ob_http_deadline_expired()) {
            atomic_fetch_add(&hc->hw->slot->counters[OB_CTR_HTTP_BODY_TIMEOUTS], 1);
            return ob_http_error(conn, 408, "request body not received within request_timeout_ms");
        }
        if (used > max)
            return ob_http_error(conn, 413, "body larger than max_body");
        if (!chunked && used < cap)
            return ob_http_error(conn, 400, "request body ended before Content-Length");
    }
    tl_body[used] = '\0';
    tl_body_len = used;
    return 0;
}

static int
http_has_body(struct mg_connection *conn, const struct mg_request_info *ri)
{
    const char *te = mg_get_header(conn, "Transfer-Encoding");

    return ri->content_length > 0 || (ri->content_length < 0 && te != NULL && strcasecmp(te, "identity") != 0);
}

/*
 * civetweb's begin_request, installed before mg_start so no request can slip
 * past it: every request is answered here. Returns the status sent.
 */
static int
http_handle(struct mg_connection *conn)
{
    http_ctx_t                   *hc = mg_get_user_data(mg_get_context(conn));
    ob_http_t                    *hw = hc->hw;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    struct timespec               t0, t1;
    int                           status;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    ob_http_deadline_begin(ob_now_ms() + hw->cfg->orders.request_timeout_ms);
    atomic_fetch_add(&hw->slot->counters[OB_CTR_HTTP_INFLIGHT], 1);
    status = http_has_body(conn, ri) ? http_body_read(hc, conn, ri) : 0;
    if (status == 0)
        status = http_dispatch(hc, conn, ri);
    /* civetweb discards what was not read, within the deadline */
    ob_http_deadline_arm(OB_HTTP_WAIT_DEADLINE);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    http_count(hw, status, (t1.tv_sec - t0.tv_sec) * 1000000LL + (t1.tv_nsec - t0.tv_nsec) / 1000);
    atomic_fetch_sub(&hw->slot->counters[OB_CTR_HTTP_INFLIGHT], 1);
    return status;
}

/* civetweb's end_request: after the unread body was discarded. */
static void
http_end_request(const struct mg_connection *conn, int status)
{
    (void) conn;
    (void) status;
    free(tl_body);
    tl_body = NULL;
    tl_body_len = 0;
    if (tl_body_slot != NULL)
        atomic_fetch_sub(&tl_body_slot->body_readers, 1);
    tl_body_slot = NULL;
    ob_http_deadline_end();
}

/*
 * civetweb's own refusals (malformed request line or header, headers too
 * large, bad URI) are answered before our handler runs: in JSON too, like
 * every other error of ours, and the connection closed.
 */
static int
http_error_reply(struct mg_connection *conn, int status, const char *errmsg)
{
    char msg[200];

    snprintf(msg, sizeof(msg), "%s", errmsg != NULL && errmsg[0] ? errmsg : mg_get_response_code_text(conn, status));
    for (char *c = msg; *c; c++)
        if ((unsigned char) *c < 0x20 || (unsigned char) *c > 0x7e)
            *c = ' ';      /* one line of ASCII, whatever civetweb put in it */
    /* no deadline state here: this comes outside begin/end_request, and
     * civetweb closes the connection itself */
    ob_http_reply(conn, status, json_pack("{s:s}", "error", msg), "Connection: close\r\n");
    return 0;
}

static int
http_log_message(const struct mg_connection *conn, const char *message)
{
    (void) conn;
    ob_log(OB_LOG_WARN, "civetweb: %s", message);
    return 1;
}

/* Connections civetweb closed, on any listener: with ob_listen_accepted, what this worker still has in hand. */
static atomic_ullong http_closed;

static void
http_connection_closed(const struct mg_connection *conn)
{
    (void) conn;
    atomic_fetch_add(&http_closed, 1);
}

static void
http_exit_thread(const struct mg_context *ctx, int thread_type, void *thread_pointer)
{
    (void) ctx;
    (void) thread_type;
    (void) thread_pointer;
    ob_http_db_close_thread();
}

/*
 * Threads of the ledger and admin listeners. They have pools of their own,
 * so nothing order traffic does (slow bodies, idle keep-alives, a flood)
 * can take the threads that serve the ledger API and the status page.
 */
#define HTTP_SIDE_THREADS 4
/* An idle keep-alive connection is closed after this; it also bounds a stopping worker's drain. */
#define HTTP_KEEPALIVE_MS      5000
#define HTTP_KEEPALIVE_MS_TEXT "5000"

/* A listener's share of threads that may wait on request bodies; the rest
 * are kept for requests without one. */
static int
http_body_max(int threads)
{
    int reserve = threads >= 2 ? (threads / 4 > 1 ? threads / 4 : 1) : 0;

    return threads - reserve;
}

/* One civetweb context serving one listener with its own thread pool. */
static struct mg_context *
http_start_listener(http_ctx_t *hc, int threads)
{
    struct mg_callbacks cb;
    struct mg_context  *ctx;
    char                nthreads[16], timeout[16];
    sigset_t            old;

    snprintf(nthreads, sizeof(nthreads), "%d", threads);
    snprintf(timeout, sizeof(timeout), "%d", hc->hw->cfg->orders.request_timeout_ms);
    const char *opts[] = {
        "listening_ports", ob_listeners[hc->listener].addr,
        "num_threads", nthreads,
        "request_timeout_ms", timeout,      /* each wait for bytes; deadline.c bounds the whole body */
        "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", HTTP_KEEPALIVE_MS_TEXT,
        "max_request_size", "16384",        /* request line + headers */
        "tcp_nodelay", "1",
        NULL,
    };
    memset(&cb, 0, sizeof(cb));
    cb.log_message = http_log_message;
    cb.begin_request = http_handle;
    cb.end_request = http_end_request;
    cb.http_error = http_error_reply;
    cb.exit_thread = http_exit_thread;
    cb.connection_closed = http_connection_closed;
    hc->body_max = http_body_max(threads);
    /* Threads inherit the mask: only the main thread takes TERM/HUP/... */
    ob_sig_block(&old);
    ctx = mg_start(&cb, hc, opts);
    ob_sig_restore(&old);
    return ctx;
}

static unsigned long long
http_open_connections(int *busy)
{
    unsigned long long closed = atomic_load(&http_closed), accepted = ob_listen_accepted(busy);

    return accepted > closed ? accepted - closed : 0;
}

/*
 * Before mg_stop: accept no more (the other workers take the shared queue),
 * ask keep-alive clients to reconnect elsewhere, and wait until every
 * connection taken is closed. mg_stop alone dropped the connections its
 * master thread had accepted but no thread had taken yet, reset unread: a
 * reload under traffic refused requests (DESIGN §1). Idle keep-alive
 * connections close by themselves within HTTP_KEEPALIVE_MS, which bounds the
 * wait, as does half the supervisor's patience with a stopping worker.
 */
static void
http_drain(const ob_cfg_t *cfg)
{
    int64_t limit = (int64_t) cfg->supervisor.shutdown_timeout_s * 500;
    int64_t until = ob_now_ms() + (limit < HTTP_KEEPALIVE_MS ? limit : HTTP_KEEPALIVE_MS);

    int                busy;
    unsigned long long open;

    ob_http_drain_begin();
    if (ob_listen_quiesce() != 0)
        ob_log(OB_LOG_WARN, "could not stop accepting before stopping; connections queued in this worker may be reset");
    /* closed is read first: a connection accepted and closed between the two reads is then counted open, not lost */
    while ((open = http_open_connections(&busy)) > 0 || busy) {
        if (ob_now_ms() >= until) {
            ob_log(OB_LOG_INFO, "stopping with %llu connection(s) still open (idle keep-alive or slow clients)", open);
            return;
        }
        ob_sleep_ms(5);
    }
}

int
ob_http_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index)
{
    ob_http_t  hw = { .cfg = cfg, .slot = slot, .index = index,
                      .statements = { [OB_DB_ORDERS] = ob_orders_statements, [OB_DB_LEDGER] = ob_ledger_statements } };
    http_ctx_t hc[OB_LISTEN_COUNT];
    int        rc = OB_EXIT_OK;

    ob_pg_set_peer_timeout(cfg->postgres.peer_timeout_s);
    ob_listen_adopt();
    mg_init_library(0);
    for (int i = 0; i < OB_LISTEN_COUNT; i++) {
        hc[i] = (http_ctx_t) { .hw = &hw, .listener = i };
        if (ob_listeners[i].fd < 0)
            continue;
        hc[i].mg = http_start_listener(&hc[i], i == OB_LISTEN_ORDERS ? cfg->orders.threads : HTTP_SIDE_THREADS);
        if (hc[i].mg == NULL) {
            ob_worker_note(slot, "civetweb failed to start on %s", ob_listeners[i].addr);
            ob_log(OB_LOG_ERROR, "civetweb failed to start on %s", ob_listeners[i].addr);
            rc = OB_EXIT_RETRY;
            break;
        }
        ob_log(OB_LOG_INFO, "http worker %d serving %s", index, ob_listeners[i].addr);
    }
    while (rc == OB_EXIT_OK && ob_worker_tick(slot))
        ob_sig_wait(250);
    if (rc == OB_EXIT_OK)
        http_drain(cfg);
    for (int i = 0; i < OB_LISTEN_COUNT; i++)
        if (hc[i].mg != NULL)
            mg_stop(hc[i].mg);   /* stops accepting, lets in-flight requests finish */
    mg_exit_library();
    return rc;
}
