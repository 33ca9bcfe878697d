/* The host<->guest wire format (common/guest_protocol.h): every message
 * round-trips; truncated, garbage, oversized and trailing-byte payloads and
 * bad headers are rejected with an error; frames cross a socketpair intact,
 * including partial writes and EOF mid-frame. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "guest_protocol.h"

/* Every strict prefix of a valid payload must fail to decode. */
typedef int (*decode_fn)(const uint8_t *p, size_t len, void *out, terr *err);

static void assert_prefixes_rejected(const gp_buf *b, decode_fn dec, size_t out_size,
                                     void (*free_fn)(void *))
{
    void *out = malloc(out_size);
    assert_non_null(out);
    for (size_t n = 0; n < b->len; n++) {
        terr err = {.msg = ""};
        assert_int_equal(dec(b->data, n, out, &err), -1);
        assert_true(strlen(err.msg) > 0);
        free_fn(out); /* must be safe on a failed (zeroed) struct */
    }
    /* One trailing byte too many is an error as well. */
    uint8_t *longer = malloc(b->len + 1);
    assert_non_null(longer);
    memcpy(longer, b->data, b->len);
    longer[b->len] = 0;
    terr err = {.msg = ""};
    assert_int_equal(dec(longer, b->len + 1, out, &err), -1);
    assert_non_null(strstr(err.msg, "trailing"));
    free_fn(out);
    free(longer);
    free(out);
}

/* Adapters so the generic prefix check can call each decoder. */
static int dec_exec(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_exec(p, n, o, e);
}
static void free_exec(void *o) { gp_exec_req_free(o); }
static int dec_exec_result(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_exec_result(p, n, o, e);
}
static void free_exec_result(void *o) { gp_exec_result_free(o); }
static int dec_read_file(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_read_file(p, n, o, e);
}
static void free_read_file(void *o) { gp_read_file_req_free(o); }
static int dec_read_result(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_read_result(p, n, o, e);
}
static void free_read_result(void *o) { gp_read_result_free(o); }
static int dec_write_file(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_write_file(p, n, o, e);
}
static void free_write_file(void *o) { gp_write_file_req_free(o); }
static int dec_status(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_status_result(p, n, o, e);
}
static void free_status(void *o) { gp_status_result_free(o); }
static int dec_sync(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_sync(p, n, o, e);
}
static void free_sync(void *o) { gp_sync_req_free(o); }
static int dec_error(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_error(p, n, o, e);
}
static void free_error(void *o) { gp_error_free(o); }
static int dec_pong(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_pong(p, n, o, e);
}
static void free_nothing(void *o) { (void)o; }

static void test_header_round_trip(void **state)
{
    uint8_t raw[GP_HEADER_SIZE];
    gp_header_encode(raw, GP_EXEC, 0xdeadbeef, 12345);
    /* Little-endian layout, as documented. */
    assert_memory_equal(raw, "TPG1", 4);
    assert_int_equal(raw[4], GP_VERSION);
    assert_int_equal(raw[5], GP_EXEC);
    assert_int_equal(raw[8], 0xef);
    assert_int_equal(raw[12], 12345 & 0xff);
    gp_header h;
    terr err;
    assert_int_equal(gp_header_decode(raw, &h, &err), 0);
    assert_int_equal(h.magic, GP_MAGIC);
    assert_int_equal(h.type, GP_EXEC);
    assert_int_equal(h.request_id, 0xdeadbeef);
    assert_int_equal(h.payload_len, 12345);
    assert_int_equal(h.flags, 0);
}

