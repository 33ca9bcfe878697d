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
    assert_int_equal(
        multipart_boundary("multipart/form-data; boundary=XyZ", boundary, sizeof boundary, NULL),
        0);
    assert_string_equal(boundary, "XyZ");
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=\"a b\"; x=y", boundary,
                                        sizeof boundary, NULL),
                     0);
    assert_string_equal(boundary, "a b");
    assert_int_equal(multipart_boundary("multipart/form-data", boundary, sizeof boundary, NULL),
                     -1);

    static const char body[] =
        "--XyZ\r\n"
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
    assert_int_equal(multipart_field(body, sizeof body - 1, "XyZ", "path", &data, &n, &found, NULL),
                     0);
    assert_true(found);
    assert_int_equal(n, 6);
    assert_memory_equal(data, "/tmp/f", 6);
    assert_int_equal(multipart_field(body, sizeof body - 1, "XyZ", "file", &data, &n, &found, NULL),
                     0);
    assert_true(found);
    assert_int_equal(n, 8); /* "\r\n--X" inside the content is not the delimiter */
    assert_memory_equal(data, "a\0b\r\n--X", 8);
    assert_int_equal(
        multipart_field(body, sizeof body - 1, "XyZ", "other", &data, &n, &found, NULL), 0);
    assert_false(found);

    /* Truncated bodies are errors, never overreads. */
    for (size_t cut = 0; cut < sizeof body - 10; cut++) {
        terr err;
        int rc = multipart_field(body, cut, "XyZ", "file", &data, &n, &found, &err);
        if (rc == 0) assert_true(!found || data + n <= body + cut);
    }
    assert_int_equal(multipart_field("garbage", 7, "XyZ", "file", &data, &n, &found, NULL), -1);
}

/* What the incremental parser saw: "name=content;" per part. */
typedef struct seen {
    char out[4096];
    size_t len;
    int parts;
} seen;

static int s_begin(void *cls, const char *name, size_t n, terr *err)
{
    (void)err;
    seen *s = cls;
    s->parts++;
    memcpy(s->out + s->len, name, n);
    s->len += n;
    s->out[s->len++] = '=';
    return 0;
}

static int s_data(void *cls, const char *d, size_t n, terr *err)
{
    (void)err;
    seen *s = cls;
    assert_true(s->len + n < sizeof s->out);
    memcpy(s->out + s->len, d, n);
    s->len += n;
    return 0;
}

static int s_end(void *cls, terr *err)
{
    (void)err;
    seen *s = cls;
    s->out[s->len++] = ';';
    return 0;
}

typedef struct count {
    int parts;
    size_t bytes;
    int bad; /* bytes that were not the expected pattern */
} count;

static int c_begin(void *cls, const char *name, size_t n, terr *err)
{
    (void)name, (void)n, (void)err;
    ((count *)cls)->parts++;
    return 0;
}

static int c_data(void *cls, const char *d, size_t n, terr *err)
{
    (void)err;
    count *c = cls;
    for (size_t i = 0; i < n; i++)
        if (d[i] != (char)((c->bytes + i) % 251)) c->bad++;
    c->bytes += n;
    return 0;
}

static int c_end(void *cls, terr *err)
{
    (void)cls, (void)err;
    return 0;
}

static int stream_parse(const char *body, size_t len, size_t piece, seen *s, terr *err)
{
    memset(s, 0, sizeof *s);
    multipart_cb cb = {.begin = s_begin, .data = s_data, .end = s_end, .cls = s};
    multipart_stream *m = multipart_stream_new("XyZ", &cb, err);
    assert_non_null(m);
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += piece)
        rc = multipart_stream_feed(m, body + off, len - off < piece ? len - off : piece, err);
    if (rc == 0) rc = multipart_stream_finish(m, err);
    multipart_stream_free(m);
    return rc;
}

/* Fed in pieces of every size from 1 byte to the whole body, the
 * incremental parser sees the same parts and bytes (boundary look-alikes,
 * NULs and CRLFs in content included); truncated bodies fail at finish. */
static void test_multipart_stream_any_split(void **state)
{
    static const char body[] =
        "preamble\r\n--XyZ\r\n"
        "Content-Disposition: form-data; name=\"path\"\r\n\r\n"
        "/tmp/f\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename=\"path\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
        "a\0b\r\n--X\r\n--XyX\r\r\n--Xy\r\n"
        "--XyZ--\r\nepilogue";
    static const char want[] = "path=/tmp/f;file=a\0b\r\n--X\r\n--XyX\r\r\n--Xy;";
    size_t len = sizeof body - 1;
    for (size_t piece = 1; piece <= len; piece++) {
        seen s;
        terr err = {{0}};
        if (stream_parse(body, len, piece, &s, &err) != 0)
            fail_msg("piece %zu: %s", piece, err.msg);
        assert_int_equal(s.parts, 2);
        assert_int_equal(s.len, sizeof want - 1);
        assert_memory_equal(s.out, want, sizeof want - 1);
    }
    /* Starting right at the delimiter, no preamble. */
    static const char plain[] =
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--XyZ--";
    seen s;
    assert_int_equal(stream_parse(plain, sizeof plain - 1, 3, &s, NULL), 0);
    assert_int_equal(s.len, 4);
    assert_memory_equal(s.out, "a=x;", 4);
    /* Every truncation of the body before its closing delimiter fails. */
    const char *close = memmem(body, len, "--XyZ--", 7);
    for (size_t cut = 0; cut < (size_t)(close - body) + 7; cut++) {
        terr err = {{0}};
        if (stream_parse(body, cut, 7, &s, &err) != -1) fail_msg("truncated at %zu accepted", cut);
        assert_true(strlen(err.msg) > 0);
    }
    /* A large part in big pieces: content crosses the window many times. */
    size_t big = 300000;
    char *b = malloc(big + 200);
    assert_non_null(b);
    size_t o = (size_t)sprintf(b, "--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n");
    for (size_t i = 0; i < big; i++) b[o + i] = (char)(i % 251);
    o += big;
    o += (size_t)sprintf(b + o, "\r\n--XyZ--\r\n");
    count c = {0};
    multipart_cb cb = {.begin = c_begin, .data = c_data, .end = c_end, .cls = &c};
    multipart_stream *m = multipart_stream_new("XyZ", &cb, NULL);
    assert_non_null(m);
    for (size_t off = 0; off < o; off += 100000)
        assert_int_equal(
            multipart_stream_feed(m, b + off, o - off < 100000 ? o - off : 100000, NULL), 0);
    assert_int_equal(multipart_stream_finish(m, NULL), 0);
    multipart_stream_free(m);
    assert_int_equal(c.parts, 1);
    assert_int_equal(c.bytes, big);
    assert_int_equal(c.bad, 0);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multipart),
        cmocka_unit_test(test_multipart_stream_any_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
