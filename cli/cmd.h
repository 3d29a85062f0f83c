/* cli/cmd.h: the operator subcommands of the outboxd binary. */
#ifndef OB_CMD_H
#define OB_CMD_H

#include "../common/cfg.h"

#include <stdio.h>

/* Prints workers and partitions from the shm segment; 1 when no instance runs. */
int ob_cmd_status(const ob_cfg_t *cfg, int json);
/*
 * Applies missing migrations (the outbox schema, and orderdb and ledgerdb
 * where their APIs or consumers are on), connected as the
 * owners when given (else with the configured DSNs), then checks the roles
 * of the configured DSNs (roles.c); 0, or 1 with what is missing printed.
 */
int ob_cmd_migrate(const ob_cfg_t *cfg, const char *orders_owner, const char *ledger_owner);
/*
 * Before the supervisor starts: refuses (-1, with a sentence on stderr) a
 * reachable database whose schema is older than this binary needs; an
 * unreachable one is only a warning, since the workers check it too.
 */
int ob_cmd_schema_gate(const ob_cfg_t *cfg);
/* Prints what the roles of [orders], [relay] and [ledger] dsn lack; returns how many things. */
int ob_roles_check(const ob_cfg_t *cfg);
/* Applies one stream ("outbox", "orderdb" or "ledgerdb") to the database of dsn; used by tests too. */
int ob_migrate_db(const char *db, const char *dsn, char *err, size_t errlen);

/* Re-enqueues events; what is order|event|since|quarantined. 0 or 1. */
int ob_cmd_replay(const ob_cfg_t *cfg, const char *what, const char *value, int dry_run);

/* Re-applies dead letters (id, or all when NULL) through the consumer's apply path. 0 all applied, 1 not. */
int ob_cmd_replay_dead_letters(const ob_cfg_t *cfg, const char *id, int dry_run);

/* Compares orderdb and ledgerdb; 0 consistent, 1 findings, 2 could not finish. */
int ob_cmd_reconcile(const ob_cfg_t *cfg, int json, int grace_s);

/* Writes the configuration reference (docs/CONFIG.md) from the key table; 0, or 1 on a write error. */
int ob_cmd_config_reference(FILE *out);
/* outboxd.conf(5) in roff, from the same table and texts as the reference; 0, or 1 on a write error. */
int ob_cmd_manpage5(FILE *out, const char *version);
/* The version and the linked libraries' versions, for --version. */
void ob_cmd_version(FILE *out);
/* The version alone, as in the file VERSION. */
const char *ob_cmd_version_string(void);

#endif
