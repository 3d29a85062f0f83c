/* workers/http/db.h: this thread's orderdb and ledgerdb connections (db.c). */
#ifndef OB_HTTP_DB_H
#define OB_HTTP_DB_H

#include "http_int.h"

#include <libpq-fe.h>
#include <stddef.h>

/* This thread's connection to orderdb or ledgerdb (opened, checked and
 * prepared on first use, re-opened after it broke); NULL with err when the
 * database is away. */
PGconn *ob_http_db(ob_http_t *hw, ob_db_id_t which, char *err, size_t errlen);
/* Runs a prepared read-only statement, retrying once on a fresh connection
 * if the pooled one was dead. NULL (err set) when no connection could be
 * made; otherwise the result, whose status the caller checks, with *pg the
 * connection it ran on. */
PGresult *ob_http_read(ob_http_t *hw, ob_db_id_t which, const char *stmt, int nparams, const char *const *params,
                       PGconn **pg, char *err, size_t errlen);
/* After a failed command: 503 for "database unavailable / try again", else 500.
 * Drops the connection when it is broken so the next request reconnects. */
int ob_http_db_failure(PGconn *pg, PGresult *r, char *err, size_t errlen);
/*
 * After a write on pg: 1 when its outcome is unknown and it may be retried
 * once (attempt 0 only) on a fresh connection: the connection broke before
 * the reply, so the write may or may not have committed. The retry must
 * recognise its own effect. [debug] fault = http_lose_write_reply drops
 * the connection after a reply to exercise this.
 */
int ob_http_db_lost(ob_http_t *hw, PGconn *pg, PGresult *r, int attempt);
/* Whether a write on pg since the last call committed without its synchronous standby's confirmation
 * (its wait was cancelled); clears the mark. */
int ob_http_db_unconfirmed(PGconn *pg);
/* civetweb exit_thread: closes this thread's connection. */
void ob_http_db_close_thread(void);

#endif
