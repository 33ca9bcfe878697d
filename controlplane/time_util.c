#include "time_util.h"

#include <stdio.h>

/* Civil date of a day count since 1970-01-01 (proleptic Gregorian, Howard
 * Hinnant's algorithm), so no timegm/TZ state is involved. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

int time_util_format_rfc3339(int64_t unix_us, char out[TIME_RFC3339_LEN], terr *err)
{
    int64_t secs = floor_div(unix_us, 1000000);
    int64_t us = unix_us - secs * 1000000;
    int64_t days = floor_div(secs, 86400);
    int64_t sod = secs - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) {
        out[0] = '\0';
        return terr_set(err, "timestamp %lld us is outside years 0..9999", (long long)unix_us);
    }
    /* Values are range-checked above; narrow types keep -Wformat-truncation quiet. */
    snprintf(out, TIME_RFC3339_LEN, "%04d-%02u-%02uT%02d:%02d:%02d.%06dZ", (int)y, m % 13, d % 32,
             (int)(sod / 3600) % 24, (int)(sod / 60 % 60), (int)(sod % 60), (int)(us % 1000000));
    return 0;
}
