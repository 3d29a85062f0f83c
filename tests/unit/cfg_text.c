/* tests/unit/cfg_text.c: see cfg_text.h. */
#include "tests/unit/cfg_text.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *
obu_write_conf(const char *text)
{
    static char path[64];
    int         fd;

    snprintf(path, sizeof(path), "/tmp/ob-cfg-XXXXXX");
    fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
    close(fd);
    return path;
}

int
obu_load(const char *text, ob_cfg_t *cfg, char *err, size_t errlen)
{
    const char *path = obu_write_conf(text);
    int         rc = ob_cfg_load(cfg, path, err, errlen);

    unlink(path);
    return rc;
}
