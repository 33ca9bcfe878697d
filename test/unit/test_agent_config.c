/* torpor-agent flags and environment: defaults, precedence, bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_config.h"

static const char *const env_names[] = {
    "TORPOR_AGENT_LISTEN",
    "TORPOR_STATE_DIR",
    "TORPOR_IMAGE_DIR",
    "TORPOR_ACCEL",
    "TORPOR_REAPER_INTERVAL",
    "TORPOR_PAUSE_WORKERS",
    "TORPOR_SHUTDOWN_TIMEOUT",
    "TORPOR_TLS_CERT",
    "TORPOR_TLS_KEY",
    "TORPOR_TLS_CA",
    "TORPOR_AGENT_METRICS_ADDR",
    "TORPOR_NETWORK",
    "TORPOR_DNS_UPSTREAM",
    "TORPOR_VM_USER",
};

static int clear_env(void **state)
{
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++) unsetenv(env_names[i]);
    return 0;
}

static agent_config_result parse(agent_config *cfg, terr *e, int argc, ...)
{
    char *argv[16] = {"torpor-agent"};
    va_list ap;
    va_start(ap, argc);
    for (int i = 1; i < argc; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    return agent_config_parse(argc, argv, cfg, e);
}

static void test_defaults(void **state)
{
    agent_config c;
    terr e;
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    assert_string_equal(c.listen, "127.0.0.1:50051");
    assert_string_equal(c.state_dir, "/var/lib/torpor");
    assert_string_equal(c.image_dir, TORPOR_DATADIR "/image");
    assert_string_equal(c.accel, "auto");
    assert_int_equal(c.reaper_interval_ms, 2000);
    assert_int_equal(c.pause_workers, 2);
    assert_int_equal(c.shutdown_timeout_ms, 120000);
    assert_null(c.tls_cert);
    assert_string_equal(c.metrics_addr, "127.0.0.1:9465");
    assert_true(c.network);
}

static void test_metrics_addr_from_env_flag_or_off(void **state)
{
    agent_config c;
    terr e;
    setenv("TORPOR_AGENT_METRICS_ADDR", "127.0.0.1:0", 1);
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    assert_string_equal(c.metrics_addr, "127.0.0.1:0");
    assert_int_equal(parse(&c, &e, 3, "--metrics-addr", "off"), AGENT_CONFIG_OK);
    assert_string_equal(c.metrics_addr, "off");
    assert_int_equal(parse(&c, &e, 3, "--metrics-addr", "9465"), AGENT_CONFIG_ERROR);
    assert_non_null(strstr(e.msg, "--metrics-addr"));
}

static void test_network_flag_and_env(void **state)
{
    agent_config c;
    terr e;
    assert_int_equal(parse(&c, &e, 3, "--network", "off"), AGENT_CONFIG_OK);
    assert_false(c.network);
    setenv("TORPOR_NETWORK", "off", 1);
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    assert_false(c.network);
    assert_int_equal(parse(&c, &e, 3, "--network", "on"), AGENT_CONFIG_OK);
    assert_true(c.network);
    assert_int_equal(parse(&c, &e, 3, "--network", "maybe"), AGENT_CONFIG_ERROR);
    assert_non_null(strstr(e.msg, "--network"));
}

/* --dns-upstream: auto by default, off, or a list of IPv4 ADDR[:PORT]. */
static void test_dns_upstream_values(void **state)
{
    agent_config c;
    terr e;
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    assert_string_equal(c.dns_upstream, "auto");
    assert_int_equal(parse(&c, &e, 3, "--dns-upstream", "off"), AGENT_CONFIG_OK);
    assert_string_equal(c.dns_upstream, "off");
    setenv("TORPOR_DNS_UPSTREAM", "192.0.2.1,192.0.2.2:5353", 1);
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    assert_string_equal(c.dns_upstream, "192.0.2.1,192.0.2.2:5353");
    static const char *bad[] = {"192.0.2.0/24",
                                "2001:db8::1",
                                "resolver",
                                "192.0.2.1,",
                                "",
                                "1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(&c, &e, 3, "--dns-upstream", bad[i]), AGENT_CONFIG_ERROR);
        assert_non_null(strstr(e.msg, "--dns-upstream"));
    }
}

