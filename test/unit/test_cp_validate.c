/* Unit tests for controlplane/api_validate and the status filter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "api_validate.h"
#include "json_util.h"
#include "sandbox_model.h"

static json_t *obj(const char *s)
{
    json_t *v;
    assert_int_equal(json_util_parse_object(s, strlen(s), true, &v, NULL), 0);
    return v;
}

static void test_create_defaults(void **state)
{
    json_t *b = obj("{}");
    api_create_req r;
    assert_int_equal(api_validate_create(b, &r, NULL), 0);
    assert_string_equal(r.template_name, "debian");
    assert_int_equal(r.vcpus, 1);
    assert_int_equal(r.memory_mb, 512);
    assert_int_equal(r.timeout_sec, 0);
    assert_int_equal(r.disk_mb, 4096);
    assert_null(r.env);
    json_decref(b);
}

static void test_create_accepts_limits(void **state)
{
    json_t *b = obj(
        "{\"template\":\"base-1.2_x\",\"vcpus\":64,\"memory_mb\":65536,\"timeout_sec\":2592000}");
    api_create_req r;
    assert_int_equal(api_validate_create(b, &r, NULL), 0);
    assert_string_equal(r.template_name, "base-1.2_x");
    assert_int_equal(r.vcpus, 64);
    assert_int_equal(r.memory_mb, 65536);
    assert_int_equal(r.timeout_sec, 2592000);
    json_decref(b);
    b = obj("{\"vcpus\":1,\"memory_mb\":64,\"timeout_sec\":0}");
    assert_int_equal(api_validate_create(b, &r, NULL), 0);
    json_decref(b);
}

static void test_create_rejects(void **state)
{
    const char *bad[] = {
        "{\"vcpus\":0}",
        "{\"vcpus\":65}",
        "{\"vcpus\":1.5}",
        "{\"vcpus\":\"3\"}",
        "{\"vcpus\":true}",
        "{\"vcpus\":null}",
        "{\"memory_mb\":63}",
        "{\"memory_mb\":65537}",
        "{\"timeout_sec\":-1}",
        "{\"timeout_sec\":2592001}",
        "{\"template\":\"\"}",
        "{\"template\":\"Minimal\"}",
        "{\"template\":\"-x\"}",
        "{\"template\":\"a/b\"}",
        "{\"template\":5}",
        "{\"unknown\":1}",
        "{\"template\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
        "{\"disk_mb\":511}",
        "{\"disk_mb\":65537}",
        "{\"disk_mb\":\"1024\"}",
        "{\"env\":[]}",
        "{\"env\":{\"1A\":\"x\"}}",
        "{\"env\":{\"A-B\":\"x\"}}",
        "{\"env\":{\"\":\"x\"}}",
        "{\"env\":{\"A\":1}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *b = obj(bad[i]);
        api_create_req r;
        terr err = {{0}};
        if (api_validate_create(b, &r, &err) != -1) fail_msg("accepted %s", bad[i]);
        assert_true(strlen(err.msg) > 0);
        json_decref(b);
    }
}

static void test_create_env_and_disk(void **state)
{
    json_t *b = obj("{\"disk_mb\":512,\"env\":{\"A_1\":\"x y\",\"_b\":\"\"}}");
    api_create_req r;
    assert_int_equal(api_validate_create(b, &r, NULL), 0);
    assert_int_equal(r.disk_mb, 512);
    assert_non_null(r.env);
    assert_int_equal(json_object_size(r.env), 2);
    json_decref(b);
    /* 64 entries is the limit, 65 is refused */
    json_t *env = json_object();
    for (int i = 0; i < 65; i++) {
        char k[16];
        snprintf(k, sizeof k, "V%d", i);
        json_object_set_new(env, k, json_string("v"));
        json_t *body = json_pack("{s:O}", "env", env);
        terr err = {{0}};
        assert_int_equal(api_validate_create(body, &r, &err), i < 64 ? 0 : -1);
        json_decref(body);
    }
    json_decref(env);
}

