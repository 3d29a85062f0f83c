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
PGconn *ob_pg_connect(const char *dsn, const char *appname, char *err, size_t errlen);

/* The same, as a logical replication connection (replication=database). */
PGconn *ob_pg_connect_replication(const char *dsn, const char *appname, char *err, size_t errlen);

/* Runs a parameterless command; 0, or -1 with err. */
int ob_pg_exec(PGconn *pg, const char *sql, char *err, size_t errlen);

#endif
