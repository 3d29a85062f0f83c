/*
 * workers/relay/relay.c: relay worker i of R (outbox -> Kafka).
 *
 * NOTES
 *   What it does (so far): checks that the topic has [kafka] partitions
 *   partitions (creating it when absent), then claims the partitions
 *   p with p mod R = i, each confirmed by a session advisory lock on its own
 *   orderdb connection, and publishes which ones it holds in its shm slot.
 *   The publish loop proper (claim, produce, mark) lands with issue 6; the
 *   ownership, wakeup and heartbeat machinery here is what it will run on.
 *
 *   What it owns: one PGconn (its locks live and die with it), one producer.
 *
 *   Signals: TERM/INT finish and exit 0; HUP is the supervisor's business
 *   (it replaces relays when their config changes); USR1 reopens the log.
 *
 *   Exit codes: 0 asked to stop; 1 cannot reach orderdb or Kafka at start
 *   (the supervisor retries with backoff); 2 the topic's partition count
 *   differs from the config.
 */
#include "relay_int.h"
#include "../../common/log.h"
#include "../../common/pg.h"
#include "../../common/sig.h"
#include "../../common/util.h"
#include "../../common/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAY_LOCK_CLASS   0x6f627872   /* "obxr": first key of pg_try_advisory_lock(int, int) */
#define RELAY_LOCK_TICK_MS 1000

typedef struct {
    const ob_cfg_t *cfg;
    ob_shm_slot_t  *slot;
    int             index;
    PGconn         *pg;
    rd_kafka_t     *rk;
    int             nparts;                       /* partitions assigned by p mod R = i */
    int             parts[OB_SHM_PARTITIONS];
    unsigned char   held[OB_SHM_PARTITIONS];      /* advisory lock held on pg */
    int64_t         next_tick_ms;
} ob_relay_t;

static int  relay_init(ob_relay_t *rl, char *err, size_t errlen);
static void relay_tick(ob_relay_t *rl);
static void relay_drop_locks(ob_relay_t *rl);
static int  relay_shutdown(ob_relay_t *rl);

int
ob_relay_main(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index)
{
    ob_relay_t rl;
    char       err[512];
    int        rc;

    memset(&rl, 0, sizeof(rl));
    rl.cfg = cfg;
    rl.slot = slot;
    rl.index = index;
    ob_shm_beat(slot);
    rc = relay_init(&rl, err, sizeof(err));
    if (rc != OB_EXIT_OK) {
        ob_log(OB_LOG_ERROR, "relay init failed: %s", err);
        ob_worker_note(slot, "%s", err);
        relay_shutdown(&rl);
        return rc;
    }
    ob_log(OB_LOG_INFO, "relay %d of %d owns %d partition(s)", index, cfg->workers.relays, rl.nparts);
    while (!ob_sig_term && !ob_sig_quit) {
        uint32_t seen = atomic_load(&slot->wake);
        if (ob_sig_reopen) {
            ob_sig_reopen = 0;
            ob_log_reopen();
        }
        ob_sig_reload = ob_sig_child = 0;
        relay_tick(&rl);
        ob_shm_beat(slot);
        rd_kafka_poll(rl.rk, 0);
        ob_shm_wait(slot, seen, cfg->relay.poll_interval_ms);
    }
    return relay_shutdown(&rl);
}

/* Error callback: broker-down noise is logged at debug; fatal errors at error. */
static void
relay_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void) rk;
    (void) opaque;
    ob_log(err == RD_KAFKA_RESP_ERR__FATAL ? OB_LOG_ERROR : OB_LOG_DEBUG, "kafka: %s", reason);
}

static rd_kafka_t *
relay_producer_new(const ob_cfg_t *cfg, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char             linger[16];

    snprintf(linger, sizeof(linger), "%d", cfg->relay.linger_ms);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka.brokers, err, errlen) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", err, errlen) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "linger.ms", linger, err, errlen) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "client.id", "outboxd-relay", err, errlen) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_error_cb(conf, relay_kafka_error);
    return rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, errlen);   /* takes conf */
}

