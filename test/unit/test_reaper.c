/* The TTL reaper: expiry boundary, ping/exec vs reaper races, failure
 * fallback, parallel pauses, shutdown during a pause, dead VMs. Time is the
 * fixture's manual clock; pauses run on the real pause pool and are made
 * slow with the test driver's gates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "agent_fixture.h"
#include "autopause.h"

#define WAIT_MS 10000

static int setup(void **state)
{
    *state = fx_new();
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

static void test_expiry_exactly_at_boundary(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-a", 3), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 2999);
    reaper_tick(fx->reaper);
    assert_int_equal(reaper_pending(fx->reaper), 0);
    assert_int_equal(fx_status(fx, "sb-a"), SANDBOX_RUNNING);
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-a"), 0);

    agent_clock_advance_ms(&fx->clock, 1);
    reaper_tick(fx->reaper);
    assert_true(fx_wait_status(fx, "sb-a", SANDBOX_PAUSED, WAIT_MS));
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-a"), 1);
    assert_int_equal(test_driver_disk_state(fx->td, "sb-a"), 2);
    assert_true(journal_is_pending(fx->journal, "sb-a"));
}

static void test_timeout_zero_never_pauses(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-forever", 0), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 40LL * 24 * 3600 * 1000);
    reaper_tick(fx->reaper);
    assert_int_equal(reaper_pending(fx->reaper), 0);
    assert_int_equal(fx_status(fx, "sb-forever"), SANDBOX_RUNNING);
}

/* The hook runs between the scan (which saw the sandbox expired) and the
 * claim: a ping landing exactly there must win. */
static void ping_hook(void *ctx, const char *id)
{
    agent_fx *fx = ctx;
    terr e;
    assert_int_equal(lifecycle_ping(fx->lc, id, NULL, &e), AGENT_OK);
}

static void test_ping_at_last_moment_wins(void **state)
{
    agent_fx *fx = *state;
    fx->hook = ping_hook;
    fx->hook_ctx = fx;
    fx_restart(fx); /* the reaper picks up the hook */
    assert_int_equal(fx_create(fx, "sb-ping", 3), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 3000);
    int64_t before = agent_clock_now_ms(&fx->clock);
    reaper_tick(fx->reaper);
    assert_int_equal(reaper_pending(fx->reaper), 0);
    assert_int_equal(fx_status(fx, "sb-ping"), SANDBOX_RUNNING);
    assert_int_equal(fx_last_active(fx, "sb-ping"), before);
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-ping"), 0);
    assert_false(journal_is_pending(fx->journal, "sb-ping"));
}

/* Auto-pause fails (QMP timeout, disk full) while the VM lives: it stays
 * running, is not retried before the back-off, and a later tick pauses it. */
