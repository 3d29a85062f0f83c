/*
 * common/cfg.h: the INI configuration (DESIGN §8).
 *
 * A config is parsed into a fresh ob_cfg_t and validated whole; the caller
 * swaps pointers only when that succeeds, so a bad reload never leaves a
 * half-applied config. The key table in cfg.c says, for every key, its
 * default and how a reload applies it (docs/CONFIG.md is generated from it).
 */
#ifndef OB_CFG_H
#define OB_CFG_H

#include "routes.h"
#include "rsig.h"

#include <stddef.h>
#include <stdint.h>

#define OB_CFG_STR 512

typedef enum { OB_RELAY_PARTITIONED, OB_RELAY_SKIP_LOCKED, OB_RELAY_WAL } ob_relay_mode_t;
/* [relay] standby_barrier: auto is on exactly while orderdb names a synchronous standby */
typedef enum { OB_BARRIER_AUTO, OB_BARRIER_OFF } ob_barrier_mode_t;
/* [kafka] compat: debezium adds the header `id` (= event id) Debezium's outbox router sets. */
typedef enum { OB_COMPAT_NONE, OB_COMPAT_DEBEZIUM } ob_compat_t;

/*
 * Deliberately broken modes for the fault suite's negative controls: a
 * checker that passes a broken system is itself broken. Each loses events
 * on purpose, so the parser refuses them unless OUTBOXD_UNSAFE_FAULTS=1 is
 * in the environment.
 */
typedef enum {
    OB_FAULT_NONE,
    OB_FAULT_RELAY_MARK_BEFORE_ACK,        /* mark rows published whatever Kafka answered */
    OB_FAULT_CONSUMER_COMMIT_BEFORE_APPLY, /* commit offsets, then apply */
    OB_FAULT_HTTP_LOSE_WRITE_REPLY,        /* drop the connection once a write's reply is in (not lossy) */
} ob_fault_t;

/*
 * librdkafka properties from [kafka.properties] (every client),
 * [kafka.producer] (the relay's producer and its topic check) and
 * [kafka.consumer] (the ledger consumer); common/kprops.c checks and applies them.
 */
#define OB_KPROP_MAX 32
typedef enum { OB_KPROP_ALL, OB_KPROP_PRODUCER, OB_KPROP_CONSUMER } ob_kprop_scope_t;
typedef struct {
    char key[128];
    char value[OB_CFG_STR];
    int  scope;                 /* ob_kprop_scope_t */
} ob_kprop_t;

typedef struct ob_cfg_s {
    char path[4096];
    struct {
        char name[64];          /* shm segment /outboxd-<name>, pidfile */
        char pidfile[4096];
        int  watchdog_s;
        int  shutdown_timeout_s;
    } supervisor;
    struct {
        int peer_timeout_s;     /* a silent PostgreSQL peer is given up after this, both ends (common/pg.c) */
    } postgres;
    struct {
        char listen[128];
        char dsn[OB_CFG_STR];
        int  unsafe_async_commit;
        int  max_body;
        int  statement_timeout_ms;
        int  max_backlog_age_s;  /* 0 = off */
        int  threads;            /* civetweb threads per HTTP worker */
        int  request_timeout_ms; /* a client must send its request within this */
    } orders;
    struct {
        char listen[128];
        char dsn[OB_CFG_STR];
        char group[128];         /* Kafka consumer group */
        int  stall_after_s;      /* events waiting, none applied this long: stalled */
    } ledger;
    struct {
        char brokers[OB_CFG_STR];
        char topic[256];        /* the default topic: aggregate types [routes] does not name */
        int  strict_routes;     /* refuse aggregate types [routes] does not name */
        int  partitions;
        int  max_event_bytes;    /* outboxd.emit's payload limit, kept in outboxd.settings by migrate */
        char format[16];         /* msgpack | json */
        int  compat;             /* ob_compat_t */
        int  nprops;
        ob_kprop_t props[OB_KPROP_MAX];
        ob_rsig_key_t     signing_key;       /* relays sign with it; len 0 = unsigned (secret: never shown) */
        ob_rsig_keyring_t verify_keys;       /* consumers accept these and signing_key (secrets) */
        int               require_signature; /* consumers dead-letter unsigned records too */
    } kafka;
    ob_routes_t routes;         /* [routes] aggregate_type = topic */
    struct {
        int http;
        int relays;
        int consumers;
    } workers;
    struct {
        ob_relay_mode_t mode;
        int             batch;
        int             poll_interval_ms;
        int             poll_min_ms;
        int             retention_s;
        int             linger_ms;
        int             delivery_timeout_ms; /* Kafka's message.timeout.ms for the relay */
        char            slot_prefix[48];     /* mode wal: slot and publication <prefix>_<i> */
        int             allow_unbounded_slot; /* mode wal: accept max_slot_wal_keep_size = -1 */
        char            dsn[OB_CFG_STR];     /* the relay's role on orderdb; "" = [orders] dsn */
        ob_barrier_mode_t standby_barrier;   /* produce only what a synchronous standby has flushed */
    } relay;
    struct {
        char listen[128];
        char token[256];
    } admin;
    struct {
        int  format;             /* ob_log_format_t */
        int  level;              /* ob_log_level_t */
        char file[4096];
    } log;
    struct {
        int fault;               /* ob_fault_t */
    } debug;
} ob_cfg_t;