static void expect_header_error(uint8_t raw[GP_HEADER_SIZE], const char *needle)
{
    gp_header h;
    terr err = {.msg = ""};
    assert_int_equal(gp_header_decode(raw, &h, &err), -1);
    if (!strstr(err.msg, needle)) fail_msg("error \"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_header_rejects_bad_fields(void **state)
{
    uint8_t raw[GP_HEADER_SIZE];
    gp_header_encode(raw, GP_PING, 1, 0);
    raw[0] = 'X';
    expect_header_error(raw, "magic");

    gp_header_encode(raw, GP_PING, 1, 0);
    raw[4] = 2;
    expect_header_error(raw, "version");

    gp_header_encode(raw, 0, 1, 0);
    expect_header_error(raw, "type");
    gp_header_encode(raw, GP_TYPE_MAX + 1, 1, 0);
    expect_header_error(raw, "type");

    gp_header_encode(raw, GP_PING, 1, 0);
    raw[6] = 1;
    expect_header_error(raw, "flags");

    gp_header_encode(raw, GP_PING, 1, GP_MAX_PAYLOAD + 1);
    expect_header_error(raw, "limit");
    gp_header_encode(raw, GP_PING, 1, GP_MAX_PAYLOAD);
    gp_header h;
    assert_int_equal(gp_header_decode(raw, &h, NULL), 0);
}

static void test_type_names(void **state)
{
    assert_string_equal(gp_type_name(GP_PING), "PING");
    assert_string_equal(gp_type_name(GP_EXEC_RESULT), "EXEC_RESULT");
    assert_string_equal(gp_type_name(GP_ERROR), "ERROR");
    assert_string_equal(gp_type_name(0), "UNKNOWN");
    assert_string_equal(gp_type_name(200), "UNKNOWN");
    assert_string_equal(gp_type_name(-1), "UNKNOWN");
}

static void test_ping_pong(void **state)
{
    terr err;
    assert_int_equal(gp_decode_empty(NULL, 0, &err), 0);
    uint8_t one = 0;
    assert_int_equal(gp_decode_empty(&one, 1, &err), -1);

    gp_buf b;
    gp_buf_init(&b);
    gp_pong p = {.uptime_ns = 0x0102030405060708ull}, q;
    assert_int_equal(gp_encode_pong(&b, &p, &err), 0);
    assert_int_equal(b.len, 8);
    assert_int_equal(gp_decode_pong(b.data, b.len, &q, &err), 0);
    assert_true(q.uptime_ns == p.uptime_ns);
    assert_prefixes_rejected(&b, dec_pong, sizeof(gp_pong), free_nothing);
    gp_buf_free(&b);
}

static int dec_write_chunk(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_write_chunk(p, n, o, e);
}
static void free_write_chunk(void *o) { gp_write_chunk_req_free(o); }
static int dec_chunk_result(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_chunk_result(p, n, o, e);
}
static void free_chunk_result(void *o) { gp_chunk_result_free(o); }
static int dec_read_chunk(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_read_chunk(p, n, o, e);
}
static void free_read_chunk(void *o) { gp_read_chunk_req_free(o); }
static int dec_read_chunk_result(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_read_chunk_result(p, n, o, e);
}
static void free_read_chunk_result(void *o) { gp_read_chunk_result_free(o); }
static int dec_list_dir(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_list_dir(p, n, o, e);
}
static void free_list_dir(void *o) { gp_list_dir_req_free(o); }
static int dec_list_result(const uint8_t *p, size_t n, void *o, terr *e)
{
    return gp_decode_list_result(p, n, o, e);
}
static void free_list_result(void *o) { gp_list_result_free(o); }

static void test_chunk_messages_round_trip(void **state)
{
    (void)state;
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    const uint8_t data[] = {0, 'x', 0xff};

    gp_write_chunk_req w = {.path = "/r/f",
                            .upload_id = "abc123",
                            .offset = 5ull << 32,
                            .mode = 0600,
                            .flags = GP_CHUNK_F_COMMIT,
                            .data = data,
                            .len = sizeof data},
                       wd;
    assert_int_equal(gp_encode_write_chunk(&b, &w, &err), 0);
    assert_int_equal(gp_decode_write_chunk(b.data, b.len, &wd, &err), 0);
    assert_string_equal(wd.path, "/r/f");
    assert_string_equal(wd.upload_id, "abc123");
    assert_true(wd.offset == 5ull << 32);
    assert_int_equal(wd.mode, 0600);
    assert_int_equal(wd.flags, GP_CHUNK_F_COMMIT);
    assert_int_equal(wd.len, sizeof data);
    assert_memory_equal(wd.data, data, sizeof data);
    gp_write_chunk_req_free(&wd);
    assert_prefixes_rejected(&b, dec_write_chunk, sizeof(gp_write_chunk_req), free_write_chunk);

    gp_buf_reset(&b);
    gp_chunk_result cr = {.status = ENOSPC, .message = "no space", .size = 77}, crd;
    assert_int_equal(gp_encode_chunk_result(&b, &cr, &err), 0);
    assert_int_equal(gp_decode_chunk_result(b.data, b.len, &crd, &err), 0);
    assert_int_equal(crd.status, ENOSPC);
    assert_string_equal(crd.message, "no space");
    assert_true(crd.size == 77);
    gp_chunk_result_free(&crd);
    assert_prefixes_rejected(&b, dec_chunk_result, sizeof(gp_chunk_result), free_chunk_result);

    gp_buf_reset(&b);
    gp_read_chunk_req r = {.path = "/r/f", .offset = 9, .max_len = 4096, .expect_ino = 12}, rd;
    assert_int_equal(gp_encode_read_chunk(&b, &r, &err), 0);
    assert_int_equal(gp_decode_read_chunk(b.data, b.len, &rd, &err), 0);
    assert_string_equal(rd.path, "/r/f");
    assert_true(rd.offset == 9 && rd.max_len == 4096 && rd.expect_ino == 12);
    gp_read_chunk_req_free(&rd);
    assert_prefixes_rejected(&b, dec_read_chunk, sizeof(gp_read_chunk_req), free_read_chunk);

    gp_buf_reset(&b);
    gp_read_chunk_result rr = {.status = 0,
                               .message = "",
                               .file_size = 1ull << 33,
                               .ino = 4,
                               .data = data,
                               .len = sizeof data},
                         rrd;
    assert_int_equal(gp_encode_read_chunk_result(&b, &rr, &err), 0);
    assert_int_equal(gp_decode_read_chunk_result(b.data, b.len, &rrd, &err), 0);
    assert_true(rrd.file_size == 1ull << 33 && rrd.ino == 4 && rrd.len == sizeof data);
    assert_memory_equal(rrd.data, data, sizeof data);
    gp_read_chunk_result_free(&rrd);
    assert_prefixes_rejected(&b, dec_read_chunk_result, sizeof(gp_read_chunk_result),
                             free_read_chunk_result);

    gp_buf_reset(&b);
    gp_list_dir_req l = {.path = "/", .max_entries = 10}, ld;
    assert_int_equal(gp_encode_list_dir(&b, &l, &err), 0);
    assert_int_equal(gp_decode_list_dir(b.data, b.len, &ld, &err), 0);
    assert_string_equal(ld.path, "/");
    assert_int_equal(ld.max_entries, 10);
    gp_list_dir_req_free(&ld);
    assert_prefixes_rejected(&b, dec_list_dir, sizeof(gp_list_dir_req), free_list_dir);

    gp_buf_reset(&b);
    gp_dir_entry ents[] = {
        {.name = "a", .type = GP_ENTRY_DIR, .mode = 0755, .size = 4096, .mtime_sec = -1},
        {.name = "b c", .type = GP_ENTRY_FILE, .mode = 0644, .size = 3, .mtime_sec = 1700000000}};
    gp_list_result lr = {.status = 0, .message = "", .truncated = true, .entries = ents, .n = 2},
                   lrd;
    assert_int_equal(gp_encode_list_result(&b, &lr, &err), 0);
    assert_int_equal(gp_decode_list_result(b.data, b.len, &lrd, &err), 0);
    assert_true(lrd.truncated);
    assert_int_equal(lrd.n, 2);
    assert_string_equal(lrd.entries[1].name, "b c");
    assert_int_equal(lrd.entries[0].type, GP_ENTRY_DIR);
    assert_true(lrd.entries[0].mtime_sec == -1 && lrd.entries[1].size == 3);
    gp_list_result_free(&lrd);
    assert_prefixes_rejected(&b, dec_list_result, sizeof(gp_list_result), free_list_result);
    gp_buf_free(&b);
}

static void test_chunk_requests_with_bad_fields_refused(void **state)
{
    (void)state;
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_write_chunk_req bad_id = {.path = "/f", .upload_id = "../x", .mode = 0644};
    assert_int_equal(gp_encode_write_chunk(&b, &bad_id, &err), 0);
    gp_write_chunk_req wd;
    assert_int_equal(gp_decode_write_chunk(b.data, b.len, &wd, &err), -1);
    gp_buf_reset(&b);
    gp_write_chunk_req bad_flags = {.path = "/f", .upload_id = "a", .flags = 8};
    assert_int_equal(gp_encode_write_chunk(&b, &bad_flags, &err), 0);
    assert_int_equal(gp_decode_write_chunk(b.data, b.len, &wd, &err), -1);
    gp_buf_reset(&b);
    gp_read_chunk_req zero = {.path = "/f", .max_len = 0};
    assert_int_equal(gp_encode_read_chunk(&b, &zero, &err), 0);
    gp_read_chunk_req rd;
    assert_int_equal(gp_decode_read_chunk(b.data, b.len, &rd, &err), -1);
    gp_buf_reset(&b);
    gp_read_chunk_req huge = {.path = "/f", .max_len = GP_CHUNK_MAX + 1};
    assert_int_equal(gp_encode_read_chunk(&b, &huge, &err), 0);
    assert_int_equal(gp_decode_read_chunk(b.data, b.len, &rd, &err), -1);
    gp_buf_free(&b);
}

static void test_exec_round_trip(void **state)
{
    const char *args[] = {"-c", "echo hi", ""};
    const char *env[] = {"A=1", "B=two words"};
    const uint8_t in[] = {0, 1, 2, 0xff, 0};
    gp_exec_req r = {.cmd = "/bin/sh",
                     .args = args,
                     .n_args = 3,
                     .env = env,
                     .n_env = 2,
                     .cwd = "/tmp",
                     .timeout_sec = -5,
                     .stdin_data = in,
                     .stdin_len = sizeof in};
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    assert_int_equal(gp_encode_exec(&b, &r, &err), 0);
    gp_exec_req d;
    assert_int_equal(gp_decode_exec(b.data, b.len, &d, &err), 0);
    assert_string_equal(d.cmd, "/bin/sh");
    assert_int_equal(d.n_args, 3);
    assert_string_equal(d.args[0], "-c");
    assert_string_equal(d.args[1], "echo hi");
    assert_string_equal(d.args[2], "");
    assert_int_equal(d.n_env, 2);
    assert_string_equal(d.env[1], "B=two words");
    assert_string_equal(d.cwd, "/tmp");
    assert_int_equal(d.timeout_sec, -5);
    assert_int_equal(d.stdin_len, sizeof in);
    assert_memory_equal(d.stdin_data, in, sizeof in);
    gp_exec_req_free(&d);
    assert_null(d.cmd);
    assert_prefixes_rejected(&b, dec_exec, sizeof(gp_exec_req), free_exec);

    /* Minimal request: no args/env/stdin, NULL cwd encodes as "". */
    gp_buf_reset(&b);
    gp_exec_req m = {.cmd = "true"};
    assert_int_equal(gp_encode_exec(&b, &m, &err), 0);
    assert_int_equal(gp_decode_exec(b.data, b.len, &d, &err), 0);
    assert_string_equal(d.cwd, "");
    assert_int_equal(d.n_args, 0);
    assert_int_equal(d.stdin_len, 0);
    assert_non_null(d.stdin_data);
    gp_exec_req_free(&d);

    /* Required cmd, and an empty cmd is refused on decode. */
    gp_buf_reset(&b);
    gp_exec_req none = {0};
    assert_int_equal(gp_encode_exec(&b, &none, &err), -1);
    assert_non_null(strstr(err.msg, "cmd"));
    gp_buf_reset(&b);
    gp_exec_req empty = {.cmd = ""};
    assert_int_equal(gp_encode_exec(&b, &empty, &err), 0);
    assert_int_equal(gp_decode_exec(b.data, b.len, &d, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));
    gp_buf_free(&b);
}

static void test_exec_rejects_hostile_payloads(void **state)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_exec_req d;
    /* cmd "x", then an args count of 2^32-1 with almost nothing behind it:
     * must fail without trying to allocate 4 G pointers. */
    const uint8_t huge_count[] = {1, 0, 0, 0, 'x', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    assert_int_equal(gp_decode_exec(huge_count, sizeof huge_count, &d, &err), -1);
    assert_non_null(strstr(err.msg, "args"));
    assert_null(d.cmd);
    /* A string length past the end of the payload. */
    const uint8_t long_str[] = {0xff, 0xff, 0xff, 0x7f, 'a', 'b'};
    assert_int_equal(gp_decode_exec(long_str, sizeof long_str, &d, &err), -1);
    assert_non_null(strstr(err.msg, "truncated"));
    /* A NUL inside a string. */
    const uint8_t nul[] = {3, 0, 0, 0, 'a', 0, 'b'};
    assert_int_equal(gp_decode_exec(nul, sizeof nul, &d, &err), -1);
    assert_non_null(strstr(err.msg, "NUL"));
    /* Random garbage of every length never crashes and never succeeds
     * unless it happens to be well-formed. */
    uint8_t junk[256];
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)(rand_r(&seed) % sizeof junk);
        for (size_t i = 0; i < n; i++) junk[i] = (uint8_t)rand_r(&seed);
        if (gp_decode_exec(junk, n, &d, &err) == 0) gp_exec_req_free(&d);
    }
    gp_buf_free(&b);
}

