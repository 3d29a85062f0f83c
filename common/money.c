/* common/money.c: see money.h. */
#include "money.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* The currencies outboxd accepts: majors plus the 0- and 3-digit cases. */
static const ob_currency_t currencies[] = {
    { "AUD", 2 }, { "BHD", 3 }, { "BRL", 2 }, { "CAD", 2 }, { "CHF", 2 }, { "CNY", 2 }, { "CZK", 2 },
    { "DKK", 2 }, { "EUR", 2 }, { "GBP", 2 }, { "HKD", 2 }, { "HUF", 2 }, { "INR", 2 }, { "ISK", 0 },
    { "JPY", 0 }, { "KRW", 0 }, { "KWD", 3 }, { "MXN", 2 }, { "NOK", 2 }, { "NZD", 2 }, { "PLN", 2 },
    { "SEK", 2 }, { "SGD", 2 }, { "TRY", 2 }, { "USD", 2 }, { "ZAR", 2 },
};

const ob_currency_t *
ob_currency_find(const char *code)
{
    for (size_t i = 0; i < OB_ARRAY_LEN(currencies); i++)
        if (strcmp(currencies[i].code, code) == 0)
            return &currencies[i];
    return NULL;
}

int
ob_money_parse(const char *text, size_t len, const ob_currency_t *cur, int64_t *minor, const char **why)
{
    size_t  i = 0, int_digits = 0, frac_digits = 0;
    int64_t major = 0, frac = 0;

    if (len > 0 && text[0] == '-') {
        *why = "must be greater than 0";
        return -1;
    }
    for (; i < len && text[i] >= '0' && text[i] <= '9'; i++, int_digits++) {
        if (major > OB_MONEY_MAX_MAJOR) {
            *why = "too large";
            return -1;
        }
        major = major * 10 + (text[i] - '0');
    }
    if (int_digits == 0) {
        *why = "not a decimal number";
        return -1;
    }
    if (i < len && text[i] == '.') {
        for (i++; i < len && text[i] >= '0' && text[i] <= '9'; i++, frac_digits++) {
            if (frac_digits >= (size_t) cur->digits) {
                if (text[i] != '0') {
                    *why = cur->digits == 0 ? "this currency has no minor unit: use a whole number"
                                            : "more decimal places than the currency allows";
                    return -1;
                }
                continue;   /* trailing zeros past the minor unit are harmless */
            }
            frac = frac * 10 + (text[i] - '0');
        }
        if (frac_digits == 0) {
            *why = "not a decimal number";
            return -1;
        }
    }
    if (i < len && (text[i] == 'e' || text[i] == 'E')) {
        *why = "exponent notation is not accepted";
        return -1;
    }
    if (i != len) {
        *why = "not a decimal number";
        return -1;
    }
    if (major > OB_MONEY_MAX_MAJOR) {
        *why = "too large";
        return -1;
    }
    for (size_t d = frac_digits < (size_t) cur->digits ? frac_digits : (size_t) cur->digits; d < (size_t) cur->digits;
         d++)
        frac *= 10;
    int64_t scale = 1;
    for (int d = 0; d < cur->digits; d++)
        scale *= 10;
    *minor = major * scale + frac;
    if (*minor > OB_MONEY_MAX_MAJOR * scale) {
        *why = "too large";
        return -1;
    }
    if (*minor <= 0) {
        *why = "must be greater than 0";
        return -1;
    }
    return 0;
}

void
ob_money_format(int64_t minor, int digits, char *out, size_t outlen)
{
    int64_t scale = 1;
    int64_t abs = minor < 0 ? -minor : minor;

    for (int d = 0; d < digits; d++)
        scale *= 10;
    if (digits == 0)
        snprintf(out, outlen, "%s%lld", minor < 0 ? "-" : "", (long long) abs);
    else
        snprintf(out, outlen, "%s%lld.%0*lld", minor < 0 ? "-" : "", (long long) (abs / scale), digits,
                 (long long) (abs % scale));
}

int
ob_decimal_rescale(const char *numeric, int digits, char *out, size_t outlen)
{
    const char *dot = strchr(numeric, '.');
    size_t      int_len = dot ? (size_t) (dot - numeric) : strlen(numeric);
    const char *frac = dot ? dot + 1 : "";
    size_t      frac_len = strlen(frac), o;

    if (int_len == 0 || int_len + 2 + (size_t) digits >= outlen)
        return -1;
    for (size_t i = 0; i < int_len; i++)
        if (!((numeric[i] >= '0' && numeric[i] <= '9') || (i == 0 && numeric[i] == '-')))
            return -1;
    for (size_t i = 0; i < frac_len; i++)
        if (frac[i] < '0' || frac[i] > '9' || (i >= (size_t) digits && frac[i] != '0'))
            return -1;
    memcpy(out, numeric, int_len);
    o = int_len;
    if (digits > 0) {
        out[o++] = '.';
        for (int i = 0; i < digits; i++)
            out[o++] = (size_t) i < frac_len ? frac[i] : '0';
    }
    out[o] = '\0';
    return 0;
}
