/*
 * supervisor/sup.c: the outboxd supervisor.
 *
 * NOTES
 *   What it does: opens the listening sockets and the shm segment, forks
 *   HTTP, relay and consumer workers, reaps and restarts them with per-slot
 *   backoff, kills workers whose heartbeat stops (watchdog), and reloads the
 *   config on SIGHUP. Single-threaded; never touches PostgreSQL or Kafka, so
 *   nothing slow can stall it.
 *
 *   What it owns: the child table (private), the shm header and the identity
 *   half of every slot, the listening sockets, the pidfile.
 *
 *   Signals: TERM/INT graceful stop (children get TERM, SIGKILL after
 *   shutdown_timeout_s), QUIT immediate stop (children get SIGKILL), HUP
 *   reload, USR1 reopen the log, CHLD reap. Handlers only set flags; the loop
 *   acts on them in the order terminate, reload, reap, work.
 *
 *   Exit codes of children: 0 asked to stop, 1 restart with backoff, 2 fatal
 *   (not respawned until the next reload). Death by a signal is a crash.
 */
#include "sup.h"
#include "../common/listen.h"
#include "../common/log.h"
#include "../common/sig.h"
#include "../common/util.h"
#include "../common/worker.h"
#include "../workers/consumer/consumer.h"
#include "../workers/http/http.h"
#include "../workers/relay/relay.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SUP_TICK_MS        250       /* watchdog and state checks */
#define SUP_HEALTHY_MS     60000     /* a child up this long resets its backoff */
#define SUP_CRASHLOOP_FAILS 3

static void sup_reload(ob_sup_t *sup);
static void sup_reap(ob_sup_t *sup);
static void sup_launch_missing(ob_sup_t *sup);
static void sup_watch(ob_sup_t *sup);
static void sup_stop_child(ob_sup_t *sup, ob_child_t *c, int signo);

int64_t
ob_sup_backoff_ms(uint32_t fails)
{
    int64_t ms = 100;

    for (uint32_t i = 1; i < fails && ms < 30000; i++)
        ms *= 2;
    return ms > 30000 ? 30000 : ms;
}

void
ob_sup_apply_overrides(ob_cfg_t *cfg, const ob_overrides_t *ovr)
{
    if (ovr->http >= 0)
        cfg->workers.http = ovr->http;
    if (ovr->relays >= 0)
        cfg->workers.relays = ovr->relays;
    if (ovr->consumers >= 0)
        cfg->workers.consumers = ovr->consumers;
}

/*
 * The kinds of worker, the shape of PostgreSQL's table of child processes:
 * adding a kind is a row here and its folder under workers/, not a case in
 * every switch of the supervisor.
 */
typedef struct {
    int    (*main)(const ob_cfg_t *cfg, ob_shm_slot_t *slot, int index);
    size_t wanted;     /* offset in ob_cfg_t of how many to run */
    int    accepts;    /* keeps the listening sockets: only HTTP workers accept connections */
    /* Two relays must never own one partition: a new relay set waits until
     * every retiring relay has exited (advisory locks back this). */
    int    exclusive;
    int    rolling;    /* replaced one by one on reload, a successor up before its predecessor stops */
} sup_kind_t;

static const sup_kind_t kinds[OB_KIND_COUNT] = {
    [OB_KIND_HTTP] = { ob_http_main, offsetof(ob_cfg_t, workers.http), 1, 0, 1 },
    [OB_KIND_RELAY] = { ob_relay_main, offsetof(ob_cfg_t, workers.relays), 0, 1, 0 },
    [OB_KIND_CONSUMER] = { ob_cons_main, offsetof(ob_cfg_t, workers.consumers), 0, 0, 0 },
};

static int
sup_wanted(const ob_cfg_t *cfg, int kind)
{
    if (kind == OB_KIND_HTTP)
        return ob_cfg_http_workers(cfg);   /* with http = 0, one still serves the admin listener */
    return kinds[kind].main != NULL ? *(const int *) ((const char *) cfg + kinds[kind].wanted) : 0;
}

static ob_shm_slot_t *
sup_slot(ob_sup_t *sup, const ob_child_t *c)
{
    return &sup->shm->map->slots[c - sup->ch];
}