static void test_exec_result_round_trip(void **state)
{
    uint8_t out[300];
    for (size_t i = 0; i < sizeof out; i++) out[i] = (uint8_t)i;
    gp_exec_result r = {.exit_code = -1,
                        .timed_out = true,
                        .stderr_truncated = true,
                        .out = out,
                        .out_len = sizeof out,
                        .err = (const uint8_t *)"e",
                        .err_len = 1};
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    assert_int_equal(gp_encode_exec_result(&b, &r, &err), 0);
    gp_exec_result d;
    assert_int_equal(gp_decode_exec_result(b.data, b.len, &d, &err), 0);
    assert_int_equal(d.exit_code, -1);
    assert_true(d.timed_out);
    assert_false(d.stdout_truncated);
    assert_true(d.stderr_truncated);
    assert_int_equal(d.out_len, sizeof out);
    assert_memory_equal(d.out, out, sizeof out);
    assert_int_equal(d.err_len, 1);
    assert_memory_equal(d.err, "e", 1);
    gp_exec_result_free(&d);
    assert_prefixes_rejected(&b, dec_exec_result, sizeof(gp_exec_result), free_exec_result);

    /* Unknown flag bits are refused. */
    b.data[4] |= 0x80;
    assert_int_equal(gp_decode_exec_result(b.data, b.len, &d, &err), -1);
    assert_non_null(strstr(err.msg, "flags"));

    /* Empty streams decode to non-NULL, zero-length blobs. */
    gp_buf_reset(&b);
    gp_exec_result e = {.exit_code = 0};
    assert_int_equal(gp_encode_exec_result(&b, &e, &err), 0);
    assert_int_equal(gp_decode_exec_result(b.data, b.len, &d, &err), 0);
    assert_non_null(d.out);
    assert_int_equal(d.out_len, 0);
    gp_exec_result_free(&d);
    gp_buf_free(&b);
}

