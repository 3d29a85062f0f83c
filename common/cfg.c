/*
 * common/cfg.c: table-driven INI parsing with inih.
 *
 * inih does not tell a handler which line it is on, so the file is fed
 * through ini_parse_stream() with a reader that counts lines; every error
 * then names file:line and the key, as an operator editing at 3 a.m. needs.
 * Unknown sections and keys are errors: a typo must not silently fall back
 * to a default.
 */
#include "cfg.h"
#include "kprops.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { K_STR, K_INT, K_BOOL, K_DURATION, K_ENUM, K_STR_ENUM, K_FAULT, K_SIGN_KEY, K_SIGN_KEYS } key_type_t;

/*
 * One row per key: how to parse it, its default, how a reload applies it
 * and why a user would change it. Everything that describes a key lives
 * here: the parser, the defaults, the supervisor's reload and the generated
 * docs/CONFIG.md all read this table, so none of them can drift.
 */
typedef struct {
    const char        *section;
    const char        *key;
    key_type_t         type;
    size_t             off;
    size_t             size;
    long               min, max;  /* K_INT, K_DURATION */
    const char *const *names;     /* K_ENUM, K_STR_ENUM, K_FAULT: value i is spelled names[i] */
    const char        *def;       /* the default as a file spells it; NULL = empty */
    unsigned           reload;    /* OB_CFG_RESTART_ONLY, or the OB_CFG_RESTARTS_* kinds a change restarts */
    const char        *why;
} key_def_t;

#define FIELD(field) offsetof(ob_cfg_t, field), sizeof(((ob_cfg_t *) 0)->field)
#define S(sec, k, field, def, rl, why) { sec, k, K_STR, FIELD(field), 0, 0, NULL, def, rl, why }
#define I(sec, k, field, lo, hi, def, rl, why) { sec, k, K_INT, FIELD(field), lo, hi, NULL, def, rl, why }
#define D(sec, k, field, lo, def, rl, why) { sec, k, K_DURATION, FIELD(field), lo, INT_MAX, NULL, def, rl, why }
#define B(sec, k, field, def, rl, why) { sec, k, K_BOOL, FIELD(field), 0, 1, NULL, def, rl, why }
#define E(sec, k, type, field, names, def, rl, why) { sec, k, type, FIELD(field), 0, 0, names, def, rl, why }

#define RESTART OB_CFG_RESTART_ONLY
#define RELAYS OB_CFG_RESTARTS_RELAYS
#define CONSUMERS OB_CFG_RESTARTS_CONSUMERS
#define KAFKA (OB_CFG_RESTARTS_RELAYS | OB_CFG_RESTARTS_CONSUMERS)

/* In the order of the enums they fill (ob_relay_mode_t, ob_log_*_t, ob_fault_t). */
static const char *const relay_modes[] = { "partitioned", "skip_locked", "wal", NULL };
static const char *const barrier_modes[] = { "auto", "off", NULL };
static const char *const log_formats[] = { "logfmt", "json", NULL };
static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const kafka_formats[] = { "msgpack", "json", NULL };
static const char *const kafka_compats[] = { "none", "debezium", NULL };
static const char *const faults[] = { "none", "relay_mark_before_ack", "consumer_commit_before_apply",
                                      "http_lose_write_reply", NULL };