/* Rewrites the identity half of a slot under its seqlock. */
static void
sup_publish(ob_sup_t *sup, ob_child_t *c, int state, const char *reason)
{
    ob_shm_slot_t *s = sup_slot(sup, c);

    ob_shm_write_begin(&s->seq);
    s->kind = c->kind;
    s->index = c->index;
    s->pid = (int32_t) c->pid;
    s->state = state;
    s->restarts = c->restarts;
    s->generation = (uint32_t) atomic_load(&sup->shm->map->hdr.generation);
    if (reason != NULL)
        ob_strlcpy(s->reason, reason, sizeof(s->reason));
    ob_shm_write_end(&s->seq);
}

static void
sup_publish_header(ob_sup_t *sup, int reload_ok, const char *msg)
{
    ob_shm_hdr_t *h = &sup->shm->map->hdr;

    ob_shm_write_begin(&h->seq);
    h->cfg_digest = ob_cfg_digest(sup->cfg);
    h->partitions = sup->cfg->kafka.partitions;
    h->relays = sup->cfg->workers.relays;
    ob_strlcpy(h->cfg_path, sup->cfg->path, sizeof(h->cfg_path));
    if (msg != NULL) {
        h->reload_ok = reload_ok;
        h->reload_wall_ms = ob_wall_ms();
        ob_strlcpy(h->reload_msg, msg, sizeof(h->reload_msg));
    }
    ob_shm_write_end(&h->seq);
}

static ob_child_t *
sup_find(ob_sup_t *sup, int kind, int index, int retiring)
{
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        /* an HTTP worker being replaced is as good as retiring here */
        if (c->in_use && c->kind == kind && c->index == index && (int) (c->retiring || c->replace) == retiring)
            return c;
    }
    return NULL;
}

static ob_child_t *
sup_alloc(ob_sup_t *sup, int kind, int index)
{
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (!c->in_use) {
            memset(c, 0, sizeof(*c));
            c->in_use = 1;
            c->kind = kind;
            c->index = index;
            c->next_start_ms = ob_now_ms();
            return c;
        }
    }
    ob_log(OB_LOG_ERROR, "no free worker slot for %s %d (max %d)", ob_kind_name(kind), index, OB_SHM_SLOTS);
    return NULL;
}

/* Frees an entry whose process is gone; the slot reads as empty again. */
static void
sup_free(ob_sup_t *sup, ob_child_t *c)
{
    ob_shm_slot_t *s = sup_slot(sup, c);

    ob_shm_write_begin(&s->seq);
    memset((char *) s + sizeof(s->seq), 0, offsetof(ob_shm_slot_t, heartbeat_ms) - sizeof(s->seq));
    s->last_status = -1;
    ob_shm_write_end(&s->seq);
    atomic_store(&s->heartbeat_ms, 0);
    for (int w = 0; w < OB_SHM_OWN_WORDS; w++)
        atomic_store(&s->owned[w], 0);
    for (int k = 0; k < OB_SHM_COUNTERS; k++)
        atomic_store(&s->counters[k], 0);
    memset(c, 0, sizeof(*c));
}

/* Child side of fork: never returns. */
static void
sup_child_main(ob_sup_t *sup, ob_child_t *c, pid_t sup_pid)
{
    ob_shm_slot_t *s = sup_slot(sup, c);
    int            rc;

    if (ob_worker_enter(c->kind, c->index, sup_pid) != 0)
        _exit(OB_EXIT_OK);
    if (c->kind <= OB_KIND_NONE || c->kind >= OB_KIND_COUNT || kinds[c->kind].main == NULL)
        exit(OB_EXIT_FATAL);
    if (!kinds[c->kind].accepts)
        ob_listen_close_all();
    rc = kinds[c->kind].main(sup->cfg, s, c->index);
    exit(rc);
}