static void test_files_round_trip(void **state)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;

    gp_read_file_req rf = {.path = "/etc/hostname"}, rfd;
    assert_int_equal(gp_encode_read_file(&b, &rf, &err), 0);
    assert_int_equal(gp_decode_read_file(b.data, b.len, &rfd, &err), 0);
    assert_string_equal(rfd.path, "/etc/hostname");
    gp_read_file_req_free(&rfd);
    assert_prefixes_rejected(&b, dec_read_file, sizeof(gp_read_file_req), free_read_file);

    gp_buf_reset(&b);
    const uint8_t data[] = {0, 'a', 0};
    gp_read_result rr = {.status = 0, .data = data, .len = sizeof data}, rrd;
    assert_int_equal(gp_encode_read_result(&b, &rr, &err), 0);
    assert_int_equal(gp_decode_read_result(b.data, b.len, &rrd, &err), 0);
    assert_int_equal(rrd.status, 0);
    assert_string_equal(rrd.message, "");
    assert_int_equal(rrd.len, sizeof data);
    assert_memory_equal(rrd.data, data, sizeof data);
    gp_read_result_free(&rrd);
    assert_prefixes_rejected(&b, dec_read_result, sizeof(gp_read_result), free_read_result);

    gp_buf_reset(&b);
    gp_read_result rerr = {.status = ENOENT, .message = "no such file: /x"};
    assert_int_equal(gp_encode_read_result(&b, &rerr, &err), 0);
    assert_int_equal(gp_decode_read_result(b.data, b.len, &rrd, &err), 0);
    assert_int_equal(rrd.status, ENOENT);
    assert_string_equal(rrd.message, "no such file: /x");
    gp_read_result_free(&rrd);

    gp_buf_reset(&b);
    gp_write_file_req wf = {.path = "/a/b", .mode = 0640, .content = data, .len = sizeof data}, wfd;
    assert_int_equal(gp_encode_write_file(&b, &wf, &err), 0);
    assert_int_equal(gp_decode_write_file(b.data, b.len, &wfd, &err), 0);
    assert_string_equal(wfd.path, "/a/b");
    assert_int_equal(wfd.mode, 0640);
    assert_int_equal(wfd.len, sizeof data);
    assert_memory_equal(wfd.content, data, sizeof data);
    gp_write_file_req_free(&wfd);
    assert_prefixes_rejected(&b, dec_write_file, sizeof(gp_write_file_req), free_write_file);

    /* Mode bits beyond 07777 are refused. */
    gp_buf_reset(&b);
    wf.mode = 0100644;
    assert_int_equal(gp_encode_write_file(&b, &wf, &err), 0);
    assert_int_equal(gp_decode_write_file(b.data, b.len, &wfd, &err), -1);
    assert_non_null(strstr(err.msg, "mode"));

    gp_buf_reset(&b);
    gp_status_result st = {.status = EACCES, .message = "permission denied: /a"}, std;
    assert_int_equal(gp_encode_status_result(&b, &st, &err), 0);
    assert_int_equal(gp_decode_status_result(b.data, b.len, &std, &err), 0);
    assert_int_equal(std.status, EACCES);
    assert_string_equal(std.message, "permission denied: /a");
    gp_status_result_free(&std);
    assert_prefixes_rejected(&b, dec_status, sizeof(gp_status_result), free_status);

    /* A NULL path cannot be encoded. */
    gp_buf_reset(&b);
    gp_read_file_req nopath = {0};
    assert_int_equal(gp_encode_read_file(&b, &nopath, &err), -1);
    gp_buf_free(&b);
}

