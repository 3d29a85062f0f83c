/*
 * workers/http/http_int.h: the types every file of the HTTP worker shares.
 *
 * Types only. Each file's functions are declared in a header of its own
 * (deadline.h, db.h, reply.h, routes.h), so what a file may call shows in
 * what it includes, and calls run one way: http.c (the dispatcher) over the
 * routes (orders.c, ledger.c, admin.c), over reply.c and db.c, over
 * deadline.c. A header declaring every file's functions to every file
 * would let any of them call back up unseen.
 */
#ifndef OB_HTTP_INT_H
#define OB_HTTP_INT_H

#include "../../common/cfg.h"
#include "../../shm/shm.h"

typedef enum { OB_DB_ORDERS = 0, OB_DB_LEDGER, OB_DB_COUNT } ob_db_id_t;

/* A statement prepared on each connection; a table of them ends with { NULL, NULL }. */
typedef struct {
    const char *name, *sql;
} ob_http_stmt_t;

typedef struct {
    const ob_cfg_t       *cfg;
    ob_shm_slot_t        *slot;
    int                   index;
    const ob_http_stmt_t *statements[OB_DB_COUNT];  /* prepared per connection (db.c), per database */
} ob_http_t;

#endif