static const key_def_t keys[] = {
    S("supervisor", "name", supervisor.name, "default", RESTART,
      "names the shm segment, the default pidfile and the consumers' instance ids: give two instances on one host different names"),
    S("supervisor", "pidfile", supervisor.pidfile, NULL, RESTART,
      "where the supervisor writes its pid; empty = /run/outboxd-<name>.pid (or /tmp when /run is not writable)"),
    I("supervisor", "watchdog_s", supervisor.watchdog_s, 1, 3600, "10", 0,
      "a worker whose heartbeat is older than this is killed and respawned; raise it if a legitimate stall trips it"),
    I("supervisor", "shutdown_timeout_s", supervisor.shutdown_timeout_s, 1, 3600, "10", 0,
      "how long a graceful stop waits for workers to finish before SIGKILL"),
    I("postgres", "peer_timeout_s", postgres.peer_timeout_s, 2, 3600, "10", RELAYS,
      "a PostgreSQL connection whose peer is silent this long is given up, on both ends: libpq's keepalives and"
      " tcp_user_timeout here, the server's tcp_keepalives_* and tcp_user_timeout on each session. It bounds how"
      " long a host cut off from PostgreSQL holds its relays' partitions (the server then ends its sessions and"
      " their advisory locks) and how long a worker can block on a dead connection; a DSN's own keepalives_* or"
      " tcp_user_timeout win on the client side"),
    S("orders", "listen", orders.listen, "127.0.0.1:3000", RESTART, "host:port of the order API; empty disables it"),
    S("orders", "dsn", orders.dsn, "postgresql://outboxd@127.0.0.1:55432/orderdb", RELAYS,
      "orderdb for the HTTP workers, and for the relays when [relay] dsn is empty (so a change restarts them)"),
    B("orders", "unsafe_async_commit", orders.unsafe_async_commit, "no", 0,
      "accept orders while orderdb runs synchronous_commit off: a database crash can then lose acknowledged orders; benchmarks only"),
    I("orders", "max_body", orders.max_body, 256, 16 * 1024 * 1024, "65536", 0,
      "largest request body in bytes; a larger one gets 413"),
    I("orders", "statement_timeout_ms", orders.statement_timeout_ms, 10, 600000, "5000", 0,
      "PostgreSQL statement_timeout of the order service's statements"),
    D("orders", "max_backlog_age", orders.max_backlog_age_s, 0, "0", 0,
      "refuse new orders (503) while the oldest unpublished event is older than this, so an outage of Kafka cannot grow the outbox without bound; 0 = off"),
    I("orders", "threads", orders.threads, 1, 512, "16", 0, "threads per HTTP worker for the order API"),
    I("orders", "request_timeout_ms", orders.request_timeout_ms, 100, 600000, "5000", 0,
      "a client must send its whole request body within this, or gets 408"),
    S("ledger", "listen", ledger.listen, "127.0.0.1:4000", RESTART, "host:port of the ledger API; empty disables it"),
    S("ledger", "dsn", ledger.dsn, "postgresql://outboxd@127.0.0.1:55433/ledgerdb", CONSUMERS,
      "ledgerdb for the consumers and the ledger API"),
    S("ledger", "group", ledger.group, "ledger-service", CONSUMERS, "Kafka consumer group of the ledger consumers"),
    D("ledger", "stall_after", ledger.stall_after_s, 1, "30s", 0,
      "status reports the ledger stalled when events wait and none was applied for this long"),
    S("kafka", "brokers", kafka.brokers, "127.0.0.1:59092", KAFKA, "bootstrap brokers, host:port[,host:port...]"),
    S("kafka", "topic", kafka.topic, "outbox-events", KAFKA,
      "the topic of every aggregate type [routes] does not name, the orders API's among them unless routed"),
    B("kafka", "strict_routes", kafka.strict_routes, "no", KAFKA,
      "outboxd.emit refuses an aggregate type [routes] does not name, instead of sending it to [kafka] topic"),
    /* restart-only: HTTP workers would write rows for partitions the topic
     * lacks while the relays go fatal, and reverting strands those rows */
    I("kafka", "partitions", kafka.partitions, 1, 256, "12", RESTART,
      "the topic's partition count, which the hash of an order id picks from; must match the topic"),
    I("kafka", "max_event_bytes", kafka.max_event_bytes, 1, 100000000, "1000000", 0,
      "largest payload outboxd.emit accepts; takes effect when outboxd migrate writes it to outboxd.settings"),
    E("kafka", "format", K_STR_ENUM, kafka.format, kafka_formats, "msgpack", KAFKA,
      "record encoding: msgpack is compact, json is readable by any tool"),
    E("kafka", "compat", K_ENUM, kafka.compat, kafka_compats, "none", RELAYS,
      "debezium adds the header id = event id, so a consumer written for Debezium's outbox router reads ours"),
    E("kafka", "signing_key", K_SIGN_KEY, kafka.signing_key, NULL, NULL, KAFKA,
      "id:secret the relays sign every record with (HMAC-SHA256); empty = unsigned; never shown"),
    E("kafka", "verify_keys", K_SIGN_KEYS, kafka.verify_keys, NULL, NULL, KAFKA,
      "id:secret list the consumers accept besides signing_key, for key rotation; never shown"),
    B("kafka", "require_signature", kafka.require_signature, "no", KAFKA,
      "consumers dead-letter unsigned records too, so another producer on the topic cannot book"),
    I("workers", "http", workers.http, 0, 64, "2", 0, "HTTP worker processes (all listeners)"),
    I("workers", "relays", workers.relays, 0, 256, "2", RELAYS,
      "relay processes; relay i owns the partitions p with p mod relays = i; at most [kafka] partitions"),
    I("workers", "consumers", workers.consumers, 0, 64, "2", 0, "consumer processes, members of the Kafka group"),
    E("relay", "mode", K_ENUM, relay.mode, relay_modes, "partitioned", RELAYS,
      "partitioned polls per partition; wal streams by logical replication; skip_locked is the classic poller, kept for comparison"),
    I("relay", "batch", relay.batch, 1, 100000, "500", RELAYS, "rows a relay claims per cycle"),
    I("relay", "poll_interval_ms", relay.poll_interval_ms, 1, 60000, "100", RELAYS,
      "how often a relay polls without a wakeup (events written by other services wake nobody)"),
    I("relay", "poll_min_ms", relay.poll_min_ms, 0, 60000, "2", RELAYS,
      "after a poll that found events no HTTP worker announced the next one comes this soon, doubling while"
      " polls find none, up to poll_interval_ms; 0 = always poll_interval_ms"),
    D("relay", "retention", relay.retention_s, 60, "24h", RELAYS, "published rows are deleted after this"),
    /* 1, not 0: with 0 a cycle's rows of one partition can leave in several
     * produce requests, and when Kafka rejects one record for its size the
     * requests after it still land, so a later event of the same order
     * overtakes the quarantined one in the log (seen in the relay test).
     * 0 measured commit->Kafka p50 about 1-5 ms lower at 1500 req/s. */
    I("relay", "linger_ms", relay.linger_ms, 0, 1000, "1", RELAYS,
      "librdkafka linger.ms; 1 keeps a cycle's rows of one partition in one produce request"),
    I("relay", "delivery_timeout_ms", relay.delivery_timeout_ms, 1000, 300000, "10000", RELAYS,
      "how long Kafka may take to acknowledge a record before its row is retried"),
    S("relay", "slot_prefix", relay.slot_prefix, "outboxd_relay", RELAYS,
      "mode wal: replication slots and publications are named <prefix>_<relay index>"),
    B("relay", "allow_unbounded_slot", relay.allow_unbounded_slot, "no", RELAYS,
      "mode wal: run although max_slot_wal_keep_size = -1, where a stuck slot can fill orderdb's disk"),
    /* PostgreSQL 15 sends a commit to logical decoding, and shows a commit whose synchronous wait was cancelled,
     * before the synchronous standby has it: produced then, a failover makes it a phantom (DESIGN §2) */
    E("relay", "standby_barrier", K_ENUM, relay.standby_barrier, barrier_modes, "auto", RELAYS,
      "produce an event only once a synchronous standby has its commit (the relay commits a transaction of its own"
      " and waits for it), so a failover cannot take back what was published; auto = on while orderdb's"
      " synchronous_standby_names is set"),
    S("relay", "dsn", relay.dsn, NULL, RELAYS,
      "orderdb for the relays, as a role of their own (docs/least-privilege.sql); empty = [orders] dsn"),
    S("admin", "listen", admin.listen, "127.0.0.1:7411", RESTART,
      "host:port of the status page and metrics; empty disables it. Before 0.9 the default was "
      "127.0.0.1:9090, Prometheus's own port: set it to keep a scrape config unchanged"),
    S("admin", "token", admin.token, NULL, 0, "when set, the admin listener wants Authorization: Bearer <token>"),
    E("log", "format", K_ENUM, log.format, log_formats, "logfmt", 0, "logfmt or json lines"),
    E("log", "level", K_ENUM, log.level, log_levels, "info", 0, "the least severe level written"),
    S("log", "file", log.file, NULL, 0, "append to this file, reopened on SIGUSR1 for log rotation; empty = stderr"),
    E("debug", "fault", K_FAULT, debug.fault, faults, "none", RESTART,
      "the fault suite's negative controls, which break a guarantee on purpose; refused unless OUTBOXD_UNSAFE_FAULTS=1"),
};

