/* tests/unit/test_reconcile.c: reconcile's verdict on one order, every disagreement fed in. */
#include "cli/reconcile.h"

#include <criterion/criterion.h>
#include <string.h>

/* Runs the judge; returns its findings as "kind:kind" and the recheck flag. */
static int
judge(const ob_recon_order_t *o, const ob_recon_ledger_t *l, char *kinds, size_t len, ob_recon_finding_t *f)
{
    int recheck = -1, n = ob_recon_judge(o, l, f, &recheck);

    kinds[0] = '\0';
    for (int i = 0; i < n; i++) {
        strncat(kinds, i ? ":" : "", len - strlen(kinds) - 1);
        strncat(kinds, ob_recon_kind_name(f[i].kind), len - strlen(kinds) - 1);
    }
    return recheck;
}

Test(reconcile, every_disagreement_of_one_order_is_named)
{
    static const struct {
        const char       *what;
        ob_recon_order_t  o;
        int               has_ledger;
        ob_recon_ledger_t l;
        const char       *kinds, *detail;
        int               recheck;
    } cases[] = {
        { "booked as ordered", { "a", "2.5000", "USD", 0, 1, 0 }, 1, { 1, 0, "2.5000", "USD", "", "", 0 }, "", NULL, 0 },
        { "not booked, due", { "a", "2.5000", "USD", 0, 1, 0 }, 0, { 0 }, "missing", "order has no ledger charge", 0 },
        { "not booked, within grace", { "a", "2.5000", "USD", 0, 0, 0 }, 0, { 0 }, "", NULL, 0 },
        { "charge in another currency", { "a", "2.5000", "USD", 0, 1, 0 }, 1, { 1, 0, "2.5000", "EUR", "", "", 0 },
          "mismatch", "order 2.5000 USD, ledger charge 2.5000 EUR", 0 },
        { "charge of another amount", { "a", "2.5000", "USD", 0, 1, 0 }, 1, { 1, 0, "2.0000", "USD", "", "", 0 },
          "mismatch", "order 2.5000 USD, ledger charge 2.0000 USD", 0 },
        { "cancelled and reversed", { "a", "1.2500", "KWD", 1, 1, 1 }, 1, { 1, 1, "1.2500", "KWD", "1.2500", "KWD", 0 },
          "", NULL, 0 },
        { "credit note in another currency", { "a", "700.0000", "JPY", 1, 1, 1 }, 1,
          { 1, 1, "700.0000", "JPY", "700.0000", "USD", 0 }, "mismatch",
          "order 700.0000 JPY, ledger credit note -700.0000 USD", 0 },
        { "credit note of another amount", { "a", "1.2500", "KWD", 1, 1, 1 }, 1,
          { 1, 1, "1.2500", "KWD", "1.0000", "KWD", 0 }, "mismatch", "order 1.2500 KWD, ledger credit note -1.0000 KWD",
          0 },
        { "cancel not booked, due", { "a", "1.00", "USD", 1, 1, 1 }, 1, { 1, 0, "1.00", "USD", "", "", 0 }, "missing",
          "cancelled order has no credit note", 0 },
        /* the order is old, its cancel is not: the cancel's own time decides */
        { "cancel not booked, within grace", { "a", "1.00", "USD", 1, 1, 0 }, 1, { 1, 0, "1.00", "USD", "", "", 0 },
          "", NULL, 0 },
        { "credit note within the cut, order not cancelled", { "a", "1.00", "USD", 0, 1, 0 }, 1,
          { 1, 1, "1.00", "USD", "1.00", "USD", 0 }, "phantom", "credit note for an order that is not cancelled", 0 },
        { "credit note after the cut", { "a", "1.00", "USD", 0, 1, 0 }, 1, { 1, 0, "1.00", "USD", "", "", 1 }, "", NULL,
          1 },
        { "two charges and a wrong currency", { "a", "1.00", "USD", 0, 1, 0 }, 1, { 2, 0, "1.00", "EUR", "", "", 0 },
          "duplicate:mismatch", "2 charges, 0 credit notes", 0 },
    };
    char               kinds[128];
    ob_recon_finding_t f[OB_RECON_MAX_FINDINGS];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int recheck = judge(&cases[i].o, cases[i].has_ledger ? &cases[i].l : NULL, kinds, sizeof(kinds), f);
        cr_expect_str_eq(kinds, cases[i].kinds, "%s: %s", cases[i].what, kinds);
        if (cases[i].detail)
            cr_expect_str_eq(f[0].detail, cases[i].detail, "%s", cases[i].what);
        cr_expect_eq(recheck, cases[i].recheck, "%s: recheck %d", cases[i].what, recheck);
    }
}
