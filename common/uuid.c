/* common/uuid.c: see uuid.h. */
#include "uuid.h"
#include "util.h"
#include "../shm/shm.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

static _Atomic uint64_t uuid_local_clock;   /* used when no shm segment is mapped */

/* Next (ms << 12 | counter): never below the wall clock, always above the last. */
static uint64_t
uuid_tick(void)
{
    _Atomic uint64_t *clock = ob_shm != NULL && ob_shm->writable ? &ob_shm->map->hdr.uuid_clock : &uuid_local_clock;
    uint64_t          now = (uint64_t) ob_wall_ms() << 12;
    uint64_t          last = atomic_load(clock), next;

    do {
        next = now > last ? now : last + 1;
    } while (!atomic_compare_exchange_weak(clock, &last, next));
    return next;
}

int
ob_uuid_v7(ob_uuid_t *u)
{
    uint64_t t = uuid_tick();
    uint64_t ms = t >> 12;
    uint16_t seq = (uint16_t) (t & 0xfff);

    if (getrandom(u->b + 8, 8, 0) != 8)
        return -1;
    for (int i = 0; i < 6; i++)
        u->b[i] = (uint8_t) (ms >> (40 - 8 * i));
    u->b[6] = (uint8_t) (0x70 | (seq >> 8));
    u->b[7] = (uint8_t) (seq & 0xff);
    u->b[8] = (uint8_t) (0x80 | (u->b[8] & 0x3f));    /* RFC 9562 variant */
    return 0;
}

void
ob_uuid_format(const ob_uuid_t *u, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int               o = 0;

    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[u->b[i] >> 4];
        out[o++] = hex[u->b[i] & 15];
    }
    out[o] = '\0';
}

static int
uuid_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char) tolower((unsigned char) c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int
ob_uuid_parse(const char *s, ob_uuid_t *u)
{
    int n = 0;

    if (strlen(s) != 36)
        return -1;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -1;
            continue;
        }
        int hi = uuid_hexval(s[i]), lo = uuid_hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        u->b[n++] = (uint8_t) (hi << 4 | lo);
        i++;
    }
    return 0;
}
