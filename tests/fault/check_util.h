/*
 * tests/fault/check_util.h: what the fault suite's two checkers (checker.h
 * for the orders pipeline, emit_check.h for foreign emit writers) share: a
 * small open-addressing map from string to index, and the problem recorder
 * that counts a fault and keeps its first words for the failure message.
 * A run holds at most some hundred thousand keys.
 */
#ifndef OB_FAULT_CHECK_UTIL_H
#define OB_FAULT_CHECK_UTIL_H

#include <stddef.h>

typedef struct {
    const char **keys;    /* borrowed: the caller keeps the strings alive */
    size_t      *vals;
    size_t       cap;
} obc_smap_t;

void obc_smap_init(obc_smap_t *m, size_t n);
void obc_smap_free(obc_smap_t *m);
/* Inserts key -> val unless present; returns 1 when it was already there. */
int  obc_smap_put(obc_smap_t *m, const char *key, size_t val);
/* 1 and *val (when not NULL) if key is present. */
int  obc_smap_get(const obc_smap_t *m, const char *key, size_t *val);

/* Counts one problem in *counter and appends its description to first
 * (a buffer of firstlen bytes) while there is room. */
void obc_note(char *first, size_t firstlen, long *counter, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