const char *
ob_cfg_relay_dsn(const ob_cfg_t *cfg)
{
    return cfg->relay.dsn[0] != '\0' ? cfg->relay.dsn : cfg->orders.dsn;
}

int
ob_cfg_orders_api(const ob_cfg_t *cfg)
{
    return cfg->workers.http > 0 && cfg->orders.listen[0] != '\0';
}

int
ob_cfg_ledger_used(const ob_cfg_t *cfg)
{
    return cfg->workers.consumers > 0 || (cfg->workers.http > 0 && cfg->ledger.listen[0] != '\0');
}

int
ob_cfg_order_reserved(const ob_cfg_t *cfg)
{
    return ob_cfg_orders_api(cfg) || cfg->workers.consumers > 0;
}

const char *
ob_cfg_topic_for(const ob_cfg_t *cfg, const char *type)
{
    const char *t = ob_routes_find(&cfg->routes, type);

    if (t != NULL)
        return t;
    if (!cfg->kafka.strict_routes || (strcmp(type, "order") == 0 && ob_cfg_order_reserved(cfg)))
        return cfg->kafka.topic;
    return NULL;
}

static int
cfg_topic_add(const char *out[OB_TOPICS_MAX + 1], int n, const char *topic)
{
    for (int i = 0; i < n; i++)
        if (strcmp(out[i], topic) == 0)
            return n;
    if (n <= OB_TOPICS_MAX)
        out[n++] = topic;
    return n;
}

