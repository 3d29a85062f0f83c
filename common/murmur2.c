/* common/murmur2.c: see murmur2.h. Unsigned arithmetic reproduces Java's
 * wrapping int multiply; >> on uint32_t is Java's >>>. */
#include "murmur2.h"

int32_t
ob_murmur2(const void *key, size_t len)
{
    const unsigned char *data = key;
    const uint32_t       m = 0x5bd1e995;
    const int            r = 24;
    uint32_t             h = 0x9747b28c ^ (uint32_t) len;
    size_t               n4 = len / 4;

    for (size_t i = 0; i < n4; i++) {
        const unsigned char *p = data + i * 4;
        uint32_t             k = (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char *tail = data + (len & ~(size_t) 3);
    switch (len % 4) {
    case 3:
        h ^= (uint32_t) tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t) tail[1] << 8;
        /* fall through */
    case 1:
        h ^= tail[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t) h;
}

int
ob_partition_for(const void *key, size_t len, int partitions)
{
    return (int) (((uint32_t) ob_murmur2(key, len) & 0x7fffffff) % (uint32_t) partitions);
}
