/*
 * tests/harness/proc.c: the binary under test as a process: one-shot
 * subcommands with their output, the daemon started and stopped, its log.
 */
#include "tests/harness.h"
#include "common/util.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *
obh_bin(void)
{
    const char *b = getenv("OB_BIN");

    return b ? b : "build/outboxd";
}

int
obh_run(const char *const *args, char *out, size_t outlen)
{
    int   p[2], st;
    pid_t pid;
    size_t used = 0;

    cr_assert_eq(pipe(p), 0);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        const char *argv[32];
        int         n = 0;
        argv[n++] = obh_bin();
        for (int i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        dup2(p[1], STDOUT_FILENO);
        dup2(p[1], STDERR_FILENO);
        close(p[0]);
        execv(argv[0], (char *const *) argv);
        _exit(127);
    }
    close(p[1]);
    for (;;) {
        ssize_t n = read(p[0], out + used, outlen - 1 - used);
        if (n <= 0)
            break;
        used += (size_t) n;
        if (used >= outlen - 1)
            break;
    }
    out[used] = '\0';
    close(p[0]);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int
obh_header_ready(obh_t *h, void *arg)
{
    char err[256];

    (void) arg;
    if (h->shm != NULL && atomic_load(&h->shm->map->hdr.sup_pid) != h->pid) {
        /* a dead predecessor's segment: the new supervisor will replace it */
        ob_shm_close(h->shm, 0);
        h->shm = NULL;
    }
    if (h->shm == NULL)
        h->shm = ob_shm_attach(h->name, err, sizeof(err));
    return h->shm != NULL && atomic_load(&h->shm->map->hdr.sup_pid) == h->pid;
}

void
obh_start(obh_t *h, const char *const *args)
{
    pid_t pid = fork();

    cr_assert(pid >= 0);
    if (pid == 0) {
        const char *argv[40];
        int         n = 0;
        if (h->netns[0]) {      /* ip execs outboxd in the namespace: same pid */
            argv[n++] = "/usr/sbin/ip";
            argv[n++] = "netns";
            argv[n++] = "exec";
            argv[n++] = h->netns;
        }
        argv[n++] = obh_bin();
        argv[n++] = "-f";
        argv[n++] = "-c";
        argv[n++] = h->conf;
        for (int i = 0; args && args[i] && n < 39; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        int fd = open("/dev/null", O_RDWR);
        dup2(fd, STDIN_FILENO);
        /* an aborted test run must not leave an instance behind */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(argv[0], (char *const *) argv);
        _exit(127);
    }
    h->pid = pid;
    if (h->shm != NULL) {
        ob_shm_close(h->shm, 0);
        h->shm = NULL;
    }
    cr_assert(obh_poll(obh_header_ready, h, NULL, obh_ms(5000)), "outboxd did not create its segment; log %s",
              h->log);
}

int
obh_stop(obh_t *h, int timeout_ms)
{
    int64_t deadline = ob_now_ms() + timeout_ms;
    int     st;

    if (h->pid <= 0)
        return 0;
    kill(h->pid, SIGTERM);
    while (ob_now_ms() < deadline) {
        pid_t r = waitpid(h->pid, &st, WNOHANG);
        if (r == h->pid) {
            h->pid = 0;
            return st;
        }
        ob_sleep_ms(10);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, &st, 0);
    h->pid = 0;
    return -1;
}

int
obh_log_count(obh_t *h, const char *needle)
{
    FILE *f = fopen(h->log, "r");
    char  line[4096];
    int   n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

int
obh_shell(const char *cmd)
{
    pid_t pid = fork();
    int   st;

    cr_assert_geq(pid, 0, "fork");
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        /* a server started from here must not keep the test runner's pipes: the run would never end */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execl("/bin/bash", "bash", "-c", cmd, (char *) NULL);
        _exit(127);
    }
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