static void test_exec_stdin_and_env_merge(void **state)
{
    json_t *b = obj("{\"cmd\":\"cat\",\"stdin_base64\":\"AAH/\",\"env\":{\"B\":\"exec\"}}");
    api_exec_req r;
    assert_int_equal(api_validate_exec(b, &r, NULL), 0);
    assert_int_equal(r.stdin_len, 3);
    assert_memory_equal(r.stdin_data, "\x00\x01\xff", 3);
    terr err = {{0}};
    assert_int_equal(api_exec_merge_env(&r, "{\"A\":\"create\",\"B\":\"create\"}", &err), 0);
    assert_int_equal(r.n_env, 2);
    assert_string_equal(r.env[0], "A=create"); /* create env first, the exec's own wins */
    assert_string_equal(r.env[1], "B=exec");
    api_exec_req_free(&r);
    json_decref(b);
    b = obj("{\"cmd\":\"cat\",\"stdin\":\"h\u00e9\"}");
    assert_int_equal(api_validate_exec(b, &r, NULL), 0);
    assert_int_equal(r.stdin_len, 3);
    assert_memory_equal(r.stdin_data, "h\xc3\xa9", 3);
    assert_int_equal(api_exec_merge_env(&r, "{}", &err), 0);
    assert_int_equal(r.n_env, 0);
    api_exec_req_free(&r);
    json_decref(b);
}

static void test_template_name(void **state)
{
    assert_true(api_validate_template_name("minimal"));
    assert_true(api_validate_template_name("0"));
    assert_true(api_validate_template_name("a.b_c-d"));
    char max[64];
    memset(max, 'a', 63);
    max[63] = '\0';
    assert_true(api_validate_template_name(max));
    assert_false(api_validate_template_name(""));
    assert_false(api_validate_template_name(".a"));
    assert_false(api_validate_template_name("a b"));
    assert_false(api_validate_template_name(NULL));
}

static void test_exec_parse(void **state)
{
    json_t *b = obj(
        "{\"cmd\":\"ls\",\"args\":[\"-l\",\"/\"],\"timeout_sec\":5,\"env\":{\"A\":\"1\",\"B\":\"x=y\"},"
        "\"cwd\":\"/tmp\"}");
    api_exec_req r;
    assert_int_equal(api_validate_exec(b, &r, NULL), 0);
    assert_string_equal(r.cmd, "ls");
    assert_int_equal(r.n_args, 2);
    assert_string_equal(r.args[1], "/");
    assert_int_equal(r.timeout_sec, 5);
    assert_int_equal(r.n_env, 2);
    assert_string_equal(r.env[0], "A=1");
    assert_string_equal(r.env[1], "B=x=y");
    assert_string_equal(r.cwd, "/tmp");
    api_exec_req_free(&r);
    json_decref(b);

    b = obj("{\"cmd\":\"echo hi\"}");
    assert_int_equal(api_validate_exec(b, &r, NULL), 0);
    assert_int_equal(r.timeout_sec, 30);
    assert_int_equal(r.n_args, 0);
    assert_null(r.cwd);
    api_exec_req_free(&r);
    json_decref(b);
}

static void test_exec_rejects(void **state)
{
    const char *bad[] = {"{}",
                         "{\"cmd\":\"\"}",
                         "{\"cmd\":1}",
                         "{\"cmd\":\"x\",\"args\":\"a\"}",
                         "{\"cmd\":\"x\",\"args\":[1]}",
                         "{\"cmd\":\"x\",\"timeout_sec\":0}",
                         "{\"cmd\":\"x\",\"timeout_sec\":3601}",
                         "{\"cmd\":\"x\",\"env\":[]}",
                         "{\"cmd\":\"x\",\"env\":{\"A\":1}}",
                         "{\"cmd\":\"x\",\"env\":{\"A=B\":\"1\"}}",
                         "{\"cmd\":\"x\",\"env\":{\"\":\"1\"}}",
                         "{\"cmd\":\"x\",\"cwd\":\"\"}",
                         "{\"cmd\":\"x\",\"stdin\":\"a\",\"stdin_base64\":\"YQ==\"}",
                         "{\"cmd\":\"x\",\"stdin\":1}",
                         "{\"cmd\":\"x\",\"stdin_base64\":\"@@\"}",
                         "{\"cmd\":\"x\",\"cwd\":\"/tmp\\n\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *b = obj(bad[i]);
        api_exec_req r;
        terr err = {{0}};
        if (api_validate_exec(b, &r, &err) != -1) fail_msg("accepted %s", bad[i]);
        assert_null(r.args);
        assert_null(r.env);
        json_decref(b);
    }
}

