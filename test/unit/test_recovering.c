/* Agent restart with a slow re-attach (issue 10), with the test driver's
 * TD_RECOVER gate: lifecycle_open (async_recover) returns once every
 * sandbox is known; the one still being re-attached is listed as
 * "recovering" and every call on it answers AGENT_UNAVAILABLE ("is
 * recovering") while the others work; it becomes running when the re-attach
 * ends, or leaves the table when the re-attach fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "agent_fixture.h"

#define WAIT_MS 10000

static int setup(void **state)
{
    agent_fx *fx = fx_new();
    fx->async_recover = true;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

/* The status List reports for id, or -1 when it is not listed. */
static int listed_status(agent_fx *fx, const char *id)
{
    lifecycle_info *infos = NULL;
    size_t n = 0;
    terr e;
    assert_int_equal(lifecycle_list(fx->lc, &infos, &n, &e), 0);
    int st = -1;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(infos[i].spec.sandbox_id, id)) st = (int)infos[i].status;
    free(infos);
    return st;
}

static bool wait_listed(agent_fx *fx, const char *id, int want)
{
    for (int i = 0; i < WAIT_MS; i++) {
        if (listed_status(fx, id) == want) return true;
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_slow_reattach_is_listed_recovering_and_answers_unavailable(void **state)
{
    agent_fx *fx = *state;
    terr e = {{0}};
    assert_int_equal(fx_create(fx, "sb-slow", 0), AGENT_OK);
    assert_int_equal(fx_create(fx, "sb-fast", 0), AGENT_OK);
    assert_int_equal(fx_create(fx, "sb-paused", 0), AGENT_OK);
    assert_int_equal(lifecycle_pause(fx->lc, "sb-paused", NULL, &e), AGENT_OK);
    test_driver_gate_close(fx->td, TD_RECOVER, "sb-slow");
    fx_restart(fx); /* returns while sb-slow is still being re-attached */

    assert_true(test_driver_wait_blocked(fx->td, TD_RECOVER, "sb-slow", 1, WAIT_MS));
    assert_int_equal(listed_status(fx, "sb-slow"), SANDBOX_RECOVERING);
    assert_int_equal(listed_status(fx, "sb-fast"), SANDBOX_RUNNING);
    assert_int_equal(listed_status(fx, "sb-paused"), SANDBOX_PAUSED);
    assert_int_equal(lifecycle_ping(fx->lc, "sb-slow", NULL, &e), AGENT_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "is recovering"));
    assert_int_equal(lifecycle_destroy(fx->lc, "sb-slow", &e), AGENT_UNAVAILABLE);
    assert_int_equal(lifecycle_pause(fx->lc, "sb-slow", NULL, &e), AGENT_UNAVAILABLE);
    assert_int_equal(lifecycle_ping(fx->lc, "sb-fast", NULL, &e), AGENT_OK);

    test_driver_gate_open(fx->td, TD_RECOVER, "sb-slow");
    assert_true(wait_listed(fx, "sb-slow", SANDBOX_RUNNING));
    assert_int_equal(lifecycle_ping(fx->lc, "sb-slow", NULL, &e), AGENT_OK);
    assert_int_equal(lifecycle_destroy(fx->lc, "sb-slow", &e), AGENT_OK);
}

static void test_failed_reattach_leaves_the_table(void **state)
{
    agent_fx *fx = *state;
    terr e = {{0}};
    assert_int_equal(fx_create(fx, "sb-lost", 0), AGENT_OK);
    test_driver_gate_close(fx->td, TD_RECOVER, "sb-lost");
    test_driver_fail_next(fx->td, TD_RECOVER, "sb-lost", "QEMU exited while being re-attached");
    fx_restart(fx);
    assert_true(test_driver_wait_blocked(fx->td, TD_RECOVER, "sb-lost", 1, WAIT_MS));
    assert_int_equal(listed_status(fx, "sb-lost"), SANDBOX_RECOVERING);
    test_driver_gate_open(fx->td, TD_RECOVER, "sb-lost");
    assert_true(wait_listed(fx, "sb-lost", -1));
    assert_int_equal(lifecycle_ping(fx->lc, "sb-lost", NULL, &e), AGENT_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_slow_reattach_is_listed_recovering_and_answers_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_reattach_leaves_the_table, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
