/*
 * tests/harness/setup.c: a test's own world on the shared stack: names,
 * free ports, databases, config; a twin instance on the same databases;
 * and the teardown that drops all of it.
 */
#include "tests/harness.h"
#include "tests/harness/harness_int.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Three distinct ports the kernel says are free right now (held open
 * together while choosing, so it cannot hand out one twice). */
static void
obh_free_ports(int *a, int *b, int *c)
{
    int *out[3] = { a, b, c }, fds[3];

    for (int i = 0; i < 3; i++) {
        struct sockaddr_in sa = { .sin_family = AF_INET };
        socklen_t          len = sizeof(sa);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fds[i] >= 0);
        cr_assert_eq(bind(fds[i], (struct sockaddr *) &sa, sizeof(sa)), 0);
        cr_assert_eq(getsockname(fds[i], (struct sockaddr *) &sa, &len), 0);
        *out[i] = ntohs(sa.sin_port);
    }
    for (int i = 0; i < 3; i++)
        close(fds[i]);
}

void
obh_init(obh_t *h, int migrate)
{
    static int seq;
    char       sql[256], out[4096], admin[256];

    memset(h, 0, sizeof(*h));
    snprintf(h->tag, sizeof(h->tag), "t%d_%d_%ld", (int) getpid(), seq++, (long) (time(NULL) % 100000));
    snprintf(h->name, sizeof(h->name), "test-%s", h->tag);
    snprintf(h->dir, sizeof(h->dir), "/tmp/outboxd-%s", h->tag);
    cr_assert_eq(mkdir(h->dir, 0700), 0, "mkdir %s: %s", h->dir, strerror(errno));
    snprintf(h->conf, sizeof(h->conf), "%s/outboxd.conf", h->dir);
    snprintf(h->log, sizeof(h->log), "%s/outboxd.log", h->dir);
    snprintf(h->pidfile, sizeof(h->pidfile), "%s/outboxd.pid", h->dir);
    snprintf(h->orders_db, sizeof(h->orders_db), "orderdb_%s", h->tag);
    snprintf(h->ledger_db, sizeof(h->ledger_db), "ledgerdb_%s", h->tag);
    obh_orders_dsn(h->orders_dsn, sizeof(h->orders_dsn), h->orders_db);
    snprintf(h->ledger_dsn, sizeof(h->ledger_dsn), STACK_LEDGER "%s", h->ledger_db);
    snprintf(h->topic, sizeof(h->topic), "outbox-events-%s", h->tag);
    h->partitions = 12;
    obh_free_ports(&h->orders_port, &h->ledger_port, &h->admin_port);
    obh_orders_dsn(admin, sizeof(admin), "postgres");
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", h->orders_db);
    obh_sql(admin, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", h->ledger_db);
    obh_sql(STACK_LEDGER "postgres", sql);
    obh_write_conf(h, "");
    if (migrate) {
        const char *args[] = { "migrate", "-c", h->conf, NULL };
        cr_assert_eq(obh_run(args, out, sizeof(out)), 0, "migrate failed: %s", out);
    }
}

void
obh_init_peer(obh_t *peer, const obh_t *h, const char *suffix)
{
    *peer = *h;
    peer->pid = 0;
    peer->shm = NULL;
    snprintf(peer->name, sizeof(peer->name), "%s-%s", h->name, suffix);
    snprintf(peer->conf, sizeof(peer->conf), "%s/twin-%s.conf", h->dir, suffix);
    snprintf(peer->log, sizeof(peer->log), "%s/twin-%s.log", h->dir, suffix);
    snprintf(peer->pidfile, sizeof(peer->pidfile), "%s/twin-%s.pid", h->dir, suffix);
    obh_free_ports(&peer->orders_port, &peer->ledger_port, &peer->admin_port);
}

void
obh_init_twin(obh_t *twin, const obh_t *h)
{
    obh_init_peer(twin, h, "b");
}

const char *
obh_listen_ip(const obh_t *h)
{
    return h->listen_ip[0] ? h->listen_ip : "127.0.0.1";
}

void
obh_write_conf(obh_t *h, const char *extra)
{
    FILE *f = fopen(h->conf, "w");

    cr_assert_not_null(f);
    fprintf(f,
            "[supervisor]\nname = %s\npidfile = %s\n"
            "[orders]\nlisten = %s:%d\ndsn = %s\n"
            "[ledger]\nlisten = %s:%d\ndsn = %s\ngroup = ledger-%s\n"
            "[kafka]\nbrokers = %s\ntopic = %s\npartitions = %d\n"
            "[admin]\nlisten = %s:%d\n"
            "[relay]\nslot_prefix = ob_%s\n"
            "[log]\nfile = %s\n%s",
            h->name, h->pidfile, obh_listen_ip(h), h->orders_port, h->orders_dsn, obh_listen_ip(h), h->ledger_port,
            h->ledger_dsn, h->tag, STACK_KAFKA, h->topic, h->partitions, obh_listen_ip(h), h->admin_port, h->tag, h->log,
            extra);
    fclose(f);
}

void
obh_cleanup(obh_t *h)
{
    char sql[256], cmd[300], admin[256];

    obh_stop(h, obh_ms(15000));
    if (h->shm != NULL) {
        ob_shm_close(h->shm, 0);
        h->shm = NULL;
    }
    obh_drop_slots(h);
    obh_orders_dsn(admin, sizeof(admin), "postgres");
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", h->orders_db);
    obh_sql(admin, sql);
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", h->ledger_db);
    obh_sql(STACK_LEDGER "postgres", sql);
    obh_kafka_drop_topic(h);
    if (getenv("OB_KEEP_LOGS") == NULL) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
        if (system(cmd) != 0) {
            /* leftover temp dir is harmless */
        }
    }
}
