/*
 * tests/harness/slots.c: the instance's workers as its shm slots show them,
 * read through seqlock snapshots like the supervisor's own status views.
 */
#include "tests/harness.h"
#include "common/util.h"

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
