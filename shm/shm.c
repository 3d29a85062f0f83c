/*
 * shm/shm.c: create, attach and read the instance segment; seqlocks; futex
 * wakeups. See shm.h for who writes what.
 */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* shm/ sits below common/ (common/status.c reads the segment), so it keeps
 * its own clock read rather than include common/util.h. The heartbeat clock
 * must stay CLOCK_MONOTONIC: the supervisor's watchdog compares it with
 * ob_now_ms(). */
static int64_t
shm_clock_ms(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

ob_shm_t *ob_shm;

static void
shm_segment_name(char *out, size_t outlen, const char *name)
{
    snprintf(out, outlen, "/outboxd-%s", name);
}

static void
shm_init_layout(ob_shm_layout_t *map, const char *name)
{
    memset(map, 0, sizeof(*map));
    map->hdr.magic = OB_SHM_MAGIC;
    map->hdr.version = OB_SHM_VERSION;
    map->hdr.size = (uint32_t) sizeof(*map);
    map->hdr.nslots = OB_SHM_SLOTS;
    map->hdr.npartitions = OB_SHM_PARTITIONS;
    map->hdr.reload_ok = -1;
    atomic_store(&map->hdr.sup_pid, (int32_t) getpid());
    map->hdr.start_wall_ms = shm_clock_ms(CLOCK_REALTIME);
    snprintf(map->hdr.name, sizeof(map->hdr.name), "%s", name);
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        map->slots[i].last_status = -1;
    }
    for (int p = 0; p < OB_SHM_PARTITIONS; p++)
        atomic_store(&map->parts[p].owner_slot, -1);
    for (int t = 0; t < OB_SHM_TOPICS; t++)
        for (int p = 0; p < OB_SHM_PARTITIONS; p++)
            atomic_store(&map->topics[t].parts[p].last_offset, -1);
}

/*
 * Decides whether an existing segment may be replaced: only when its header
 * is not a live outboxd supervisor's. Reads it with a plain read(2) so a
 * short or foreign segment cannot fault us.
 */
static int
shm_is_stale(int fd, pid_t *owner)
{
    ob_shm_hdr_t hdr;
    ssize_t      n = pread(fd, &hdr, sizeof(hdr), 0);

    *owner = 0;
    if (n != (ssize_t) sizeof(hdr) || hdr.magic != OB_SHM_MAGIC)
        return 1;
    *owner = (pid_t) hdr.sup_pid;
    if (*owner <= 0)
        return 1;
    return kill(*owner, 0) != 0 && errno == ESRCH;
}

static ob_shm_t *
shm_map(int fd, const char *segname, int writable, char *err, size_t errlen)
{
    ob_shm_t *shm;
    void     *p = mmap(NULL, sizeof(ob_shm_layout_t), writable ? PROT_READ | PROT_WRITE : PROT_READ,
                       MAP_SHARED, fd, 0);

    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap(\"%s\") failed: %s", segname, strerror(errno));
        return NULL;
    }
    shm = calloc(1, sizeof(*shm));
    if (shm == NULL) {
        munmap(p, sizeof(ob_shm_layout_t));
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    shm->map = p;
    shm->size = sizeof(ob_shm_layout_t);
    shm->writable = writable;
    snprintf(shm->name, sizeof(shm->name), "%s", segname);
    return shm;
}

