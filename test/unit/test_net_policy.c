/* net_policy: entry parsing, canonical text, storage round trip, nft rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "net_policy.h"

static void canon(const char *in, const char *want)
{
    net_rule r;
    terr e;
    assert_int_equal(net_rule_parse(in, &r, &e), 0);
    char buf[NET_POLICY_ENTRY_MAX];
    net_rule_format(&r, buf, sizeof buf);
    assert_string_equal(buf, want);
}

static void test_entries_parse_to_their_canonical_form(void **state)
{
    (void)state;
    canon("1.2.3.4", "1.2.3.4/32");
    canon("1.2.3.4:443", "1.2.3.4/32:443");
    canon("10.0.0.0/8", "10.0.0.0/8");
    canon("10.1.0.0/16:65535", "10.1.0.0/16:65535");
    canon("0.0.0.0/0", "0.0.0.0/0");
    canon("fc00::/7", "fc00::/7");
    canon("::1", "::1/128");
    canon("[2001:db8::/32]:80", "[2001:db8::/32]:80");
}

static void test_invalid_entries_are_refused(void **state)
{
    (void)state;
    const char *bad[] = {"",           "1.2.3",      "300.1.1.1",     "1.2.3.4/33",
                         "1.2.3.4/",   "1.2.3.4:0",  "1.2.3.4:65536", "1.2.3.4:http",
                         "10.0.0.1/8", "fc00::/129", "fc00::1/7",     "[fc00::/7]",
                         "nonsense",   "1.2.3.4/8x", "1.2.3.4 ",      NULL};
    for (int i = 0; bad[i]; i++) {
        net_rule r;
        terr e;
        e.msg[0] = '\0';
        if (net_rule_parse(bad[i], &r, &e) != -1) fail_msg("accepted \"%s\"", bad[i]);
        assert_true(e.msg[0] != '\0');
    }
}

static void test_text_round_trip_keeps_the_policy(void **state)
{
    (void)state;
    net_policy p, q;
    terr e;
    net_policy_default(&p);
    assert_int_equal(net_policy_set_egress(&p, "deny", &e), 0);
    assert_int_equal(net_policy_add(&p, true, "198.18.0.1:8000", &e), 0);
    assert_int_equal(net_policy_add(&p, false, "198.18.0.0/15", &e), 0);
    char a[4096], b[4096];
    assert_int_equal(net_policy_to_text(&p, a, sizeof a, &e), 0);
    assert_int_equal(net_policy_from_text(a, &q, &e), 0);
    assert_int_equal(net_policy_to_text(&q, b, sizeof b, &e), 0);
    assert_string_equal(a, b);
    assert_false(q.egress_allow);
    assert_int_equal(q.n_allow, 1);
    assert_int_equal(q.n_deny, 1);
}

static void test_same_compares_egress_and_every_entry(void **state)
{
    (void)state;
    net_policy p, q;
    terr e;
    net_policy_default(&p);
    net_policy_default(&q);
    assert_true(net_policy_same(&p, &q));
    assert_int_equal(net_policy_add(&p, true, "198.18.0.1:8000", &e), 0);
    assert_false(net_policy_same(&p, &q));
    assert_int_equal(net_policy_add(&q, true, "198.18.0.1:8001", &e), 0);
    assert_false(net_policy_same(&p, &q)); /* same address, other port */
    net_policy_default(&q);
    assert_int_equal(net_policy_add(&q, true, "198.18.0.1:8000", &e), 0);
    assert_true(net_policy_same(&p, &q));
    assert_int_equal(net_policy_set_egress(&q, "deny", &e), 0);
    assert_false(net_policy_same(&p, &q));
}

static void test_too_many_entries_are_refused(void **state)
{
    (void)state;
    net_policy p;
    terr e;
    net_policy_default(&p);
    for (int i = 0; i < NET_POLICY_ENTRIES_MAX; i++)
        assert_int_equal(net_policy_add(&p, true, "1.2.3.4", &e), 0);
    assert_int_equal(net_policy_add(&p, true, "1.2.3.4", &e), -1);
}

