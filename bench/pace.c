/*
 * bench/pace.c: POST /orders at a fixed rate (open loop), like wrk2.
 *
 * wrk measures saturation: each connection sends its next request when the
 * previous answer arrives, so a slow server also slows the load. Latency
 * at a given rate needs the opposite: request k is due at t0 + k/rate
 * whatever happened before, and its latency is counted from when it was
 * due, not from when a free connection finally sent it (no "coordinated
 * omission"). One thread, keep-alive connections, epoll with a timeout in
 * nanoseconds (epoll_pwait2) so the schedule holds well below a
 * millisecond without spinning a core the server needs.
 */
#include "bench/obbench.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PACE_GRACE_S 15.0      /* after the last due time, wait this long for answers */

typedef struct {
    int    fd;
    int    busy;               /* a request is in flight */
    double due;                /* when the request in flight was due */
    char   in[16384];
    size_t used;
} pace_conn_t;

typedef struct {
    int          port, ep, nconns;
    pace_conn_t *conns;
    double      *lat_ms;       /* one per answered request */
    size_t       nlat;
    long         ok, http_errors, io_errors, late;
} pace_t;

static void
pace_connect(pace_t *p, pace_conn_t *c)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) p->port) };
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    int                one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) != 0)
        bench_die("pace: connect to port %d: %s", p->port, strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    if (epoll_ctl(p->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        bench_die("pace: epoll_ctl: %s", strerror(errno));
    c->busy = 0;
    c->used = 0;
}

/* A connection the server closed or broke: count the request lost, open anew. */
static void
pace_reset(pace_t *p, pace_conn_t *c)
{
    if (c->busy)
        p->io_errors++;
    epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    pace_connect(p, c);
}

static pace_conn_t *
pace_idle(pace_t *p)
{
    for (int i = 0; i < p->nconns; i++)
        if (!p->conns[i].busy)
            return &p->conns[i];
    return NULL;
}

/* Request k: the body post_order.lua sends for its k-th request. */
static void
pace_send(pace_t *p, pace_conn_t *c, long k, double due)
{
    char    body[128], req[512];
    int     blen = snprintf(body, sizeof(body), "{\"customerId\":\"c-%ld\",\"amount\":\"%ld.%02ld\",\"currency\":\"USD\"}",
                            k % 1000, 1 + k % 500, k % 100);
    int     n = snprintf(req, sizeof(req),
                         "POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         "Content-Length: %d\r\n\r\n%s", blen, body);
    ssize_t w = send(c->fd, req, (size_t) n, MSG_NOSIGNAL);

    c->busy = 1;
    c->due = due;
    if (w != n)       /* a few hundred bytes into an idle local socket: all or broken */
        pace_reset(p, c);
}

/* Length of a complete response at the start of c->in, or 0 if not all here yet. */
static size_t
pace_complete(pace_conn_t *c, int *status)
{
    char  *end, *cl;
    size_t head;

    c->in[c->used] = '\0';
    end = strstr(c->in, "\r\n\r\n");
    if (end == NULL)
        return 0;
    head = (size_t) (end - c->in) + 4;
    cl = strcasestr(c->in, "\r\nContent-Length:");
    size_t body = cl != NULL && cl < end ? (size_t) atol(cl + 17) : 0;
    if (c->used < head + body)
        return 0;
    if (sscanf(c->in, "HTTP/1.%*d %d", status) != 1)
        *status = 0;
    return head + body;
}

static void
pace_read(pace_t *p, pace_conn_t *c)
{
    ssize_t r = recv(c->fd, c->in + c->used, sizeof(c->in) - 1 - c->used, 0);
    size_t  len;
    int     status;

    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        pace_reset(p, c);
        return;
    }
    c->used += (size_t) r;
    if ((len = pace_complete(c, &status)) == 0) {
        if (c->used >= sizeof(c->in) - 1)
            pace_reset(p, c);    /* an answer far larger than any order: give up on it */
        return;
    }
    if (c->busy) {
        p->lat_ms[p->nlat++] = (bench_now() - c->due) * 1000.0;
        if (status == 201)
            p->ok++;
        else
            p->http_errors++;
    }
    memmove(c->in, c->in + len, c->used - len);
    c->used -= len;
    c->busy = 0;
}

static int
pace_busy(const pace_t *p)
{
    int n = 0;

    for (int i = 0; i < p->nconns; i++)
        n += p->conns[i].busy;
    return n;
}

/* pace --port P --rate R --seconds S [--conns C] */
int
cmd_pace(int argc, char **argv)
{
    pace_t             p = { .port = (int) bench_opt_long(argc, argv, "--port", 3000) };
    double             rate = bench_opt_double(argc, argv, "--rate", 100);
    double             seconds = bench_opt_double(argc, argv, "--seconds", 20);
    long               total = (long) (rate * seconds), sent = 0;
    struct epoll_event evs[64];

    p.nconns = (int) bench_opt_long(argc, argv, "--conns", 32);
    if (rate <= 0 || total < 1 || p.nconns < 1)
        bench_die("pace: --rate, --seconds and --conns must be positive");
    p.conns = calloc((size_t) p.nconns, sizeof(*p.conns));
    p.lat_ms = malloc((size_t) total * sizeof(*p.lat_ms));
    p.ep = epoll_create1(EPOLL_CLOEXEC);
    if (p.conns == NULL || p.lat_ms == NULL || p.ep < 0)
        bench_die("pace: out of memory");
    for (int i = 0; i < p.nconns; i++)
        pace_connect(&p, &p.conns[i]);

    double  t0 = bench_now() + 0.05;
    int64_t wall0 = ob_wall_ms() + 50;
    for (;;) {
        double now = bench_now();
        while (sent < total && t0 + (double) sent / rate <= now) {
            pace_conn_t *c = pace_idle(&p);
            if (c == NULL)
                break;        /* all connections waiting: the request stays due, its latency grows */
            if (now - (t0 + (double) sent / rate) > 0.001)
                p.late++;
            pace_send(&p, c, sent, t0 + (double) sent / rate);
            sent++;
        }
        if (sent >= total && pace_busy(&p) == 0)
            break;
        if (now > t0 + seconds + PACE_GRACE_S)
            break;
        double wait = 0.05;
        if (sent < total && pace_idle(&p) != NULL)
            wait = fmax(0.0, t0 + (double) sent / rate - now);
        struct timespec ts = { (time_t) wait, (long) ((wait - floor(wait)) * 1e9) };
        int             n = epoll_pwait2(p.ep, evs, 64, &ts, NULL);
        for (int i = 0; i < n; i++)
            pace_read(&p, evs[i].data.ptr);
    }
    double secs = bench_now() - t0;
    long   lost = sent - (long) p.nlat;
    bench_note("pace: %ld sent at %.0f/s, %ld created, %ld HTTP errors, %ld lost", sent, rate, p.ok,
               p.http_errors, lost);
    bench_emit(json_pack("{s:f, s:f, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:o}", "rate", rate,
                         "seconds", seconds, "conns", p.nconns, "sent", (json_int_t) sent, "created", (json_int_t) p.ok,
                         "http_errors", (json_int_t) p.http_errors, "io_errors", (json_int_t) p.io_errors, "lost",
                         (json_int_t) lost, "late",
                         (json_int_t) p.late, "achieved_rate", (double) p.nlat / secs, "start_wall_ms",
                         (json_int_t) wall0, "end_wall_ms", (json_int_t) ob_wall_ms(), "latency_ms",
                         bench_pct_json(p.lat_ms, p.nlat)));
    for (int i = 0; i < p.nconns; i++)
        close(p.conns[i].fd);
    close(p.ep);
    free(p.conns);
    free(p.lat_ms);
    return 0;
}
