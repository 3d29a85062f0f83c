/*
 * common/pgarr.h: PostgreSQL array literals, built element by element, for
 * statements that pass a batch as one parameter ($1::uuid[], ...). The one
 * builder every caller uses, so quoting is done one way.
 */
#ifndef OB_PGARR_H
#define OB_PGARR_H

#include <stddef.h>

/* Zero-initialised = empty. A failed allocation is remembered and reported by ob_pgarr_end. */
typedef struct {
    char  *s;
    size_t len, cap;
    int    n, failed;
} ob_pgarr_t;

/* Adds one text element, quoted and escaped, so text of any shape stays one element (fits any element type);
 * NULL adds a NULL element. */
void ob_pgarr_add(ob_pgarr_t *a, const char *elem);

/* Adds one whole number, unquoted. */
void ob_pgarr_add_int(ob_pgarr_t *a, long long v);

/* Adds bytes as one bytea element in hex; p NULL adds a NULL element. */
void ob_pgarr_add_bytea(ob_pgarr_t *a, const void *p, size_t n);

/* The literal ("{}" when empty) for the caller to free, or NULL when memory ran out; a is left empty. */
char *ob_pgarr_end(ob_pgarr_t *a);

#endif