/* Order in the egress chain: deny entries, allow entries, refused ranges, default. */
static void test_rules_put_deny_before_allow_before_refused_ranges(void **state)
{
    (void)state;
    net_policy p;
    terr e;
    net_policy_default(&p);
    net_policy_add(&p, true, "10.99.0.1", &e);
    net_policy_add(&p, false, "198.18.0.1:80", &e);
    static char buf[65536];
    assert_int_equal(net_policy_nft(&p, "tap0", "eth0", NULL, true, buf, sizeof buf, &e), 0);
    const char *deny = strstr(buf, "ip daddr 198.18.0.1/32 tcp dport 80 drop");
    const char *allow = strstr(buf, "ip daddr 10.99.0.1/32 accept");
    const char *refused = strstr(buf, "ip daddr 10.0.0.0/8 drop");
    const char *meta = strstr(buf, "ip daddr 169.254.0.0/16 drop");
    assert_non_null(deny);
    assert_non_null(allow);
    assert_non_null(refused);
    assert_non_null(meta);
    assert_true(deny < allow && allow < refused);
    assert_non_null(strstr(buf, "    accept\n  }"));
    net_policy_set_egress(&p, "deny", &e);
    assert_int_equal(net_policy_nft(&p, "tap0", "eth0", NULL, true, buf, sizeof buf, &e), 0);
    assert_non_null(strstr(buf, "    drop\n  }"));
}

/* For a new namespace the script only creates the table (no delete). */
static void test_rules_for_a_new_namespace_do_not_delete(void **state)
{
    (void)state;
    net_policy p;
    terr e;
    net_policy_default(&p);
    static char buf[65536];
    assert_int_equal(net_policy_nft(&p, "tap0", "eth0", NULL, true, buf, sizeof buf, &e), 0);
    assert_non_null(strstr(buf, "delete table inet torpor\n"));
    assert_int_equal(net_policy_nft(&p, "tap0", "eth0", NULL, false, buf, sizeof buf, &e), 0);
    assert_null(strstr(buf, "delete"));
    assert_true(strncmp(buf, "table inet torpor {\n", 20) == 0);
}

static net_rule upstream(const char *text)
{
    net_rule r;
    terr e;
    assert_int_equal(net_rule_parse(text, &r, &e), 0);
    return r;
}

/* DNS through the forwarder: egress allow, or an allow entry naming the
 * resolver; a deny entry naming it wins; the refused ranges do not apply. */
static void test_dns_follows_egress_and_entries_naming_the_resolver(void **state)
{
    (void)state;
    net_rule ups[1] = {upstream("10.255.255.53:53")};
    net_policy p;
    terr e;
    net_policy_default(&p);
    assert_true(net_policy_allows_dns(&p, ups, 1));
    net_policy_set_egress(&p, "deny", &e);
    assert_false(net_policy_allows_dns(&p, ups, 1));
    net_policy_add(&p, true, "198.18.0.0/15", &e);
    assert_false(net_policy_allows_dns(&p, ups, 1));
    net_policy_add(&p, true, "10.255.255.53:53", &e);
    assert_true(net_policy_allows_dns(&p, ups, 1));
    net_policy_default(&p);
    net_policy_add(&p, false, "10.255.0.0/16:53", &e);
    assert_false(net_policy_allows_dns(&p, ups, 1));
    net_policy_default(&p);
    net_policy_add(&p, false, "10.255.255.53:443", &e);
    assert_true(net_policy_allows_dns(&p, ups, 1));
    assert_false(net_policy_allows_dns(&p, ups, 0));
}

/* The forwarder's port is opened in the input chain only when asked, and
 * before the chain's drop of everything else from the guest. */
static void test_dns_input_rule_only_when_given(void **state)
{
    (void)state;
    net_policy p;
    terr e;
    net_policy_default(&p);
    static char buf[65536];
    assert_int_equal(net_policy_nft(&p, "tap0", "eth0", NULL, true, buf, sizeof buf, &e), 0);
    assert_null(strstr(buf, "dport 53"));
    assert_int_equal(net_policy_nft(&p, "tap0", "eth0", "10.0.0.1", true, buf, sizeof buf, &e), 0);
    const char *dns = strstr(buf, "iifname \"tap0\" ip daddr 10.0.0.1 udp dport 53 accept");
    const char *tcp = strstr(buf, "iifname \"tap0\" ip daddr 10.0.0.1 tcp dport 53 accept");
    const char *drop = strstr(buf, "iifname \"tap0\" drop");
    assert_non_null(dns);
    assert_non_null(tcp);
    assert_non_null(drop);
    assert_true(dns < drop);
    assert_true(tcp < drop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_parse_to_their_canonical_form),
        cmocka_unit_test(test_invalid_entries_are_refused),
        cmocka_unit_test(test_text_round_trip_keeps_the_policy),
        cmocka_unit_test(test_same_compares_egress_and_every_entry),
        cmocka_unit_test(test_too_many_entries_are_refused),
        cmocka_unit_test(test_rules_put_deny_before_allow_before_refused_ranges),
        cmocka_unit_test(test_rules_for_a_new_namespace_do_not_delete),
        cmocka_unit_test(test_dns_follows_egress_and_entries_naming_the_resolver),
        cmocka_unit_test(test_dns_input_rule_only_when_given),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
