/*
 * tests/harness/slots.c: the instance's workers as its shm slots show them,
 * read through seqlock snapshots like the supervisor's own status views.
 */
#include "tests/harness.h"
#include "common/util.h"

#include <criterion/criterion.h>

int
obh_worker(obh_t *h, int kind, int index, ob_shm_slot_t *out)
{
    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t s;
        if (ob_shm_slot_snapshot(&h->shm->map->slots[i], &s) != 0)
            continue;
        if (s.state != OB_SLOT_EMPTY && s.kind == kind && s.index == index && s.pid > 0 &&
            s.state != OB_SLOT_STOPPING) {
            if (out)
                *out = s;
            return i;
        }
    }
    return -1;
}

int
obh_count(obh_t *h, int kind)
{
    int n = 0;

    for (int i = 0; i < OB_SHM_SLOTS; i++) {
        ob_shm_slot_t s;
        if (ob_shm_slot_snapshot(&h->shm->map->slots[i], &s) == 0 && s.kind == kind && s.pid > 0)
            n++;
    }
    return n;
}

pid_t
obh_wait_worker(obh_t *h, int kind, int index, pid_t not_pid, int timeout_ms)
{
    int64_t deadline = ob_now_ms() + timeout_ms;

    do {
        ob_shm_slot_t s;
        if (obh_worker(h, kind, index, &s) >= 0 && s.pid != not_pid && s.heartbeat_ms != 0)
            return s.pid;
        ob_sleep_ms(5);
    } while (ob_now_ms() < deadline);
    return 0;
}

uint64_t
obh_relay_counter(obh_t *h, int index, int ctr)
{
    ob_shm_slot_t s;

    return obh_worker(h, OB_KIND_RELAY, index, &s) < 0 ? 0 : atomic_load(&s.counters[ctr]);
}

static int
slots_streaming(obh_t *h, void *arg)
{
    int want = *(int *) arg;

    for (int i = 0; i < want; i++)
        if (obh_relay_counter(h, i, OB_CTR_RELAY_STREAMING) != 1)
            return 0;
    return 1;
}

void
obh_wait_streaming(obh_t *h, int relays)
{
    cr_assert(obh_poll(slots_streaming, h, &relays, obh_ms(30000)), "%d relay(s) not streaming; log %s", relays,
              h->log);
}

int
obh_held(const obh_t *h)
{
    int n = 0;

    if (h->shm == NULL)
        return 0;
    for (int p = 0; p < h->partitions; p++)
        for (int i = 0; i < OB_SHM_SLOTS; i++) {
            ob_shm_slot_t *s = &h->shm->map->slots[i];
            if (s->kind == OB_KIND_RELAY && s->state == OB_SLOT_RUNNING && ob_shm_is_owned(s, p)) {
                n++;
                break;
            }
        }
    return n;
}
