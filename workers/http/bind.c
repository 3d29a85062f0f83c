/*
 * workers/http/bind.c: hands civetweb the supervisor's listening sockets.
 *
 * civetweb 1.15 always binds its own listeners and cannot adopt one. This
 * executable defines bind(), so civetweb's shared-library call resolves
 * here; the adoption itself (DESIGN §1) is ob_listen_bind's, beside the
 * table of inherited sockets, so this file only calls down into common/.
 * accept() is interposed the same way, to count what the worker took in
 * hand and so know, when it stops, that it answered all of it.
 */
#include "../../common/listen.h"

#include <sys/socket.h>

int
bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    return ob_listen_bind(fd, addr, len);
}

int
accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    return ob_listen_accept(fd, addr, len);
}
