/*
 * common/worker.h: what every worker process does first. The entry points
 * the supervisor forks into are each worker's own (workers/<kind>/<kind>.h).
 */
#ifndef OB_WORKER_H
#define OB_WORKER_H

#include "cfg.h"
#include "../shm/shm.h"

#include <sys/types.h>

/*
 * Runs in the child right after fork: dies with the supervisor
 * (PR_SET_PDEATHSIG), names the process, resets signal handling and logging
 * identity. Returns 0, or -1 when the supervisor is already gone.
 */
int ob_worker_enter(int kind, int index, pid_t sup_pid);

/* True while the supervisor that forked us is alive. */
int ob_worker_parent_alive(pid_t sup_pid);

/*
 * The top of every worker loop: once asked to stop (TERM, INT, QUIT) it
 * returns 0; otherwise it reopens the log after USR1, drops the flags only
 * the supervisor acts on (HUP, CHLD), beats the heartbeat and returns 1.
 */
int ob_worker_tick(ob_shm_slot_t *slot);

/* Writes the reason for a fatal exit where the supervisor and status can see it. */
void ob_worker_note(ob_shm_slot_t *slot, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
