/* Unit tests for controlplane/template_model (POST /v1/templates
 * validation, the status rule, the JSON) and common/template_limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_util.h"
#include "template_limits.h"
#include "template_model.h"

static json_t *obj(const char *s)
{
    json_t *v;
    assert_int_equal(json_util_parse_object(s, strlen(s), true, &v, NULL), 0);
    return v;
}

static int validate(const char *body, template_create_req *r, terr *err)
{
    json_t *b = obj(body);
    int rc = template_validate_create(b, r, err);
    json_decref(b);
    return rc;
}

static void test_package_names_follow_debian_policy(void **state)
{
    (void)state;
    const char *good[] = {"jq", "python3-pip", "g++", "libc6.1-dev", "0ad", "x2"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_true(template_package_name_valid(good[i]));
    const char *bad[] = {"",      "j",   "JQ",  "-jq",  "+jq",      ".jq",
                         "jq;rm", "jq ", "a/b", "jq_1", "jq:amd64", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(template_package_name_valid(bad[i]));
    char longname[TEMPLATE_PACKAGE_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[TEMPLATE_PACKAGE_NAME_MAX] = '\0';
    assert_true(template_package_name_valid(longname));
    longname[TEMPLATE_PACKAGE_NAME_MAX] = 'a';
    longname[TEMPLATE_PACKAGE_NAME_MAX + 1] = '\0';
    assert_false(template_package_name_valid(longname));
}

static void test_builtin_and_image_names_are_reserved(void **state)
{
    (void)state;
    assert_true(template_is_builtin("debian"));
    assert_true(template_is_builtin("minimal"));
    assert_false(template_is_builtin("debian2"));
    assert_false(template_user_name_allowed("debian"));
    assert_false(template_user_name_allowed("minimal"));
    assert_false(template_user_name_allowed("tpl-0123456789abcdef"));
    assert_false(template_user_name_allowed("Upper"));
    assert_true(template_user_name_allowed("with-jq"));
    assert_true(template_user_name_allowed("tpl"));
}

static void test_create_request_accepted(void **state)
{
    (void)state;
    template_create_req r;
    terr err = {{0}};
    /* packages_v and setup borrow from the body: keep it. */
    json_t *b = obj("{\"name\":\"with-jq\",\"base\":\"debian\",\"packages\":[\"jq\",\"file\"],"
                    "\"setup\":\"echo hi\"}");
    assert_int_equal(template_validate_create(b, &r, &err), 0);
    assert_string_equal(r.name, "with-jq");
    assert_string_equal(r.base, "debian");
    assert_string_equal(r.packages, "jq,file");
    assert_int_equal(r.n_packages, 2);
    assert_string_equal(r.packages_v[1], "file");
    assert_string_equal(r.setup, "echo hi");
    json_decref(b);
    /* Defaults: base debian, no packages, no setup ("" counts as none). */
    assert_int_equal(validate("{\"name\":\"plain\",\"setup\":\"\"}", &r, &err), 0);
    assert_string_equal(r.base, "debian");
    assert_int_equal(r.n_packages, 0);
    assert_string_equal(r.packages, "");
    assert_null(r.setup);
}

static void test_create_request_rejected(void **state)
{
    (void)state;
    const char *bad[] = {
        "{}",
        "{\"name\":\"\"}",
        "{\"name\":5}",
        "{\"name\":\"Bad\"}",
        "{\"name\":\"debian\"}",
        "{\"name\":\"minimal\"}",
        "{\"name\":\"tpl-x\"}",
        "{\"name\":\"a\",\"base\":\"minimal\"}",
        "{\"name\":\"a\",\"packages\":\"jq\"}",
        "{\"name\":\"a\",\"packages\":[1]}",
        "{\"name\":\"a\",\"packages\":[\"jq\",\"jq\"]}",
        "{\"name\":\"a\",\"packages\":[\"$(reboot)\"]}",
        "{\"name\":\"a\",\"setup\":5}",
        "{\"name\":\"a\",\"other\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        template_create_req r;
        terr err = {{0}};
        if (validate(bad[i], &r, &err) != -1) fail_msg("accepted: %s", bad[i]);
        assert_true(err.msg[0] != '\0');
    }
}