/* The DSN the relays use on orderdb: [relay] dsn, or [orders] dsn when that is empty. */
const char *ob_cfg_relay_dsn(const ob_cfg_t *cfg);
/* Whether the built-in orders API is served (HTTP workers, [orders] listen set): its table is migrated. */
int ob_cfg_orders_api(const ob_cfg_t *cfg);
/* Whether anything uses ledgerdb: consumers, or the ledger API served. */
int ob_cfg_ledger_used(const ob_cfg_t *cfg);
/* Whether aggregate type 'order' is outboxd's own (the orders API or the ledger runs): nobody else may emit it. */
int ob_cfg_order_reserved(const ob_cfg_t *cfg);
/*
 * The topic an event of aggregate type goes to: its route, else [kafka]
 * topic; with strict_routes NULL for a type without a route, except 'order'
 * while reserved, whose topic is always [kafka] topic unless routed.
 */
const char *ob_cfg_topic_for(const ob_cfg_t *cfg, const char *type);
/*
 * The distinct topics events can go to (at most OB_TOPICS_MAX), the
 * default first when it is used; returns how many.
 */
int ob_cfg_topics(const ob_cfg_t *cfg, const char *out[OB_TOPICS_MAX + 1]);
/*
 * HTTP worker processes to run: [workers] http, or with 0 one that serves
 * only the admin listener (when set), so a relay-only deployment can still
 * be scraped and health-checked.
 */
int ob_cfg_http_workers(const ob_cfg_t *cfg);

/* Fills every field with its documented default. */
void ob_cfg_defaults(ob_cfg_t *cfg);

/*
 * Parses path over the defaults, then validates. On error returns -1 and
 * writes "file:line: [section] key: why" (or a file-level sentence) to err.
 */
int ob_cfg_load(ob_cfg_t *cfg, const char *path, char *err, size_t errlen);

/* Cross-field checks, also run after command-line overrides. */
int ob_cfg_validate(const ob_cfg_t *cfg, char *err, size_t errlen);

/* Digest of everything that matters, shown in status. */
uint64_t ob_cfg_digest(const ob_cfg_t *cfg);

/*
 * How a reload applies a key, from the key table. HTTP workers are replaced
 * (rolling) on every reload, so no bit names them; a key with none of these
 * bits takes effect in the supervisor at once and in other workers at their
 * next start.
 */
#define OB_CFG_RESTART_ONLY       1u  /* keeps its running value until the supervisor restarts */
#define OB_CFG_RESTARTS_RELAYS    2u  /* a change restarts every relay */
#define OB_CFG_RESTARTS_CONSUMERS 4u  /* a change restarts every consumer */

/* The OB_CFG_RESTARTS_* kinds whose keys differ between running and next. */
unsigned ob_cfg_restarts(const ob_cfg_t *running, const ob_cfg_t *next);

/* One key as the generated reference (docs/CONFIG.md, man pages) shows it. */
typedef struct {
    const char        *section, *key;
    const char        *type;     /* "string", "integer", "yes/no", "duration", "one of", "key" */
    const char        *def;      /* NULL = empty */
    long               min, max; /* meaningful for integers and durations */
    const char *const *names;    /* the choices of "one of", else NULL */
    unsigned           reload;
    const char        *why;
} ob_cfg_key_info_t;

size_t ob_cfg_key_count(void);
void   ob_cfg_key_info(size_t i, ob_cfg_key_info_t *out);

/*
 * Gives every restart-only key of next (a reloaded file) its running value,
 * naming those that differed as "[s] k, [s] k" in out; returns how many.
 * The key table says which keys these are, so no caller keeps its own list.
 */
int ob_cfg_keep_restart_only(const ob_cfg_t *running, ob_cfg_t *next, char *out, size_t outlen);

/*
 * Reads only [supervisor] name, ignoring every error: `outboxd status` must
 * still find a running instance after someone broke the file it started from.
 */
void ob_cfg_peek_name(const char *path, char *name, size_t namelen);

/* Parses "24h", "90s", "15m", "2d" or plain seconds. */
int ob_cfg_parse_duration(const char *s, int *seconds);

#endif