int
ob_cfg_topics(const ob_cfg_t *cfg, const char *out[OB_TOPICS_MAX + 1])
{
    int n = 0;

    if (!cfg->kafka.strict_routes || (ob_cfg_order_reserved(cfg) && ob_routes_find(&cfg->routes, "order") == NULL))
        n = cfg_topic_add(out, n, cfg->kafka.topic);
    for (int i = 0; i < cfg->routes.n; i++)
        n = cfg_topic_add(out, n, cfg->routes.r[i].topic);
    return n;
}

int
ob_cfg_http_workers(const ob_cfg_t *cfg)
{
    return cfg->workers.http > 0 ? cfg->workers.http : cfg->admin.listen[0] != '\0';
}

static int cfg_set_value(ob_cfg_t *cfg, const key_def_t *k, const char *v, char *why, size_t whylen);

void
ob_cfg_defaults(ob_cfg_t *cfg)
{
    char why[256];

    memset(cfg, 0, sizeof(*cfg));   /* digests and change checks compare whole fields, padding included */
    for (size_t i = 0; i < OB_ARRAY_LEN(keys); i++) {
        /* the table's own defaults; a unit test parses each, so a failure here is a build of broken code */
        if (keys[i].def != NULL && cfg_set_value(cfg, &keys[i], keys[i].def, why, sizeof(why)) != 0) {
            fprintf(stderr, "outboxd: internal: default of [%s] %s: %s\n", keys[i].section, keys[i].key, why);
            abort();
        }
    }
}

int
ob_cfg_parse_duration(const char *s, int *seconds)
{
    char     *end;
    long long v;
    long long mult = 1;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || v < 0)
        return -1;
    if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60;
    else if (strcmp(end, "h") == 0)
        mult = 3600;
    else if (strcmp(end, "d") == 0)
        mult = 86400;
    else
        return -1;
    if (v > INT_MAX / mult)
        return -1;
    *seconds = (int) (v * mult);
    return 0;
}

typedef struct {
    FILE       *fp;
    int         line;
    ob_cfg_t   *cfg;
    char        err[512];
    int         err_line;
    unsigned    seen_section;
} parse_ctx_t;

/* Reader for ini_parse_stream: fgets plus a line counter. */
static char *
cfg_reader(char *buf, int size, void *stream)
{
    parse_ctx_t *pc = stream;
    char        *r = fgets(buf, size, pc->fp);

    if (r != NULL)
        pc->line++;
    return r;
}

