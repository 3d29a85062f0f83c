/*
 * tests/fault/load.c: client processes and their history.
 *
 * Each client is a forked process with its own history file in the
 * fixture's directory, one line per request after its retries:
 *   op  outcome  status  idempotency-key  order-id  amount(1/10000)
 * flushed as it goes, so the file is whole whatever happens to the system
 * under test. Creates carry keys unique to the run; a client cancels only
 * its own acknowledged orders, each at most once, so a 409 "already
 * cancelled" after an unanswered attempt means that attempt took effect.
 */
#include "tests/fault/fault.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    fx_t                 *fx;
    const fx_load_opts_t *o;
    int                   index;
    int                   port;
    FILE                 *hist;
    char                (*open_orders)[40];
    int                   nopen;
} client_t;

static obc_outcome_t
classify(int status)
{
    if (status >= 200 && status < 300)
        return OBC_OK;
    if (status == 503 || status < 0)
        return OBC_UNAVAILABLE;
    if (status >= 400 && status < 500)
        return OBC_REFUSED;
    return OBC_BAD;
}

/* One request with its retries; returns the last status, body in body. */
static int
client_request(client_t *c, const char *path, const char *hdrs, const char *req, char *body, size_t bodylen,
               obc_outcome_t *out)
{
    int status = 0, unanswered = 0;

    for (int attempt = 0; attempt <= c->o->retries; attempt++) {
        if (attempt > 0)
            ob_sleep_ms(50 * attempt < 500 ? 50 * attempt : 500);
        atomic_fetch_add(&c->fx->sh->attempts, 1);
        status = obh_http_at(c->o->addr, c->port, "POST", path, hdrs, req, body, bodylen, NULL, 0);
        *out = classify(status);
        if (*out == OBC_REFUSED && status == 409 && unanswered && strstr(body, "already cancelled"))
            *out = OBC_OK;    /* our unanswered attempt went through */
        if (*out != OBC_UNAVAILABLE)
            break;
        /* refused connections were never processed; anything else may have been */
        unanswered |= status != -ECONNREFUSED;
    }
    return status;
}

static void
client_create(client_t *c, int n)
{
    char          key[64], hdrs[128], req[256], body[2048], order[40] = "";
    long          cents = 1 + random() % 1000000;
    obc_outcome_t out;

    snprintf(key, sizeof(key), "%s-c%d-%d", c->fx->h.tag, c->index, n);
    snprintf(hdrs, sizeof(hdrs), "Idempotency-Key: %s\r\nContent-Type: application/json\r\n", key);
    snprintf(req, sizeof(req), "{\"customerId\":\"client-%d\",\"amount\":\"%ld.%02ld\",\"currency\":\"USD\"}",
             c->index, cents / 100, cents % 100);
    int   status = client_request(c, "/orders", hdrs, req, body, sizeof(body), &out);
    char *id = strstr(body, "\"id\":\"");
    if (out == OBC_OK && id != NULL && strlen(id + 6) >= 36) {
        memcpy(order, id + 6, 36);
        order[36] = '\0';
        ob_strlcpy(c->open_orders[c->nopen++], order, 40);
    }
    fprintf(c->hist, "create\t%d\t%d\t%s\t%s\t%ld\n", (int) out, status, key, order[0] ? order : "-", cents * 100);
    if (out == OBC_OK)
        atomic_fetch_add(&c->fx->sh->acked, 1);
}

static void
client_cancel(client_t *c)
{
    int           k = (int) (random() % c->nopen);
    char          order[40], path[96], body[2048];
    obc_outcome_t out;

    ob_strlcpy(order, c->open_orders[k], sizeof(order));
    memcpy(c->open_orders[k], c->open_orders[--c->nopen], 40);
    snprintf(path, sizeof(path), "/orders/%s/cancel", order);
    int status = client_request(c, path, NULL, NULL, body, sizeof(body), &out);
    fprintf(c->hist, "cancel\t%d\t%d\t-\t%s\t0\n", (int) out, status, order);
    if (out == OBC_OK)
        atomic_fetch_add(&c->fx->sh->acked, 1);
}

static void
client_main(client_t *c)
{
    c->hist = fx_client_history(c->fx, "hist", c->index);
    c->open_orders = calloc(1 << 16, sizeof(*c->open_orders));
    if (c->open_orders == NULL)
        _exit(3);
    obh_http_timeout_ms = c->o->timeout_ms;
    for (int n = 0; !atomic_load(&c->fx->sh->stop) && (c->o->max_requests == 0 || n < c->o->max_requests); n++) {
        if (c->nopen > 0 && random() % 100 < c->o->cancel_pct)
            client_cancel(c);
        else if (c->nopen < (1 << 16))
            client_create(c, n);
        if (c->o->pace_ms > 0)
            ob_sleep_ms(c->o->pace_ms);
    }
    fclose(c->hist);
    atomic_fetch_add(&c->fx->sh->done, 1);
    _exit(0);
}

