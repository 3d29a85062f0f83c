/*
 * workers/consumer/consumer.c: consumer worker i (Kafka -> ledger).
 *
 * NOTES
 *   What it does (so far): holds a ledgerdb connection, reconnecting with
 *   backoff while the database is away, and heartbeats. Group membership,
 *   idempotent apply and offset commits land with issue 7 on this loop.
 *
 *   What it owns: one PGconn.
 *
 *   Signals: TERM/INT exit 0 at the next loop turn; USR1 reopens the log.
 *
 *   Exit codes: 0 asked to stop; 1 ledgerdb unreachable at start (the
 *   supervisor retries with backoff and shows it in status).
 */
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/worker.h"

#include <stdio.h>
#include <string.h>

#define CONS_CHECK_MS 1000

typedef struct {
    const ob_cfg_t *cfg;
    ob_shm_slot_t  *slot;
    int             index;
    PGconn         *pg;
    int64_t         next_check_ms;
    int64_t         backoff_ms;
} ob_cons_t;

/* Keeps the ledger connection: probes it, reconnects with doubling backoff. */
static void
cons_keep_connection(ob_cons_t *cs)
{
    int64_t now = ob_now_ms();
    char    err[512], app[64];

    if (now < cs->next_check_ms)
        return;
    if (cs->pg != NULL && ob_pg_exec(cs->pg, "SELECT 1", err, sizeof(err)) != 0) {
        ob_log(OB_LOG_WARN, "ledgerdb connection lost: %s", err);
        PQfinish(cs->pg);
        cs->pg = NULL;
    }
    if (cs->pg == NULL) {
        snprintf(app, sizeof(app), "outboxd consumer %d", cs->index);
        cs->pg = ob_pg_connect(cs->cfg->ledger.dsn, app, err, sizeof(err));
        if (cs->pg == NULL) {
            cs->backoff_ms = cs->backoff_ms ? (cs->backoff_ms * 2 > 5000 ? 5000 : cs->backoff_ms * 2) : 200;
            cs->next_check_ms = now + cs->backoff_ms;
            ob_log(OB_LOG_WARN, "%s; retry in %lld ms", err, (long long) cs->backoff_ms);
            return;
        }
        cs->backoff_ms = 0;
    }
    cs->next_check_ms = now + CONS_CHECK_MS;
}

int
ob_cons_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index)
{
    ob_cons_t cs;
    char      err[512], app[64];

    memset(&cs, 0, sizeof(cs));
    cs.cfg = cfg;
    cs.slot = slot;
    cs.index = index;
    ob_shm_beat(slot);
    snprintf(app, sizeof(app), "outboxd consumer %d", index);
    cs.pg = ob_pg_connect(cfg->ledger.dsn, app, err, sizeof(err));
    if (cs.pg == NULL) {
        ob_log(OB_LOG_ERROR, "consumer init failed: %s", err);
        ob_worker_note(slot, "%s", err);
        return OB_EXIT_RETRY;
    }
    cs.next_check_ms = ob_now_ms() + CONS_CHECK_MS;
    while (!ob_sig_term && !ob_sig_quit) {
        if (ob_sig_reopen) {
            ob_sig_reopen = 0;
            ob_log_reopen();
        }
        ob_sig_reload = ob_sig_child = 0;
        cons_keep_connection(&cs);
        ob_shm_beat(slot);
        ob_sig_wait(200);
    }
    PQfinish(cs.pg);
    return OB_EXIT_OK;
}
