/* tests/unit/test_uuid.c: UUIDv7 layout, parsing, and one shared clock across processes. */
#include "common/uuid.h"
#include "shm/shm.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

Test(uuid, v7_layout_and_round_trip)
{
    ob_uuid_t u, back;
    char      s[37];

    cr_assert_eq(ob_uuid_v7(&u), 0);
    ob_uuid_format(&u, s);
    cr_assert_eq(strlen(s), 36);
    cr_assert_eq(s[14], '7', "version nibble: %s", s);
    cr_assert(strchr("89ab", s[19]) != NULL, "variant: %s", s);
    cr_assert_eq(ob_uuid_parse(s, &back), 0);
    cr_assert_eq(memcmp(&u, &back, 16), 0);
    cr_assert_eq(ob_uuid_parse("not-a-uuid", &back), -1);
    cr_assert_eq(ob_uuid_parse("0190a0a0-0000-7000-8000-00000000000g", &back), -1);
    cr_assert_eq(ob_uuid_parse("0190a0a0x0000-7000-8000-000000000000", &back), -1);
}

static int
uuid_cmp(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(ob_uuid_t));
}

/* Forked processes sharing one segment: every id unique, each stream increasing,
 * and all ids together form one strictly increasing clock when sorted by time. */
Test(uuid, v7_unique_and_monotonic_across_processes)
{
    enum { PROCS = 4, EACH = 20000 };
    char      err[256], name[64];
    int       fds[PROCS][2];

    snprintf(name, sizeof(name), "uuid-%d", (int) getpid());
    ob_shm = ob_shm_create(name, err, sizeof(err));
    cr_assert_not_null(ob_shm, "%s", err);
    for (int p = 0; p < PROCS; p++) {
        cr_assert_eq(pipe(fds[p]), 0);
        if (fork() == 0) {
            close(fds[p][0]);
            for (int i = 0; i < EACH; i++) {
                ob_uuid_t u;
                if (ob_uuid_v7(&u) != 0 || write(fds[p][1], &u, sizeof(u)) != sizeof(u))
                    _exit(1);
            }
            _exit(0);
        }
        close(fds[p][1]);
    }
    static ob_uuid_t all[PROCS * EACH];
    int              n = 0;
    for (int p = 0; p < PROCS; p++) {
        ob_uuid_t prev = { { 0 } };
        for (int i = 0; i < EACH; i++) {
            cr_assert_eq(read(fds[p][0], &all[n], sizeof(ob_uuid_t)), (ssize_t) sizeof(ob_uuid_t));
            /* the first 8 bytes are time + counter: strictly increasing per process */
            cr_assert_gt(memcmp(&all[n], &prev, 8), 0, "process %d went backwards at %d", p, i);
            prev = all[n++];
        }
        close(fds[p][0]);
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        wait(&st);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    /* the shared clock gives every id a distinct time+counter prefix */
    qsort(all, (size_t) n, sizeof(ob_uuid_t), uuid_cmp);
    for (int i = 1; i < n; i++)
        cr_assert_neq(memcmp(&all[i], &all[i - 1], 8), 0, "two ids share time+counter");
    ob_shm_close(ob_shm, 1);
    ob_shm = NULL;
}
