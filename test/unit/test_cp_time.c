/* Unit tests for controlplane/time_util: RFC 3339 formatting and parsing. */
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
    format_is(951782400LL * 1000000, "2000-02-29T00:00:00.000000Z");         /* leap day */
    format_is(1795961455123456LL, "2026-11-29T14:10:55.123456Z");
    format_is(-1, "1969-12-31T23:59:59.999999Z");                             /* floor, not truncate */
    format_is(253402300799999999LL, "9999-12-31T23:59:59.999999Z");
}

static void test_format_out_of_range(void **state)
{
    char buf[TIME_RFC3339_LEN];
    terr err;
    assert_int_equal(time_util_format_rfc3339(253402300800000000LL, buf, &err), -1);
    assert_non_null(strstr(err.msg, "outside"));
}

static void test_parse_roundtrip(void **state)
{
    const int64_t values[] = {0, 1, 999999, 1795961455123456LL, 951782400LL * 1000000, -1};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[TIME_RFC3339_LEN];
        int64_t back;
        assert_int_equal(time_util_format_rfc3339(values[i], buf, NULL), 0);
        assert_int_equal(time_util_parse_rfc3339(buf, &back, NULL), 0);
        assert_int_equal(back, values[i]);
    }
}

static void test_parse_variants(void **state)
{
    int64_t us;
    assert_int_equal(time_util_parse_rfc3339("2026-11-29T14:10:55Z", &us, NULL), 0);
    assert_int_equal(us, 1795961455000000LL);
    assert_int_equal(time_util_parse_rfc3339("2026-11-29T15:10:55.5+01:00", &us, NULL), 0);
    assert_int_equal(us, 1795961455500000LL);
    assert_int_equal(time_util_parse_rfc3339("2026-11-29t14:10:55.123456789z", &us, NULL), 0);
    assert_int_equal(us, 1795961455123456LL);
}

static void test_parse_rejects_bad_input(void **state)
{
    const char *bad[] = {"", "2026-11-29", "2026-11-29T14:10:55", "2026-13-01T00:00:00Z",
                         "2025-02-29T00:00:00Z", "2026-11-29T24:00:00Z", "2026-11-29T14:10:55.Z",
                         "2026-11-29T14:10:55Zjunk", "2026-11-29T14:10:55+0100", "abcd-11-29T14:10:55Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us;
        terr err;
        assert_int_equal(time_util_parse_rfc3339(bad[i], &us, &err), -1);
        assert_true(strlen(err.msg) > 0);
    }
    assert_int_equal(time_util_parse_rfc3339(NULL, &(int64_t){0}, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_known_values), cmocka_unit_test(test_format_out_of_range),
        cmocka_unit_test(test_parse_roundtrip),     cmocka_unit_test(test_parse_variants),
        cmocka_unit_test(test_parse_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
