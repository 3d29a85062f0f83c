/*
 * tests/harness/poll.c: time budgets and polling, and the small predicates
 * tests poll on. Tests wait for a condition, never for a fixed time, so a
 * slow machine stretches the wait, not the verdict.
 */
#include "tests/harness.h"
#include "common/util.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

int
obh_ms(int ms)
{
    const char *s = getenv("OB_TEST_SLOW");

    return s && atoi(s) > 1 ? ms * atoi(s) : ms;
}

int
obh_alive(pid_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

int
obh_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

int
obh_poll(int (*cond)(obh_t *, void *), obh_t *h, void *arg, int timeout_ms)
{
    int64_t deadline = ob_now_ms() + timeout_ms;

    do {
        if (cond(h, arg))
            return 1;
        ob_sleep_ms(10);
    } while (ob_now_ms() < deadline);
    return cond(h, arg);
}
