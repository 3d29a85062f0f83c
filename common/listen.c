/* common/listen.c: open the supervisor's listening sockets. */
#include "listen.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

ob_listener_t ob_listeners[OB_LISTEN_COUNT] = { { "", -1, { 0 } }, { "", -1, { 0 } }, { "", -1, { 0 } } };
int           ob_listen_adopting;

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
    if (bind(fd, (struct sockaddr *) &l->sa, sizeof(l->sa)) != 0) {
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

int
ob_listen_find(const struct sockaddr *sa, size_t salen)
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