static void test_create_request_bounds(void **state)
{
    (void)state;
    template_create_req r;
    terr err = {{0}};
    /* TEMPLATE_PACKAGES_MAX packages pass, one more does not. */
    char body[8192];
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = (size_t)snprintf(body, sizeof body, "{\"name\":\"many\",\"packages\":[");
        for (int i = 0; i < TEMPLATE_PACKAGES_MAX + extra; i++)
            n += (size_t)snprintf(body + n, sizeof body - n, "%s\"p%d\"", i ? "," : "", i);
        snprintf(body + n, sizeof body - n, "]}");
        assert_int_equal(validate(body, &r, &err), extra ? -1 : 0);
    }
    /* The setup script: TEMPLATE_SETUP_MAX bytes pass, one more does not. */
    for (int extra = 0; extra <= 1; extra++) {
        size_t len = TEMPLATE_SETUP_MAX + (size_t)extra;
        char *big = malloc(len + 64);
        assert_non_null(big);
        size_t n = (size_t)sprintf(big, "{\"name\":\"big\",\"setup\":\"");
        memset(big + n, '#', len);
        strcpy(big + n + len, "\"}");
        assert_int_equal(validate(big, &r, &err), extra ? -1 : 0);
        free(big);
    }
}

static void test_status_follows_the_build_host(void **state)
{
    (void)state;
    tpl_status next;
    /* building settles from the agent's answer */
    assert_true(template_next_status(TPL_BUILDING, TPL_AGENT_STATUS, "ready", &next));
    assert_int_equal(next, TPL_READY);
    assert_true(template_next_status(TPL_BUILDING, TPL_AGENT_STATUS, "error", &next));
    assert_int_equal(next, TPL_ERROR);
    assert_false(template_next_status(TPL_BUILDING, TPL_AGENT_STATUS, "building", &next));
    assert_int_equal(next, TPL_BUILDING);
    /* the host lost the build: error; no answer: unchanged */
    assert_true(template_next_status(TPL_BUILDING, TPL_AGENT_NOT_FOUND, NULL, &next));
    assert_int_equal(next, TPL_ERROR);
    assert_false(template_next_status(TPL_BUILDING, TPL_AGENT_NO_ANSWER, NULL, &next));
    assert_int_equal(next, TPL_BUILDING);
    /* nonsense from the agent changes nothing */
    assert_false(template_next_status(TPL_BUILDING, TPL_AGENT_STATUS, "bogus", &next));
    assert_int_equal(next, TPL_BUILDING);
    /* ready and error are final */
    const tpl_status final[] = {TPL_READY, TPL_ERROR};
    for (size_t i = 0; i < 2; i++) {
        assert_false(template_next_status(final[i], TPL_AGENT_STATUS, "building", &next));
        assert_int_equal(next, final[i]);
        assert_false(template_next_status(final[i], TPL_AGENT_NOT_FOUND, NULL, &next));
        assert_int_equal(next, final[i]);
    }
}

static void test_template_json(void **state)
{
    (void)state;
    template_row r = {0};
    strcpy(r.id, "tpl-0123456789abcdef");
    strcpy(r.team_id, "5f0c1c1e-0000-0000-0000-000000000001");
    strcpy(r.name, "with-jq");
    strcpy(r.base, "debian");
    strcpy(r.packages, "jq,file");
    r.status = TPL_ERROR;
    strcpy(r.error, "E: Unable to locate package file");
    r.created_at_us = 1764598255123456LL;
    terr err;
    json_t *j = template_row_to_json(&r, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "error");
    assert_int_equal(json_array_size(json_object_get(j, "packages")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "packages"), 1)),
                        "file");
    assert_false(json_is_true(json_object_get(j, "public")));
    assert_true(json_is_null(json_object_get(j, "digest")));
    assert_string_equal(json_string_value(json_object_get(j, "error")), r.error);
    assert_null(json_object_get(j, "id"));      /* the image name is internal */
    assert_null(json_object_get(j, "team_id")); /* never exposed */
    assert_int_equal(json_object_size(j), 10);
    json_decref(j);
    /* A ready built-in one: public, its digest, no error. */
    template_row b = {0};
    strcpy(b.name, "debian");
    strcpy(b.base, "debian");
    b.status = TPL_READY;
    memset(b.digest, 'a', 64);
    r.error[0] = '\0';
    j = template_row_to_json(&b, &err);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "public")));
    assert_int_equal(strlen(json_string_value(json_object_get(j, "digest"))), 64);
    assert_true(json_is_null(json_object_get(j, "error")));
    assert_true(json_is_null(json_object_get(j, "created_at")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_package_names_follow_debian_policy),
        cmocka_unit_test(test_builtin_and_image_names_are_reserved),
        cmocka_unit_test(test_create_request_accepted),
        cmocka_unit_test(test_create_request_rejected),
        cmocka_unit_test(test_create_request_bounds),
        cmocka_unit_test(test_status_follows_the_build_host),
        cmocka_unit_test(test_template_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
