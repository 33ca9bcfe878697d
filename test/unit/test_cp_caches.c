/* Unit tests for controlplane/auth_cache (recently verified API keys),
 * controlplane/touch_gate (which activity writes last_active_at) and
 * controlplane/ping_route (the host a recent ping reached). Time is
 * passed in, so every bound is checked at its exact millisecond. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "auth_cache.h"
#include "ping_route.h"
#include "touch_gate.h"

static const char *H1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char *H2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

static void test_key_is_served_until_its_ttl_ends(void **state)
{
    (void)state;
    auth_cache *c;
    terr err;
    assert_int_equal(auth_cache_new(500, &c, &err), 0);
    char team[64];
    bool admin = true;
    assert_false(auth_cache_get(c, H1, 1000, team, &admin)); /* never confirmed */
    auth_cache_put(c, H1, 1000, "team-1", false);
    assert_true(auth_cache_get(c, H1, 1000, team, &admin));
    assert_string_equal(team, "team-1");
    assert_false(admin);
    assert_true(auth_cache_get(c, H1, 1499, team, &admin));
    assert_false(auth_cache_get(c, H1, 1500, team, &admin)); /* the database is asked again */
    auth_cache_free(c);
}

static void test_revoked_key_fails_once_the_ttl_passed(void **state)
{
    /* Revocation is the database's: the cache only stops asking for ttl.
     * Once the entry aged out and the lookup fails, nothing is put back, so
     * the key stays refused. */
    (void)state;
    auth_cache *c;
    terr err;
    assert_int_equal(auth_cache_new(AUTH_CACHE_MAX_MS, &c, &err), 0);
    char team[64];
    bool admin;
    auth_cache_put(c, H1, 0, "team-1", true);
    assert_true(auth_cache_get(c, H1, AUTH_CACHE_MAX_MS - 1, team, &admin));
    assert_true(admin);
    assert_false(auth_cache_get(c, H1, AUTH_CACHE_MAX_MS, team, &admin));
    assert_false(auth_cache_get(c, H1, AUTH_CACHE_MAX_MS + 1, team, &admin));
    auth_cache_free(c);
}

static void test_keys_are_kept_apart(void **state)
{
    (void)state;
    auth_cache *c;
    terr err;
    assert_int_equal(auth_cache_new(1000, &c, &err), 0);
    char team[64];
    bool admin;
    auth_cache_put(c, H1, 0, "team-1", false);
    assert_false(auth_cache_get(c, H2, 0, team, &admin));
    auth_cache_put(c, H2, 0, "team-2", true);
    assert_true(auth_cache_get(c, H2, 10, team, &admin));
    assert_string_equal(team, "team-2");
    assert_true(auth_cache_get(c, H1, 10, team, &admin));
    assert_string_equal(team, "team-1");
    /* A hash that shares the slot of H1 replaces it: H1 is looked up again. */
    char h3[65];
    memcpy(h3, H1, 65);
    h3[63] = h3[63] == '0' ? '1' : '0';
    auth_cache_put(c, h3, 20, "team-3", false);
    assert_true(auth_cache_get(c, h3, 20, team, &admin));
    assert_string_equal(team, "team-3");
    assert_false(auth_cache_get(c, H1, 20, team, &admin));
    auth_cache_free(c);
}

static void test_ttl_zero_and_bad_input_keep_nothing(void **state)
{
    (void)state;
    auth_cache *c;
    terr err;
    assert_int_equal(auth_cache_new(AUTH_CACHE_MAX_MS + 1, &c, &err), -1);
    assert_int_equal(auth_cache_new(-1, &c, &err), -1);
    assert_int_equal(auth_cache_new(0, &c, &err), 0);
    char team[64];
    bool admin;
    auth_cache_put(c, H1, 0, "team-1", false);
    assert_false(auth_cache_get(c, H1, 0, team, &admin));
    auth_cache_free(c);
    assert_int_equal(auth_cache_new(1000, &c, &err), 0);
    auth_cache_put(c, "short", 0, "team-1", false);
    assert_false(auth_cache_get(c, "short", 0, team, &admin));
    assert_false(auth_cache_get(c, NULL, 0, team, &admin));
    assert_false(auth_cache_get(NULL, H1, 0, team, &admin));
    auth_cache_free(c);
}

static void test_touch_is_sent_once_per_gate_interval(void **state)
{
    (void)state;
    touch_gate *g;
    terr err;
    assert_int_equal(touch_gate_new(&g, &err), 0);
    assert_true(touch_gate_due(g, "sb-1", 10000));
    assert_false(touch_gate_due(g, "sb-1", 10001));
    assert_false(touch_gate_due(g, "sb-1", 10000 + TOUCH_GATE_MS - 1));
    assert_true(touch_gate_due(g, "sb-1", 10000 + TOUCH_GATE_MS));
    assert_false(touch_gate_due(g, "sb-1", 10000 + TOUCH_GATE_MS + 1));
    touch_gate_free(g);
}

