/*
 * common/money.h: amounts as integer minor units and decimal strings.
 *
 * Money never passes through a float: amounts are parsed from their decimal
 * text into int64 minor units (cents for USD, yen for JPY), sent to
 * PostgreSQL as decimal text into NUMERIC columns, and sums come back as
 * NUMERIC text that is only re-scaled as a string.
 */
#ifndef OB_MONEY_H
#define OB_MONEY_H

#include <stddef.h>
#include <stdint.h>

/* Largest accepted amount, in major units: far above any order, far below int64 minor units. */
#define OB_MONEY_MAX_MAJOR 1000000000000LL

typedef struct {
    char code[4];
    int  digits;      /* minor-unit digits, ISO 4217 */
} ob_currency_t;

/* The currency for an upper-case ISO 4217 code, or NULL if not accepted. */
const ob_currency_t *ob_currency_find(const char *code);

/*
 * Parses a positive decimal ("100", "100.5", "0.01") for currency cur into
 * minor units. Rejects signs, exponents, empty parts, zero or less, more
 * decimals than the currency has, and amounts above OB_MONEY_MAX_MAJOR.
 * On error returns -1 and sets *why to a message naming the problem.
 */
int ob_money_parse(const char *text, size_t len, const ob_currency_t *cur, int64_t *minor, const char **why);

/* Formats minor units with the currency's digits: 10050 USD -> "100.50". */
void ob_money_format(int64_t minor, int digits, char *out, size_t outlen);

/*
 * Re-scales a NUMERIC text from PostgreSQL ("1234.5000", "-3.10", "0") to
 * exactly `digits` decimals, as a string. Dropped digits must be zeros
 * (they are, for sums of amounts that had at most `digits` decimals);
 * returns -1 otherwise or on malformed input.
 */
int ob_decimal_rescale(const char *numeric, int digits, char *out, size_t outlen);

#endif