static void
sup_spawn(ob_sup_t *sup, ob_child_t *c)
{
    ob_shm_slot_t *s = sup_slot(sup, c);
    pid_t          sup_pid = getpid();
    pid_t          pid;

    /* The worker's half of the slot starts clean; heartbeat 0 = not up yet. */
    atomic_store(&s->heartbeat_ms, 0);
    for (int w = 0; w < OB_SHM_OWN_WORDS; w++)
        atomic_store(&s->owned[w], 0);
    s->note[0] = '\0';
    ob_shm_write_begin(&s->seq);
    s->started_wall_ms = ob_wall_ms();
    ob_shm_write_end(&s->seq);

    pid = fork();
    if (pid < 0) {
        ob_log(OB_LOG_ERROR, "fork() for %s %d failed: %s", ob_kind_name(c->kind), c->index, strerror(errno));
        c->fails++;
        c->next_start_ms = ob_now_ms() + ob_sup_backoff_ms(c->fails);
        return;
    }
    if (pid == 0)
        sup_child_main(sup, c, sup_pid);
    c->pid = pid;
    c->spawned_ms = ob_now_ms();
    c->kill_at_ms = 0;
    sup_publish(sup, c, OB_SLOT_STARTING, "");
    ob_log(OB_LOG_INFO, "started %s %d pid=%d slot=%d", ob_kind_name(c->kind), c->index, (int) pid,
           (int) (c - sup->ch));
}

static int
sup_count_alive(ob_sup_t *sup, int kind, int retiring_only)
{
    int n = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (c->in_use && c->pid > 0 && (kind == OB_KIND_NONE || c->kind == kind) &&
            (!retiring_only || c->retiring))
            n++;
    }
    return n;
}

static int
sup_ready(ob_sup_t *sup, const ob_child_t *c)
{
    return c->pid > 0 && atomic_load(&sup_slot(sup, c)->heartbeat_ms) != 0;
}

/*
 * HTTP rolling replacement: at most one new HTTP worker may be starting while
 * old ones are being replaced, and an old one is stopped only once its
 * successor heartbeats. The listening sockets are shared, so some worker is
 * always accepting: no refused connection during a reload.
 */
static int
sup_rolling_may_start(ob_sup_t *sup, int kind)
{
    int replacing = 0, starting = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (!c->in_use || c->kind != kind)
            continue;
        if (c->replace)
            replacing = 1;
        else if (c->pid > 0 && !sup_ready(sup, c))
            starting = 1;
    }
    return !(replacing && starting);
}

static void
sup_retire_replaced_http(ob_sup_t *sup)
{
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (!c->in_use || !c->replace || c->kill_at_ms != 0)
            continue;
        ob_child_t *next = c->index < sup_wanted(sup->cfg, OB_KIND_HTTP) ? sup_find(sup, OB_KIND_HTTP, c->index, 0) : NULL;
        if (c->pid == 0) {
            sup_free(sup, c);
        } else if (next == NULL || sup_ready(sup, next)) {
            sup_stop_child(sup, c, SIGTERM);
        }
    }
}

/* Idempotent: makes the running set match the config. */
static void
sup_launch_missing(ob_sup_t *sup)
{
    int64_t now = ob_now_ms();

    sup_retire_replaced_http(sup);
    for (int kind = OB_KIND_HTTP; kind < OB_KIND_COUNT; kind++) {
        if (kinds[kind].exclusive && sup_count_alive(sup, kind, 1) > 0)
            continue;
        for (int idx = 0; idx < sup_wanted(sup->cfg, kind); idx++) {
            ob_child_t *c = sup_find(sup, kind, idx, 0);
            if (c == NULL && (c = sup_alloc(sup, kind, idx)) == NULL)
                return;
            if (c->pid != 0 || c->fatal || now < c->next_start_ms)
                continue;
            if (kinds[kind].rolling && !sup_rolling_may_start(sup, kind))
                continue;
            sup_spawn(sup, c);
        }
    }
}

static void
sup_stop_child(ob_sup_t *sup, ob_child_t *c, int signo)
{
    if (c->pid <= 0)
        return;
    if (kill(c->pid, signo) != 0 && errno != ESRCH)
        ob_log(OB_LOG_WARN, "kill(%d, %d) failed: %s", (int) c->pid, signo, strerror(errno));
    if (signo == SIGTERM && c->kill_at_ms == 0) {
        c->kill_at_ms = ob_now_ms() + (int64_t) sup->cfg->supervisor.shutdown_timeout_s * 1000;
        sup_publish(sup, c, OB_SLOT_STOPPING, NULL);
    }
}

/* Describes a wait status the way an operator reads it. */
static void
sup_describe_exit(int st, char *out, size_t outlen)
{
    if (WIFEXITED(st))
        snprintf(out, outlen, "exited with code %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, outlen, "killed by signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                 WCOREDUMP(st) ? ", core dumped" : "");
    else
        snprintf(out, outlen, "ended with status 0x%x", st);
}