static void test_sync_and_error_round_trip(void **state)
{
    uint8_t rnd[40];
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t)(i * 7);
    gp_sync_req s = {.unix_time_ns = 1764400000123456789ull,
                     .random = rnd,
                     .random_len = sizeof rnd},
                sd;
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    assert_int_equal(gp_encode_sync(&b, &s, &err), 0);
    assert_int_equal(gp_decode_sync(b.data, b.len, &sd, &err), 0);
    assert_true(sd.unix_time_ns == s.unix_time_ns);
    assert_int_equal(sd.random_len, sizeof rnd);
    assert_memory_equal(sd.random, rnd, sizeof rnd);
    gp_sync_req_free(&sd);
    assert_prefixes_rejected(&b, dec_sync, sizeof(gp_sync_req), free_sync);

    /* Too little randomness: refused on both sides. */
    gp_buf_reset(&b);
    s.random_len = GP_SYNC_MIN_RANDOM - 1;
    assert_int_equal(gp_encode_sync(&b, &s, &err), -1);
    uint8_t raw[8 + 4 + GP_SYNC_MIN_RANDOM - 1] = {0};
    raw[8] = GP_SYNC_MIN_RANDOM - 1;
    assert_int_equal(gp_decode_sync(raw, sizeof raw, &sd, &err), -1);
    assert_non_null(strstr(err.msg, "random"));

    gp_buf_reset(&b);
    gp_error e = {.message = "EXEC: truncated"}, ed;
    assert_int_equal(gp_encode_error(&b, &e, &err), 0);
    assert_int_equal(gp_decode_error(b.data, b.len, &ed, &err), 0);
    assert_string_equal(ed.message, "EXEC: truncated");
    gp_error_free(&ed);
    assert_prefixes_rejected(&b, dec_error, sizeof(gp_error), free_error);
    gp_buf_free(&b);
}

