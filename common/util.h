/*
 * common/util.h: small helpers every process of outboxd shares.
 *
 * Exit codes are the contract between a worker and the supervisor
 * (DESIGN §1): 0 = asked to stop, 1 = restart with backoff, 2 = fatal
 * configuration problem, not respawned until the next reload.
 */
#ifndef OB_UTIL_H
#define OB_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define OB_EXIT_OK    0
#define OB_EXIT_RETRY 1
#define OB_EXIT_FATAL 2

#define OB_XSTR(x) #x
#define OB_STR(x)  OB_XSTR(x)

#define OB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic milliseconds: system-wide, so heartbeats compare across processes. */
int64_t ob_now_ms(void);
int64_t ob_now_us(void);
/* Wall-clock milliseconds since the epoch, for display only. */
int64_t ob_wall_ms(void);
/* Wall-clock microseconds since the epoch: stage times that start on another host's clock (a commit time). */
int64_t ob_wall_us(void);

/* Integers from PostgreSQL binary results (network byte order). */
int32_t ob_be32(const char *p);
int64_t ob_be64(const char *p);

/* Copies at most size-1 bytes and always terminates; returns strlen(src) like BSD. */
size_t ob_strlcpy(char *dst, const char *src, size_t size);

/* FNV-1a 64: cheap digest of the config, shown in status to spot drift. */
uint64_t ob_fnv1a64(const void *data, size_t len, uint64_t seed);

/* Parses "host:port" (IPv4 literal or "localhost") into parts; 0 or -1. */
int ob_parse_hostport(const char *s, char *host, size_t hostlen, int *port);

/*
 * Deepest nesting of arrays and objects in JSON text, counted without
 * recursion (brackets inside strings do not count). jansson's parser
 * recurses once per level, and on a civetweb thread's fixed 100 KiB stack
 * about 800 levels overflow it: callers refuse deep text before parsing.
 * Stops counting at limit + 1, so hostile input costs at most one pass.
 */
int ob_json_depth(const char *text, size_t len, int limit);

/* Sleeps ms milliseconds, restarting after signals only if the deadline is not reached. */
void ob_sleep_ms(int64_t ms);

#endif
