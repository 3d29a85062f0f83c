/* common/pg.h: libpq connection set-up shared by every worker. */
#ifndef OB_PG_H
#define OB_PG_H

#include <libpq-fe.h>
#include <stddef.h>

/*
 * Connects with a bounded connect timeout and an application_name that
 * names the worker (visible in pg_stat_activity and pg_locks). Returns NULL
 * with err set; the DSN's password never appears in err.
 */
/* [postgres] peer_timeout_s for every connection this process opens from now on (default 10). */
void    ob_pg_set_peer_timeout(int seconds);
PGconn *ob_pg_connect(const char *dsn, const char *appname, char *err, size_t errlen);

/* The same, as a logical replication connection (replication=database). */
PGconn *ob_pg_connect_replication(const char *dsn, const char *appname, char *err, size_t errlen);

/*
 * One rule for every statement's result, whoever runs it. ob_pg_check takes
 * what any PQexec* call returned: when it succeeded (rows or a command) it
 * returns it and the caller PQclears it; otherwise it clears it itself,
 * writes the server's primary message (one line) to err and the SQLSTATE to
 * state (6 bytes, when not NULL; "" when the server sent none, as when the
 * connection broke) and returns NULL. No caller frees a failed result.
 */
PGresult *ob_pg_check(PGconn *pg, PGresult *r, char *state, char *err, size_t errlen);

/* ob_pg_check over a statement with text parameters (none when n is 0). */
PGresult *ob_pg_query(PGconn *pg, const char *sql, int n, const char *const *params, char *state, char *err,
                      size_t errlen);

/* A statement whose rows are not read: the number of rows it touched (0 when it names none), or -1 with err. */
long ob_pg_command(PGconn *pg, const char *sql, int n, const char *const *params, char *state, char *err,
                   size_t errlen);

/* A parameterless command (or several, by the simple protocol: migrations); 0, or -1 with err. */
int ob_pg_exec(PGconn *pg, const char *sql, char *err, size_t errlen);

/*
 * Whether a notice (what libpq hands a notice receiver) says a commit's
 * wait for the synchronous standby was cancelled: the commit stands on the
 * primary alone, and the standby may lack it.
 */
int ob_pg_syncrep_cancelled(const PGresult *notice);

#endif
