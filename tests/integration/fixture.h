/*
 * tests/integration/fixture.h: the one-instance fixture most integration
 * test files share. Included once per file: `h` is that file's instance,
 * set up per test (own databases, topic, ports, shm name) and dropped after.
 */
#ifndef OB_INTEGRATION_FIXTURE_H
#define OB_INTEGRATION_FIXTURE_H

#include "tests/harness.h"

#include <criterion/criterion.h>

#define OB_MAYBE_UNUSED __attribute__((unused))

static obh_t h;

static void
setup(void)
{
    obh_init(&h, 1);
}

static void
teardown(void)
{
    obh_cleanup(&h);
}

/* Writes the config (harness keys, then extra) and starts outboxd with args. */
static OB_MAYBE_UNUSED void
start_with(const char *extra, const char *const *args)
{
    obh_write_conf(&h, extra);
    obh_start(&h, args);
}

static OB_MAYBE_UNUSED void
start(const char *extra)
{
    start_with(extra, NULL);
}

/* start(), then wait until HTTP worker 0 serves. */
static OB_MAYBE_UNUSED void
start_http(const char *extra)
{
    start_with(extra, NULL);
    cr_assert_neq(obh_wait_worker(&h, OB_KIND_HTTP, 0, 0, obh_ms(10000)), 0, "http worker not up; log %s", h.log);
}

#endif