static const key_def_t *
cfg_find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < OB_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].key, key) == 0)
            return &keys[i];
    return NULL;
}

static int
cfg_known_section(const char *section)
{
    if (ob_kprops_section(section) >= 0 || strcmp(section, "routes") == 0)
        return 1;
    for (size_t i = 0; i < OB_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].section, section) == 0)
            return 1;
    return 0;
}

/* "expected a, b or c", from a names list. */
static void
cfg_expected(const char *const *names, char *why, size_t whylen)
{
    size_t used = (size_t) snprintf(why, whylen, "expected");

    for (int i = 0; names[i] != NULL && used < whylen; i++)
        used += (size_t) snprintf(why + used, whylen - used, "%s %s", i == 0 ? "" : names[i + 1] ? "," : " or",
                                  names[i]);
}

static int
cfg_name_index(const char *const *names, const char *v)
{
    for (int i = 0; names[i] != NULL; i++)
        if (strcmp(names[i], v) == 0)
            return i;
    return -1;
}

static int
set_str(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    if (strlen(v) >= k->size) {
        snprintf(why, whylen, "value too long");
        return -1;
    }
    memset(field, 0, k->size);   /* digest and change checks compare whole fields */
    memcpy(field, v, strlen(v));
    return 0;
}

static int
set_int(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    char *end;
    long  n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0') {
        snprintf(why, whylen, "not an integer");
        return -1;
    }
    if (n < k->min || n > k->max) {
        snprintf(why, whylen, "out of range");
        return -1;
    }
    *(int *) field = (int) n;
    return 0;
}

static int
set_bool(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    static const char *const yes[] = { "yes", "true", "1", "on" }, *const no[] = { "no", "false", "0", "off" };

    (void) k;
    for (size_t i = 0; i < OB_ARRAY_LEN(yes); i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *(int *) field = strcasecmp(v, yes[i]) == 0;
            return 0;
        }
    }
    snprintf(why, whylen, "expected yes or no");
    return -1;
}

static int
set_duration(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    int *ip = field;

    if (ob_cfg_parse_duration(v, ip) != 0) {
        snprintf(why, whylen, "expected a duration such as 90s, 15m, 24h or 2d");
        return -1;
    }
    if (*ip < k->min || *ip > k->max) {
        snprintf(why, whylen, "out of range");
        return -1;
    }
    return 0;
}

static int
set_enum(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    int i = cfg_name_index(k->names, v);

    if (i < 0) {
        cfg_expected(k->names, why, whylen);
        return -1;
    }
    *(int *) field = i;
    return 0;
}

/* An enum kept as its name, for the code that compares it as a string. */
static int
set_str_enum(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    if (cfg_name_index(k->names, v) < 0) {
        cfg_expected(k->names, why, whylen);
        return -1;
    }
    return set_str(k, field, v, why, whylen);
}

/* [debug] fault: refused outside the fault suite, which sets the variable. */
static int
set_fault(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    const char *allow = getenv("OUTBOXD_UNSAFE_FAULTS");

    if (set_enum(k, field, v, why, whylen) != 0)
        return -1;
    if (*(int *) field != OB_FAULT_NONE && (allow == NULL || strcmp(allow, "1") != 0)) {
        snprintf(why, whylen, "this mode loses events on purpose (fault-suite negative control); refused unless "
                              "OUTBOXD_UNSAFE_FAULTS=1 is set");
        return -1;
    }
    return 0;
}

static int
set_sign_key(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    const char *w = NULL;

    (void) k;
    if (ob_rsig_parse_key(v, field, &w) == 0)
        return 0;
    snprintf(why, whylen, "%s", w);
    return -1;
}

/* Cumulative: inih's lines stop at 200 bytes, so keys may take several lines. */
static int
set_sign_keys(const key_def_t *k, void *field, const char *v, char *why, size_t whylen)
{
    const char *w = NULL;

    (void) k;
    if (ob_rsig_parse_keys(v, field, &w) == 0)
        return 0;
    snprintf(why, whylen, "%s", w);
    return -1;
}

typedef int (*key_setter_t)(const key_def_t *k, void *field, const char *v, char *why, size_t whylen);

