/*
 * tests/fault/check_util.c: see check_util.h.
 */
#include "tests/fault/check_util.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t
smap_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s)
        h = (h ^ (unsigned char) *s++) * 1099511628211ULL;
    return h;
}

void
obc_smap_init(obc_smap_t *m, size_t n)
{
    m->cap = 16;
    while (m->cap < n * 2 + 1)
        m->cap *= 2;
    m->keys = calloc(m->cap, sizeof(*m->keys));
    m->vals = calloc(m->cap, sizeof(*m->vals));
    if (m->keys == NULL || m->vals == NULL)
        abort();    /* a test tool: no memory is not a result */
}

void
obc_smap_free(obc_smap_t *m)
{
    free(m->keys);
    free(m->vals);
}

/* Slot of key: where it is, or the empty slot where it would go. */
static size_t
smap_slot(const obc_smap_t *m, const char *key)
{
    size_t i = (size_t) smap_hash(key) & (m->cap - 1);

    while (m->keys[i] != NULL && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

int
obc_smap_put(obc_smap_t *m, const char *key, size_t val)
{
    size_t i = smap_slot(m, key);

    if (m->keys[i] != NULL)
        return 1;
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

int
obc_smap_get(const obc_smap_t *m, const char *key, size_t *val)
{
    size_t i = smap_slot(m, key);

    if (m->keys[i] == NULL)
        return 0;
    if (val != NULL)
        *val = m->vals[i];
    return 1;
}

void
obc_note(char *first, size_t firstlen, long *counter, const char *fmt, ...)
{
    size_t  used = strlen(first);
    va_list ap;

    (*counter)++;
    if (used + 2 >= firstlen)
        return;
    if (used > 0)
        first[used++] = ';', first[used++] = ' ', first[used] = '\0';
    va_start(ap, fmt);
    vsnprintf(first + used, firstlen - used, fmt, ap);
    va_end(ap);
}