static void test_failed_pause_of_live_vm_keeps_running_then_pauses(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-fail", 2), AGENT_OK);
    test_driver_fail_next(fx->td, TD_PAUSE, "sb-fail", "migrate: disk full");
    agent_clock_advance_ms(&fx->clock, 2000);
    reaper_tick(fx->reaper);
    for (int i = 0; i < 1000 && (reaper_pending(fx->reaper) > 0 ||
                                 fx_status(fx, "sb-fail") != SANDBOX_RUNNING ||
                                 test_driver_calls(fx->td, TD_PAUSE, "sb-fail") < 1);
         i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-fail"), 1);
    assert_int_equal(fx_status(fx, "sb-fail"), SANDBOX_RUNNING);
    assert_int_equal(test_driver_calls(fx->td, TD_DESTROY, "sb-fail"), 0);
    assert_int_equal(test_driver_disk_state(fx->td, "sb-fail"), 1);

    /* Within the back-off: no new attempt. */
    agent_clock_advance_ms(&fx->clock, autopause_backoff_ms(1) - 1);
    reaper_tick(fx->reaper);
    assert_int_equal(reaper_pending(fx->reaper), 0);
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-fail"), 1);

    agent_clock_advance_ms(&fx->clock, 1);
    reaper_tick(fx->reaper);
    assert_true(fx_wait_status(fx, "sb-fail", SANDBOX_PAUSED, WAIT_MS));
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-fail"), 2);
    assert_int_equal(test_driver_disk_state(fx->td, "sb-fail"), 2);
    assert_true(journal_is_pending(fx->journal, "sb-fail"));
}

static void test_auto_pause_backoff_doubles_up_to_its_cap(void **state)
{
    (void)state;
    assert_int_equal(autopause_backoff_ms(1), AUTOPAUSE_RETRY_FIRST_MS);
    assert_int_equal(autopause_backoff_ms(2), 2 * AUTOPAUSE_RETRY_FIRST_MS);
    assert_int_equal(autopause_backoff_ms(3), 4 * AUTOPAUSE_RETRY_FIRST_MS);
    assert_int_equal(autopause_backoff_ms(1000), AUTOPAUSE_RETRY_MAX_MS);
}

static void test_slow_pause_does_not_delay_other(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-slow", 3), AGENT_OK);
    assert_int_equal(fx_create(fx, "sb-fast", 3), AGENT_OK);
    test_driver_gate_close(fx->td, TD_PAUSE, "sb-slow");
    agent_clock_advance_ms(&fx->clock, 3000);
    reaper_tick(fx->reaper);
    assert_true(test_driver_wait_blocked(fx->td, TD_PAUSE, "sb-slow", 1, WAIT_MS));
    assert_true(fx_wait_status(fx, "sb-fast", SANDBOX_PAUSED, WAIT_MS));
    /* the slow one is still parked in its pause */
    assert_int_equal(fx_status(fx, "sb-slow"), SANDBOX_PAUSING);
    assert_true(journal_is_pending(fx->journal, "sb-fast"));
    assert_false(journal_is_pending(fx->journal, "sb-slow"));
    test_driver_gate_open(fx->td, TD_PAUSE, "sb-slow");
    assert_true(fx_wait_status(fx, "sb-slow", SANDBOX_PAUSED, WAIT_MS));
    assert_true(journal_is_pending(fx->journal, "sb-slow"));
}

static void test_pause_pool_is_bounded(void **state)
{
    agent_fx *fx = *state; /* 2 pause workers */
    const char *ids[] = {"sb-p1", "sb-p2", "sb-p3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fx_create(fx, ids[i], 1), AGENT_OK);
        test_driver_gate_close(fx->td, TD_PAUSE, ids[i]);
    }
    agent_clock_advance_ms(&fx->clock, 1000);
    reaper_tick(fx->reaper);
    assert_true(test_driver_wait_blocked(fx->td, TD_PAUSE, "sb-p1", 1, WAIT_MS));
    assert_true(test_driver_wait_blocked(fx->td, TD_PAUSE, "sb-p2", 1, WAIT_MS));
    /* both workers are busy: the third is claimed (pausing) but queued */
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-p3"), 0);
    assert_int_equal(fx_status(fx, "sb-p3"), SANDBOX_PAUSING);
    assert_int_equal(reaper_pending(fx->reaper), 3);
    test_driver_gate_open(fx->td, TD_PAUSE, "sb-p1");
    assert_true(test_driver_wait_blocked(fx->td, TD_PAUSE, "sb-p3", 1, WAIT_MS));
    test_driver_gate_open(fx->td, TD_PAUSE, "sb-p2");
    test_driver_gate_open(fx->td, TD_PAUSE, "sb-p3");
    for (int i = 0; i < 3; i++) assert_true(fx_wait_status(fx, ids[i], SANDBOX_PAUSED, WAIT_MS));
}

static void test_never_paused_twice_and_ping_on_pausing(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "sb-once", 1), AGENT_OK);
    test_driver_gate_close(fx->td, TD_PAUSE, "sb-once");
    agent_clock_advance_ms(&fx->clock, 1000);
    reaper_tick(fx->reaper);
    assert_true(test_driver_wait_blocked(fx->td, TD_PAUSE, "sb-once", 1, WAIT_MS));
    int64_t last = fx_last_active(fx, "sb-once");
    for (int i = 0; i < 3; i++) {
        agent_clock_advance_ms(&fx->clock, 2000);
        reaper_tick(fx->reaper);
    }
    assert_int_equal(reaper_pending(fx->reaper), 1);
    /* ping on pausing: FAILED_PRECONDITION and nothing changes */
    assert_int_equal(lifecycle_ping(fx->lc, "sb-once", NULL, &e), AGENT_FAILED_PRECONDITION);
    assert_non_null(strstr(e.msg, "pausing"));
    assert_int_equal(fx_last_active(fx, "sb-once"), last);
    assert_int_equal(fx_status(fx, "sb-once"), SANDBOX_PAUSING);
    test_driver_gate_open(fx->td, TD_PAUSE, "sb-once");
    assert_true(fx_wait_status(fx, "sb-once", SANDBOX_PAUSED, WAIT_MS));
    reaper_tick(fx->reaper);
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-once"), 1);
    /* ping on paused: same */
    assert_int_equal(lifecycle_ping(fx->lc, "sb-once", NULL, &e), AGENT_FAILED_PRECONDITION);
    assert_int_equal(fx_last_active(fx, "sb-once"), last);
    assert_int_equal(fx_status(fx, "sb-once"), SANDBOX_PAUSED);
}