static const key_setter_t setters[] = {
    [K_STR] = set_str,           [K_INT] = set_int,   [K_BOOL] = set_bool,
    [K_DURATION] = set_duration, [K_ENUM] = set_enum, [K_STR_ENUM] = set_str_enum,
    [K_FAULT] = set_fault,       [K_SIGN_KEY] = set_sign_key, [K_SIGN_KEYS] = set_sign_keys,
};

/* Converts one value into its field; on error writes why. */
static int
cfg_set_value(ob_cfg_t *cfg, const key_def_t *k, const char *v, char *why, size_t whylen)
{
    return setters[k->type](k, (char *) cfg + k->off, v, why, whylen);
}

static void
cfg_fail(parse_ctx_t *pc, const char *section, const char *key, const char *why)
{
    if (pc->err[0] != '\0')
        return;     /* keep the first error: later ones are often its echo */
    pc->err_line = pc->line;
    if (key != NULL)
        snprintf(pc->err, sizeof(pc->err), "[%s] %s: %s", section, key, why);
    else
        snprintf(pc->err, sizeof(pc->err), "[%s]: %s", section, why);
}

/* A librdkafka property: checked now, so -t finds what a worker would fail on. */
static int
cfg_kprop(parse_ctx_t *pc, const char *section, const char *name, const char *value)
{
    char why[400];

    if (ob_kprops_check(name, value, why, sizeof(why)) != 0) {
        cfg_fail(pc, section, name, why);
        return 0;
    }
    if (ob_kprops_put(pc->cfg, ob_kprops_section(section), name, value) != 0) {
        cfg_fail(pc, section, name, "too many properties, or the key or value is too long");
        return 0;
    }
    return 1;
}

static int
cfg_handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx_t     *pc = user;
    const key_def_t *k;
    char             why[256];

    if (name == NULL) {
        /* section header alone (INI_CALL_HANDLER_ON_NEW_SECTION); nothing to set */
        if (!cfg_known_section(section))
            cfg_fail(pc, section, NULL, "unknown section");
        return 1;
    }
    if (section[0] == '\0') {
        cfg_fail(pc, "", name, "key outside any section");
        return 0;
    }
    if (!cfg_known_section(section)) {
        cfg_fail(pc, section, NULL, "unknown section");
        return 0;
    }
    if (ob_kprops_section(section) >= 0)
        return cfg_kprop(pc, section, name, value);
    if (strcmp(section, "routes") == 0) {
        if (ob_routes_add(&pc->cfg->routes, name, value, why, sizeof(why)) != 0) {
            char msg[400];
            snprintf(msg, sizeof(msg), "%s (got %.64s = \"%.200s\")", why, name, value);
            cfg_fail(pc, section, name, msg);
            return 0;
        }
        return 1;
    }
    k = cfg_find_key(section, name);
    if (k == NULL) {
        cfg_fail(pc, section, name, "unknown key");
        return 0;
    }
    if (cfg_set_value(pc->cfg, k, value, why, sizeof(why)) != 0) {
        char msg[300];
        if (k->type == K_SIGN_KEY || k->type == K_SIGN_KEYS)
            snprintf(msg, sizeof(msg), "%s (value ***)", why);    /* a secret is never echoed */
        else
            snprintf(msg, sizeof(msg), "%s (got \"%.200s\")", why, value);
        cfg_fail(pc, section, name, msg);
        return 0;
    }
    return 1;
}

int
ob_cfg_load(ob_cfg_t *cfg, const char *path, char *err, size_t errlen)
{
    parse_ctx_t pc;
    int         rc;

    ob_cfg_defaults(cfg);
    ob_strlcpy(cfg->path, path, sizeof(cfg->path));
    memset(&pc, 0, sizeof(pc));
    pc.cfg = cfg;
    pc.fp = fopen(path, "r");
    if (pc.fp == NULL) {
        snprintf(err, errlen, "%s: cannot open config: %s", path, strerror(errno));
        return -1;
    }
    rc = ini_parse_stream(cfg_reader, &pc, cfg_handler, &pc);
    fclose(pc.fp);
    if (pc.err[0] != '\0') {
        snprintf(err, errlen, "%s:%d: %s", path, pc.err_line, pc.err);
        return -1;
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)", path, rc > 0 ? rc : pc.line);
        return -1;
    }
    if (ob_cfg_validate(cfg, err, errlen) != 0) {
        char tmp[512];
        ob_strlcpy(tmp, err, sizeof(tmp));
        snprintf(err, errlen, "%s: %s", path, tmp);
        return -1;
    }
    return 0;
}

