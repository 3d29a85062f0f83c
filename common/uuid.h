/*
 * common/uuid.h: UUIDv7 (RFC 9562) order and event ids, made in C so the
 * partition is known before the insert statement is sent.
 *
 * 48 bits of Unix milliseconds, then a 12-bit counter (rand_a used as a
 * sequence, RFC 9562 method 1), then 62 random bits. The (ms, counter) clock
 * lives in the shm header when a segment is mapped, so ids from every worker
 * of an instance are strictly increasing, not only within one process.
 */
#ifndef OB_UUID_H
#define OB_UUID_H

#include <stdint.h>

typedef struct {
    uint8_t b[16];
} ob_uuid_t;

/* Fills u; returns 0, or -1 if the kernel gave no random bytes. */
int ob_uuid_v7(ob_uuid_t *u);
/* 36 characters plus NUL, lowercase. */
void ob_uuid_format(const ob_uuid_t *u, char out[37]);
/* Accepts the canonical 8-4-4-4-12 hex form (either case); 0 or -1. */
int ob_uuid_parse(const char *s, ob_uuid_t *u);

#endif
