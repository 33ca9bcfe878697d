/* Unit tests for controlplane/team_limit: the per-team cap on long calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>

#include "team_limit.h"

static void test_cap_is_per_team(void **state)
{
    team_limit *t;
    terr err;
    assert_int_equal(team_limit_new(2, &t, &err), 0);
    assert_true(team_limit_enter(t, "a"));
    assert_true(team_limit_enter(t, "a"));
    assert_false(team_limit_enter(t, "a")); /* a is at its cap */
    assert_int_equal(team_limit_count(t, "a"), 2);
    assert_true(team_limit_enter(t, "b")); /* b is not held back by a */
    team_limit_leave(t, "a");
    assert_true(team_limit_enter(t, "a")); /* a slot came back */
    team_limit_leave(t, "a");
    team_limit_leave(t, "a");
    team_limit_leave(t, "b");
    assert_int_equal(team_limit_count(t, "a"), 0);
    assert_int_equal(team_limit_count(t, "b"), 0);
    team_limit_free(t);
}

static void test_many_teams(void **state)
{
    team_limit *t;
    terr err;
    assert_int_equal(team_limit_new(1, &t, &err), 0);
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "team-%d", i);
        assert_true(team_limit_enter(t, name));
    }
    assert_false(team_limit_enter(t, "team-42"));
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "team-%d", i);
        team_limit_leave(t, name);
        assert_int_equal(team_limit_count(t, name), 0);
    }
    assert_int_equal(team_limit_count(t, "team-99"), 0);
    team_limit_free(t);
}

static void test_holders_give_back_their_slot(void **state)
{
    team_limit *t;
    terr err;
    assert_int_equal(team_limit_new(2, &t, &err), 0);
    int r1, r2, r3;
    assert_true(team_limit_enter_as(t, "a", &r1));
    assert_true(team_limit_enter_as(t, "a", &r1)); /* one slot per holder */
    assert_int_equal(team_limit_count(t, "a"), 1);
    assert_true(team_limit_enter_as(t, "a", &r2));
    assert_false(team_limit_enter_as(t, "a", &r3));
    assert_false(team_limit_holds(t, &r3));
    assert_true(team_limit_holds(t, &r1));
    team_limit_release(t, &r3); /* holds nothing: no-op */
    assert_int_equal(team_limit_count(t, "a"), 2);
    team_limit_release(t, &r1);
    assert_false(team_limit_holds(t, &r1));
    assert_int_equal(team_limit_count(t, "a"), 1);
    assert_true(team_limit_enter_as(t, "a", &r3));
    team_limit_release(t, &r2);
    team_limit_release(t, &r3);
    assert_int_equal(team_limit_count(t, "a"), 0);
    team_limit_free(t);
}

static void test_zero_is_refused(void **state)
{
    team_limit *t;
    terr err;
    assert_int_equal(team_limit_new(0, &t, &err), -1);
    assert_null(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_is_per_team),
        cmocka_unit_test(test_many_teams),
        cmocka_unit_test(test_holders_give_back_their_slot),
        cmocka_unit_test(test_zero_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