static void test_timeout_body(void **state)
{
    int t = -5;
    json_t *b = obj("{\"timeout_sec\":0}");
    assert_int_equal(api_validate_timeout(b, &t, NULL), 0);
    assert_int_equal(t, 0);
    json_decref(b);
    const char *bad[] = {"{}", "{\"timeout_sec\":-1}", "{\"timeout_sec\":2.5}",
                         "{\"timeout_sec\":3,\"x\":1}"};
    for (size_t i = 0; i < 4; i++) {
        b = obj(bad[i]);
        assert_int_equal(api_validate_timeout(b, &t, NULL), -1);
        json_decref(b);
    }
}

static void test_files_bodies(void **state)
{
    json_t *b = obj("{\"path\":\"/tmp/a\",\"content_base64\":\"aGk=\"}");
    const char *path;
    uint8_t *content;
    size_t n;
    assert_int_equal(api_validate_file_write(b, &path, &content, &n, NULL), 0);
    assert_string_equal(path, "/tmp/a");
    assert_int_equal(n, 2);
    assert_memory_equal(content, "hi", 2);
    free(content);
    json_decref(b);

    b = obj("{\"path\":\"/tmp/a\",\"content_base64\":\"\"}");
    assert_int_equal(api_validate_file_write(b, &path, &content, &n, NULL), 0);
    assert_int_equal(n, 0);
    free(content);
    json_decref(b);

    const char *bad_write[] = {"{\"path\":\"/a\"}", "{\"content_base64\":\"aGk=\"}",
                               "{\"path\":\"\",\"content_base64\":\"\"}",
                               "{\"path\":\"/a\",\"content_base64\":\"a\"}",
                               "{\"path\":\"/a\",\"content_base64\":\"\",\"mode\":1}"};
    for (size_t i = 0; i < 5; i++) {
        b = obj(bad_write[i]);
        terr err;
        assert_int_equal(api_validate_file_write(b, &path, &content, &n, &err), -1);
        assert_null(content);
        json_decref(b);
    }
    b = obj("{\"path\":\"/etc/hostname\"}");
    assert_int_equal(api_validate_file_read(b, &path, NULL), 0);
    assert_string_equal(path, "/etc/hostname");
    json_decref(b);
    b = obj("{\"path\":7}");
    assert_int_equal(api_validate_file_read(b, &path, NULL), -1);
    json_decref(b);
    assert_int_equal(api_validate_path("a\0b", 3, NULL), -1);

    /* Control characters in paths are refused wherever the path comes from
     * (they would otherwise reach the guest and the logs). */
    assert_int_equal(api_validate_path("/tmp/a b", 8, NULL), 0);
    assert_int_equal(api_validate_path("/tmp/\xc3\xa9", 7, NULL), 0); /* UTF-8 is fine */
    const char *ctl[] = {"/tmp/a\nlevel=error", "/tmp/\ta", "/tmp/\r", "/tmp/\x1b[31m",
                         "/tmp/\x7f"};
    for (size_t i = 0; i < sizeof ctl / sizeof ctl[0]; i++) {
        terr err = {{0}};
        if (api_validate_path(ctl[i], strlen(ctl[i]), &err) != -1)
            fail_msg("accepted path #%zu", i);
        assert_non_null(strstr(err.msg, "control character"));
    }
    b = obj("{\"path\":\"/tmp/x\\nlevel=error event=forged\"}");
    assert_int_equal(api_validate_file_read(b, &path, NULL), -1);
    json_decref(b);
    b = obj("{\"path\":\"/tmp/x\\u0007\",\"content_base64\":\"\"}");
    assert_int_equal(api_validate_file_write(b, &path, &content, &n, NULL), -1);
    assert_null(content);
    json_decref(b);
}