typedef struct exec_arg {
    agent_fx *fx;
    agent_code code;
} exec_arg;

static void *exec_thread(void *p)
{
    exec_arg *a = p;
    runtime_exec_request req = {.cmd = "sleep 100"};
    runtime_exec_result res;
    terr e;
    a->code = lifecycle_exec(a->fx->lc, "sb-exec", &req, &res, &e);
    if (a->code == AGENT_OK) runtime_exec_result_free(&res);
    return NULL;
}

static void test_exec_in_flight_keeps_alive(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-exec", 3), AGENT_OK);
    test_driver_gate_close(fx->td, TD_EXEC, "sb-exec");
    exec_arg a = {.fx = fx};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, exec_thread, &a), 0);
    assert_true(test_driver_wait_blocked(fx->td, TD_EXEC, "sb-exec", 1, WAIT_MS));
    agent_clock_advance_ms(&fx->clock, 60000); /* far past the TTL */
    reaper_tick(fx->reaper);
    assert_int_equal(reaper_pending(fx->reaper), 0);
    assert_int_equal(fx_status(fx, "sb-exec"), SANDBOX_RUNNING);
    test_driver_gate_open(fx->td, TD_EXEC, "sb-exec");
    pthread_join(t, NULL);
    assert_int_equal(a.code, AGENT_OK);
    /* the end of the exec is activity: the TTL counts from there */
    int64_t end = agent_clock_now_ms(&fx->clock);
    assert_int_equal(fx_last_active(fx, "sb-exec"), end);
    agent_clock_advance_ms(&fx->clock, 2999);
    reaper_tick(fx->reaper);
    assert_int_equal(fx_status(fx, "sb-exec"), SANDBOX_RUNNING);
    agent_clock_advance_ms(&fx->clock, 1);
    reaper_tick(fx->reaper);
    assert_true(fx_wait_status(fx, "sb-exec", SANDBOX_PAUSED, WAIT_MS));
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-exec"), 1);
}

typedef struct stop_arg {
    agent_fx *fx;
    atomic_bool entered, done;
    int rc;
} stop_arg;

static void *stop_thread(void *p)
{
    stop_arg *a = p;
    terr e;
    atomic_store(&a->entered, true);
    a->rc = reaper_stop(a->fx->reaper, 60000, &e);
    atomic_store(&a->done, true);
    return NULL;
}

