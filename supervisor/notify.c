/*
 * supervisor/notify.c: sd_notify without libsystemd. systemd passes a
 * datagram socket path in NOTIFY_SOCKET ('@' = abstract namespace); one
 * sendto per state change is the whole protocol.
 */
#include "sup.h"
#include "../common/util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>

void
ob_sd_notify(const char *state)
{
    const char        *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    char               msg[256];
    socklen_t          len;
    int                fd, n;

    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(sa.sun_path))
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path));
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + strlen(path));
    /* RELOADING=1 must carry MONOTONIC_USEC for Type=notify-reload. */
    if (strncmp(state, "RELOADING=1", 11) == 0)
        n = snprintf(msg, sizeof(msg), "%s\nMONOTONIC_USEC=%lld", state, (long long) ob_now_ms() * 1000);
    else
        n = snprintf(msg, sizeof(msg), "%s", state);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, (size_t) n, 0, (struct sockaddr *) &sa, len) < 0) {
        /* systemd gone or not listening: nothing useful to do */
    }
    close(fd);
}