ob_shm_t *
ob_shm_create(const char *name, char *err, size_t errlen)
{
    char      segname[80];
    int       fd;
    pid_t     owner;
    ob_shm_t *shm;

    shm_segment_name(segname, sizeof(segname), name);
    fd = shm_open(segname, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        int old = shm_open(segname, O_RDONLY | O_CLOEXEC, 0);
        int stale = old < 0 || shm_is_stale(old, &owner);
        if (old >= 0)
            close(old);
        if (!stale) {
            snprintf(err, errlen, "another outboxd (pid %d) is running as \"%s\"", (int) owner, name);
            return NULL;
        }
        shm_unlink(segname);
        fd = shm_open(segname, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        snprintf(err, errlen, "shm_open(\"%s\") failed: %s", segname, strerror(errno));
        return NULL;
    }
    if (ftruncate(fd, (off_t) sizeof(ob_shm_layout_t)) != 0) {
        snprintf(err, errlen, "ftruncate(\"%s\") failed: %s", segname, strerror(errno));
        close(fd);
        shm_unlink(segname);
        return NULL;
    }
    shm = shm_map(fd, segname, 1, err, errlen);
    close(fd);
    if (shm == NULL) {
        shm_unlink(segname);
        return NULL;
    }
    shm_init_layout(shm->map, name);
    return shm;
}

ob_shm_t *
ob_shm_attach(const char *name, char *err, size_t errlen)
{
    char        segname[80];
    struct stat st;
    ob_shm_t   *shm;
    int         fd;

    shm_segment_name(segname, sizeof(segname), name);
    fd = shm_open(segname, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == ENOENT)
            snprintf(err, errlen, "no outboxd instance \"%s\" is running (no segment %s)", name, segname);
        else
            snprintf(err, errlen, "shm_open(\"%s\") failed: %s", segname, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || (size_t) st.st_size < sizeof(ob_shm_layout_t)) {
        snprintf(err, errlen, "segment %s is too small for layout version %d", segname, OB_SHM_VERSION);
        close(fd);
        return NULL;
    }
    shm = shm_map(fd, segname, 0, err, errlen);
    close(fd);
    if (shm == NULL)
        return NULL;
    if (shm->map->hdr.magic != OB_SHM_MAGIC || shm->map->hdr.version != OB_SHM_VERSION ||
        shm->map->hdr.size != sizeof(ob_shm_layout_t)) {
        snprintf(err, errlen, "segment %s has layout version %u, this binary reads version %d",
                 segname, shm->map->hdr.version, OB_SHM_VERSION);
        ob_shm_close(shm, 0);
        return NULL;
    }
    return shm;
}

void
ob_shm_close(ob_shm_t *shm, int unlink_it)
{
    if (shm == NULL)
        return;
    if (unlink_it)
        shm_unlink(shm->name);
    munmap(shm->map, shm->size);
    free(shm);
}

void
ob_shm_write_begin(_Atomic uint32_t *seq)
{
    atomic_fetch_add_explicit(seq, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

void
ob_shm_write_end(_Atomic uint32_t *seq)
{
    atomic_thread_fence(memory_order_release);
    atomic_fetch_add_explicit(seq, 1, memory_order_relaxed);
}

uint32_t
ob_shm_read_begin(_Atomic uint32_t *seq)
{
    uint32_t s = atomic_load_explicit(seq, memory_order_acquire);

    atomic_thread_fence(memory_order_acquire);
    return s;
}

int
ob_shm_read_retry(_Atomic uint32_t *seq, uint32_t start)
{
    atomic_thread_fence(memory_order_acquire);
    return (start & 1) != 0 || atomic_load_explicit(seq, memory_order_relaxed) != start;
}

/* Copies the plain fields of src under its seqlock; a few tries, never blocks. */
static int
shm_snapshot(_Atomic uint32_t *seq, void *dst, const void *src, size_t len)
{
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t s = ob_shm_read_begin(seq);
        memcpy(dst, src, len);
        if (!ob_shm_read_retry(seq, s))
            return 0;
    }
    return -1;
}

int
ob_shm_slot_snapshot(ob_shm_slot_t *slot, ob_shm_slot_t *out)
{
    int rc = shm_snapshot(&slot->seq, out, slot, sizeof(*out));

    /* Worker-written atomics are read individually: they need no seqlock. */
    atomic_store(&out->heartbeat_ms, atomic_load(&slot->heartbeat_ms));
    for (int i = 0; i < OB_SHM_OWN_WORDS; i++)
        atomic_store(&out->owned[i], atomic_load(&slot->owned[i]));
    for (int i = 0; i < OB_SHM_COUNTERS; i++)
        atomic_store(&out->counters[i], atomic_load(&slot->counters[i]));
    return rc;
}

const int64_t ob_stage_bounds_us[OB_STAGE_BUCKETS - 1] = { 500,   1000,  2000,   3000,   5000,   10000,
                                                            20000, 50000, 100000, 250000, 1000000 };

void
ob_shm_stage_add(ob_shm_slot_t *slot, int stage, int64_t us)
{
    _Atomic uint64_t *h = &slot->counters[OB_CTR_STAGE_BASE + stage * OB_STAGE_WIDTH];
    int               b = 0;

    if (us < 0)
        us = 0;
    while (b < OB_STAGE_BUCKETS - 1 && us > ob_stage_bounds_us[b])
        b++;
    atomic_fetch_add(&h[b], 1);
    atomic_fetch_add(&h[OB_STAGE_BUCKETS], (uint64_t) us);
}

int
ob_shm_hdr_snapshot(ob_shm_hdr_t *hdr, ob_shm_hdr_t *out)
{
    int    rc = shm_snapshot(&hdr->seq, out, hdr, offsetof(ob_shm_hdr_t, ring_seq));
    size_t ring_off = offsetof(ob_shm_hdr_t, ring_head);

    /* the sparkline ring has its own seqlock: it changes every second */
    if (shm_snapshot(&hdr->ring_seq, (char *) out + ring_off, (char *) hdr + ring_off, sizeof(*out) - ring_off) != 0)
        rc = -1;
    atomic_store(&out->generation, atomic_load(&hdr->generation));
    atomic_store(&out->sup_pid, atomic_load(&hdr->sup_pid));
    return rc;
}

void
ob_shm_beat(ob_shm_slot_t *slot)
{
    atomic_store_explicit(&slot->heartbeat_ms, shm_clock_ms(CLOCK_MONOTONIC), memory_order_release);
}

void
ob_shm_set_owned(ob_shm_slot_t *slot, int partition, int owned)
{
    uint64_t bit = 1ULL << (partition % 64);

    if (owned)
        atomic_fetch_or(&slot->owned[partition / 64], bit);
    else
        atomic_fetch_and(&slot->owned[partition / 64], ~bit);
}

int
ob_shm_is_owned(const ob_shm_slot_t *slot, int partition)
{
    uint64_t w = atomic_load(&((ob_shm_slot_t *) slot)->owned[partition / 64]);

    return (w >> (partition % 64)) & 1;
}

void
ob_shm_wake(ob_shm_slot_t *slot)
{
    atomic_fetch_add(&slot->wake, 1);
    /* Shared (non-private) futex: waker and waiter are different processes. */
    syscall(SYS_futex, (uint32_t *) &slot->wake, FUTEX_WAKE, 1, NULL, NULL, 0);
}

void
ob_shm_wait(ob_shm_slot_t *slot, uint32_t seen, int timeout_ms)
{
    struct timespec ts = { timeout_ms / 1000, (long) (timeout_ms % 1000) * 1000000L };

    syscall(SYS_futex, (uint32_t *) &slot->wake, FUTEX_WAIT, seen, &ts, NULL, 0);
}

int
ob_shm_topic_index(const ob_shm_t *shm, const char *topic)
{
    int n = atomic_load(&shm->map->hdr.ntopics);

    for (int t = 0; t < n && t < OB_SHM_TOPICS; t++)
        if (strcmp(shm->map->topics[t].name, topic) == 0)
            return t;
    return -1;
}

int
ob_shm_topics_add(ob_shm_t *shm, const char *const *names, int n, int dry_run)
{
    int have = atomic_load(&shm->map->hdr.ntopics), fresh = 0;

    for (int i = 0; i < n; i++)
        fresh += ob_shm_topic_index(shm, names[i]) < 0;
    if (have + fresh > OB_SHM_TOPICS)
        return -1;
    for (int i = 0; i < n && !dry_run; i++) {
        if (ob_shm_topic_index(shm, names[i]) >= 0)
            continue;
        snprintf(shm->map->topics[have].name, sizeof(shm->map->topics[have].name), "%s", names[i]);
        atomic_store(&shm->map->hdr.ntopics, ++have);   /* the name is whole before it counts */
    }
    return 0;
}

const char *
ob_kind_name(int kind)
{
    static const char *names[] = { "none", "http", "relay", "consumer" };

    return kind >= 0 && kind < OB_KIND_COUNT ? names[kind] : "?";
}

const char *
ob_slot_state_name(int state)
{
    static const char *names[] = { "empty", "starting", "running", "stopping", "backoff", "crashloop", "fatal" };

    return state >= 0 && state < OB_SLOT_STATE_COUNT ? names[state] : "?";
}
