/* Unit tests for the reconciler's pure rules: the state table
 * (reconciler_decide) and when a VM on an agent is an orphan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reconciler.h"

static void decide_is(sb_status db, agent_view view, bool auto_paused, bool past_grace,
                      sb_status want)
{
    sb_status got = reconciler_decide(db, view, auto_paused, past_grace);
    if (got != want)
        fail_msg("db=%s view=%d auto=%d grace=%d: got %s want %s", sb_status_name(db), (int)view,
                 auto_paused, past_grace, sb_status_name(got), sb_status_name(want));
}

static void test_reconciler_decide(void **state)
{
    /* running rows */
    decide_is(SB_RUNNING, AGENT_VIEW_RUNNING, false, false, SB_RUNNING);
    decide_is(SB_RUNNING, AGENT_VIEW_RUNNING, true, false, SB_RUNNING);  /* stale notice */
    decide_is(SB_RUNNING, AGENT_VIEW_PAUSING, false, false, SB_RUNNING); /* reaper mid-pause */
    decide_is(SB_RUNNING, AGENT_VIEW_PAUSED, true, false, SB_PAUSED);
    decide_is(SB_RUNNING, AGENT_VIEW_PAUSED, false, false, SB_PAUSED);
    decide_is(SB_RUNNING, AGENT_VIEW_ABSENT, true, false, SB_PAUSED);
    decide_is(SB_RUNNING, AGENT_VIEW_ABSENT, false, false, SB_STOPPED);
    /* transitional rows wait for the grace period */
    decide_is(SB_PAUSING, AGENT_VIEW_ABSENT, false, false, SB_PAUSING);
    decide_is(SB_PAUSING, AGENT_VIEW_PAUSED, false, true, SB_PAUSED);
    decide_is(SB_PAUSING, AGENT_VIEW_RUNNING, false, true, SB_RUNNING);
    decide_is(SB_PAUSING, AGENT_VIEW_ABSENT, false, true, SB_STOPPED);
    decide_is(SB_PAUSING, AGENT_VIEW_ABSENT, true, true, SB_PAUSED);
    decide_is(SB_PAUSING, AGENT_VIEW_PAUSING, false, true, SB_PAUSING);
    decide_is(SB_RESUMING, AGENT_VIEW_RUNNING, false, false, SB_RESUMING);
    decide_is(SB_RESUMING, AGENT_VIEW_RUNNING, false, true, SB_RUNNING);
    decide_is(SB_RESUMING, AGENT_VIEW_PAUSED, false, true, SB_PAUSED);
    decide_is(SB_RESUMING, AGENT_VIEW_RESUMING, false, true, SB_RESUMING);
    /* A failed resume that lost the snapshot: the agent no longer holds it,
     * so the row is stopped, never paused (a stale notice changes nothing). */
    decide_is(SB_RESUMING, AGENT_VIEW_ABSENT, false, true, SB_STOPPED);
    decide_is(SB_RESUMING, AGENT_VIEW_ABSENT, true, true, SB_STOPPED);
    decide_is(SB_RESUMING, AGENT_VIEW_ABSENT, false, false, SB_RESUMING);
    decide_is(SB_PENDING, AGENT_VIEW_ABSENT, false, false, SB_PENDING);
    decide_is(SB_PENDING, AGENT_VIEW_ABSENT, false, true, SB_ERROR);
    decide_is(SB_PENDING, AGENT_VIEW_RUNNING, false, true, SB_RUNNING);
    /* The create landed and the reaper auto-paused it: paused, not stuck. */
    decide_is(SB_PENDING, AGENT_VIEW_PAUSED, false, true, SB_PAUSED);
    decide_is(SB_PENDING, AGENT_VIEW_PAUSED, true, true, SB_PAUSED);
    decide_is(SB_PENDING, AGENT_VIEW_ABSENT, true, true, SB_PAUSED);
    decide_is(SB_PENDING, AGENT_VIEW_PAUSED, true, false,
              SB_PENDING); /* the create may still answer */
    decide_is(SB_PENDING, AGENT_VIEW_PAUSING, false, true, SB_PENDING);
    /* paused rows: stopped once the agent's answers agree it is gone */
    decide_is(SB_PAUSED, AGENT_VIEW_ABSENT, false, false, SB_PAUSED);
    decide_is(SB_PAUSED, AGENT_VIEW_ABSENT, false, true, SB_STOPPED);
    decide_is(SB_PAUSED, AGENT_VIEW_ABSENT, true, true, SB_STOPPED);
    decide_is(SB_PAUSED, AGENT_VIEW_PAUSED, false, true, SB_PAUSED);
    decide_is(SB_PAUSED, AGENT_VIEW_PAUSED, true, true, SB_PAUSED);
    decide_is(SB_PAUSED, AGENT_VIEW_RUNNING, false, true, SB_PAUSED);
    decide_is(SB_PAUSED, AGENT_VIEW_RESUMING, false, true, SB_PAUSED);
    /* stopped and error rows never change */
    decide_is(SB_STOPPED, AGENT_VIEW_RUNNING, false, true, SB_STOPPED);
    decide_is(SB_ERROR, AGENT_VIEW_RUNNING, false, true, SB_ERROR);
    decide_is(SB_STOPPED, AGENT_VIEW_ABSENT, false, true, SB_STOPPED);
}

/* A moving row: untouched while its mover is alive (not past the stale
 * limit); past it, paused again when its host still holds the sandbox
 * paused, and left alone otherwise (the files may be elsewhere). */
static void test_moving_rule(void **state)
{
    (void)state;
    agent_view views[] = {AGENT_VIEW_ABSENT, AGENT_VIEW_RUNNING, AGENT_VIEW_PAUSING,
                          AGENT_VIEW_PAUSED, AGENT_VIEW_RESUMING};
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        assert_int_equal(reconciler_decide(SB_MOVING, views[i], false, false), SB_MOVING);
        assert_int_equal(reconciler_decide(SB_MOVING, views[i], true, true),
                         views[i] == AGENT_VIEW_PAUSED ? SB_PAUSED : SB_MOVING);
    }
}

static void test_orphan_rule(void **state)
{
    const double grace = 180;
    /* No row on this host: someone else's sandbox (another control plane's
     * database, another host id at the same address), never destroyed. */
    assert_false(reconciler_is_orphan(-1, 0, grace, false));
    assert_false(reconciler_is_orphan(-1, 0, grace, true));
    assert_false(reconciler_is_orphan(-1, 1e6, grace, true));
    /* stopped/error rows: after the grace, or on the second pass */
    assert_false(reconciler_is_orphan(SB_STOPPED, 5, grace, false));
    assert_true(reconciler_is_orphan(SB_STOPPED, 5, grace, true));
    assert_true(reconciler_is_orphan(SB_STOPPED, 181, grace, false));
    assert_false(reconciler_is_orphan(SB_ERROR, 179, grace, false));
    assert_true(reconciler_is_orphan(SB_ERROR, 180, grace, false));
    /* live rows are never orphans, however old */
    const sb_status live[] = {SB_PENDING, SB_RUNNING, SB_PAUSING, SB_PAUSED, SB_RESUMING};
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        assert_false(reconciler_is_orphan(live[i], 1e6, grace, true));
        assert_false(reconciler_is_orphan(live[i], 1e6, grace, false));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reconciler_decide),
        cmocka_unit_test(test_orphan_rule),
        cmocka_unit_test(test_moving_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
