/* common/worker.c: the first steps of every forked worker. */
#include "worker.h"
#include "log.h"
#include "sig.h"
#include "util.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int
ob_worker_enter(int kind, int index, pid_t sup_pid)
{
    char title[16];

    /* SIGKILL rather than TERM: a stopped or wedged worker must not outlive a
     * killed supervisor; at-least-once delivery makes a hard stop safe. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != sup_pid)
        return -1;      /* supervisor died before prctl took effect */
    snprintf(title, sizeof(title), "outboxd:%s%d", kind == OB_KIND_CONSUMER ? "cons" : ob_kind_name(kind), index);
    prctl(PR_SET_NAME, title);
    ob_log_set_identity(ob_kind_name(kind), index);
    if (ob_sig_reinit_child() != 0)
        return -1;
    return 0;
}

int
ob_worker_parent_alive(pid_t sup_pid)
{
    return getppid() == sup_pid;
}

void
ob_worker_note(ob_shm_slot_t *slot, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(slot->note, sizeof(slot->note), fmt, ap);
    va_end(ap);
}

int
ob_worker_tick(ob_shm_slot_t *slot)
{
    if (ob_sig_term || ob_sig_quit)
        return 0;
    if (ob_sig_reopen) {
        ob_sig_reopen = 0;
        ob_log_reopen();
    }
    ob_sig_reload = ob_sig_child = 0;
    ob_shm_beat(slot);
    return 1;
}