/* QEMU runs unprivileged by default when the agent is root; none opts out. */
static void test_vm_user_default_and_opt_out(void **state)
{
    agent_config c;
    terr e;
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    if (geteuid() == 0) {
        assert_string_equal(c.vm_user, AGENT_VM_USER_DEFAULT);
        assert_true(c.vm_user_is_default);
    } else {
        assert_null(c.vm_user);
        assert_false(c.vm_user_is_default);
    }
    assert_int_equal(parse(&c, &e, 3, "--vm-user", "none"), AGENT_CONFIG_OK);
    assert_null(c.vm_user);
    assert_false(c.vm_user_is_default);
    setenv("TORPOR_VM_USER", "qemu-runner", 1);
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    assert_string_equal(c.vm_user, "qemu-runner");
    assert_false(c.vm_user_is_default);
    setenv("TORPOR_VM_USER", "none", 1);
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    assert_null(c.vm_user);
    assert_int_equal(parse(&c, &e, 3, "--vm-user", ""), AGENT_CONFIG_ERROR);
}

static void test_env_then_flags(void **state)
{
    agent_config c;
    terr e;
    setenv("TORPOR_AGENT_LISTEN", "127.0.0.1:7000", 1);
    setenv("TORPOR_STATE_DIR", "/srv/torpor", 1);
    setenv("TORPOR_ACCEL", "tcg", 1);
    setenv("TORPOR_REAPER_INTERVAL", "0.25", 1);
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_OK);
    assert_string_equal(c.listen, "127.0.0.1:7000");
    assert_string_equal(c.state_dir, "/srv/torpor");
    assert_string_equal(c.accel, "tcg");
    assert_int_equal(c.reaper_interval_ms, 250);
    assert_int_equal(parse(&c, &e, 7, "--listen", "127.0.0.1:0", "--reaper-interval=0.5",
                           "--pause-workers", "4", "--accel=kvm"),
                     AGENT_CONFIG_OK);
    assert_string_equal(c.listen, "127.0.0.1:0");
    assert_int_equal(c.reaper_interval_ms, 500);
    assert_int_equal(c.pause_workers, 4);
    assert_string_equal(c.accel, "kvm");
}

static void test_help(void **state)
{
    agent_config c;
    terr e;
    assert_int_equal(parse(&c, &e, 2, "--help"), AGENT_CONFIG_HELP);
}

static void test_bad_input(void **state)
{
    agent_config c;
    terr e;
    assert_int_equal(parse(&c, &e, 2, "--nope"), AGENT_CONFIG_ERROR);
    assert_non_null(strstr(e.msg, "--nope"));
    assert_int_equal(parse(&c, &e, 2, "--listen"), AGENT_CONFIG_ERROR);
    assert_non_null(strstr(e.msg, "needs a value"));
    assert_int_equal(parse(&c, &e, 2, "stray"), AGENT_CONFIG_ERROR);
    assert_int_equal(parse(&c, &e, 3, "--accel", "xen"), AGENT_CONFIG_ERROR);
    assert_int_equal(parse(&c, &e, 3, "--reaper-interval", "0"), AGENT_CONFIG_ERROR);
    assert_int_equal(parse(&c, &e, 3, "--reaper-interval", "2s"), AGENT_CONFIG_ERROR);
    assert_int_equal(parse(&c, &e, 3, "--reaper-interval", "nan"), AGENT_CONFIG_ERROR);
    assert_int_equal(parse(&c, &e, 3, "--pause-workers", "0"), AGENT_CONFIG_ERROR);
    assert_int_equal(parse(&c, &e, 3, "--pause-workers", "99999999999999"), AGENT_CONFIG_ERROR);
    assert_int_equal(parse(&c, &e, 3, "--tls-cert", "/x.pem"), AGENT_CONFIG_ERROR);
    assert_non_null(strstr(e.msg, "together"));
    assert_int_equal(parse(&c, &e, 3, "--state-dir", ""), AGENT_CONFIG_ERROR);
    assert_int_equal(parse(&c, &e, 3, "--listen", "0.0.0.0:50051"), AGENT_CONFIG_ERROR);
    assert_non_null(strstr(e.msg, "not loopback"));
    assert_int_equal(parse(&c, &e, 9, "--listen", "0.0.0.0:50051", "--tls-cert", "/c.pem",
                           "--tls-key", "/k.pem", "--tls-ca", "/ca.pem"),
                     AGENT_CONFIG_OK);
    setenv("TORPOR_PAUSE_WORKERS", "many", 1);
    assert_int_equal(parse(&c, &e, 1), AGENT_CONFIG_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, clear_env),
        cmocka_unit_test_setup(test_env_then_flags, clear_env),
        cmocka_unit_test_setup(test_help, clear_env),
        cmocka_unit_test_setup(test_metrics_addr_from_env_flag_or_off, clear_env),
        cmocka_unit_test_setup(test_network_flag_and_env, clear_env),
        cmocka_unit_test_setup(test_dns_upstream_values, clear_env),
        cmocka_unit_test_setup(test_vm_user_default_and_opt_out, clear_env),
        cmocka_unit_test_setup(test_bad_input, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