static void test_oversized_refused(void **state)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    /* The encoder checks the size before touching the (absent) data, so a
     * bogus huge length with a tiny buffer is a clean error. */
    static const uint8_t tiny[1];
    gp_write_file_req wf = {
        .path = "/x", .mode = 0644, .content = tiny, .len = (size_t)GP_MAX_PAYLOAD + 1};
    assert_int_equal(gp_encode_write_file(&b, &wf, &err), -1);
    assert_non_null(strstr(err.msg, "limit"));
    assert_int_equal(gp_frame_encode(&b, GP_PING, 1, tiny, (size_t)GP_MAX_PAYLOAD + 1, &err), -1);
    assert_int_equal(gp_write_frame(-1, GP_PING, 1, tiny, (size_t)GP_MAX_PAYLOAD + 1, &err), -1);
    assert_non_null(strstr(err.msg, "limit"));
    gp_buf_free(&b);
}

/* The writev form points into the result's own buffers (no copy) and its
 * pieces, concatenated, decode to the same result. */
static void test_result_iov_zero_copy(void **state)
{
    uint8_t out[100], errb[7];
    memset(out, 'o', sizeof out);
    memset(errb, 'e', sizeof errb);
    gp_exec_result r = {.exit_code = 5,
                        .stdout_truncated = true,
                        .out = out,
                        .out_len = sizeof out,
                        .err = errb,
                        .err_len = sizeof errb};
    gp_iov_scratch scratch;
    struct iovec iov[GP_IOV_MAX];
    size_t total = 0;
    terr err;
    int n = gp_exec_result_iov(&r, &scratch, iov, &total, &err);
    assert_true(n > 0 && n <= GP_IOV_MAX);
    bool out_seen = false;
    gp_buf b;
    gp_buf_init(&b);
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_base == (void *)out) out_seen = true;
        assert_int_equal(gp_buf_append(&b, iov[i].iov_base, iov[i].iov_len, &err), 0);
    }
    assert_true(out_seen);
    assert_int_equal(b.len, total);
    gp_exec_result d;
    assert_int_equal(gp_decode_exec_result(b.data, b.len, &d, &err), 0);
    assert_int_equal(d.exit_code, 5);
    assert_true(d.stdout_truncated);
    assert_int_equal(d.out_len, sizeof out);
    assert_int_equal(d.err_len, sizeof errb);
    gp_exec_result_free(&d);

    gp_buf_reset(&b);
    gp_read_result rr = {.status = 0, .data = out, .len = 50};
    n = gp_read_result_iov(&rr, &scratch, iov, &total, &err);
    assert_true(n > 0 && n <= GP_IOV_MAX);
    out_seen = false;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_base == (void *)out) out_seen = true;
        assert_int_equal(gp_buf_append(&b, iov[i].iov_base, iov[i].iov_len, &err), 0);
    }
    assert_true(out_seen);
    gp_read_result rd;
    assert_int_equal(gp_decode_read_result(b.data, b.len, &rd, &err), 0);
    assert_int_equal(rd.len, 50);
    assert_string_equal(rd.message, "");
    gp_read_result_free(&rd);

    /* Too large for one frame: refused. */
    gp_exec_result big = {.out = out, .out_len = GP_MAX_PAYLOAD, .err = errb, .err_len = 1};
    assert_int_equal(gp_exec_result_iov(&big, &scratch, iov, &total, &err), -1);
    assert_non_null(strstr(err.msg, "limit"));
    gp_buf_free(&b);
}

