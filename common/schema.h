/*
 * common/schema.h: the schema version a binary needs. Each migration stream
 * ("outbox", "orderdb", "ledgerdb") records its applied versions; a binary
 * needs the highest version compiled into it. debhelper restarts the unit
 * on upgrade before anyone runs `outboxd migrate`, so the new binary must
 * see an older schema and refuse, not run against it.
 */
#ifndef OB_SCHEMA_H
#define OB_SCHEMA_H

#include <libpq-fe.h>
#include <stddef.h>

/* The table of a stream's applied versions, named with its schema. */
const char *ob_schema_table(const char *stream);
/* The highest version of stream compiled into this binary. */
int ob_schema_required(const char *stream);
/*
 * Compares the database's version of stream with ob_schema_required.
 * OB_EXIT_OK when it is that or newer; OB_EXIT_FATAL with a sentence when it
 * is older (or absent); OB_EXIT_RETRY when the query could not run.
 */
int ob_schema_check(PGconn *pg, const char *stream, char *err, size_t errlen);

#endif
