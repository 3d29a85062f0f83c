/* tests/unit/test_pgarr.c: the array-literal builder every batch statement uses. */
#include "common/pgarr.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

Test(pgarr, empty_is_braces)
{
    ob_pgarr_t a = { 0 };
    char      *s = ob_pgarr_end(&a);

    cr_assert_str_eq(s, "{}");
    free(s);
}

Test(pgarr, text_is_quoted_and_escaped_so_any_text_stays_one_element)
{
    ob_pgarr_t a = { 0 };

    ob_pgarr_add(&a, "plain");
    ob_pgarr_add(&a, "a,b");
    ob_pgarr_add(&a, "q\"uo\\te");
    ob_pgarr_add(&a, "");
    ob_pgarr_add(&a, "NULL");
    char *s = ob_pgarr_end(&a);
    cr_assert_str_eq(s, "{\"plain\",\"a,b\",\"q\\\"uo\\\\te\",\"\",\"NULL\"}");
    free(s);
    cr_assert_eq(a.s, NULL, "the builder is left empty");
}

Test(pgarr, bytea_is_hex_and_null_is_null)
{
    ob_pgarr_t          a = { 0 };
    const unsigned char b[] = { 0x00, 0xff, 0x1a };

    ob_pgarr_add_bytea(&a, b, sizeof(b));
    ob_pgarr_add_bytea(&a, NULL, 0);
    ob_pgarr_add_bytea(&a, b, 0);
    char *s = ob_pgarr_end(&a);
    cr_assert_str_eq(s, "{\"\\\\x00ff1a\",NULL,\"\\\\x\"}");
    free(s);
}

Test(pgarr, grows_past_its_first_allocation)
{
    ob_pgarr_t a = { 0 };

    for (int i = 0; i < 5000; i++)
        ob_pgarr_add(&a, "0190a5e4-7c2b-7d3e-8f00-000000000000");
    char *s = ob_pgarr_end(&a);
    cr_assert_eq(strlen(s), 2 + 5000 * 38 + 4999);
    free(s);
}

Test(pgarr, whole_numbers_are_unquoted)
{
    ob_pgarr_t a = { 0 };

    ob_pgarr_add_int(&a, 0);
    ob_pgarr_add_int(&a, -9223372036854775807LL - 1);
    ob_pgarr_add_int(&a, 9223372036854775807LL);
    char *s = ob_pgarr_end(&a);
    cr_assert_str_eq(s, "{0,-9223372036854775808,9223372036854775807}");
    free(s);
}