static void test_frame_encode(void **state)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    assert_int_equal(gp_frame_encode(&b, GP_PING, 7, NULL, 0, &err), 0);
    assert_int_equal(gp_frame_encode(&b, GP_ERROR, 8, "abcd", 4, &err), 0);
    assert_int_equal(b.len, 2 * GP_HEADER_SIZE + 4);
    gp_header h;
    assert_int_equal(gp_header_decode(b.data + GP_HEADER_SIZE, &h, &err), 0);
    assert_int_equal(h.type, GP_ERROR);
    assert_int_equal(h.request_id, 8);
    assert_int_equal(h.payload_len, 4);
    assert_memory_equal(b.data + 2 * GP_HEADER_SIZE, "abcd", 4);
    gp_buf_free(&b);
}

/* Writes a big frame from a thread while the test reads it, so the socket
 * buffer fills and both sides see short reads/writes. */
typedef struct writer_arg {
    int fd;
    const uint8_t *data;
    size_t len;
    int rc;
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *a = p;
    terr err;
    a->rc = gp_write_frame(a->fd, GP_EXEC_RESULT, 99, a->data, a->len, &err);
    if (a->rc == 0) a->rc = gp_write_frame(a->fd, GP_PONG, 100, NULL, 0, &err);
    return NULL;
}