/* Records one exit: the reaper only records; launch_missing respawns. */
static void
sup_record_exit(ob_sup_t *sup, ob_child_t *c, int st)
{
    ob_shm_slot_t *s = sup_slot(sup, c);
    char           why[160], reason[160];
    int64_t        now = ob_now_ms();
    int            asked = c->kill_at_ms != 0 || sup->stopping;

    sup_describe_exit(st, why, sizeof(why));
    c->pid = 0;
    c->kill_at_ms = 0;
    for (int w = 0; w < OB_SHM_OWN_WORDS; w++)
        atomic_store(&s->owned[w], 0);
    s->last_status = st;
    if (c->retiring || c->replace || sup->stopping) {
        ob_log(OB_LOG_INFO, "%s %d stopped (%s)", ob_kind_name(c->kind), c->index, why);
        sup_free(sup, c);
        return;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == OB_EXIT_FATAL) {
        c->fatal = 1;
        snprintf(reason, sizeof(reason), "%s", s->note[0] ? s->note : why);
        ob_log(OB_LOG_ERROR, "%s %d fatal, not restarted until reload: %s", ob_kind_name(c->kind), c->index, reason);
        sup_publish(sup, c, OB_SLOT_FATAL, reason);
        return;
    }
    if (now - c->spawned_ms >= SUP_HEALTHY_MS)
        c->fails = 0;
    c->fails++;
    c->restarts++;
    c->next_start_ms = now + ob_sup_backoff_ms(c->fails);
    ob_log(asked ? OB_LOG_INFO : OB_LOG_WARN, "%s %d %s; restart in %lld ms", ob_kind_name(c->kind), c->index, why,
           (long long) ob_sup_backoff_ms(c->fails));
    sup_publish(sup, c, c->fails >= SUP_CRASHLOOP_FAILS ? OB_SLOT_CRASHLOOP : OB_SLOT_BACKOFF, why);
}

static void
sup_reap(ob_sup_t *sup)
{
    int   st;
    pid_t pid;

    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        ob_child_t *c = NULL;
        for (int i = 0; i < OB_SHM_SLOTS && c == NULL; i++)
            if (sup->ch[i].in_use && sup->ch[i].pid == pid)
                c = &sup->ch[i];
        if (c == NULL) {
            ob_log(OB_LOG_WARN, "reaped unknown pid %d", (int) pid);
            continue;
        }
        sup_record_exit(sup, c, st);
    }
}

/*
 * Watchdog and state upkeep: a worker whose heartbeat is older than
 * watchdog_s (or that never beat since its spawn) is SIGKILLed, which also
 * ends a SIGSTOPped one; a TERMed worker past its deadline gets SIGKILL.
 */
static void
sup_watch(ob_sup_t *sup)
{
    int64_t now = ob_now_ms();
    int64_t limit = (int64_t) sup->cfg->supervisor.watchdog_s * 1000;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (!c->in_use || c->pid <= 0)
            continue;
        ob_shm_slot_t *s = sup_slot(sup, c);
        int64_t        beat = atomic_load(&s->heartbeat_ms);
        int64_t        age = now - (beat ? beat : c->spawned_ms);
        if (c->kill_at_ms != 0) {
            if (now >= c->kill_at_ms) {
                ob_log(OB_LOG_WARN, "%s %d pid=%d ignored TERM for %d s, sending SIGKILL", ob_kind_name(c->kind),
                       c->index, (int) c->pid, sup->cfg->supervisor.shutdown_timeout_s);
                kill(c->pid, SIGKILL);
                c->kill_at_ms = now + 1000;
            }
            continue;
        }
        if (age > limit) {
            ob_log(OB_LOG_ERROR, "watchdog: %s %d pid=%d silent for %lld ms, sending SIGKILL", ob_kind_name(c->kind),
                   c->index, (int) c->pid, (long long) age);
            kill(c->pid, SIGKILL);
            continue;
        }
        if (beat != 0 && s->state == OB_SLOT_STARTING)
            sup_publish(sup, c, OB_SLOT_RUNNING, NULL);
        if (beat != 0 && c->fails > 0 && now - c->spawned_ms >= SUP_HEALTHY_MS)
            c->fails = 0;
    }
}

