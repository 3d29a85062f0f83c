/*
 * tests/harness.h: helpers for the integration and fault tests, the one
 * header they include; defined in tests/harness/, a file per concern.
 *
 * Every test gets databases and a topic of its own on the real local stack
 * (orderdb_<tag>, ledgerdb_<tag>, outbox-events-<tag>), its own free ports
 * and its own shm name, so tests never clobber a running dev instance or
 * each other, and everything is dropped at the end.
 */
#ifndef OB_HARNESS_H
#define OB_HARNESS_H

#include "shm/shm.h"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The brokers tests use: the local stack's one (scripts/stack.sh), or
 * OB_TEST_BROKERS (the HA tier's cluster, scripts/kafka_ha.sh). */
const char *obh_brokers(void);
#define STACK_KAFKA obh_brokers()
#define STACK_ORDERS "postgresql://outboxd@127.0.0.1:55432/"
/* pg_locks rows of relays' partition locks, and of their seats (workers/relay/relay_int.h's classes "obxr", "obxs") */
#define OBH_PART_LOCKS "locktype = 'advisory' AND classid = 1868724338"
#define OBH_SEAT_LOCKS "locktype = 'advisory' AND classid = 1868724339"
/* A DSN for database db on the orders server tests use: the local stack's,
 * or, with OB_TEST_ORDERS_HOSTS (host:port,host:port: scripts/pg_ha.sh's
 * pair), a multi-host one that finds the primary by itself. */
void obh_orders_dsn(char *out, size_t outlen, const char *db);
/* Whether the tests run on the failover pair (OB_TEST_ORDERS_HOSTS). */
int obh_orders_ha(void);

typedef struct {
    char    tag[48];
    char    name[64];              /* [supervisor] name = shm name */
    char    dir[128];              /* temp dir: config, log, pidfile */
    char    conf[192];
    char    log[192];
    char    pidfile[192];
    char    orders_db[64], ledger_db[64];
    char    orders_dsn[256], ledger_dsn[256];
    char    topic[96];
    int     partitions;
    int     orders_port, ledger_port, admin_port;
    char    netns[32];             /* network namespace it runs in (scripts/netns.sh), "" = this one */
    char    listen_ip[32];         /* its listeners' address, "" = 127.0.0.1 */
    pid_t   pid;                   /* supervisor, 0 when not running */
    ob_shm_t *shm;
} obh_t;

/* setup.c: the test's databases, ports and config, and their teardown. */

/* Creates databases (migrated when migrate != 0) and picks ports; no process yet. */
void obh_init(obh_t *h, int migrate);
/* A second instance (another host's worth of workers) on h's databases,
 * topic and consumer group: own name, ports, config, log. Stop it with
 * obh_stop(); h's cleanup drops what they share. */
void obh_init_twin(obh_t *twin, const obh_t *h);
/* Another instance on h's databases and topic, its files and name ending in suffix. */
void obh_init_peer(obh_t *peer, const obh_t *h, const char *suffix);
/* Partitions h's running relays hold, by their own bitmaps in h's shm. */
int  obh_held(const obh_t *h);
/* Writes the config: the harness's keys, then `extra` (INI text) appended. */
void obh_write_conf(obh_t *h, const char *extra);
const char *obh_listen_ip(const obh_t *h);
/* Stops everything, drops databases and topic. */
void obh_cleanup(obh_t *h);

/* proc.c: the binary as a process. */

/* Starts `outboxd -f -c conf` plus args (NULL-terminated); waits for its shm header. */
void obh_start(obh_t *h, const char *const *args);
/* TERM, wait up to timeout; returns the exit status or -1 on timeout (then SIGKILL). */
int  obh_stop(obh_t *h, int timeout_ms);
/* Lines of the instance's log that contain needle. */
int obh_log_count(obh_t *h, const char *needle);
/* Runs a shell command with no descriptor of ours but /dev/null (servers it starts keep none of the
 * runner's pipes); its exit status, or -1. */
int obh_shell(const char *cmd);
/* Runs `outboxd ARGS...`, capturing stdout+stderr into out; returns exit status. */
int obh_run(const char *const *args, char *out, size_t outlen);

/* slots.c: workers as the shm slots show them. */

/* Live (pid > 0) slot of kind/index; copies it into *out; -1 when none. */
int obh_worker(obh_t *h, int kind, int index, ob_shm_slot_t *out);
/* Waits until kind/index is running (heartbeating) with a pid other than not_pid. */
pid_t obh_wait_worker(obh_t *h, int kind, int index, pid_t not_pid, int timeout_ms);
/* Number of slots of kind with pid > 0. */
int obh_count(obh_t *h, int kind);
/* Counter ctr of live relay index (0 when none runs). */
uint64_t obh_relay_counter(obh_t *h, int index, int ctr);
/* Asserts that relays 0..relays-1 stream (mode wal) within 30 s (scaled). */
void obh_wait_streaming(obh_t *h, int relays);

/* poll.c: time budgets, polling, predicates. */

/* Polls cond(arg) every 10 ms until true or timeout; returns 1 when it held. */
int obh_poll(int (*cond)(obh_t *, void *), obh_t *h, void *arg, int timeout_ms);
/* Time budgets scale under sanitizers, which slow everything down. */
int obh_ms(int ms);
/* True if pid exists (even as a zombie of someone else). */
int obh_alive(pid_t pid);
/* True if the file exists. */
int obh_exists(const char *path);

/* sql.c: the stack's PostgreSQL clusters. */

PGconn *obh_pg(const char *dsn);
/* Runs one SQL command (no parameters) against dsn; asserts success. */
void obh_sql(const char *dsn, const char *sql);
/* Runs sql (no parameters) and returns the first value as a long long. */
long long obh_scalar(const char *dsn, const char *sql);
/* Asserts that sql (one scalar) on dsn reaches want within timeout_ms (scaled), naming what it was. */
void obh_wait_scalar(obh_t *h, const char *dsn, const char *sql, long long want, int timeout_ms);
/* Makes the test's orders (ledger = 0) or ledger database refuse new
 * connections and drops its current ones (allow = 0), or lets them in again. */
void obh_db_allow(obh_t *h, int ledger, int allow);
/* Drops the replication slots of the test's orders database (relay mode wal). */
void obh_drop_slots(obh_t *h);

/* http_client.c: one request per connection. */

/* Bounds each obh_http() call's connect, send and every receive. */
extern int obh_http_timeout_ms;

/* One HTTP/1.1 request on a fresh connection (Connection: close).
 * Returns the status code, or -errno when the connection failed. The body
 * (NUL-terminated, truncated to bodylen) goes to body; headers to hdrs if not NULL. */
int obh_http(int port, const char *method, const char *path, const char *extra_headers, const char *req_body,
             char *body, size_t bodylen, char *hdrs, size_t hdrslen);
/* The same to ip (a dotted IPv4 address, NULL = 127.0.0.1): a host of scripts/netns.sh. */
int obh_http_at(const char *ip, int port, const char *method, const char *path, const char *extra_headers,
                const char *req_body, char *body, size_t bodylen, char *hdrs, size_t hdrslen);

/* kafka.c: the test's topic and the stack's broker. */

/* One message read back from the test topic. */
typedef struct {
    int32_t partition;
    int64_t offset;
    char    key[256];
    char    event_id[40];
    int32_t seq;
    size_t  len;
} obh_msg_t;

/*
 * Reads every partition of h->topic from the beginning until at least
 * `want` messages arrived and the high watermarks are reached, or timeout.
 * Returns a malloc'd array (caller frees) and its length in *n.
 */
obh_msg_t *obh_kafka_read_all(obh_t *h, int want, int timeout_ms, int *n);
/* The same reading of any topic (of `partitions`), handing each message to each(); returns how many. */
int obh_kafka_each(obh_t *h, const char *topic, int partitions, int want, int timeout_ms,
                   void (*each)(const rd_kafka_message_t *m, void *arg), void *arg);

/* Creates h->topic with h->partitions partitions and optional max.message.bytes (0 = default). */
void obh_kafka_create_topic(obh_t *h, int max_message_bytes);
/* Adds partitions to h->topic up to `partitions` in all (and sets h->partitions). */
void obh_kafka_grow_topic(obh_t *h, int partitions);
/* Sets the topic's max.message.bytes. */
void obh_kafka_set_max_message_bytes(obh_t *h, int bytes);

/* The header `name` of a message read back, NUL-terminated ("" when absent). */
void obh_header(const rd_kafka_message_t *m, const char *name, char *out, size_t outlen);

/* Produces one message to h->topic (explicit partition, optional content-type header); waits for its ack. */
void obh_kafka_produce(obh_t *h, int partition, const char *key, const void *value, size_t len, const char *ctype);

/* The stack's Kafka broker (scripts/stack.sh's pid file), to stop or kill. */
pid_t obh_kafka_pid(void);
/* Node n (1-3) of the HA cluster (scripts/kafka_ha.sh's pid file); 0 when it is down. */
pid_t obh_kafka_node_pid(int n);
/*
 * From cluster metadata for h->topic: leads[b] = partitions node b leads
 * (b 1..3; leads[0] those without a leader), and the least ISR size of
 * any partition. -1 when the metadata request failed.
 */
int obh_kafka_leaders(obh_t *h, int leads[4], int *min_isr);

/* outbox.c: events a test makes up, and Kafka's log checked against the outbox. */

/* A fresh UUIDv7 as text, for ids a test makes up. */
void obh_new_uuid(char id[37]);

/* Inserts `per_order` events (seq 1..per_order) for each of n order ids into
 * the outbox, partitioned as the HTTP worker would; ids go to ids[n][37]. */
void obh_insert_events(obh_t *h, int n, int per_order, char (*ids)[37]);
/* The same, optionally in one transaction, and with order 0's first payload first_bytes long (0 = normal). */
void obh_insert_events_ex(obh_t *h, int n, int per_order, char (*ids)[37], int one_txn, int first_bytes);

/*
 * Checks a Kafka log against the outbox: every outbox event present; each in
 * murmur2(key) % P; per order and partition, every new seq is exactly one
 * more than the highest seen so far and anything lower is a re-send of a seq
 * already seen (no loss, no reordering). Returns the number of duplicates.
 */
int obh_check_log(obh_t *h, const obh_msg_t *m, int n, int expect_events);

#endif
