/* tests/unit/test_sup.c: the supervisor's restart backoff and command-line overrides (supervisor/sup.h). */
#include "common/cfg.h"
#include "supervisor/sup.h"

#include <criterion/criterion.h>

Test(sup, backoff_doubles_and_caps)
{
    cr_assert_eq(ob_sup_backoff_ms(1), 100);
    cr_assert_eq(ob_sup_backoff_ms(2), 200);
    cr_assert_eq(ob_sup_backoff_ms(3), 400);
    cr_assert_eq(ob_sup_backoff_ms(9), 25600);
    cr_assert_eq(ob_sup_backoff_ms(10), 30000);
    cr_assert_eq(ob_sup_backoff_ms(1000), 30000);
}

Test(sup, overrides_replace_file_values)
{
    ob_cfg_t       cfg;
    ob_overrides_t ovr = { -1, 5, 0 };

    ob_cfg_defaults(&cfg);
    ob_sup_apply_overrides(&cfg, &ovr);
    cr_assert_eq(cfg.workers.http, 2);
    cr_assert_eq(cfg.workers.relays, 5);
    cr_assert_eq(cfg.workers.consumers, 0);
}
