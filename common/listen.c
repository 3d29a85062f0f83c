/*
 * common/listen.c: open the supervisor's listening sockets, and adopt them
 * in an HTTP worker.
 *
 * civetweb 1.15 always creates and binds its own listeners (socket,
 * SO_REUSEADDR, bind, listen, getsockname) and has no option to adopt an
 * existing one, so the executable defines bind() (workers/http/bind.c) and
 * civetweb's shared-library call resolves to it; that bind() only calls
 * ob_listen_bind here. Once ob_listen_adopt has been called, an address the
 * supervisor already listens on gets the inherited socket dup2()ed onto
 * civetweb's descriptor and 0 returned, so civetweb's later listen() and
 * poll() act on the shared kernel queue; anything else goes to the real
 * bind via dlsym(RTLD_NEXT). The adoption state is private to this file,
 * so the worker that interposes bind() depends on common/, never the
 * reverse.
 *
 * The inherited socket is O_NONBLOCK (set by the supervisor): civetweb polls
 * then accept()s, and when another worker took the connection first accept
 * must fail with EAGAIN (civetweb ignores that) rather than block.
 */
#include "listen.h"
#include "util.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*bind_fn_t)(int, const struct sockaddr *, socklen_t);
typedef int (*accept_fn_t)(int, struct sockaddr *, socklen_t *);

ob_listener_t ob_listeners[OB_LISTEN_COUNT] = { { "", -1, { 0 } }, { "", -1, { 0 } }, { "", -1, { 0 } } };
/* Set in HTTP workers only: bind() then adopts inherited sockets. */
static int    listen_adopting;
/* civetweb's descriptors an inherited socket was dup2()ed onto, -1 for none */
static int    listen_adopted[OB_LISTEN_COUNT] = { -1, -1, -1 };
/* connections accepted on them by civetweb's master threads, and accept() calls under way: a call that began
 * before ob_listen_quiesce may still return a connection after it */
static atomic_ullong listen_accepted;
static atomic_int    listen_accepting;

/*
 * libc's bind. A plain call to bind() from this executable resolves to the
 * interposed one, so the real one is looked up past it.
 */
static int
listen_real_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static bind_fn_t real_bind;

    if (real_bind == NULL)
        real_bind = (bind_fn_t) dlsym(RTLD_NEXT, "bind");
    if (real_bind == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real_bind(fd, addr, len);
}

static int
listen_resolve(const char *addr, struct sockaddr_in *sa, char *err, size_t errlen)
{
    char host[128];
    int  port;

    if (ob_parse_hostport(addr, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "listen address \"%s\": expected host:port", addr);
        return -1;
    }
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t) port);
    if (strcmp(host, "localhost") == 0)
        ob_strlcpy(host, "127.0.0.1", sizeof(host));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        snprintf(err, errlen, "listen address \"%s\": \"%s\" is not an IPv4 address", addr, host);
        return -1;
    }
    return 0;
}

int
ob_listen_open(ob_listener_t *l, const char *addr, char *err, size_t errlen)
{
    int one = 1, fd;

    ob_strlcpy(l->addr, addr, sizeof(l->addr));
    l->fd = -1;
    if (addr[0] == '\0')
        return 0;
    if (listen_resolve(addr, &l->sa, err, errlen) != 0)
        return -1;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket() failed: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* the supervisor opens its sockets; it never adopts one */
    if (listen_real_bind(fd, (struct sockaddr *) &l->sa, sizeof(l->sa)) != 0) {
        snprintf(err, errlen, "bind(%s) failed: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    /* Non-blocking: several workers poll the same socket and all wake for one
     * connection; the losers must get EAGAIN from accept, not block in it. */
    if (listen(fd, 1024) != 0 || fcntl(fd, F_SETFL, O_NONBLOCK) != 0) {
        snprintf(err, errlen, "listen(%s) failed: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    l->fd = fd;
    return 0;
}

void
ob_listen_close_all(void)
{
    for (int i = 0; i < OB_LISTEN_COUNT; i++)
        if (ob_listeners[i].fd >= 0) {
            close(ob_listeners[i].fd);
            ob_listeners[i].fd = -1;
        }
}

/* Index of the inherited listener bound to sa, or -1. */
static int
listen_find(const struct sockaddr *sa, size_t salen)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *) sa;

    if (sa == NULL || sa->sa_family != AF_INET || salen < sizeof(*in))
        return -1;
    for (int i = 0; i < OB_LISTEN_COUNT; i++) {
        const ob_listener_t *l = &ob_listeners[i];
        if (l->fd >= 0 && l->sa.sin_port == in->sin_port && l->sa.sin_addr.s_addr == in->sin_addr.s_addr)
            return i;
    }
    return -1;
}

void
ob_listen_adopt(void)
{
    listen_adopting = 1;
}

int
ob_listen_bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    int i = listen_adopting ? listen_find(addr, len) : -1;

    if (i < 0)
        return listen_real_bind(fd, addr, len);
    if (dup2(ob_listeners[i].fd, fd) < 0)
        return -1;
    listen_adopted[i] = fd;
    return 0;
}

static int
listen_adopted_fd(int fd)
{
    for (int i = 0; i < OB_LISTEN_COUNT; i++)
        if (fd >= 0 && listen_adopted[i] == fd)
            return 1;
    return 0;
}

int
ob_listen_accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    static accept_fn_t real_accept;
    int                c;

    if (real_accept == NULL)
        real_accept = (accept_fn_t) dlsym(RTLD_NEXT, "accept");
    if (real_accept == NULL) {
        errno = ENOSYS;
        return -1;
    }
    atomic_fetch_add(&listen_accepting, 1);
    c = real_accept(fd, addr, len);
    if (c >= 0 && listen_adopted_fd(fd))
        atomic_fetch_add(&listen_accepted, 1);
    atomic_fetch_sub(&listen_accepting, 1);
    return c;
}

unsigned long long
ob_listen_accepted(int *busy)
{
    *busy = atomic_load(&listen_accepting) > 0;
    return atomic_load(&listen_accepted);
}

/*
 * An eventfd whose counter stays 0 never polls readable, so civetweb's
 * master thread, polling the descriptor number it bound, accepts no more;
 * the shared socket itself stays open in the supervisor and the other
 * workers, whose accept() takes every later connection. Closing the
 * descriptor instead would let the number be reused by anything.
 */
int
ob_listen_quiesce(void)
{
    int rc = 0;

    for (int i = 0; i < OB_LISTEN_COUNT; i++) {
        if (listen_adopted[i] < 0)
            continue;
        int e = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (e < 0 || dup2(e, listen_adopted[i]) < 0)
            rc = -1;
        if (e >= 0)
            close(e);
    }
    return rc;
}
