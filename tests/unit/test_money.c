/* tests/unit/test_money.c: amounts parsed, formatted and rescaled exactly, never through a float. */
#include "common/money.h"

#include <criterion/criterion.h>
#include <stdint.h>

Test(money, parse_and_format_edges)
{
    const ob_currency_t *usd = ob_currency_find("USD"), *jpy = ob_currency_find("JPY");
    const char          *why;
    int64_t              m;
    char                 out[64];

    cr_assert_not_null(usd);
    cr_assert_null(ob_currency_find("usd"));
    cr_assert_eq(ob_money_parse("1000000000000", 13, usd, &m, &why), 0);
    cr_assert_eq(m, 100000000000000LL);
    cr_assert_eq(ob_money_parse("1000000000000.01", 16, usd, &m, &why), -1);
    cr_assert_eq(ob_money_parse("007", 3, usd, &m, &why), 0);
    cr_assert_eq(m, 700);
    cr_assert_eq(ob_money_parse("5.", 2, jpy, &m, &why), -1);
    cr_assert_eq(ob_money_parse("5.000", 5, jpy, &m, &why), 0);
    cr_assert_eq(m, 5);
    ob_money_format(5, 2, out, sizeof(out));
    cr_assert_str_eq(out, "0.05");
    ob_money_format(-12345, 2, out, sizeof(out));
    cr_assert_str_eq(out, "-123.45");
    ob_money_format(7, 0, out, sizeof(out));
    cr_assert_str_eq(out, "7");
    ob_money_format(1234, 3, out, sizeof(out));
    cr_assert_str_eq(out, "1.234");
}

Test(money, numeric_rescale_is_exact)
{
    char out[64];

    cr_assert_eq(ob_decimal_rescale("1234.5000", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "1234.50");
    cr_assert_eq(ob_decimal_rescale("0", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "0.00");
    cr_assert_eq(ob_decimal_rescale("-3.1", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "-3.10");
    cr_assert_eq(ob_decimal_rescale("5000.0000", 0, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "5000");
    cr_assert_eq(ob_decimal_rescale("123456789012345678.1200", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "123456789012345678.12");
    cr_assert_eq(ob_decimal_rescale("1.005", 2, out, sizeof(out)), -1);
    cr_assert_eq(ob_decimal_rescale("1e5", 2, out, sizeof(out)), -1);
}