/* Once a second: instance-wide totals into the shm ring, for sparklines. */
static void
sup_sample_rates(ob_sup_t *sup)
{
    ob_shm_hdr_t  *h = &sup->shm->map->hdr;
    int64_t        now_s = ob_wall_ms() / 1000;
    ob_shm_rate_t  r = { .wall_s = now_s };
    uint32_t       prev = (h->ring_head + OB_SHM_RING - 1) % OB_SHM_RING;

    if (h->ring[prev].wall_s == now_s)
        return;
    for (int p = 0; p < OB_SHM_PARTITIONS; p++) {
        r.committed += atomic_load(&sup->shm->map->parts[p].committed);
        r.produced += atomic_load(&sup->shm->map->parts[p].produced);
    }
    for (int i = 0; i < OB_SHM_SLOTS; i++)
        if (sup->shm->map->slots[i].kind == OB_KIND_CONSUMER)
            r.applied += atomic_load(&sup->shm->map->slots[i].counters[OB_CTR_CONS_APPLIED]);
    ob_shm_write_begin(&h->ring_seq);
    h->ring[h->ring_head] = r;
    h->ring_head = (h->ring_head + 1) % OB_SHM_RING;
    ob_shm_write_end(&h->ring_seq);
}

/* How long the loop may sleep: until the next due restart or the next tick. */
static int64_t
sup_sleep_ms(ob_sup_t *sup)
{
    int64_t now = ob_now_ms(), best = SUP_TICK_MS;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (c->in_use && c->pid == 0 && !c->fatal && !c->retiring) {
            int64_t d = c->next_start_ms - now;
            if (d < best)
                best = d < 0 ? 0 : d;
        }
    }
    return best;
}

/* A flag keeps pinning its key while the file's value for it is unchanged. */
static void
sup_merge_overrides(ob_sup_t *sup, ob_cfg_t *next)
{
    struct {
        int *flag, file_now, file_boot;
        const char *name;
    } pins[] = {
        { &sup->ovr.http, next->workers.http, sup->boot_file.workers.http, "--http-workers" },
        { &sup->ovr.relays, next->workers.relays, sup->boot_file.workers.relays, "--relays" },
        { &sup->ovr.consumers, next->workers.consumers, sup->boot_file.workers.consumers, "--consumers" },
    };

    for (size_t i = 0; i < OB_ARRAY_LEN(pins); i++) {
        if (*pins[i].flag >= 0 && pins[i].file_now != pins[i].file_boot) {
            ob_log(OB_LOG_INFO, "%s=%d superseded by the file's new value %d", pins[i].name, *pins[i].flag,
                   pins[i].file_now);
            *pins[i].flag = -1;
        }
    }
    ob_sup_apply_overrides(next, &sup->ovr);
}

/* Marks every live child of a kind for retirement and sends it TERM. */
static void
sup_retire_kind(ob_sup_t *sup, int kind, int from_index)
{
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (!c->in_use || c->kind != kind || c->retiring || c->index < from_index)
            continue;
        c->retiring = 1;
        if (c->pid > 0)
            sup_stop_child(sup, c, SIGTERM);
        else
            sup_free(sup, c);
    }
}

/* Restart-only keys keep their running values; the operator is told. */
static void
sup_keep_restart_only(const ob_cfg_t *old, ob_cfg_t *next)
{
    char changed[512];

    if (ob_cfg_keep_restart_only(old, next, changed, sizeof(changed)) == 0)
        return;
    ob_log(OB_LOG_WARN, "reload: %s changed; these take effect only after a restart", changed);
}

/* Names next's topics in shm, or with dry_run says whether they would fit: -1 with err. */
static int
sup_topics(ob_sup_t *sup, const ob_cfg_t *next, int dry_run, char *err, size_t errlen)
{
    const char *topics[OB_TOPICS_MAX + 1];
    int         n = ob_cfg_topics(next, topics);

    if (ob_shm_topics_add(sup->shm, topics, n, dry_run) == 0)
        return 0;
    snprintf(err, errlen, "[routes] name topics past the %d this instance can track since it started; restart it"
                          " to forget the topics no longer routed", OB_SHM_TOPICS);
    return -1;
}

static int
sup_topics_fit(ob_sup_t *sup, const ob_cfg_t *next, char *err, size_t errlen)
{
    return sup_topics(sup, next, 1, err, errlen);
}

