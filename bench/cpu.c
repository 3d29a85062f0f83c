/*
 * bench/cpu.c: where the CPU went during a measurement.
 *
 * On two cores every component competes with every other, so a ratio such
 * as "intake with the pipeline / intake alone" is explained by who used the
 * cores meanwhile: outboxd's processes by kind, the PostgreSQL backends
 * serving each kind (found by application_name in pg_stat_activity),
 * autovacuum on our databases, Kafka's JVM, and the whole machine, whose
 * surplus over all of these is someone else's load (a concurrent test run
 * makes a measurement worthless; this shows it).
 */
#include "bench/obbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CPU_MAX_PROCS  256
#define CPU_RESCAN_S   1.0      /* new workers and PG backends appear lazily */
#define CPU_MAX_SHMS   4        /* outboxd instances measured together (the hosts of section 10) */

typedef struct {
    pid_t  pid;
    char   label[24];
    int    db;                   /* PostgreSQL cluster: 0 orders, 1 ledger; -1 not a backend */
    double first, last;          /* CPU seconds when first and last seen */
} cpu_proc_t;

struct bench_cpu {
    ob_shm_t   *shm[CPU_MAX_SHMS];
    int         nshm;
    PGconn     *pg[2];
    pid_t       kafka;
    cpu_proc_t  procs[CPU_MAX_PROCS];
    int         n;
    double      t0, next_scan, machine0;
    int         scans;
};

/* utime + stime of a process, in seconds; -1 when it is gone. */
static double
cpu_of(pid_t pid)
{
    char               path[64], buf[1024], *p;
    unsigned long long ut, st;
    FILE              *f;
    size_t             n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');       /* the command name may contain anything */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

/* Busy CPU seconds of the whole machine (all cores) since boot. */
static double
cpu_machine(void)
{
    unsigned long long v[8] = { 0 };
    FILE              *f = fopen("/proc/stat", "r");

    if (f == NULL)
        return 0;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
               &v[7]) != 8)
        v[0] = v[1] = v[2] = v[5] = v[6] = v[7] = 0;
    fclose(f);
    return (double) (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double) sysconf(_SC_CLK_TCK);
}

/* Tracks pid under label; a process born after the start counts from zero. */
static cpu_proc_t *
cpu_track(bench_cpu_t *c, pid_t pid, const char *label, int db)
{
    for (int i = 0; i < c->n; i++)
        if (c->procs[i].pid == pid)
            return &c->procs[i];
    double now = cpu_of(pid);
    if (now < 0 || c->n == CPU_MAX_PROCS)
        return NULL;
    cpu_proc_t *p = &c->procs[c->n++];
    p->pid = pid;
    snprintf(p->label, sizeof(p->label), "%s", label);
    p->db = db;
    p->first = c->scans == 0 ? now : 0;
    p->last = now;
    return p;
}

/* A process named by the caller (a peer's JVM), counted from now on: it was
 * running before the measurement, and its start-up is not the measurement's. */
void
bench_cpu_track(bench_cpu_t *c, pid_t pid, const char *label)
{
    cpu_proc_t *p = c != NULL && pid > 0 ? cpu_track(c, pid, label, -1) : NULL;

    if (p != NULL)
        p->first = p->last;
}

/* "outboxd relay 1" -> "pg relay"; autovacuum and the rest by backend type. */
static void
cpu_pg_label(const char *app, const char *type, char *out, size_t outlen)
{
    static const char *kinds[] = { "http", "relay", "consumer" };

    if (strcmp(type, "autovacuum worker") == 0) {
        snprintf(out, outlen, "pg autovacuum");
        return;
    }
    if (strcmp(type, "walsender") == 0) {      /* decoding the WAL: for relay mode wal, or for a peer (Debezium) */
        snprintf(out, outlen, strncmp(app, "outboxd relay ", 14) == 0 ? "pg relay wal" : "pg walsender");
        return;
    }
    if (strcmp(type, "client backend") != 0) {
        snprintf(out, outlen, "pg background");    /* WAL writer, checkpointer...: shared with anyone */
        return;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "outboxd %s ", kinds[i]);
        if (strncmp(app, prefix, strlen(prefix)) == 0) {
            snprintf(out, outlen, "pg %s", kinds[i]);
            return;
        }
    }
    snprintf(out, outlen, "pg other");    /* the bench's own queries, psql, ... */
}

