/* common/sig.c: flag-setting handlers plus a non-blocking self-pipe. */
#include "sig.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

volatile sig_atomic_t ob_sig_term;
volatile sig_atomic_t ob_sig_quit;
volatile sig_atomic_t ob_sig_reload;
volatile sig_atomic_t ob_sig_child;
volatile sig_atomic_t ob_sig_reopen;

static int sig_pipe[2] = { -1, -1 };

static const int handled[] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1 };

static void
sig_handler(int signo)
{
    int  saved = errno;
    char b = (char) signo;

    switch (signo) {
    case SIGTERM:
    case SIGINT:
        ob_sig_term = 1;
        break;
    case SIGQUIT:
        ob_sig_quit = 1;
        break;
    case SIGHUP:
        ob_sig_reload = 1;
        break;
    case SIGCHLD:
        ob_sig_child = 1;
        break;
    case SIGUSR1:
        ob_sig_reopen = 1;
        break;
    }
    if (sig_pipe[1] >= 0 && write(sig_pipe[1], &b, 1) < 0) {
        /* pipe full: a wakeup is already pending, which is all we need */
    }
    errno = saved;
}

static int
sig_open_pipe(void)
{
    if (sig_pipe[0] >= 0) {
        close(sig_pipe[0]);
        close(sig_pipe[1]);
    }
    return pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC);
}

int
ob_sig_install(void)
{
    struct sigaction sa;

    if (sig_open_pipe() != 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sig_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
        if (sigaction(handled[i], &sa, NULL) != 0)
            return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int
ob_sig_reinit_child(void)
{
    ob_sig_term = ob_sig_quit = ob_sig_reload = ob_sig_child = ob_sig_reopen = 0;
    return ob_sig_install();
}

void
ob_sig_wait(int64_t timeout_ms)
{
    struct pollfd pfd = { .fd = sig_pipe[0], .events = POLLIN };
    char          buf[64];

    /* No flag check here: a signal that lands after the caller looked at the
     * flags has already written to the pipe, so poll returns at once. */
    if (poll(&pfd, 1, timeout_ms > 0x7fffffff ? 0x7fffffff : (int) timeout_ms) > 0)
        while (read(sig_pipe[0], buf, sizeof(buf)) > 0)
            ;
}

void
ob_sig_wake(void)
{
    char b = 0;

    if (sig_pipe[1] >= 0 && write(sig_pipe[1], &b, 1) < 0) {
        /* already pending */
    }
}

void
ob_sig_block(sigset_t *old)
{
    sigset_t set;

    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
        sigaddset(&set, handled[i]);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

void
ob_sig_restore(const sigset_t *old)
{
    pthread_sigmask(SIG_SETMASK, old, NULL);
}
