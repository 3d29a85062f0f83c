/*
 * cli/reconcile.h: the per-order verdict of `outboxd reconcile`,
 * apart from the databases so unit tests can feed it every disagreement.
 */
#ifndef OB_RECONCILE_H
#define OB_RECONCILE_H

/* One order as orderdb's snapshot at the cut shows it. Amounts are
 * numeric(20,4) text ("2.5000"), compared as text: same scale both sides. */
typedef struct {
    const char *id, *amount, *currency;
    int         cancelled;
    int         create_settled, cancel_settled;   /* the event is older than the grace period at the cut */
} ob_recon_order_t;

/* The ledger's entries for that order whose seq is within the order's
 * version at the cut; credit amounts negated, so they read as the order's. */
typedef struct {
    int         charges, credits;
    const char *charge_amount, *charge_currency;
    const char *credit_amount, *credit_currency;
    int         later_credits;   /* credit notes of a seq after the cut's version */
} ob_recon_ledger_t;

typedef enum { OB_RECON_MISSING, OB_RECON_PHANTOM, OB_RECON_DUPLICATE, OB_RECON_MISMATCH } ob_recon_kind_t;

typedef struct {
    ob_recon_kind_t kind;
    char            detail[160];
} ob_recon_finding_t;

#define OB_RECON_MAX_FINDINGS 6

/* Judges one order (l NULL: no entries). Writes its findings to out and
 * returns how many. *recheck is set when the ledger holds a credit note the
 * cut cannot explain: a cancel committed after the cut, or a phantom, which
 * only a read of orderdb after the ledger's can tell apart. */
int ob_recon_judge(const ob_recon_order_t *o, const ob_recon_ledger_t *l, ob_recon_finding_t *out, int *recheck);

/* "missing", "phantom", ... */
const char *ob_recon_kind_name(ob_recon_kind_t kind);

#endif
