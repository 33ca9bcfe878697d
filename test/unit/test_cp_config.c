/* Unit tests for the control plane's command line (cp_config_parse):
 * flags, subcommands, limits and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_client.h"
#include "auth_cache.h"
#include "cp_config.h"
#include "reconciler.h"

static void test_config(void **state)
{
    cp_config c;
    terr err;
    char *ok[] = {"torpor-cp",      "--database-url",
                  "host=/tmp",      "--reconcile-interval=0.25",
                  "--http-threads", "3"};
    assert_int_equal(cp_config_parse(6, ok, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_SERVE);
    assert_true(c.reconcile_interval_sec == 0.25);
    assert_int_equal(c.http_threads, 3);
    assert_string_equal(c.database_url, "host=/tmp");
    /* The grace outlasts every transition's agent deadline by default. */
    assert_true(c.transition_grace_sec * 1000 > AGENT_DEADLINE_TRANSITION_MAX_MS);
    assert_true(c.transition_grace_sec * 1000 > AGENT_DEADLINE_RESUME_MS);

    char *keys[] = {"torpor-cp", "keys", "create", "--team", "t1", "--database-url=x"};
    assert_int_equal(cp_config_parse(6, keys, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_KEYS_CREATE);
    assert_string_equal(c.team, "t1");

    char grace_min[32], grace_below[32];
    snprintf(grace_min, sizeof grace_min, "%d", RECONCILER_GRACE_MIN_SEC);
    snprintf(grace_below, sizeof grace_below, "%g", RECONCILER_GRACE_MIN_SEC - 0.5);
    assert_true(RECONCILER_GRACE_MIN_SEC * 1000 > AGENT_DEADLINE_TRANSITION_MAX_MS);
    char *grace_ok[] = {"torpor-cp", "--database-url", "x", "--transition-grace", grace_min};
    assert_int_equal(cp_config_parse(5, grace_ok, &c, &err), 0);
    assert_true(c.transition_grace_sec == RECONCILER_GRACE_MIN_SEC);
    char *grace_short[] = {"torpor-cp", "--database-url", "x", "--transition-grace", grace_below};
    assert_int_equal(cp_config_parse(5, grace_short, &c, &err), -1);
    assert_non_null(strstr(err.msg, "--transition-grace"));

    char *reset[] = {"torpor-cp", "hosts", "reset-identity", "--id", "h1", "--database-url=x"};
    assert_int_equal(cp_config_parse(6, reset, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_HOSTS_RESET_IDENTITY);
    assert_string_equal(c.host_id, "h1");

    assert_string_equal(c.metrics_addr, "127.0.0.1:9464");
    char *list[] = {"torpor-cp",        "keys",           "list", "--team", "t1",
                    "--database-url=x", "--metrics-addr", "off"};
    assert_int_equal(cp_config_parse(8, list, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_KEYS_LIST);
    assert_string_equal(c.team, "t1");
    assert_string_equal(c.metrics_addr, "off");
    char *rev_prefix[] = {"torpor-cp", "keys",         "revoke",
                          "--prefix",  "tpk_0123abcd", "--database-url=x"};
    assert_int_equal(cp_config_parse(6, rev_prefix, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_KEYS_REVOKE);
    assert_string_equal(c.key_prefix, "tpk_0123abcd");
    assert_null(c.host_id);
    char *rev_id[] = {"torpor-cp", "keys", "revoke", "--id", "k1", "--database-url=x"};
    assert_int_equal(cp_config_parse(6, rev_id, &c, &err), 0);
    assert_string_equal(c.host_id, "k1");
    assert_null(c.key_prefix);

    char *help[] = {"torpor-cp", "--help"};
    assert_int_equal(cp_config_parse(2, help, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_HELP);

    char *bad1[] = {"torpor-cp", "--database-url", "x", "--reconcile-interval", "0"};
    char *bad2[] = {"torpor-cp", "--database-url", "x", "--bogus"};
    char *bad3[] = {"torpor-cp", "--database-url", "x", "keys", "create"};
    char *bad4[] = {"torpor-cp", "--database-url", "x", "--tls-cert", "c"};
    char *bad5[] = {"torpor-cp", "--database-url"};
    char *bad6[] = {"torpor-cp", "--database-url", "x", "--http-threads", "0"};
    /* A grace shorter than the longest agent deadline + margin is refused. */
    char *bad7[] = {"torpor-cp", "--database-url", "x", "--transition-grace", "10"};
    char *bad8[] = {"torpor-cp", "--database-url", "x", "hosts", "reset-identity"};
    char *bad9[] = {"torpor-cp", "--database-url", "x", "keys", "list"};
    char *bad10[] = {"torpor-cp", "--database-url", "x", "keys", "revoke"};
    char *bad11[] = {"torpor-cp", "--database-url", "x", "keys", "revoke", "--prefix",
                     "p",         "--id",           "i"};
    char *bad12[] = {"torpor-cp", "--database-url", "x", "--metrics-addr", "9464"};
    char **bads[] = {bad1, bad2, bad3, bad4, bad5, bad6, bad7, bad8, bad9, bad10, bad11, bad12};
    int argcs[] = {5, 4, 5, 5, 2, 5, 5, 5, 5, 5, 9, 5};
    for (int i = 0; i < 12; i++) {
        err.msg[0] = '\0';
        assert_int_equal(cp_config_parse(argcs[i], bads[i], &c, &err), -1);
        assert_true(strlen(err.msg) > 0);
    }
}

static void test_key_cache_is_bounded_by_the_revocation_promise(void **state)
{
    (void)state;
    cp_config c;
    terr err;
    char *dflt[] = {"torpor-cp", "--database-url", "x"};
    assert_int_equal(cp_config_parse(3, dflt, &c, &err), 0);
    assert_true(c.key_cache_sec > 0 && c.key_cache_sec * 1000 <= AUTH_CACHE_MAX_MS);
    char *zero[] = {"torpor-cp", "--database-url", "x", "--key-cache", "0"};
    assert_int_equal(cp_config_parse(5, zero, &c, &err), 0);
    assert_true(c.key_cache_sec == 0);
    char *five[] = {"torpor-cp", "--database-url", "x", "--key-cache=5"};
    assert_int_equal(cp_config_parse(4, five, &c, &err), 0);
    assert_true(c.key_cache_sec == 5);
    char *over[] = {"torpor-cp", "--database-url", "x", "--key-cache", "5.5"};
    assert_int_equal(cp_config_parse(5, over, &c, &err), -1);
    assert_non_null(strstr(err.msg, "--key-cache"));
    char *neg[] = {"torpor-cp", "--database-url", "x", "--key-cache", "-1"};
    assert_int_equal(cp_config_parse(5, neg, &c, &err), -1);
}

static void test_proxy_domain_is_off_by_default_and_must_be_a_dns_name(void **state)
{
    (void)state;
    cp_config c;
    terr err;
    char *dflt[] = {"torpor-cp", "--database-url", "x"};
    assert_int_equal(cp_config_parse(3, dflt, &c, &err), 0);
    assert_null(c.proxy_domain);
    char *ok[] = {"torpor-cp", "--database-url", "x", "--proxy-domain", "sbx.example.com"};
    assert_int_equal(cp_config_parse(5, ok, &c, &err), 0);
    assert_string_equal(c.proxy_domain, "sbx.example.com");
    char *bad[] = {"torpor-cp", "--database-url", "x", "--proxy-domain", "*.example.com"};
    assert_int_equal(cp_config_parse(5, bad, &c, &err), -1);
    assert_non_null(strstr(err.msg, "--proxy-domain"));
}

/* A flag of seconds (F_SECONDS) that defaults to 60 s: fractions are fine,
 * 0 and words are refused with the flag's name. off: its field. */
static void check_seconds_flag_defaults_to_60(const char *flag, size_t off)
{
    cp_config c;
    terr err;
    char *dflt[] = {"torpor-cp", "--database-url", "x"};
    assert_int_equal(cp_config_parse(3, dflt, &c, &err), 0);
    assert_true(*(double *)((char *)&c + off) == 60);
    char *ok[] = {"torpor-cp", "--database-url", "x", (char *)flag, "2.5"};
    assert_int_equal(cp_config_parse(5, ok, &c, &err), 0);
    assert_true(*(double *)((char *)&c + off) == 2.5);
    char *zero[] = {"torpor-cp", "--database-url", "x", (char *)flag, "0"};
    assert_int_equal(cp_config_parse(5, zero, &c, &err), -1);
    assert_non_null(strstr(err.msg, flag));
    char *word[] = {"torpor-cp", "--database-url", "x", (char *)flag, "soon"};
    assert_int_equal(cp_config_parse(5, word, &c, &err), -1);
}

static void test_proxy_idle_timeout_defaults_to_60_s_and_refuses_nonsense(void **state)
{
    (void)state;
    check_seconds_flag_defaults_to_60("--proxy-idle-timeout",
                                      offsetof(cp_config, proxy_idle_timeout_sec));
}

static void test_files_timeout_defaults_to_60_s_and_refuses_nonsense(void **state)
{
    (void)state;
    check_seconds_flag_defaults_to_60("--files-timeout", offsetof(cp_config, files_timeout_sec));
}

static void test_teams_set_quota_parses_limits_and_defaults_to_unlimited(void **state)
{
    cp_config c;
    terr err;
    char *both[] = {"torpor-cp",
                    "teams",
                    "set-quota",
                    "--team",
                    "t1",
                    "--max-sandboxes",
                    "3",
                    "--max-memory-mb=1024",
                    "--database-url=x"};
    assert_int_equal(cp_config_parse(9, both, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_TEAMS_SET_QUOTA);
    assert_string_equal(c.team, "t1");
    assert_int_equal(c.max_sandboxes, 3);
    assert_int_equal(c.max_memory_mb, 1024);

    char *one[] = {"torpor-cp", "teams",           "set-quota", "--team",
                   "t1",        "--max-sandboxes", "0",         "--database-url=x"};
    assert_int_equal(cp_config_parse(8, one, &c, &err), 0);
    assert_int_equal(c.max_sandboxes, 0);
    assert_int_equal(c.max_memory_mb, -1);

    char *noteam[] = {"torpor-cp",       "teams", "set-quota",
                      "--max-sandboxes", "3",     "--database-url=x"};
    assert_int_equal(cp_config_parse(6, noteam, &c, &err), -1);
    assert_non_null(strstr(err.msg, "--team"));
    char *bad[] = {"torpor-cp", "teams",           "set-quota", "--team",
                   "t",         "--max-memory-mb", "lots",      "--database-url=x"};
    assert_int_equal(cp_config_parse(8, bad, &c, &err), -1);
    assert_non_null(strstr(err.msg, "--max-memory-mb"));
}

/* issue 11: keys create --admin, hosts add --max-memory-mb, hosts list,
 * drain, undrain, remove; the flags only where they belong. */
static void test_host_commands(void **state)
{
    (void)state;
    cp_config c;
    terr err;
    char *admin[] = {"torpor-cp", "keys", "create", "--team", "ops", "--admin", "--database-url=x"};
    assert_int_equal(cp_config_parse(7, admin, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_KEYS_CREATE);
    assert_true(c.admin);
    char *member[] = {"torpor-cp", "keys", "create", "--team", "ops", "--database-url=x"};
    assert_int_equal(cp_config_parse(6, member, &c, &err), 0);
    assert_false(c.admin);
    char *cap[] = {"torpor-cp",
                   "hosts",
                   "add",
                   "--id",
                   "h2",
                   "--addr",
                   "10.0.0.2:50051",
                   "--max-memory-mb",
                   "4096",
                   "--database-url=x"};
    assert_int_equal(cp_config_parse(10, cap, &c, &err), 0);
    assert_string_equal(c.host_max_memory_mb, "4096");
    char *none[] = {"torpor-cp", "hosts",           "add", "--id",
                    "h2",        "--addr",          "a:1", "--max-memory-mb",
                    "none",      "--database-url=x"};
    assert_int_equal(cp_config_parse(10, none, &c, &err), 0);
    char *list[] = {"torpor-cp", "hosts", "list", "--database-url=x"};
    assert_int_equal(cp_config_parse(4, list, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_HOSTS_LIST);
    const char *verbs[] = {"drain", "undrain", "remove"};
    cp_command want[] = {CP_CMD_HOSTS_DRAIN, CP_CMD_HOSTS_UNDRAIN, CP_CMD_HOSTS_REMOVE};
    for (int i = 0; i < 3; i++) {
        char *argv[] = {"torpor-cp", "hosts", (char *)verbs[i], "--id", "h2", "--database-url=x"};
        assert_int_equal(cp_config_parse(6, argv, &c, &err), 0);
        assert_int_equal(c.command, want[i]);
        char *no_id[] = {"torpor-cp", "hosts", (char *)verbs[i], "--database-url=x"};
        assert_int_equal(cp_config_parse(4, no_id, &c, &err), -1);
    }
    char *bad_cap[] = {"torpor-cp", "hosts",           "add", "--id",
                       "h",         "--addr",          "a:1", "--max-memory-mb",
                       "-5",        "--database-url=x"};
    assert_int_equal(cp_config_parse(10, bad_cap, &c, &err), -1);
    char *cap_elsewhere[] = {"torpor-cp",       "hosts", "list",
                             "--max-memory-mb", "5",     "--database-url=x"};
    assert_int_equal(cp_config_parse(6, cap_elsewhere, &c, &err), -1);
    char *admin_elsewhere[] = {"torpor-cp", "hosts", "list", "--admin", "--database-url=x"};
    assert_int_equal(cp_config_parse(5, admin_elsewhere, &c, &err), -1);
}

int main(void)
{
    unsetenv("TORPOR_DATABASE_URL");
    unsetenv("TORPOR_TLS_CERT");
    unsetenv("TORPOR_TLS_KEY");
    unsetenv("TORPOR_TLS_CA");
    unsetenv("TORPOR_RECONCILE_INTERVAL");
    unsetenv("TORPOR_HTTP_THREADS");
    unsetenv("TORPOR_TRANSITION_GRACE");
    unsetenv("TORPOR_METRICS_ADDR");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_key_cache_is_bounded_by_the_revocation_promise),
        cmocka_unit_test(test_proxy_domain_is_off_by_default_and_must_be_a_dns_name),
        cmocka_unit_test(test_proxy_idle_timeout_defaults_to_60_s_and_refuses_nonsense),
        cmocka_unit_test(test_files_timeout_defaults_to_60_s_and_refuses_nonsense),
        cmocka_unit_test(test_teams_set_quota_parses_limits_and_defaults_to_unlimited),
        cmocka_unit_test(test_host_commands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
