/*
 * tests/harness/http_client.c: a minimal HTTP/1.1 client on raw sockets.
 * Tests need to see exactly what went over the wire (status, headers, a
 * connection refused or reset) and to bound every wait, which a full
 * client library would hide or retry.
 */
#include "tests/harness.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int obh_http_timeout_ms = 30000;

int
obh_http(int port, const char *method, const char *path, const char *extra_headers, const char *req_body,
         char *body, size_t bodylen, char *hdrs, size_t hdrslen)
{
    return obh_http_at(NULL, port, method, path, extra_headers, req_body, body, bodylen, hdrs, hdrslen);
}

int
obh_http_at(const char *ip, int port, const char *method, const char *path, const char *extra_headers,
            const char *req_body, char *body, size_t bodylen, char *hdrs, size_t hdrslen)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
    enum { BUFLEN = 1 << 18 };
    char              *buf = malloc(BUFLEN);
    size_t             used = 0, blen = req_body ? strlen(req_body) : 0;
    int                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), status = 0, n;
    struct timeval     tv = { obh_http_timeout_ms / 1000, (obh_http_timeout_ms % 1000) * 1000 };
    char               head[2048];

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ip != NULL && inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        cr_assert_fail("obh_http_at: \"%s\" is not an IPv4 address", ip);
    cr_assert_not_null(buf);
    if (fd < 0) {
        free(buf);
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));    /* bounds connect() too */
    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        free(buf);
        return -e;
    }
    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %zu\r\n%s\r\n", method,
                 path, blen, extra_headers ? extra_headers : "");
    if (send(fd, head, (size_t) n, MSG_NOSIGNAL) != n || (blen && send(fd, req_body, blen, MSG_NOSIGNAL) != (ssize_t) blen)) {
        int e = errno ? errno : EPIPE;
        close(fd);
        free(buf);
        return -e;
    }
    for (;;) {
        ssize_t r = recv(fd, buf + used, BUFLEN - 1 - used, 0);
        if (r <= 0)
            break;
        used += (size_t) r;
        if (used >= BUFLEN - 1)
            break;
    }
    close(fd);
    buf[used] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return -ECONNRESET;    /* closed before a status line: the request failed */
    }
    char *sep = strstr(buf, "\r\n\r\n");
    if (hdrs != NULL) {
        size_t hl = sep ? (size_t) (sep - buf) : used;
        if (hl >= hdrslen)
            hl = hdrslen - 1;
        memcpy(hdrs, buf, hl);
        hdrs[hl] = '\0';
    }
    if (body != NULL) {
        ob_strlcpy(body, sep ? sep + 4 : "", bodylen);
    }
    free(buf);
    return status;
}