/* The file re-read, flags and restart-only keys applied, validated whole; NULL (said why) keeps the running one. */
static ob_cfg_t *
sup_reload_read(ob_sup_t *sup)
{
    ob_cfg_t *next = malloc(sizeof(*next));
    char      err[1024];

    if (next == NULL)
        ob_strlcpy(err, "out of memory", sizeof(err));
    else if (ob_cfg_load(next, sup->cfg->path, err, sizeof(err)) == 0) {
        sup_merge_overrides(sup, next);
        /* before validating: the checks that relate keys (relays <= partitions)
         * must see the values that will run, not the file's restart-only ones */
        sup_keep_restart_only(sup->cfg, next);
        if (ob_cfg_validate(next, err, sizeof(err)) == 0 && sup_topics_fit(sup, next, err, sizeof(err)) == 0)
            return next;
    }
    ob_log(OB_LOG_ERROR, "config not reloaded: %s", err);
    sup_publish_header(sup, 0, err);
    free(next);
    return NULL;
}

static void
sup_reload(ob_sup_t *sup)
{
    ob_cfg_t *next, *old = sup->cfg;
    char      msg[256];

    ob_sd_notify("RELOADING=1");
    if ((next = sup_reload_read(sup)) == NULL) {
        ob_sd_notify("READY=1");
        return;
    }
    char lerr[256];
    if (ob_log_open(next->log.format, next->log.level, next->log.file, lerr, sizeof(lerr)) != 0)
        ob_log(OB_LOG_ERROR, "reload: log file not changed: %s", lerr);

    /* Decide what to replace by comparing old and new before the swap. */
    unsigned restarts = ob_cfg_restarts(old, next);
    int      relays_restart = (restarts & OB_CFG_RESTARTS_RELAYS) != 0;
    int      cons_restart = (restarts & OB_CFG_RESTARTS_CONSUMERS) != 0;

    sup->cfg = next;
    (void) sup_topics(sup, next, 0, msg, sizeof(msg));    /* cannot fail: sup_topics_fit said they fit */
    atomic_fetch_add(&sup->shm->map->hdr.generation, 1);
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (c->in_use && c->fatal) {      /* a reload is the operator's retry */
            c->fatal = 0;
            c->fails = 0;
            c->next_start_ms = ob_now_ms();
            sup_publish(sup, c, OB_SLOT_BACKOFF, "");
        }
        if (c->in_use && kinds[c->kind].rolling && !c->retiring && !c->replace)
            c->replace = 1;
    }
    if (relays_restart)
        sup_retire_kind(sup, OB_KIND_RELAY, 0);
    sup_retire_kind(sup, OB_KIND_CONSUMER, cons_restart ? 0 : next->workers.consumers);
    free(old);
    snprintf(msg, sizeof(msg), "ok: http=%d relays=%d consumers=%d%s", next->workers.http, next->workers.relays,
             next->workers.consumers, relays_restart ? " (relays restarted)" : "");
    ob_log(OB_LOG_INFO, "config reloaded, generation %llu: %s",
           (unsigned long long) atomic_load(&sup->shm->map->hdr.generation), msg);
    sup_publish_header(sup, 1, msg);
    ob_sd_notify("READY=1");
}

static void
sup_begin_stop(ob_sup_t *sup, int signo)
{
    if (!sup->stopping) {
        sup->stopping = 1;
        sup->stop_deadline_ms = ob_now_ms() + (int64_t) sup->cfg->supervisor.shutdown_timeout_s * 1000;
        ob_sd_notify("STOPPING=1");
        ob_log(OB_LOG_INFO, "%s stop requested", signo == SIGKILL ? "immediate" : "graceful");
    }
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_child_t *c = &sup->ch[i];
        if (c->in_use && c->pid > 0 && (signo == SIGKILL || c->kill_at_ms == 0))
            sup_stop_child(sup, c, signo);
    }
}

