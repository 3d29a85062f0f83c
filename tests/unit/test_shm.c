/* tests/unit/test_shm.c: shm layout, create/attach rules, atomics across processes. */
#include "common/util.h"
#include "shm/shm.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char name[64];

static void
fresh_name(void)
{
    static int n;

    snprintf(name, sizeof(name), "unit-%d-%d", (int) getpid(), n++);
}

Test(shm, layout_is_fixed_and_aligned)
{
    /* Readers of another build rely on these; a change needs OB_SHM_VERSION+1. */
    cr_assert_eq(offsetof(ob_shm_layout_t, hdr), 0);
    cr_assert_eq(offsetof(ob_shm_slot_t, heartbeat_ms) % 8, 0);
    cr_assert_eq(offsetof(ob_shm_slot_t, counters) % 8, 0);
    cr_assert_eq(offsetof(ob_shm_layout_t, slots) % 8, 0);
    cr_assert_eq(offsetof(ob_shm_layout_t, parts) % 8, 0);
    cr_assert_eq(offsetof(ob_shm_layout_t, topics) % 8, 0);
    cr_assert_eq(offsetof(ob_shm_topic_t, parts) % 8, 0);
    cr_assert_eq(sizeof(ob_shm_slot_t) % 8, 0);
    cr_assert(sizeof(ob_shm_layout_t) < 1024 * 1024, "segment grew past 1 MiB: %zu", sizeof(ob_shm_layout_t));
    cr_assert_eq(OB_SHM_PARTITIONS % 64, 0);
}

Test(shm, create_attach_and_header)
{
    char      err[256];
    ob_shm_t *w, *r;

    fresh_name();
    w = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    cr_assert_eq(w->map->hdr.magic, OB_SHM_MAGIC);
    cr_assert_eq(w->map->hdr.version, OB_SHM_VERSION);
    cr_assert_eq(w->map->hdr.sup_pid, getpid());
    cr_assert_eq(atomic_load(&w->map->parts[3].owner_slot), -1);
    r = ob_shm_attach(name, err, sizeof(err));
    cr_assert_not_null(r, "%s", err);
    atomic_fetch_add(&w->map->hdr.generation, 5);
    cr_assert_eq(atomic_load(&r->map->hdr.generation), 5);
    ob_shm_close(r, 0);
    ob_shm_close(w, 1);
    cr_assert_null(ob_shm_attach(name, err, sizeof(err)));
    cr_assert(strstr(err, "no outboxd instance") != NULL, "got: %s", err);
}

Test(shm, mode_is_0600)
{
    char        err[256], path[128];
    struct stat st;
    ob_shm_t   *w;

    fresh_name();
    w = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    snprintf(path, sizeof(path), "/dev/shm/outboxd-%s", name);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    ob_shm_close(w, 1);
}

Test(shm, live_owner_is_refused_dead_owner_is_replaced)
{
    char      err[256];
    ob_shm_t *a, *b;
    pid_t     dead;

    fresh_name();
    a = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(a, "%s", err);
    /* we are alive: a second create must refuse */
    cr_assert_null(ob_shm_create(name, err, sizeof(err)));
    cr_assert(strstr(err, "is running") != NULL, "got: %s", err);
    /* pretend the owner died: a reaped child's pid is free */
    dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    atomic_store(&a->map->hdr.sup_pid, dead);
    b = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(b, "stale segment not replaced: %s", err);
    cr_assert_eq(b->map->hdr.sup_pid, getpid());
    ob_shm_close(a, 0);
    ob_shm_close(b, 1);
}

Test(shm, version_mismatch_is_refused)
{
    char      err[256];
    ob_shm_t *w;

    fresh_name();
    w = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    w->map->hdr.version = OB_SHM_VERSION + 1;
    cr_assert_null(ob_shm_attach(name, err, sizeof(err)));
    cr_assert(strstr(err, "layout version") != NULL, "got: %s", err);
    ob_shm_close(w, 1);
}