static void test_shutdown_completes_running_pause(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-shut", 3), AGENT_OK);
    test_driver_gate_close(fx->td, TD_PAUSE, "sb-shut");
    agent_clock_advance_ms(&fx->clock, 3000);
    reaper_tick(fx->reaper);
    assert_true(test_driver_wait_blocked(fx->td, TD_PAUSE, "sb-shut", 1, WAIT_MS));
    stop_arg a = {.fx = fx};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stop_thread, &a), 0);
    while (!atomic_load(&a.entered)) sched_yield();
    /* the pause is parked: shutdown cannot have finished */
    assert_false(atomic_load(&a.done));
    test_driver_gate_open(fx->td, TD_PAUSE, "sb-shut");
    pthread_join(t, NULL);
    fx->reaper = NULL; /* freed by reaper_stop */
    assert_int_equal(a.rc, 0);
    /* no polling: stop returned only after the pause completed */
    assert_int_equal(fx_status(fx, "sb-shut"), SANDBOX_PAUSED);
    assert_true(journal_is_pending(fx->journal, "sb-shut"));
    assert_int_equal(test_driver_disk_state(fx->td, "sb-shut"), 2);
    /* and the notice is durable across the restart that follows */
    fx_restart(fx);
    assert_true(journal_is_pending(fx->journal, "sb-shut"));
    assert_int_equal(fx_status(fx, "sb-shut"), SANDBOX_PAUSED);
}

static void test_dead_vm_is_noticed_and_removed(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-dead", 0), AGENT_OK);
    assert_int_equal(fx_create(fx, "sb-alive", 0), AGENT_OK);
    test_driver_kill(fx->td, "sb-dead");
    reaper_tick(fx->reaper);
    assert_true(fx_wait_status(fx, "sb-dead", -1, WAIT_MS));
    assert_int_equal(test_driver_disk_state(fx->td, "sb-dead"), 0);
    assert_int_equal(fx_status(fx, "sb-alive"), SANDBOX_RUNNING);
    assert_false(journal_is_pending(fx->journal, "sb-dead"));
}

/* Runs between the dead-VM scan and the claim: the dead sandbox is
 * destroyed and a new one created under the same id, with a live VM. */
static void recreate_hook(void *ctx, const char *id)
{
    agent_fx *fx = ctx;
    terr e;
    assert_int_equal(lifecycle_destroy(fx->lc, id, &e), AGENT_OK);
    assert_int_equal(fx_create(fx, id, 0), AGENT_OK);
}