static void test_status_filter(void **state)
{
    unsigned mask;
    terr err;
    assert_int_equal(sb_status_parse_filter("paused", &mask, &err), 0);
    assert_int_equal(mask, SB_STATUS_BIT(SB_PAUSED));
    assert_int_equal(sb_status_parse_filter("running,stopped", &mask, &err), 0);
    assert_int_equal(mask, SB_STATUS_BIT(SB_RUNNING) | SB_STATUS_BIT(SB_STOPPED));
    const char *bad[] = {"", "bogus", "paused,", ",paused", "PAUSED", "paused,,running"};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(sb_status_parse_filter(bad[i], &mask, &err), -1);
    sb_status s;
    for (int i = 0; i < SB_STATUS_COUNT; i++) {
        assert_int_equal(sb_status_parse(sb_status_name((sb_status)i), &s), 0);
        assert_int_equal(s, i);
    }
    assert_int_equal(sb_status_parse("unknown", &s), -1);
}

static void test_sandbox_json(void **state)
{
    sandbox_row r = {.id = "sb-0123456789abcdef",
                     .host_id = "default",
                     .status = SB_PAUSED,
                     .template_name = "minimal",
                     .vcpus = 2,
                     .memory_mb = 256,
                     .timeout_sec = 3,
                     .created_at_us = 1795961455123456LL,
                     .started_at_us = 0,
                     .last_active_at_us = 1795961456000000LL,
                     .last_updated_us = 1795961457000000LL};
    json_t *j = sandbox_row_to_json(&r, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "paused");
    assert_string_equal(json_string_value(json_object_get(j, "created_at")),
                        "2026-11-29T14:10:55.123456Z");
    assert_true(json_is_null(json_object_get(j, "started_at")));
    assert_string_equal(json_string_value(json_object_get(j, "last_active_at")),
                        "2026-11-29T14:10:56.000000Z");
    assert_int_equal(json_integer_value(json_object_get(j, "memory_mb")), 256);
    assert_int_equal(json_object_size(j),
                     15); /* disk_mb, expires_at, network, auto_resume included */
    assert_true(json_is_null(json_object_get(j, "expires_at"))); /* paused */
    assert_null(json_object_get(j, "host_status"));              /* unknown: left out */
    /* no stored policy: the default, all three keys */
    json_t *net = json_object_get(j, "network");
    assert_string_equal(json_string_value(json_object_get(net, "egress")), "allow");
    assert_int_equal(json_array_size(json_object_get(net, "allow")), 0);
    assert_true(json_is_false(json_object_get(j, "auto_resume")));
    assert_null(json_object_get(j, "team_id")); /* never exposed */
    json_decref(j);
}

/* expires_at = last_active_at + timeout_sec for a running sandbox with a
 * timeout, null without one; host_status as given. */
static void test_sandbox_json_expires_at_and_host_status(void **state)
{
    (void)state;
    sandbox_row r = {.id = "sb-0123456789abcdef",
                     .host_id = "h2",
                     .status = SB_RUNNING,
                     .template_name = "minimal",
                     .vcpus = 1,
                     .memory_mb = 128,
                     .timeout_sec = 30,
                     .created_at_us = 1795961455123456LL,
                     .started_at_us = 1795961455123456LL,
                     .last_active_at_us = 1795961456000000LL,
                     .last_updated_us = 1795961457000000LL,
                     .host_status = "unreachable"};
    json_t *j = sandbox_row_to_json(&r, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "expires_at")),
                        "2026-11-29T14:11:26.000000Z");
    assert_string_equal(json_string_value(json_object_get(j, "host_status")), "unreachable");
    json_decref(j);
    r.timeout_sec = 0;
    j = sandbox_row_to_json(&r, NULL);
    assert_true(json_is_null(json_object_get(j, "expires_at")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_defaults),
        cmocka_unit_test(test_create_accepts_limits),
        cmocka_unit_test(test_create_rejects),
        cmocka_unit_test(test_template_name),
        cmocka_unit_test(test_create_env_and_disk),
        cmocka_unit_test(test_exec_stdin_and_env_merge),
        cmocka_unit_test(test_exec_parse),
        cmocka_unit_test(test_exec_rejects),
        cmocka_unit_test(test_timeout_body),
        cmocka_unit_test(test_files_bodies),
        cmocka_unit_test(test_status_filter),
        cmocka_unit_test(test_sandbox_json),
        cmocka_unit_test(test_sandbox_json_expires_at_and_host_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
