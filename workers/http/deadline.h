/*
 * workers/http/deadline.h: the whole-request deadline (deadline.c).
 *
 * begin: a request starts, due by deadline_ms (monotonic). arm(mode) says
 * how civetweb's next reads of this thread's connection may wait: WAIT_NOW
 * takes what has arrived, WAIT_BRIEF what arrives within OB_HTTP_BRIEF_MS
 * (a body sent right behind its headers),
 * WAIT_DEADLINE waits until the deadline, WAIT_ANY is civetweb's own
 * behaviour (and libpq's, on the same thread). abandon: read no more of
 * this body (civetweb then closes the connection). expired: the time ran
 * out or the body was abandoned. end: request done.
 */
#ifndef OB_HTTP_DEADLINE_H
#define OB_HTTP_DEADLINE_H

#include <stdint.h>

enum { OB_HTTP_WAIT_ANY = 0, OB_HTTP_WAIT_DEADLINE, OB_HTTP_WAIT_NOW, OB_HTTP_WAIT_BRIEF };
#define OB_HTTP_BRIEF_MS 10
void ob_http_deadline_begin(int64_t deadline_ms);
void ob_http_deadline_arm(int mode);
void ob_http_deadline_abandon(void);
int  ob_http_deadline_expired(void);
void ob_http_deadline_end(void);

#endif