static bool pool_idle(agent_fx *fx)
{
    for (int waited = 0; waited <= WAIT_MS; waited++) {
        if (reaper_pending(fx->reaper) == 0) return true;
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_dead_claim_spares_a_recreated_sandbox(void **state)
{
    agent_fx *fx = *state;
    terr e;
    fx->hook_dead = recreate_hook;
    fx->hook_ctx = fx;
    fx_restart(fx); /* the reaper picks up the hook */
    assert_int_equal(fx_create(fx, "sb", 0), AGENT_OK);
    test_driver_kill(fx->td, "sb");
    reaper_tick(fx->reaper);
    assert_true(pool_idle(fx));
    /* only the hook's destroy ran: the new VM was not taken for the dead one */
    assert_int_equal(test_driver_calls(fx->td, TD_DESTROY, "sb"), 1);
    assert_int_equal(fx_status(fx, "sb"), SANDBOX_RUNNING);
    assert_int_equal(test_driver_disk_state(fx->td, "sb"), 1);
    runtime_exec_request req = {.cmd = "true"};
    runtime_exec_result res;
    assert_int_equal(lifecycle_exec(fx->lc, "sb", &req, &res, &e), AGENT_OK);
    runtime_exec_result_free(&res);
}

static void test_vm_died_before_auto_pause_destroys(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-gone", 1), AGENT_OK);
    test_driver_gate_close(fx->td, TD_PAUSE, "sb-gone");
    agent_clock_advance_ms(&fx->clock, 1000);
    reaper_tick(fx->reaper);
    assert_true(test_driver_wait_blocked(fx->td, TD_PAUSE, "sb-gone", 1, WAIT_MS));
    test_driver_kill(fx->td, "sb-gone"); /* dies mid-pause */
    test_driver_gate_open(fx->td, TD_PAUSE, "sb-gone");
    assert_true(fx_wait_status(fx, "sb-gone", -1, WAIT_MS));
    assert_int_equal(test_driver_disk_state(fx->td, "sb-gone"), 0);
    assert_false(journal_is_pending(fx->journal, "sb-gone"));
}

static void test_reaper_thread_ticks(void **state)
{
    agent_fx *fx = *state;
    /* Short real interval, manual clock: the thread must call tick on its own. */
    terr e;
    assert_int_equal(reaper_stop(fx->reaper, 1000, &e), 0);
    reaper_config cfg = {.lc = fx->lc, .interval_ms = 5, .pause_workers = 1};
    assert_int_equal(reaper_new(&cfg, &fx->reaper, &e), 0);
    assert_int_equal(reaper_start(fx->reaper, &e), 0);
    assert_int_equal(fx_create(fx, "sb-thr", 1), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 1000);
    assert_true(fx_wait_status(fx, "sb-thr", SANDBOX_PAUSED, WAIT_MS));
}

typedef struct race_arg {
    agent_fx *fx;
    atomic_bool stop;
    int bad; /* codes other than OK / FAILED_PRECONDITION */
} race_arg;

static void *pinger(void *p)
{
    race_arg *a = p;
    terr e;
    for (unsigned n = 0; !atomic_load(&a->stop); n++) {
        agent_code c = lifecycle_ping(a->fx->lc, "sb-race", NULL, &e);
        /* Execs only now and then: one in flight holds the reaper off. */
        agent_code x = c;
        if (n % 16 == 0) {
            runtime_exec_request req = {.cmd = "true"};
            runtime_exec_result res;
            x = lifecycle_exec(a->fx->lc, "sb-race", &req, &res, &e);
            if (x == AGENT_OK) runtime_exec_result_free(&res);
        }
        if ((c != AGENT_OK && c != AGENT_FAILED_PRECONDITION) ||
            (x != AGENT_OK && x != AGENT_FAILED_PRECONDITION))
            a->bad++;
        if (c == AGENT_FAILED_PRECONDITION && x == AGENT_FAILED_PRECONDITION) break; /* paused */
    }
    return NULL;
}

static void test_racing_activity_and_ticks_stay_consistent(void **state)
{
    agent_fx *fx = *state;
    assert_int_equal(fx_create(fx, "sb-race", 1), AGENT_OK);
    race_arg a = {.fx = fx};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) assert_int_equal(pthread_create(&t[i], NULL, pinger, &a), 0);
    /* Every tick finds the sandbox expired unless a ping/exec just landed:
     * either may win any given round, but never both. */
    for (int i = 0; i < 300 && fx_status(fx, "sb-race") == SANDBOX_RUNNING; i++) {
        agent_clock_advance_ms(&fx->clock, 1000);
        reaper_tick(fx->reaper);
    }
    atomic_store(&a.stop, true);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    if (fx_status(fx, "sb-race") == SANDBOX_RUNNING) { /* the pingers won every round */
        agent_clock_advance_ms(&fx->clock, 1000);
        reaper_tick(fx->reaper);
    }
    assert_true(fx_wait_status(fx, "sb-race", SANDBOX_PAUSED, WAIT_MS));
    assert_int_equal(a.bad, 0);
    assert_int_equal(test_driver_calls(fx->td, TD_PAUSE, "sb-race"), 1);
    assert_true(journal_is_pending(fx->journal, "sb-race"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expiry_exactly_at_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_zero_never_pauses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ping_at_last_moment_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_pause_of_live_vm_keeps_running_then_pauses,
                                        setup, teardown),
        cmocka_unit_test(test_auto_pause_backoff_doubles_up_to_its_cap),
        cmocka_unit_test_setup_teardown(test_slow_pause_does_not_delay_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_pool_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_paused_twice_and_ping_on_pausing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_exec_in_flight_keeps_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_completes_running_pause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_vm_is_noticed_and_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_claim_spares_a_recreated_sandbox, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_vm_died_before_auto_pause_destroys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reaper_thread_ticks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racing_activity_and_ticks_stay_consistent, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