static int
sup_write_pidfile(ob_sup_t *sup, char *err, size_t errlen)
{
    char buf[32];
    int  fd, n;

    if (sup->cfg->supervisor.pidfile[0] != '\0')
        ob_strlcpy(sup->pidfile, sup->cfg->supervisor.pidfile, sizeof(sup->pidfile));
    else
        snprintf(sup->pidfile, sizeof(sup->pidfile), "%s/outboxd-%s.pid", access("/run", W_OK) == 0 ? "/run" : "/tmp",
                 sup->cfg->supervisor.name);
    fd = open(sup->pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "open(\"%s\") failed: %s", sup->pidfile, strerror(errno));
        return -1;
    }
    n = snprintf(buf, sizeof(buf), "%d\n", (int) getpid());
    if (write(fd, buf, (size_t) n) != n) {
        snprintf(err, errlen, "write(\"%s\") failed: %s", sup->pidfile, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int
sup_open_listeners(const ob_cfg_t *cfg, char *err, size_t errlen)
{
    const char *addrs[OB_LISTEN_COUNT] = { cfg->orders.listen, cfg->ledger.listen, cfg->admin.listen };

    /* with [workers] http = 0 only the admin listener is served (one worker): the APIs' ports stay free */
    for (int i = 0; i < OB_LISTEN_COUNT; i++)
        if ((cfg->workers.http > 0 || i == OB_LISTEN_ADMIN) && ob_listen_open(&ob_listeners[i], addrs[i], err, errlen) != 0)
            return -1;
    return 0;
}

/* True when a DSN carries a password (URI user:pw@ or key=value password=). */
static int
sup_dsn_has_password(const char *dsn)
{
    char masked[OB_CFG_STR];

    ob_log_mask_dsn(dsn, masked, sizeof(masked));
    return strcmp(masked, dsn) != 0;
}

/* Warns when a config holding a secret can be read by anyone. */
static void
sup_check_cfg_mode(const ob_cfg_t *cfg)
{
    struct stat st;

    if (stat(cfg->path, &st) == 0 && (st.st_mode & S_IROTH) &&
        (sup_dsn_has_password(cfg->orders.dsn) || sup_dsn_has_password(cfg->relay.dsn) ||
         sup_dsn_has_password(cfg->ledger.dsn) || cfg->admin.token[0] || cfg->kafka.signing_key.len > 0 ||
         cfg->kafka.verify_keys.n > 0))
        ob_log(OB_LOG_WARN, "%s is world-readable and holds a password, token or key; chmod o-r it", cfg->path);
}

static void
sup_loop(ob_sup_t *sup)
{
    for (;;) {
        ob_sig_wait(sup_sleep_ms(sup));
        if (ob_sig_quit) {
            ob_sig_quit = 0;
            sup_begin_stop(sup, SIGKILL);
        }
        if (ob_sig_term) {
            ob_sig_term = 0;
            sup_begin_stop(sup, SIGTERM);
        }
        if (ob_sig_reload) {
            ob_sig_reload = 0;
            if (!sup->stopping)
                sup_reload(sup);
        }
        if (ob_sig_reopen) {
            ob_sig_reopen = 0;
            ob_log_reopen();
            /* workers hold their own descriptor for the file: tell them too */
            for (int i = 0; i < OB_SHM_SLOTS; i++)
                if (sup->ch[i].in_use && sup->ch[i].pid > 0)
                    kill(sup->ch[i].pid, SIGUSR1);
        }
        ob_sig_child = 0;
        sup_reap(sup);
        if (sup->stopping) {
            if (sup_count_alive(sup, OB_KIND_NONE, 0) == 0)
                return;
            if (ob_now_ms() >= sup->stop_deadline_ms)
                sup_begin_stop(sup, SIGKILL);
            continue;
        }
        sup_watch(sup);
        sup_launch_missing(sup);
        sup_sample_rates(sup);
    }
}

/* Forks into the background; the parent exits once the child reports ready. */
static int
sup_daemonize(int *ready_fd)
{
    int   p[2];
    pid_t pid;
    char  b = 0;

    if (pipe(p) != 0)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0) {
        close(p[1]);
        exit(read(p[0], &b, 1) == 1 && b == 'R' ? OB_EXIT_OK : OB_EXIT_RETRY);
    }
    close(p[0]);
    setsid();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    *ready_fd = p[1];
    return 0;
}

/* Before any child exists: config in force, log, listeners, daemon; an exit code, or -1 to go on. */
static int
sup_prepare(ob_sup_t *sup, const ob_cfg_t *cfg, const ob_overrides_t *ovr, int foreground, int *ready_fd)
{
    char err[1024];

    sup->boot_file = *cfg;
    sup->ovr = *ovr;
    sup->cfg = malloc(sizeof(*sup->cfg));
    if (sup->cfg == NULL)
        return OB_EXIT_RETRY;
    *sup->cfg = *cfg;
    ob_sup_apply_overrides(sup->cfg, ovr);
    if (ob_cfg_validate(sup->cfg, err, sizeof(err)) != 0 ||
        ob_log_open(sup->cfg->log.format, sup->cfg->log.level, sup->cfg->log.file, err, sizeof(err)) != 0) {
        fprintf(stderr, "outboxd: %s\n", err);
        return OB_EXIT_FATAL;
    }
    sup_check_cfg_mode(sup->cfg);
    if (sup_open_listeners(sup->cfg, err, sizeof(err)) != 0) {
        ob_log(OB_LOG_ERROR, "cannot listen: %s", err);
        fprintf(stderr, "outboxd: cannot listen: %s\n", err);
        return OB_EXIT_FATAL;
    }
    if (!foreground && sup_daemonize(ready_fd) != 0) {
        fprintf(stderr, "outboxd: cannot daemonize: %s\n", strerror(errno));
        return OB_EXIT_RETRY;
    }
    return -1;
}

/* The instance's own resources: shm segment, pidfile, signal handlers; an exit code, or -1 to go on. */
static int
sup_claim(ob_sup_t *sup)
{
    char err[1024];

    sup->shm = ob_shm_create(sup->cfg->supervisor.name, err, sizeof(err));
    if (sup->shm == NULL) {
        ob_log(OB_LOG_ERROR, "%s", err);
        fprintf(stderr, "outboxd: %s\n", err);
        return OB_EXIT_FATAL;
    }
    ob_shm = sup->shm;
    (void) sup_topics(sup, sup->cfg, 0, err, sizeof(err));   /* validation bounds them to the table */
    if (sup_write_pidfile(sup, err, sizeof(err)) != 0) {
        ob_log(OB_LOG_ERROR, "%s", err);
        fprintf(stderr, "outboxd: %s\n", err);
        ob_shm_close(sup->shm, 1);
        return OB_EXIT_FATAL;
    }
    if (ob_sig_install() != 0) {
        ob_log(OB_LOG_ERROR, "cannot install signal handlers: %s", strerror(errno));
        ob_shm_close(sup->shm, 1);
        unlink(sup->pidfile);
        return OB_EXIT_RETRY;
    }
    return -1;
}

/* Tells whoever waits for the start: the parent of a daemon, systemd. */
static void
sup_announce_ready(int ready_fd)
{
    if (ready_fd >= 0) {
        if (write(ready_fd, "R", 1) != 1) {
            /* parent gone: nothing to tell */
        }
        close(ready_fd);
    }
    ob_sd_notify("READY=1");
}

int
ob_sup_run(ob_cfg_t *cfg, const ob_overrides_t *ovr, int foreground)
{
    static ob_sup_t sup;   /* large (child table); static keeps it off the stack */
    int             ready_fd = -1, rc;

    memset(&sup, 0, sizeof(sup));
    if ((rc = sup_prepare(&sup, cfg, ovr, foreground, &ready_fd)) >= 0 || (rc = sup_claim(&sup)) >= 0) {
        free(sup.cfg);
        return rc;
    }
    sup_publish_header(&sup, -1, NULL);
    ob_log(OB_LOG_INFO, "outboxd started: name=%s http=%d relays=%d consumers=%d partitions=%d",
           sup.cfg->supervisor.name, sup.cfg->workers.http, sup.cfg->workers.relays, sup.cfg->workers.consumers,
           sup.cfg->kafka.partitions);
    if (sup.cfg->debug.fault != OB_FAULT_NONE)
        ob_log(OB_LOG_ERROR, "[debug] fault is set: this instance loses events ON PURPOSE (fault-suite negative "
                             "control); never run it against real data");
    sup_launch_missing(&sup);
    sup_announce_ready(ready_fd);
    sup_loop(&sup);
    ob_log(OB_LOG_INFO, "all workers stopped; exiting");
    unlink(sup.pidfile);
    ob_shm_close(sup.shm, 1);
    ob_shm = NULL;
    ob_listen_close_all();
    free(sup.cfg);
    return OB_EXIT_OK;
}