void
fx_load_start(fx_t *fx, const fx_load_opts_t *o)
{
    static fx_load_opts_t opts;    /* the children read it after fork */

    opts = *o;
    if (opts.timeout_ms == 0)
        opts.timeout_ms = 5000;
    cr_assert(opts.clients > 0 && opts.clients <= FX_MAX_CLIENTS);
    atomic_store(&fx->sh->stop, 0);
    for (int i = 0; i < opts.clients; i++) {
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            client_t c = { .fx = fx, .o = &opts, .index = fx->nclients + i,
                           .port = opts.port ? opts.port : fx->h.orders_port };
            client_main(&c);
        }
        fx->clients[fx->nclients + i] = pid;
    }
    fx->nclients += opts.clients;
}

static void
fx_reap(fx_t *fx, int timeout_ms)
{
    int64_t deadline = ob_now_ms() + timeout_ms;

    for (int i = 0; i < fx->nclients; i++) {
        int st;
        while (fx->clients[i] > 0) {
            pid_t r = waitpid(fx->clients[i], &st, WNOHANG);
            if (r == fx->clients[i]) {
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d failed (status %d)", i, st);
                fx->clients[i] = 0;
            } else if (ob_now_ms() > deadline) {
                kill(fx->clients[i], SIGKILL);
                waitpid(fx->clients[i], &st, 0);
                cr_assert_fail("client %d did not finish in time", i);
            } else {
                ob_sleep_ms(20);
            }
        }
    }
}

void
fx_load_stop(fx_t *fx)
{
    atomic_store(&fx->sh->stop, 1);
    /* a client may be inside its retries against a system still healing */
    fx_reap(fx, obh_ms(60000));
}

void
fx_load_wait_done(fx_t *fx, int timeout_ms)
{
    fx_reap(fx, timeout_ms);
}

int
fx_wait_acked(fx_t *fx, long more, int timeout_ms)
{
    long    target = atomic_load(&fx->sh->acked) + more;
    int64_t deadline = ob_now_ms() + timeout_ms;

    while (atomic_load(&fx->sh->acked) < target) {
        if (ob_now_ms() > deadline)
            return 0;
        ob_sleep_ms(20);
    }
    return 1;
}

/* Reads every client's history file into one array. */
size_t
fx_history(fx_t *fx, obc_req_t **out)
{
    size_t     n = 0, cap = 0;
    obc_req_t *v = NULL;

    fx_grow((void **) &v, &cap, 0, sizeof(*v));
    for (int i = 0; i < fx->nclients; i++) {
        char  path[256], line[512], op[16], key[64], order[40];
        int   outcome, status;
        long long amount;
        snprintf(path, sizeof(path), "%s/hist.%d", fx->h.dir, i);
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f, "history %s missing", path);
        while (fgets(line, sizeof(line), f) != NULL) {
            cr_assert_eq(sscanf(line, "%15s %d %d %63s %39s %lld", op, &outcome, &status, key, order, &amount), 6,
                         "bad history line in %s: %s", path, line);
            fx_grow((void **) &v, &cap, n, sizeof(*v));
            obc_req_t *q = &v[n++];
            memset(q, 0, sizeof(*q));
            q->op = strcmp(op, "cancel") == 0 ? OBC_CANCEL : OBC_CREATE;
            q->outcome = (obc_outcome_t) outcome;
            q->status = status;
            q->amount = amount;
            ob_strlcpy(q->key, strcmp(key, "-") ? key : "", sizeof(q->key));
            ob_strlcpy(q->order, strcmp(order, "-") ? order : "", sizeof(q->order));
        }
        fclose(f);
    }
    *out = v;
    return n;
}

FILE *
fx_client_history(fx_t *fx, const char *prefix, int index)
{
    char  path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s.%d", fx->h.dir, prefix, index);
    if ((f = fopen(path, "w")) == NULL)
        _exit(3);
    setvbuf(f, NULL, _IOLBF, 0);
    srandom((unsigned) (getpid() * 2654435761u));
    return f;
}

fx_shared_t *
fx_shared_new(void)
{
    fx_shared_t *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    cr_assert(sh != MAP_FAILED);
    memset(sh, 0, sizeof(*sh));
    return sh;
}
