/* common/migrations.h: migrations compiled into the binary from sql/. */
#ifndef OB_MIGRATIONS_H
#define OB_MIGRATIONS_H

typedef struct {
    const char *db;        /* "orderdb" or "ledgerdb": the directory under sql/ */
    int         version;
    const char *name;
    const char *sql;
} ob_migration_t;

extern const ob_migration_t ob_migrations[];
extern const int            ob_migrations_count;

#endif
