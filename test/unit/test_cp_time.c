/* Unit tests for controlplane/time_util: RFC 3339 formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "time_util.h"

static void format_is(int64_t us, const char *want)
{
    char buf[TIME_RFC3339_LEN];
    terr err;
    assert_int_equal(time_util_format_rfc3339(us, buf, &err), 0);
    assert_string_equal(buf, want);
}

static void test_format_known_values(void **state)
{
    format_is(0, "1970-01-01T00:00:00.000000Z");
    format_is(1, "1970-01-01T00:00:00.000001Z");
    format_is(951782400LL * 1000000, "2000-02-29T00:00:00.000000Z"); /* leap day */
    format_is(1795961455123456LL, "2026-11-29T14:10:55.123456Z");
    format_is(-1, "1969-12-31T23:59:59.999999Z"); /* floor, not truncate */
    format_is(253402300799999999LL, "9999-12-31T23:59:59.999999Z");
}

static void test_format_out_of_range(void **state)
{
    char buf[TIME_RFC3339_LEN];
    terr err;
    assert_int_equal(time_util_format_rfc3339(253402300800000000LL, buf, &err), -1);
    assert_non_null(strstr(err.msg, "outside"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_known_values),
        cmocka_unit_test(test_format_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
