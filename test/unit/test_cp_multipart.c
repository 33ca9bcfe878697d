/* Unit tests for controlplane/multipart: the form-data boundary and
 * fields, binary-safe, and truncated bodies never overread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

static void test_multipart(void **state)
{
    char boundary[80];
    assert_true(multipart_is_form_data("multipart/form-data; boundary=XyZ"));
    assert_true(multipart_is_form_data("Multipart/Form-Data;boundary=\"a b\""));
    assert_false(multipart_is_form_data("application/json"));
    assert_false(multipart_is_form_data(NULL));
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=XyZ", boundary, sizeof boundary, NULL), 0);
    assert_string_equal(boundary, "XyZ");
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=\"a b\"; x=y", boundary, sizeof boundary, NULL), 0);
    assert_string_equal(boundary, "a b");
    assert_int_equal(multipart_boundary("multipart/form-data", boundary, sizeof boundary, NULL), -1);

    static const char body[] = "--XyZ\r\n"
                               "Content-Disposition: form-data; name=\"path\"\r\n\r\n"
                               "/tmp/f\r\n"
                               "--XyZ\r\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"path\"\r\n"
                               "Content-Type: application/octet-stream\r\n\r\n"
                               "a\0b\r\n--X\r\n"
                               "--XyZ--\r\n";
    const char *data;
    size_t n;
    bool found;
    assert_int_equal(multipart_field(body, sizeof body - 1, "XyZ", "path", &data, &n, &found, NULL), 0);
    assert_true(found);
    assert_int_equal(n, 6);
    assert_memory_equal(data, "/tmp/f", 6);
    assert_int_equal(multipart_field(body, sizeof body - 1, "XyZ", "file", &data, &n, &found, NULL), 0);
    assert_true(found);
    assert_int_equal(n, 8); /* "\r\n--X" inside the content is not the delimiter */
    assert_memory_equal(data, "a\0b\r\n--X", 8);
    assert_int_equal(multipart_field(body, sizeof body - 1, "XyZ", "other", &data, &n, &found, NULL), 0);
    assert_false(found);

    /* Truncated bodies are errors, never overreads. */
    for (size_t cut = 0; cut < sizeof body - 10; cut++) {
        terr err;
        int rc = multipart_field(body, cut, "XyZ", "file", &data, &n, &found, &err);
        if (rc == 0) assert_true(!found || data + n <= body + cut);
    }
    assert_int_equal(multipart_field("garbage", 7, "XyZ", "file", &data, &n, &found, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multipart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