static void
cpu_scan(bench_cpu_t *c)
{
    char label[32];

    for (int k = 0; k < c->nshm; k++) {
        cpu_track(c, atomic_load(&c->shm[k]->map->hdr.sup_pid), "supervisor", -1);
        for (int i = 0; i < OB_SHM_SLOTS; i++) {
            ob_shm_slot_t *s = &c->shm[k]->map->slots[i];
            if (s->pid > 0 && s->kind > OB_KIND_NONE && s->kind < OB_KIND_COUNT)
                cpu_track(c, s->pid, ob_kind_name(s->kind), -1);
        }
    }
    for (int k = 0; k < 2; k++) {
        if (c->pg[k] == NULL)
            continue;
        PGresult *r = PQexec(c->pg[k], "SELECT pid, coalesce(application_name, ''), coalesce(backend_type, '')"
                                       " FROM pg_stat_activity WHERE (datname = current_database() OR datname IS NULL)"
                                       " AND pid <> pg_backend_pid()");
        for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
            cpu_pg_label(PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), label, sizeof(label));
            cpu_track(c, atoi(PQgetvalue(r, i, 0)), label, k);
        }
        PQclear(r);
    }
    if (c->kafka > 0)
        cpu_track(c, c->kafka, "kafka", -1);
    c->scans++;
}

bench_cpu_t *
bench_cpu_start(ob_shm_t *shm, const char *orders_dsn, const char *ledger_dsn, pid_t kafka)
{
    bench_cpu_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        bench_die("out of memory");
    if (shm != NULL)
        c->shm[c->nshm++] = shm;
    c->pg[0] = orders_dsn ? bench_pg(orders_dsn) : NULL;
    c->pg[1] = ledger_dsn ? bench_pg(ledger_dsn) : NULL;
    c->kafka = kafka;
    c->t0 = bench_now();
    c->machine0 = cpu_machine();
    cpu_scan(c);
    c->next_scan = c->t0 + CPU_RESCAN_S;
    return c;
}

void
bench_cpu_sample(bench_cpu_t *c)
{
    if (c == NULL)
        return;
    if (bench_now() >= c->next_scan) {
        cpu_scan(c);
        c->next_scan = bench_now() + CPU_RESCAN_S;
    }
    for (int i = 0; i < c->n; i++) {
        double v = cpu_of(c->procs[i].pid);
        if (v >= 0)
            c->procs[i].last = v;     /* a process that exited keeps its last reading */
    }
}

/*
 * {"seconds": wall, "cores": {label: CPU seconds / wall seconds, ...,
 *  "machine": all busy cores, "others": machine minus everything listed},
 *  "db_cores": {"orders": all orders-cluster processes, "ledger": ...}}
 */
json_t *
bench_cpu_end(bench_cpu_t *c)
{
    json_t *cores = json_object();
    double  wall, sum = 0, db[2] = { 0, 0 };

    if (c == NULL)
        return json_null();
    bench_cpu_sample(c);
    wall = bench_now() - c->t0;
    for (int i = 0; i < c->n; i++) {
        json_t *v = json_object_get(cores, c->procs[i].label);
        double  used = (c->procs[i].last - c->procs[i].first) / wall;
        json_object_set_new(cores, c->procs[i].label, json_real((v ? json_real_value(v) : 0) + used));
        sum += used;
        if (c->procs[i].db >= 0)
            db[c->procs[i].db] += used;
    }
    double machine = (cpu_machine() - c->machine0) / wall;
    json_object_set_new(cores, "machine", json_real(machine));
    json_object_set_new(cores, "others", json_real(machine - sum > 0 ? machine - sum : 0));
    for (int k = 0; k < 2; k++)
        if (c->pg[k] != NULL)
            PQfinish(c->pg[k]);
    free(c);
    /* per cluster: what a relay mode costs the orders database is the point of comparing them */
    return json_pack("{s:f, s:o, s:{s:f, s:f}}", "seconds", wall, "cores", cores, "db_cores", "orders", db[0], "ledger",
                     db[1]);
}

/* Another instance's workers count too, from now on, like the first instance's. */
void
bench_cpu_add_shm(bench_cpu_t *c, ob_shm_t *shm)
{
    if (c == NULL || shm == NULL || c->nshm == CPU_MAX_SHMS)
        return;
    c->shm[c->nshm++] = shm;
    int scans = c->scans;
    c->scans = 0;            /* its processes count from now, as at the start */
    cpu_scan(c);
    c->scans = scans;
}

bench_cpu_t *
bench_cpu_from_opts(ob_shm_t *shm, int argc, char **argv)
{
    return bench_cpu_start(shm, bench_opt(argc, argv, "--orders-dsn", NULL), bench_opt(argc, argv, "--ledger-dsn", NULL),
                           (pid_t) bench_opt_long(argc, argv, "--kafka-pid", 0));
}
