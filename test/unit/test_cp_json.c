/* Unit tests for controlplane/json_util: strict parsing, UTF-8, base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "json_util.h"

static json_t *parse(const char *s)
{
    json_t *v = NULL;
    terr err;
    assert_int_equal(json_util_parse_object(s, strlen(s), true, &v, &err), 0);
    return v;
}

static void test_parse_object_only(void **state)
{
    const char *bad[] = {
        "[1]", "1", "\"x\"", "null", "{", "{\"a\":1,\"a\":2}", "{\"a\":\"\\u0000\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = (json_t *)1;
        terr err;
        assert_int_equal(json_util_parse_object(bad[i], strlen(bad[i]), true, &v, &err), -1);
        assert_null(v);
        assert_true(strlen(err.msg) > 0);
    }
    json_t *v;
    assert_int_equal(json_util_parse_object("", 0, true, &v, NULL), 0);
    assert_true(json_is_object(v) && json_object_size(v) == 0);
    json_decref(v);
    assert_int_equal(json_util_parse_object("", 0, false, &v, NULL), -1);
}

static void test_get_int_is_strict(void **state)
{
    json_t *o =
        parse("{\"i\":3,\"f\":1.5,\"s\":\"3\",\"b\":true,\"n\":null,\"big\":100,\"neg\":-1}");
    bool present;
    long long v = 0;
    terr err;
    assert_int_equal(json_util_get_int(o, "i", 1, 64, &present, &v, &err), 0);
    assert_true(present);
    assert_int_equal(v, 3);
    assert_int_equal(json_util_get_int(o, "absent", 1, 64, &present, &v, &err), 0);
    assert_false(present);
    const char *wrong_type[] = {"f", "s", "b", "n"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(json_util_get_int(o, wrong_type[i], 0, 64, &present, &v, &err), -1);
        assert_non_null(strstr(err.msg, "must be an integer"));
    }
    assert_int_equal(json_util_get_int(o, "big", 1, 64, &present, &v, &err), -1);
    assert_non_null(strstr(err.msg, "between 1 and 64"));
    assert_int_equal(json_util_get_int(o, "neg", 0, 64, &present, &v, &err), -1);
    json_decref(o);
}

static void test_check_keys_and_strings(void **state)
{
    json_t *o = parse("{\"a\":\"x\",\"e\":\"\",\"n\":5}");
    static const char *const ok[] = {"a", "e", "n", NULL};
    static const char *const missing_n[] = {"a", "e", NULL};
    terr err;
    assert_int_equal(json_util_check_keys(o, ok, &err), 0);
    assert_int_equal(json_util_check_keys(o, missing_n, &err), -1);
    assert_string_equal(err.msg, "unknown field \"n\"");
    const char *s;
    assert_int_equal(json_util_get_string(o, "a", true, true, 0, &s, &err), 0);
    assert_string_equal(s, "x");
    assert_int_equal(json_util_get_string(o, "e", true, true, 0, &s, &err), -1);
    assert_int_equal(json_util_get_string(o, "e", true, false, 0, &s, &err), 0);
    assert_int_equal(json_util_get_string(o, "n", false, false, 0, &s, &err), -1);
    assert_int_equal(json_util_get_string(o, "zz", true, false, 0, &s, &err), -1);
    assert_string_equal(err.msg, "field \"zz\" is required");
    assert_int_equal(json_util_get_string(o, "zz", false, false, 0, &s, &err), 0);
    assert_null(s);
    assert_int_equal(json_util_get_string(o, "a", true, true, 0, &s, &err), 0);
    json_decref(o);
}

static void test_utf8(void **state)
{
    assert_true(json_util_is_utf8((const uint8_t *)"", 0));
    assert_true(json_util_is_utf8((const uint8_t *)"hello\n", 6));
    assert_true(
        json_util_is_utf8((const uint8_t *)"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    assert_true(json_util_is_utf8((const uint8_t *)"a\0b", 3));
    assert_false(json_util_is_utf8((const uint8_t *)"\xff", 1));
    assert_false(json_util_is_utf8((const uint8_t *)"\xc3", 1));             /* truncated */
    assert_false(json_util_is_utf8((const uint8_t *)"\xc0\xaf", 2));         /* overlong */
    assert_false(json_util_is_utf8((const uint8_t *)"\xed\xa0\x80", 3));     /* surrogate */
    assert_false(json_util_is_utf8((const uint8_t *)"\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(json_util_is_utf8((const uint8_t *)"ab\xe2\x82", 4));
}

static void test_base64_roundtrip(void **state)
{
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char *e = json_util_base64_encode((const uint8_t *)plain[i], strlen(plain[i]));
        assert_string_equal(e, enc[i]);
        uint8_t *d;
        size_t n;
        assert_int_equal(json_util_base64_decode(e, strlen(e), &d, &n, NULL), 0);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(d, plain[i], n);
        free(d);
        free(e);
    }
    uint8_t bin[256];
    for (int i = 0; i < 256; i++) bin[i] = (uint8_t)i;
    char *e = json_util_base64_encode(bin, sizeof bin);
    uint8_t *d;
    size_t n;
    assert_int_equal(json_util_base64_decode(e, strlen(e), &d, &n, NULL), 0);
    assert_int_equal(n, 256);
    assert_memory_equal(d, bin, 256);
    free(d);
    free(e);
}

static void test_base64_rejects(void **state)
{
    const char *bad[] = {"Zg=", "Zg", "Z===", "Zg=a", "Zm9v!A==", "Zg==Zg==", "Zm 9v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *d = (uint8_t *)1;
        size_t n = 7;
        terr err;
        assert_int_equal(json_util_base64_decode(bad[i], strlen(bad[i]), &d, &n, &err), -1);
        assert_null(d);
        assert_int_equal(n, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_object_only),      cmocka_unit_test(test_get_int_is_strict),
        cmocka_unit_test(test_check_keys_and_strings), cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_base64_roundtrip),       cmocka_unit_test(test_base64_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