static int
cfg_check_listen(const char *what, const char *v, char *err, size_t errlen)
{
    char host[128];
    int  port;

    if (v[0] == '\0')
        return 0;   /* empty = listener disabled */
    if (ob_parse_hostport(v, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "%s: expected host:port, got \"%s\"", what, v);
        return -1;
    }
    return 0;
}

static int
cfg_check_signing(const ob_cfg_t *cfg, char *err, size_t errlen)
{
    ob_rsig_keyring_t ring;

    if (ob_rsig_ring_merge(&cfg->kafka.verify_keys, &cfg->kafka.signing_key, &ring) != 0) {
        snprintf(err, errlen, "[kafka] signing_key and verify_keys give key id '%s' different secrets",
                 cfg->kafka.signing_key.id);
        return -1;
    }
    if (cfg->kafka.require_signature && ring.n == 0) {
        snprintf(err, errlen, "[kafka] require_signature = yes needs verify_keys or signing_key: "
                 "no record could be accepted");
        return -1;
    }
    return 0;
}

static int
cfg_check_topics(const ob_cfg_t *cfg, char *err, size_t errlen)
{
    const char *topics[OB_TOPICS_MAX + 1];

    if (!ob_topic_name_valid(cfg->kafka.topic)) {
        snprintf(err, errlen, "[kafka] topic: a topic name is 1 to 249 characters of A-Z a-z 0-9 . _ -, and not . or .."
                              " (got \"%.200s\")", cfg->kafka.topic);
        return -1;
    }
    int n = ob_cfg_topics(cfg, topics);
    if (n == 0) {
        snprintf(err, errlen, "[kafka] strict_routes = yes and [routes] empty: every event would be refused");
        return -1;
    }
    if (n > OB_TOPICS_MAX) {
        snprintf(err, errlen, "[routes] and [kafka] topic name more than %d distinct topics", OB_TOPICS_MAX);
        return -1;
    }
    return 0;
}

int
ob_cfg_validate(const ob_cfg_t *cfg, char *err, size_t errlen)
{
    const char *n = cfg->supervisor.name;

    if (n[0] == '\0' || strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != strlen(n)) {
        snprintf(err, errlen, "[supervisor] name: use letters, digits, '-', '_' or '.' (got \"%s\")", n);
        return -1;
    }
    n = cfg->relay.slot_prefix;
    if (n[0] == '\0' || strlen(n) > 40 || strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(n)) {
        /* PostgreSQL's rule for slot names, with room for "_<index>" */
        snprintf(err, errlen, "[relay] slot_prefix: use 1-40 lower-case letters, digits or '_' (got \"%s\")", n);
        return -1;
    }
    if (cfg->workers.relays > cfg->kafka.partitions) {
        snprintf(err, errlen, "[workers] relays = %d exceeds [kafka] partitions = %d: a relay would own no partition",
                 cfg->workers.relays, cfg->kafka.partitions);
        return -1;
    }
    if (cfg_check_listen("[orders] listen", cfg->orders.listen, err, errlen) != 0 ||
        cfg_check_listen("[ledger] listen", cfg->ledger.listen, err, errlen) != 0 ||
        cfg_check_listen("[admin] listen", cfg->admin.listen, err, errlen) != 0)
        return -1;
    if ((cfg->orders.listen[0] && (strcmp(cfg->orders.listen, cfg->ledger.listen) == 0 ||
                                   strcmp(cfg->orders.listen, cfg->admin.listen) == 0)) ||
        (cfg->ledger.listen[0] && strcmp(cfg->ledger.listen, cfg->admin.listen) == 0)) {
        snprintf(err, errlen, "[orders], [ledger] and [admin] listen must be different addresses");
        return -1;
    }
    if (cfg->kafka.brokers[0] == '\0') {
        snprintf(err, errlen, "[kafka] brokers must not be empty");
        return -1;
    }
    if (cfg_check_topics(cfg, err, errlen) != 0)
        return -1;
    if (cfg_check_signing(cfg, err, errlen) != 0)
        return -1;
    if (cfg->orders.dsn[0] == '\0' || cfg->ledger.dsn[0] == '\0') {
        snprintf(err, errlen, "[orders] dsn and [ledger] dsn must not be empty");
        return -1;
    }
    return 0;
}

