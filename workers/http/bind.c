/*
 * workers/http/bind.c: hands civetweb the supervisor's listening sockets.
 *
 * civetweb 1.15 always creates and binds its own listeners (socket,
 * SO_REUSEADDR, bind, listen, getsockname) and has no option to adopt an
 * existing one. This executable defines bind(); civetweb's shared-library
 * call resolves to it. When the address is one the supervisor already
 * listens on, the inherited socket is dup2()ed onto civetweb's descriptor
 * and 0 returned, so civetweb's later listen() and poll() act on the shared
 * kernel queue; anything else goes to the real bind via dlsym(RTLD_NEXT).
 *
 * The inherited socket is O_NONBLOCK (set by the supervisor): civetweb polls
 * then accept()s, and when another worker took the connection first accept
 * must fail with EAGAIN (civetweb ignores that) rather than block.
 */
#include "../../common/listen.h"

#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*bind_fn_t)(int, const struct sockaddr *, socklen_t);

int
bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    static bind_fn_t real_bind;
    int              i = ob_listen_adopting ? ob_listen_find(addr, len) : -1;

    if (i >= 0)
        return dup2(ob_listeners[i].fd, fd) < 0 ? -1 : 0;
    if (real_bind == NULL)
        real_bind = (bind_fn_t) dlsym(RTLD_NEXT, "bind");
    if (real_bind == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real_bind(fd, addr, len);
}