static int
relay_init(ob_relay_t *rl, char *err, size_t errlen)
{
    const ob_cfg_t *cfg = rl->cfg;
    char            app[64];
    int             rc;

    for (int p = 0; p < cfg->kafka.partitions; p++)
        if (cfg->workers.relays > 0 && p % cfg->workers.relays == rl->index)
            rl->parts[rl->nparts++] = p;
    rl->rk = relay_producer_new(cfg, err, errlen);
    if (rl->rk == NULL)
        return OB_EXIT_FATAL;     /* a bad producer setting is a config problem */
    rc = ob_relay_check_topic(rl->rk, cfg->kafka.topic, cfg->kafka.partitions, err, errlen);
    if (rc != OB_EXIT_OK)
        return rc;
    ob_shm_beat(rl->slot);
    snprintf(app, sizeof(app), "outboxd relay %d", rl->index);
    rl->pg = ob_pg_connect(cfg->orders.dsn, app, err, errlen);
    return rl->pg != NULL ? OB_EXIT_OK : OB_EXIT_RETRY;
}

/* A lost connection means lost locks: forget them before anything else. */
static void
relay_drop_locks(ob_relay_t *rl)
{
    for (int i = 0; i < rl->nparts; i++) {
        int p = rl->parts[i];
        if (rl->held[p]) {
            ob_shm_set_owned(rl->slot, p, 0);
            atomic_store(&ob_shm->map->parts[p].owner_slot, -1);
            rl->held[p] = 0;
        }
    }
    atomic_store(&rl->slot->counters[OB_CTR_RELAY_LOCKS_HELD], 0);
}

static int
relay_try_lock(ob_relay_t *rl, int p, int *got, char *err, size_t errlen)
{
    char        cls[16], part[16];
    const char *params[2] = { cls, part };
    PGresult   *r;

    snprintf(cls, sizeof(cls), "%d", RELAY_LOCK_CLASS);
    snprintf(part, sizeof(part), "%d", p);
    r = PQexecParams(rl->pg, "SELECT pg_try_advisory_lock($1::int, $2::int)", 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "pg_try_advisory_lock failed: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    *got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return 0;
}

/* Reconnects if needed and claims every assigned partition not yet held. */
static void
relay_claim(ob_relay_t *rl)
{
    char     err[512], app[64];
    uint64_t held = 0;

    if (rl->pg == NULL || PQstatus(rl->pg) != CONNECTION_OK) {
        relay_drop_locks(rl);
        PQfinish(rl->pg);
        snprintf(app, sizeof(app), "outboxd relay %d", rl->index);
        rl->pg = ob_pg_connect(rl->cfg->orders.dsn, app, err, sizeof(err));
        if (rl->pg == NULL) {
            ob_log(OB_LOG_WARN, "%s", err);
            return;
        }
    }
    for (int i = 0; i < rl->nparts; i++) {
        int p = rl->parts[i], got = 1;
        if (!rl->held[p] && relay_try_lock(rl, p, &got, err, sizeof(err)) != 0) {
            ob_log(OB_LOG_WARN, "%s", err);
            relay_drop_locks(rl);
            PQfinish(rl->pg);
            rl->pg = NULL;
            return;
        }
        if (!rl->held[p] && got) {
            rl->held[p] = 1;
            atomic_store(&ob_shm->map->parts[p].owner_slot, (int32_t) (rl->slot - ob_shm->map->slots));
            ob_shm_set_owned(rl->slot, p, 1);
        }
        held += rl->held[p];
    }
    atomic_store(&rl->slot->counters[OB_CTR_RELAY_LOCKS_HELD], held);
}

static void
relay_tick(ob_relay_t *rl)
{
    int64_t now = ob_now_ms();
    char    err[512];

    if (now < rl->next_tick_ms)
        return;
    rl->next_tick_ms = now + RELAY_LOCK_TICK_MS;
    /* A cheap round trip proves the session (and so its locks) is still ours. */
    if (rl->pg != NULL && ob_pg_exec(rl->pg, "SELECT 1", err, sizeof(err)) != 0) {
        ob_log(OB_LOG_WARN, "orderdb connection lost, partitions released: %s", err);
        relay_drop_locks(rl);
        PQfinish(rl->pg);
        rl->pg = NULL;
    }
    relay_claim(rl);
}

static int
relay_shutdown(ob_relay_t *rl)
{
    relay_drop_locks(rl);
    PQfinish(rl->pg);       /* releases the advisory locks */
    rl->pg = NULL;
    if (rl->rk != NULL) {
        rd_kafka_flush(rl->rk, 5000);
        if (rd_kafka_outq_len(rl->rk) > 0)
            ob_log(OB_LOG_WARN, "%d Kafka message(s) not delivered at exit; their rows stay pending",
                   rd_kafka_outq_len(rl->rk));
        rd_kafka_destroy(rl->rk);
        rl->rk = NULL;
    }
    return OB_EXIT_OK;
}