static void test_touch_gate_keeps_sandboxes_apart(void **state)
{
    (void)state;
    touch_gate *g;
    terr err;
    assert_int_equal(touch_gate_new(&g, &err), 0);
    assert_true(touch_gate_due(g, "sb-1", 0));
    assert_true(touch_gate_due(g, "sb-2", 1)); /* sb-1's write does not stand for sb-2 */
    assert_false(touch_gate_due(g, "sb-1", 2));
    assert_false(touch_gate_due(g, "sb-2", 3));
    /* More sandboxes than slots: a collision costs a write, never skips one. */
    char id[32];
    for (int i = 0; i < 3 * TOUCH_GATE_SLOTS; i++) {
        snprintf(id, sizeof id, "sb-many-%d", i);
        assert_true(touch_gate_due(g, id, 100));
    }
    touch_gate_free(g);
}

static void test_failed_touch_is_sent_again(void **state)
{
    (void)state;
    touch_gate *g;
    terr err;
    assert_int_equal(touch_gate_new(&g, &err), 0);
    assert_true(touch_gate_due(g, "sb-1", 0));
    touch_gate_forget(g, "sb-1"); /* the UPDATE failed */
    assert_true(touch_gate_due(g, "sb-1", 1));
    touch_gate_forget(g, "sb-other"); /* not there: nothing changes */
    assert_false(touch_gate_due(g, "sb-1", 2));
    assert_true(touch_gate_due(NULL, "sb-1", 2)); /* no gate: every touch is sent */
    touch_gate_free(g);
}

static void test_busy_sandbox_row_lags_at_most_the_bound(void **state)
{
    /* A sandbox pinged every 7 ms for 10 s: the gate lets an UPDATE through
     * at least every TOUCH_GATE_MS (+ one ping interval), so with the
     * database's own DB_TOUCH_COALESCE of TOUCH_GATE_MS the stored time is
     * never more than TOUCH_LAG_MAX_MS behind the last ping. Modelled here:
     * the database writes when its value is >= TOUCH_GATE_MS old. */
    (void)state;
    touch_gate *g;
    terr err;
    assert_int_equal(touch_gate_new(&g, &err), 0);
    int64_t stored = -1, worst = 0;
    int writes = 0;
    for (int64_t t = 0; t < 10000; t += 7) {
        if (touch_gate_due(g, "sb-busy", t) && (stored < 0 || t - stored >= TOUCH_GATE_MS)) {
            stored = t;
            writes++;
        }
        if (t - stored > worst) worst = t - stored;
    }
    assert_true(worst <= TOUCH_LAG_MAX_MS);
    assert_true(writes <= 10000 / TOUCH_GATE_MS + 1); /* not one per ping */
    assert_true(writes >= 10000 / TOUCH_LAG_MAX_MS);
    touch_gate_free(g);
}

static void test_ping_route_is_kept_for_its_ttl_and_per_team(void **state)
{
    (void)state;
    ping_route *p;
    terr err;
    assert_int_equal(ping_route_new(&p, &err), 0);
    db_host h = {0}, got;
    strcpy(h.id, "host-1");
    strcpy(h.address, "127.0.0.1:50051");
    assert_false(ping_route_get(p, "team-a", "sb-1", 0, &got));
    ping_route_put(p, "team-a", "sb-1", 5000, &h);
    assert_true(ping_route_get(p, "team-a", "sb-1", 5000 + PING_ROUTE_TTL_MS - 1, &got));
    assert_string_equal(got.address, "127.0.0.1:50051");
    assert_false(ping_route_get(p, "team-b", "sb-1", 5001, &got)); /* not another team's */
    assert_false(ping_route_get(p, "team-a", "sb-2", 5001, &got));
    assert_false(ping_route_get(p, "team-a", "sb-1", 5000 + PING_ROUTE_TTL_MS, &got));
    ping_route_free(p);
}

static void test_refused_ping_forgets_the_route(void **state)
{
    (void)state;
    ping_route *p;
    terr err;
    assert_int_equal(ping_route_new(&p, &err), 0);
    db_host h = {0}, got;
    strcpy(h.id, "host-1");
    ping_route_put(p, "team-a", "sb-1", 0, &h);
    ping_route_forget(p, "sb-other");
    assert_true(ping_route_get(p, "team-a", "sb-1", 1, &got));
    ping_route_forget(p, "sb-1"); /* the agent did not answer OK */
    assert_false(ping_route_get(p, "team-a", "sb-1", 2, &got));
    assert_false(ping_route_get(NULL, "team-a", "sb-1", 2, &got));
    ping_route_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_is_served_until_its_ttl_ends),
        cmocka_unit_test(test_revoked_key_fails_once_the_ttl_passed),
        cmocka_unit_test(test_keys_are_kept_apart),
        cmocka_unit_test(test_ttl_zero_and_bad_input_keep_nothing),
        cmocka_unit_test(test_touch_is_sent_once_per_gate_interval),
        cmocka_unit_test(test_touch_gate_keeps_sandboxes_apart),
        cmocka_unit_test(test_failed_touch_is_sent_again),
        cmocka_unit_test(test_busy_sandbox_row_lags_at_most_the_bound),
        cmocka_unit_test(test_ping_route_is_kept_for_its_ttl_and_per_team),
        cmocka_unit_test(test_refused_ping_forgets_the_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