static void test_socketpair_frames(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    size_t len = 3 * 1024 * 1024 + 17;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    for (size_t i = 0; i < len; i++) data[i] = (uint8_t)(i * 31 + 7);
    writer_arg a = {.fd = sv[0], .data = data, .len = len};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &a), 0);

    gp_header h;
    uint8_t *p = NULL;
    terr err;
    assert_int_equal(gp_read_frame(sv[1], &h, &p, &err), 0);
    assert_int_equal(h.type, GP_EXEC_RESULT);
    assert_int_equal(h.request_id, 99);
    assert_int_equal(h.payload_len, len);
    assert_memory_equal(p, data, len);
    free(p);
    assert_int_equal(gp_read_frame(sv[1], &h, &p, &err), 0);
    assert_int_equal(h.type, GP_PONG);
    assert_int_equal(h.payload_len, 0);
    assert_null(p);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(a.rc, 0);

    /* Garbage header: a decode error, not a hang. */
    assert_int_equal(write(sv[0], "GARBAGEGARBAGE!!", 16), 16);
    assert_int_equal(gp_read_frame(sv[1], &h, &p, &err), -1);
    assert_non_null(strstr(err.msg, "magic"));
    assert_null(p);

    /* A header promising more than arrives, then EOF: an error. */
    uint8_t hdr[GP_HEADER_SIZE];
    gp_header_encode(hdr, GP_ERROR, 5, 100);
    assert_int_equal(write(sv[0], hdr, sizeof hdr), (ssize_t)sizeof hdr);
    assert_int_equal(write(sv[0], "abc", 3), 3);
    close(sv[0]);
    assert_int_equal(gp_read_frame(sv[1], &h, &p, &err), -1);
    assert_non_null(strstr(err.msg, "eof"));
    assert_null(p);
    /* Clean EOF at a frame boundary is an error too. */
    assert_int_equal(gp_read_frame(sv[1], &h, &p, &err), -1);
    assert_non_null(strstr(err.msg, "eof"));

    /* Writing to a closed peer is an error (EPIPE), not a SIGPIPE. */
    assert_int_equal(gp_write_frame(sv[1], GP_PING, 1, NULL, 0, &err), -1);
    assert_true(strlen(err.msg) > 0);
    close(sv[1]);
    free(data);
}

static void test_write_frame_rejects_bad_type(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    terr err;
    assert_int_equal(gp_write_frame(sv[0], 0, 1, NULL, 0, &err), -1);
    assert_int_equal(gp_write_frame(sv[0], GP_TYPE_MAX + 1, 1, NULL, 0, &err), -1);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_header_rejects_bad_fields),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_ping_pong),
        cmocka_unit_test(test_exec_round_trip),
        cmocka_unit_test(test_exec_rejects_hostile_payloads),
        cmocka_unit_test(test_exec_result_round_trip),
        cmocka_unit_test(test_files_round_trip),
        cmocka_unit_test(test_chunk_messages_round_trip),
        cmocka_unit_test(test_chunk_requests_with_bad_fields_refused),
        cmocka_unit_test(test_sync_and_error_round_trip),
        cmocka_unit_test(test_oversized_refused),
        cmocka_unit_test(test_result_iov_zero_copy),
        cmocka_unit_test(test_frame_encode),
        cmocka_unit_test(test_socketpair_frames),
        cmocka_unit_test(test_write_frame_rejects_bad_type),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