uint64_t
ob_cfg_digest(const ob_cfg_t *cfg)
{
    /* cfg is memset at defaults, so padding is zero and the bytes are stable;
     * the path is left out: the same settings from a moved file are the same. */
    return ob_fnv1a64((const char *) cfg + sizeof(cfg->path), sizeof(*cfg) - sizeof(cfg->path), 0);
}

static int
cfg_key_differs(const key_def_t *k, const ob_cfg_t *a, const ob_cfg_t *b)
{
    return memcmp((const char *) a + k->off, (const char *) b + k->off, k->size) != 0;
}

unsigned
ob_cfg_restarts(const ob_cfg_t *running, const ob_cfg_t *next)
{
    unsigned kinds = 0;

    for (size_t i = 0; i < OB_ARRAY_LEN(keys); i++)
        if (cfg_key_differs(&keys[i], running, next))
            kinds |= keys[i].reload & ~OB_CFG_RESTART_ONLY;
    /* the librdkafka passthrough sections are not keys of the table; every client reads them */
    /* routes decide the relays' topics and the consumers' one; with strict routes so does whether
     * 'order' is outboxd's own ([workers] keys that restart nothing by themselves) */
    if (memcmp(&running->routes, &next->routes, sizeof(next->routes)) != 0 ||
        ob_cfg_order_reserved(running) != ob_cfg_order_reserved(next))
        kinds |= OB_CFG_RESTARTS_RELAYS | OB_CFG_RESTARTS_CONSUMERS;
    if (running->kafka.nprops != next->kafka.nprops ||
        memcmp(running->kafka.props, next->kafka.props, sizeof(next->kafka.props)) != 0)
        kinds |= OB_CFG_RESTARTS_RELAYS | OB_CFG_RESTARTS_CONSUMERS;
    return kinds;
}

int
ob_cfg_keep_restart_only(const ob_cfg_t *running, ob_cfg_t *next, char *out, size_t outlen)
{
    int    count = 0;
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < OB_ARRAY_LEN(keys); i++) {
        const key_def_t *k = &keys[i];
        if (!(k->reload & OB_CFG_RESTART_ONLY) || !cfg_key_differs(k, running, next))
            continue;
        memcpy((char *) next + k->off, (const char *) running + k->off, k->size);
        int n = snprintf(out + used, outlen - used, "%s[%s] %s", count ? ", " : "", k->section, k->key);
        if (n > 0 && used + (size_t) n < outlen)
            used += (size_t) n;
        count++;
    }
    return count;
}

size_t
ob_cfg_key_count(void)
{
    return OB_ARRAY_LEN(keys);
}

void
ob_cfg_key_info(size_t i, ob_cfg_key_info_t *out)
{
    static const char *const types[] = {
        [K_STR] = "string", [K_INT] = "integer",  [K_BOOL] = "yes/no",  [K_DURATION] = "duration",
        [K_ENUM] = "one of", [K_STR_ENUM] = "one of", [K_FAULT] = "one of", [K_SIGN_KEY] = "id:secret",
        [K_SIGN_KEYS] = "id:secret list",
    };
    const key_def_t *k = &keys[i];

    *out = (ob_cfg_key_info_t) { k->section, k->key, types[k->type], k->def, k->min, k->max, k->names, k->reload,
                                 k->why };
}

static int
cfg_peek_handler(void *user, const char *section, const char *name, const char *value)
{
    char *out = user;

    if (strcmp(section, "supervisor") == 0 && strcmp(name, "name") == 0)
        ob_strlcpy(out, value, 64);
    return 1;   /* ignore everything else, errors included */
}

void
ob_cfg_peek_name(const char *path, char *name, size_t namelen)
{
    char found[64] = "default";

    ini_parse(path, cfg_peek_handler, found);
    ob_strlcpy(name, found, namelen);
}
