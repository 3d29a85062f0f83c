/*
 * workers/http/deadline.c: one deadline for a whole request body.
 *
 * civetweb 1.15's request_timeout_ms bounds each wait for bytes, not the
 * body: pull_all() keeps reading while anything arrives, so a client that
 * sends one byte every two seconds holds a thread for as long as it likes,
 * and so does the discard of an unread body after the handler returned.
 * civetweb has no hook for it, but every wait for body bytes is a poll()
 * on the connection's socket from its shared library. This executable
 * defines poll() (as bind.c defines bind()): while the calling thread has
 * a deadline armed, a single-socket wait for input is cut to the time
 * left, and once the time is up it fails with ETIMEDOUT, which civetweb
 * turns into a read error. Every other poll() in the process (libpq,
 * librdkafka, civetweb's accept loop, writes) goes straight to libc.
 *
 * The deadline is armed only around our own body reads and from the end of
 * the handler to civetweb's end_request (the discard), never while libpq
 * waits for the database on the same thread. Two more modes take what has
 * arrived, or what arrives within a few milliseconds, so a prompt client's
 * body is read without the wait a slow one needs.
 */
#include "deadline.h"
#include "../../common/util.h"

#include <dlfcn.h>
#include <errno.h>
#include <poll.h>

typedef int (*poll_fn_t)(struct pollfd *, nfds_t, int);

static __thread int64_t tl_deadline_ms;   /* this request's, monotonic */
static __thread int     tl_armed;         /* OB_HTTP_WAIT_* */
static __thread int     tl_expired;       /* time ran out, or the body was abandoned */
static __thread int64_t tl_brief_ms;      /* end of a WAIT_BRIEF window */
static __thread int     tl_in_request;    /* between begin and end: nothing acts outside */
static poll_fn_t        real_poll;

/* Resolved before any thread exists, so no thread ever writes it. */
__attribute__((constructor)) static void
deadline_resolve(void)
{
    real_poll = (poll_fn_t) dlsym(RTLD_NEXT, "poll");
}

void
ob_http_deadline_begin(int64_t deadline_ms)
{
    tl_deadline_ms = deadline_ms;
    tl_armed = OB_HTTP_WAIT_ANY;
    tl_expired = 0;
    tl_in_request = 1;
}

void
ob_http_deadline_arm(int mode)
{
    tl_armed = mode;
    if (mode == OB_HTTP_WAIT_BRIEF)
        tl_brief_ms = ob_now_ms() + OB_HTTP_BRIEF_MS;
}

void
ob_http_deadline_abandon(void)
{
    if (!tl_in_request)
        return;     /* civetweb's own refusals come before begin and after no end */
    tl_expired = 1;
    tl_armed = OB_HTTP_WAIT_DEADLINE;
}

int
ob_http_deadline_expired(void)
{
    return tl_in_request && tl_expired;
}

void
ob_http_deadline_end(void)
{
    tl_armed = OB_HTTP_WAIT_ANY;
    tl_expired = 0;
    tl_deadline_ms = 0;
    tl_in_request = 0;
}

/* glibc declares poll()'s fds write-only for its fortify checks, but poll
 * reads each events field: that is what the warning misreads. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
int
poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
    if (real_poll == NULL) {
        errno = ENOSYS;
        return -1;
    }
    /* only a wait for input on one socket (civetweb reading a request) is ours to bound */
    if (!tl_in_request || tl_armed == OB_HTTP_WAIT_ANY || nfds != 1 || !(fds[0].events & POLLIN))
        return real_poll(fds, nfds, timeout);
    if (tl_armed == OB_HTTP_WAIT_NOW || tl_armed == OB_HTTP_WAIT_BRIEF) {
        int64_t left = tl_armed == OB_HTTP_WAIT_NOW ? 0 : tl_brief_ms - ob_now_ms();
        int     rc = real_poll(fds, nfds, left <= 0 ? 0 : timeout >= 0 && timeout < left ? timeout : (int) left);
        if (rc == 0)
            errno = EAGAIN;     /* not a timeout of the request: the caller decides whether to wait on */
        return rc == 0 ? -1 : rc;
    }
    int64_t left = tl_deadline_ms - ob_now_ms();
    if (tl_expired || left <= 0) {
        tl_expired = 1;
        errno = ETIMEDOUT;
        return -1;
    }
    return real_poll(fds, nfds, timeout < 0 || timeout > left ? (int) left : timeout);
}
#pragma GCC diagnostic pop
