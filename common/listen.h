/*
 * common/listen.h: listening sockets opened by the supervisor before fork.
 *
 * Every HTTP worker inherits the same sockets and accepts from the same
 * kernel queue, so a worker that dies loses no queued connection and a
 * restarted worker needs no free port (DESIGN §1). The table lives in plain
 * process memory; fork copies it into each worker, where ob_listen_bind
 * finds it.
 */
#ifndef OB_LISTEN_H
#define OB_LISTEN_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

typedef enum { OB_LISTEN_ORDERS = 0, OB_LISTEN_LEDGER, OB_LISTEN_ADMIN, OB_LISTEN_COUNT } ob_listen_id_t;

typedef struct {
    char               addr[128];   /* "127.0.0.1:3000" as configured; "" = disabled */
    int                fd;          /* -1 when disabled */
    struct sockaddr_in sa;
} ob_listener_t;

extern ob_listener_t ob_listeners[OB_LISTEN_COUNT];

/* Opens (bind + listen, non-blocking, CLOEXEC off so workers inherit it). */
int  ob_listen_open(ob_listener_t *l, const char *addr, char *err, size_t errlen);
void ob_listen_close_all(void);
/* In an HTTP worker, before civetweb binds: ob_listen_bind adopts from now on. */
void ob_listen_adopt(void);
/*
 * bind(2) for the executable's interposed bind(): once adopting, an address
 * an inherited listener is bound to gets that socket dup2()ed onto fd (0
 * returned); anything else is bound by libc's bind.
 */
int  ob_listen_bind(int fd, const struct sockaddr *addr, socklen_t len);
/* accept(2) for the executable's interposed accept(): counts what adopted sockets accepted. */
int  ob_listen_accept(int fd, struct sockaddr *addr, socklen_t *len);
/* Connections accepted so far; *busy set while an accept() is under way (its result not yet counted). */
unsigned long long ob_listen_accepted(int *busy);
/*
 * A worker about to stop: its server threads accept no more from the shared
 * sockets (the other workers do), while it finishes what it took. -1 when a
 * descriptor could not be swapped (that listener then accepts until stopped).
 */
int  ob_listen_quiesce(void);

#endif
