/* common/pgarr.c: PostgreSQL array literals (see pgarr.h). */
#include "pgarr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for n more bytes plus the closing brace and NUL; 0, or -1 (sticky). */
static int
arr_reserve(ob_pgarr_t *a, size_t n)
{
    size_t need = a->len + n + 3;

    if (a->failed)
        return -1;
    if (need <= a->cap)
        return 0;
    size_t cap = need * 2 + 256;
    char  *s = realloc(a->s, cap);
    if (s == NULL) {
        a->failed = 1;
        return -1;
    }
    a->s = s, a->cap = cap;
    return 0;
}

static void
arr_sep(ob_pgarr_t *a)
{
    a->s[a->len++] = a->n++ ? ',' : '{';
}

void
ob_pgarr_add(ob_pgarr_t *a, const char *elem)
{
    if (elem == NULL) {
        if (arr_reserve(a, 5) == 0) {
            arr_sep(a);
            memcpy(a->s + a->len, "NULL", 4);
            a->len += 4;
        }
        return;
    }
    if (arr_reserve(a, 2 * strlen(elem) + 3) != 0)
        return;
    arr_sep(a);
    a->s[a->len++] = '"';
    for (const char *p = elem; *p; p++) {
        if (*p == '"' || *p == '\\')
            a->s[a->len++] = '\\';
        a->s[a->len++] = *p;
    }
    a->s[a->len++] = '"';
}

void
ob_pgarr_add_int(ob_pgarr_t *a, long long v)
{
    if (arr_reserve(a, 24) != 0)
        return;
    arr_sep(a);
    a->len += (size_t) snprintf(a->s + a->len, a->cap - a->len, "%lld", v);
}

void
ob_pgarr_add_bytea(ob_pgarr_t *a, const void *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b = p;

    if (arr_reserve(a, p == NULL ? 5 : 2 * n + 6) != 0)
        return;
    arr_sep(a);
    if (p == NULL) {
        memcpy(a->s + a->len, "NULL", 4);
        a->len += 4;
        return;
    }
    memcpy(a->s + a->len, "\"\\\\x", 4);    /* "\\x: the array's escape, then bytea's hex prefix */
    a->len += 4;
    for (size_t i = 0; i < n; i++) {
        a->s[a->len++] = hex[b[i] >> 4];
        a->s[a->len++] = hex[b[i] & 15];
    }
    a->s[a->len++] = '"';
}

char *
ob_pgarr_end(ob_pgarr_t *a)
{
    char *out = NULL;

    if (!a->failed && arr_reserve(a, 1) == 0) {
        if (a->n == 0)
            a->s[a->len++] = '{';
        a->s[a->len++] = '}';
        a->s[a->len] = '\0';
        out = a->s;
    } else
        free(a->s);
    *a = (ob_pgarr_t) { 0 };
    return out;
}