/* Several forked writers bump one shared counter; none may be lost. */
Test(shm, atomic_counters_across_processes)
{
    enum { WRITERS = 4, BUMPS = 200000 };
    char      err[256];
    ob_shm_t *w;

    fresh_name();
    w = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    for (int i = 0; i < WRITERS; i++) {
        if (fork() == 0) {
            for (int k = 0; k < BUMPS; k++) {
                atomic_fetch_add(&w->map->parts[7].committed, 1);
                atomic_fetch_add(&w->map->slots[i].counters[0], 1);
            }
            _exit(0);
        }
    }
    for (int i = 0; i < WRITERS; i++) {
        int st;
        cr_assert_gt(wait(&st), 0);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    cr_assert_eq(atomic_load(&w->map->parts[7].committed), (uint64_t) WRITERS * BUMPS);
    for (int i = 0; i < WRITERS; i++)
        cr_assert_eq(atomic_load(&w->map->slots[i].counters[0]), (uint64_t) BUMPS);
    ob_shm_close(w, 1);
}

/* A reader racing a seqlock writer in another process never sees a torn slot. */
Test(shm, seqlock_snapshots_are_never_torn)
{
    char      err[256];
    ob_shm_t *w;
    pid_t     writer;

    fresh_name();
    w = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    ob_shm_slot_t *s = &w->map->slots[0];
    writer = fork();
    if (writer == 0) {
        for (int32_t v = 1;; v++) {
            ob_shm_write_begin(&s->seq);
            s->pid = v;
            s->index = v;
            s->restarts = (uint32_t) v;
            snprintf(s->reason, sizeof(s->reason), "v%d", v);
            ob_shm_write_end(&s->seq);
        }
    }
    int checked = 0;
    for (int i = 0; i < 200000; i++) {
        ob_shm_slot_t snap;
        if (ob_shm_slot_snapshot(s, &snap) != 0)
            continue;
        char want[32];
        snprintf(want, sizeof(want), "v%d", snap.pid);
        cr_assert_eq(snap.index, snap.pid);
        cr_assert_eq(snap.restarts, (uint32_t) snap.pid);
        if (snap.pid != 0)
            cr_assert_str_eq(snap.reason, want);
        checked++;
    }
    kill(writer, SIGKILL);
    waitpid(writer, NULL, 0);
    cr_assert_gt(checked, 1000);
    ob_shm_close(w, 1);
}

Test(shm, owned_bits)
{
    ob_shm_slot_t s;

    memset(&s, 0, sizeof(s));
    ob_shm_set_owned(&s, 0, 1);
    ob_shm_set_owned(&s, 64, 1);
    ob_shm_set_owned(&s, 255, 1);
    cr_assert(ob_shm_is_owned(&s, 0) && ob_shm_is_owned(&s, 64) && ob_shm_is_owned(&s, 255));
    cr_assert(!ob_shm_is_owned(&s, 1) && !ob_shm_is_owned(&s, 63));
    ob_shm_set_owned(&s, 64, 0);
    cr_assert(!ob_shm_is_owned(&s, 64));
}

/* A futex wake from another process ends the wait long before its timeout. */
Test(shm, futex_wake_crosses_processes)
{
    char      err[256];
    ob_shm_t *w;
    pid_t     waker;

    fresh_name();
    w = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    ob_shm_slot_t *s = &w->map->slots[2];
    uint32_t       seen = atomic_load(&s->wake);
    waker = fork();
    if (waker == 0) {
        ob_sleep_ms(50);
        ob_shm_wake(s);
        _exit(0);
    }
    int64_t t0 = ob_now_ms();
    while (atomic_load(&s->wake) == seen && ob_now_ms() - t0 < 5000)
        ob_shm_wait(s, seen, 5000);
    cr_assert_neq(atomic_load(&s->wake), seen);
    cr_assert_lt(ob_now_ms() - t0, 4000, "woke only by timeout");
    waitpid(waker, NULL, 0);
    ob_shm_close(w, 1);
}

Test(shm, topics_are_named_once_and_kept_until_the_table_is_full)
{
    char        err[256];
    const char *first[] = { "outbox-events", "product-events" };
    const char *again[] = { "product-events", "stock-events" };
    const char *many[OB_SHM_TOPICS];
    char        names[OB_SHM_TOPICS][32];
    ob_shm_t   *w;

    fresh_name();
    w = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    cr_assert_eq(atomic_load(&w->map->topics[0].parts[5].last_offset), -1, "no offset before the first event");
    cr_assert_eq(ob_shm_topics_add(w, first, 2, 0), 0);
    cr_assert_eq(ob_shm_topics_add(w, again, 2, 0), 0, "a reload adding one topic");
    cr_assert_eq(atomic_load(&w->map->hdr.ntopics), 3, "product-events is not named twice");
    cr_assert_eq(ob_shm_topic_index(w, "stock-events"), 2);
    cr_assert_eq(ob_shm_topic_index(w, "outbox-events"), 0, "a topic no longer routed keeps its row");
    cr_assert_eq(ob_shm_topic_index(w, "nope"), -1);
    for (int i = 0; i < OB_SHM_TOPICS; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i);
        many[i] = names[i];
    }
    cr_assert_eq(ob_shm_topics_add(w, many, OB_SHM_TOPICS, 1), -1, "3 named and 16 new do not fit");
    cr_assert_eq(atomic_load(&w->map->hdr.ntopics), 3, "a dry run that fails writes nothing");
    cr_assert_eq(ob_shm_topics_add(w, many, OB_SHM_TOPICS - 3, 0), 0);
    cr_assert_eq(atomic_load(&w->map->hdr.ntopics), OB_SHM_TOPICS);
    ob_shm_close(w, 1);
}

/* A stage time lands in the first bucket whose bound holds it, and its sum in microseconds. */
Test(shm, stage_times_land_in_their_bucket_and_sum)
{
    static ob_shm_slot_t slot;
    const int64_t        us[] = { -5, 0, 500, 501, 3000, 3001, 1000000, 1000001, 60000000 };
    const int            want[] = { 0, 0, 0, 1, 3, 4, 10, 11, 11 };
    _Atomic uint64_t    *h = &slot.counters[OB_CTR_STAGE_BASE + OB_STAGE_CONS_TOTAL * OB_STAGE_WIDTH];
    uint64_t             sum = 0;

    for (size_t i = 0; i < sizeof(us) / sizeof(us[0]); i++) {
        uint64_t before = atomic_load(&h[want[i]]);
        ob_shm_stage_add(&slot, OB_STAGE_CONS_TOTAL, us[i]);
        cr_assert_eq(atomic_load(&h[want[i]]), before + 1, "%lld us: bucket %d", (long long) us[i], want[i]);
        sum += us[i] > 0 ? (uint64_t) us[i] : 0;
    }
    cr_assert_eq(atomic_load(&h[OB_STAGE_BUCKETS]), sum, "negative times count as 0 in the sum");
    for (int k = 0; k < OB_CTR_STAGE_BASE + OB_STAGE_CONS_TOTAL * OB_STAGE_WIDTH; k++)
        cr_assert_eq(atomic_load(&slot.counters[k]), 0, "counter %d: another stage or counter was touched", k);
}
