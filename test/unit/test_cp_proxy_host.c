/* Unit tests for controlplane/proxy_host: --proxy-domain's host-based
 * routing of the port proxy ({port}-{id}.DOMAIN). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "proxy_host.h"

static void test_domain_names_are_checked(void **state)
{
    (void)state;
    assert_true(proxy_host_domain_valid("sandbox.example.com"));
    assert_true(proxy_host_domain_valid("localhost"));
    assert_true(proxy_host_domain_valid("a-b.c1"));
    assert_false(proxy_host_domain_valid(""));
    assert_false(proxy_host_domain_valid(NULL));
    assert_false(proxy_host_domain_valid(".example.com"));
    assert_false(proxy_host_domain_valid("example.com."));
    assert_false(proxy_host_domain_valid("a..b"));
    assert_false(proxy_host_domain_valid("-a.b"));
    assert_false(proxy_host_domain_valid("a-.b"));
    assert_false(proxy_host_domain_valid("Example.com"));
    assert_false(proxy_host_domain_valid("a_b.com"));
    char big[202];
    memset(big, 'a', 201);
    big[201] = '\0';
    assert_false(proxy_host_domain_valid(big));
}

static void test_port_and_id_under_the_domain_become_the_proxy_path(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(
        proxy_host_path("8888-sb-0123abcd.sbx.test", "sbx.test", "/lab/tree", out, sizeof out), 1);
    assert_string_equal(out, "/v1/sandboxes/sb-0123abcd/ports/8888/lab/tree");
    /* Case of the host and a :port suffix do not matter; "" is "/". */
    assert_int_equal(
        proxy_host_path("80-SB-0123ABCD.SBX.Test:8443", "sbx.test", "", out, sizeof out), 1);
    assert_string_equal(out, "/v1/sandboxes/sb-0123abcd/ports/80/");
}

static void test_other_hosts_are_routed_as_usual(void **state)
{
    (void)state;
    char out[256] = "";
    assert_int_equal(
        proxy_host_path("api.example.com", "sbx.test", "/v1/sandboxes", out, sizeof out), 0);
    assert_int_equal(proxy_host_path("sbx.test", "sbx.test", "/", out, sizeof out), 0);
    assert_int_equal(proxy_host_path("127.0.0.1:8080", "sbx.test", "/", out, sizeof out), 0);
    assert_int_equal(proxy_host_path("8888-sb-1.xsbx.test", "sbx.test", "/", out, sizeof out), 0);
    assert_int_equal(proxy_host_path(NULL, "sbx.test", "/", out, sizeof out), 0);
    assert_string_equal(out, "");
}

static void test_malformed_names_under_the_domain_are_refused(void **state)
{
    (void)state;
    char out[256];
    const char *bad[] = {"sb-1.sbx.test",          /* no port */
                         "0-sb-1.sbx.test",        /* port 0 */
                         "65536-sb-1.sbx.test",    /* port too large */
                         "123456-sb-1.sbx.test",   /* too many digits */
                         "80x-sb-1.sbx.test",      /* not a number */
                         "80-.sbx.test",           /* no id */
                         "80-sb_1%2f.sbx.test",    /* not an id */
                         "80-sb-1.extra.sbx.test", /* more than one label */
                         "-sb-1.sbx.test",         /* empty port */
                         NULL};
    for (int i = 0; bad[i]; i++)
        if (proxy_host_path(bad[i], "sbx.test", "/", out, sizeof out) != -1)
            fail_msg("%s: want -1", bad[i]);
    /* A path that does not fit is refused, not cut. */
    char small[24];
    assert_int_equal(proxy_host_path("80-sb-1.sbx.test", "sbx.test", "/x", small, sizeof small),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_names_are_checked),
        cmocka_unit_test(test_port_and_id_under_the_domain_become_the_proxy_path),
        cmocka_unit_test(test_other_hosts_are_routed_as_usual),
        cmocka_unit_test(test_malformed_names_under_the_domain_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
