/* Lifecycle semantics without gRPC: validation, state rules and their
 * error codes, activity, pause/resume/destroy failures, concurrency with
 * the lifecycle lock, recovery after a restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_fixture.h"
#include "torpor_limits.h"

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

static runtime_spec spec_of(const char *id, const char *tmpl, int vcpus, int mem, int timeout)
{
    runtime_spec s = {.vcpus = vcpus, .memory_mb = mem, .timeout_sec = timeout};
    snprintf(s.sandbox_id, sizeof s.sandbox_id, "%s", id);
    snprintf(s.template_name, sizeof s.template_name, "%s", tmpl);
    return s;
}

static agent_code create(agent_fx *fx, runtime_spec s, terr *e)
{
    return lifecycle_create(fx->lc, &s, NULL, e);
}

static void test_create_validation(void **state)
{
    agent_fx *fx = *state;
    terr e;
    const char *bad_ids[] = {"", "../x", ".hidden", "-x", "a/b", "a b", "sb\n", "_x", "ü"};
    /* 64 characters do not fit a runtime_spec; the checker refuses them */
    assert_false(limits_sandbox_id_valid(
        "x123456789012345678901234567890123456789012345678901234567890123"));
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        assert_int_equal(create(fx, spec_of(bad_ids[i], "minimal", 1, 128, 0), &e),
                         AGENT_INVALID_ARGUMENT);
    assert_int_equal(create(fx, spec_of("ok", "../t", 1, 128, 0), &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(create(fx, spec_of("ok", "minimal", 0, 128, 0), &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(create(fx, spec_of("ok", "minimal", 65, 128, 0), &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(create(fx, spec_of("ok", "minimal", 1, 63, 0), &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(create(fx, spec_of("ok", "minimal", 1, 65537, 0), &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(create(fx, spec_of("ok", "minimal", 1, 128, -1), &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(create(fx, spec_of("ok", "minimal", 1, 128, 2592001), &e),
                     AGENT_INVALID_ARGUMENT);
    assert_int_equal(test_driver_calls(fx->td, TD_CREATE, "ok"), 0);
    /* the limits themselves are fine */
    const char *id63 = "x12345678901234567890123456789012345678901234567890123456789012";
    assert_int_equal(create(fx, spec_of(id63, "minimal", 64, 65536, 2592000), &e), AGENT_OK);
    assert_int_equal(create(fx, spec_of("A.b_c-1", "minimal", 1, 64, 0), &e), AGENT_OK);
}

/* The lifecycle itself (not only the RPC layer) holds the one template-name
 * rule: lowercase only, so a recovered or directly created spec with
 * "Minimal" is refused like on the control plane. */
static void test_create_refuses_uppercase_template(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(create(fx, spec_of("sb-up", "Minimal", 1, 128, 0), &e),
                     AGENT_INVALID_ARGUMENT);
    assert_non_null(strstr(e.msg, "invalid template"));
    assert_int_equal(test_driver_calls(fx->td, TD_CREATE, "sb-up"), 0);
    assert_int_equal(create(fx, spec_of("sb-up", "minimal", 1, 128, 0), &e), AGENT_OK);
}

static void test_create_outcomes(void **state)
{
    agent_fx *fx = *state;
    terr e;
    lifecycle_info info;
    runtime_spec s = spec_of("sb-1", "minimal", 2, 256, 30);
    assert_int_equal(lifecycle_create(fx->lc, &s, &info, &e), AGENT_OK);
    assert_int_equal(info.status, SANDBOX_RUNNING);
    assert_int_equal(info.last_active_ms, FX_T0_MS);
    assert_int_equal(info.spec.created_at_unix, FX_T0_MS / 1000);
    assert_int_equal(info.spec.vcpus, 2);
    assert_int_equal(create(fx, s, &e), AGENT_ALREADY_EXISTS);
    assert_int_equal(create(fx, spec_of("sb-2", "nosuch", 1, 128, 0), &e), AGENT_INVALID_ARGUMENT);
    assert_non_null(strstr(e.msg, "unknown template"));
    assert_int_equal(fx_status(fx, "sb-2"), -1);
    test_driver_fail_next(fx->td, TD_CREATE, "sb-3", "qemu exited with status 1");
    assert_int_equal(create(fx, spec_of("sb-3", "minimal", 1, 128, 0), &e), AGENT_INTERNAL);
    assert_non_null(strstr(e.msg, "qemu exited"));
    assert_int_equal(fx_status(fx, "sb-3"), -1);
    /* a failed create leaves the id free */
    assert_int_equal(create(fx, spec_of("sb-3", "minimal", 1, 128, 0), &e), AGENT_OK);
}

static void test_pause_resume_rules(void **state)
{
    agent_fx *fx = *state;
    terr e;
    lifecycle_info info;
    assert_int_equal(lifecycle_pause(fx->lc, "nope", NULL, &e), AGENT_NOT_FOUND);
    assert_int_equal(lifecycle_resume(fx->lc, "nope", 0, NULL, &e), AGENT_NOT_FOUND);
    assert_int_equal(fx_create(fx, "sb", 5), AGENT_OK);
    assert_int_equal(lifecycle_resume(fx->lc, "sb", 0, NULL, &e), AGENT_FAILED_PRECONDITION);
    assert_int_equal(lifecycle_pause(fx->lc, "sb", &info, &e), AGENT_OK);
    assert_int_equal(info.status, SANDBOX_PAUSED);
    assert_int_equal(test_driver_disk_state(fx->td, "sb"), 2);
    assert_false(journal_is_pending(fx->journal, "sb")); /* a user pause is no notice */
    assert_int_equal(lifecycle_pause(fx->lc, "sb", NULL, &e), AGENT_FAILED_PRECONDITION);
    assert_int_equal(lifecycle_resume(fx->lc, "sb", -1, NULL, &e), AGENT_INVALID_ARGUMENT);

    agent_clock_advance_ms(&fx->clock, 60000);
    test_driver_fail_next(fx->td, TD_RESUME, "sb", "migrate-incoming failed");
    assert_int_equal(lifecycle_resume(fx->lc, "sb", 7, NULL, &e), AGENT_INTERNAL);
    assert_int_equal(fx_status(fx, "sb"), SANDBOX_PAUSED);
    assert_int_equal(lifecycle_resume(fx->lc, "sb", 7, &info, &e), AGENT_OK);
    assert_int_equal(info.status, SANDBOX_RUNNING);
    assert_int_equal(info.spec.timeout_sec, 7);
    assert_int_equal(info.last_active_ms, agent_clock_now_ms(&fx->clock));
}

/* A resume that failed after the driver consumed the snapshot must not
 * leave a "paused" sandbox that every later resume fails on: it is
 * destroyed, and nothing (not even a stale notice) reports it again. */
static void test_resume_that_loses_the_snapshot_destroys(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "sb", 1), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 1000);
    reaper_tick(fx->reaper); /* auto-pause: a journal notice is pending */
    assert_true(fx_wait_status(fx, "sb", SANDBOX_PAUSED, WAIT_MS));
    assert_true(journal_is_pending(fx->journal, "sb"));

    test_driver_lose_snapshot_next(fx->td, "sb", "guest did not connect within 20000 ms");
    assert_int_equal(lifecycle_resume(fx->lc, "sb", 5, NULL, &e), AGENT_INTERNAL);
    assert_non_null(strstr(e.msg, "resume failed and the snapshot was lost; sandbox destroyed"));
    assert_non_null(strstr(e.msg, "guest did not connect"));
    assert_int_equal(fx_status(fx, "sb"), -1);
    assert_int_equal(test_driver_calls(fx->td, TD_DESTROY, "sb"), 1);
    assert_int_equal(test_driver_disk_state(fx->td, "sb"), 0);
    assert_false(journal_is_pending(fx->journal, "sb"));
    lifecycle_info *infos;
    size_t n;
    assert_int_equal(lifecycle_list(fx->lc, &infos, &n, &e), 0);
    free(infos);
    assert_int_equal(n, 0);
    assert_int_equal(lifecycle_resume(fx->lc, "sb", 5, NULL, &e), AGENT_NOT_FOUND);
    /* the id is free again */
    assert_int_equal(fx_create(fx, "sb", 0), AGENT_OK);
}

/* Even when the cleanup fails the record goes: nothing resumable is left,
 * and the driver's recover() removes the debris on the next start. */
static void test_resume_lost_with_failed_cleanup_still_not_paused(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "sb", 0), AGENT_OK);
    assert_int_equal(lifecycle_pause(fx->lc, "sb", NULL, &e), AGENT_OK);
    test_driver_lose_snapshot_next(fx->td, "sb", "cont failed");
    test_driver_fail_next(fx->td, TD_DESTROY, "sb", "rm: device busy");
    assert_int_equal(lifecycle_resume(fx->lc, "sb", 0, NULL, &e), AGENT_INTERNAL);
    assert_non_null(strstr(e.msg, "snapshot was lost"));
    assert_int_equal(fx_status(fx, "sb"), -1);
    assert_int_equal(test_driver_disk_state(fx->td, "sb"), 3);
    fx_restart(fx);
    assert_int_equal(fx_status(fx, "sb"), -1);
    assert_int_equal(test_driver_disk_state(fx->td, "sb"), 0);
}

static void test_pause_failure_paths(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "alive", 0), AGENT_OK);
    test_driver_fail_next(fx->td, TD_PAUSE, "alive", "migrate: no space");
    assert_int_equal(lifecycle_pause(fx->lc, "alive", NULL, &e), AGENT_INTERNAL);
    assert_non_null(strstr(e.msg, "no space"));
    assert_int_equal(fx_status(fx, "alive"), SANDBOX_RUNNING);
    assert_int_equal(lifecycle_ping(fx->lc, "alive", NULL, &e), AGENT_OK);

    assert_int_equal(fx_create(fx, "dead", 0), AGENT_OK);
    test_driver_kill(fx->td, "dead");
    assert_int_equal(lifecycle_pause(fx->lc, "dead", NULL, &e), AGENT_INTERNAL);
    assert_non_null(strstr(e.msg, "vm died during pause; sandbox destroyed"));
    assert_int_equal(fx_status(fx, "dead"), -1);
    assert_int_equal(test_driver_disk_state(fx->td, "dead"), 0);
}

static void test_destroy(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(lifecycle_destroy(fx->lc, "nope", &e), AGENT_NOT_FOUND);
    assert_int_equal(lifecycle_destroy(fx->lc, "../x", &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(fx_create(fx, "run", 0), AGENT_OK);
    assert_int_equal(fx_create(fx, "psd", 0), AGENT_OK);
    assert_int_equal(lifecycle_pause(fx->lc, "psd", NULL, &e), AGENT_OK);
    test_driver_fail_next(fx->td, TD_DESTROY, "run", "rm: permission denied");
    assert_int_equal(lifecycle_destroy(fx->lc, "run", &e), AGENT_INTERNAL);
    assert_int_equal(fx_status(fx, "run"), SANDBOX_RUNNING);
    assert_int_equal(lifecycle_destroy(fx->lc, "run", &e), AGENT_OK);
    assert_int_equal(lifecycle_destroy(fx->lc, "psd", &e), AGENT_OK);
    assert_int_equal(fx_status(fx, "run"), -1);
    assert_int_equal(fx_status(fx, "psd"), -1);
    assert_int_equal(test_driver_disk_state(fx->td, "run"), 0);
    assert_int_equal(test_driver_disk_state(fx->td, "psd"), 0);
    assert_int_equal(lifecycle_destroy(fx->lc, "run", &e), AGENT_NOT_FOUND);
}

typedef struct op_arg {
    agent_fx *fx;
    const char *id;
    agent_code code;
} op_arg;

static void *pause_thread(void *p)
{
    op_arg *a = p;
    terr e;
    a->code = lifecycle_pause(a->fx->lc, a->id, NULL, &e);
    return NULL;
}

static void *destroy_thread(void *p)
{
    op_arg *a = p;
    terr e;
    a->code = lifecycle_destroy(a->fx->lc, a->id, &e);
    return NULL;
}

static void test_destroy_waits_for_pause_and_ping_does_not(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "sb", 0), AGENT_OK);
    test_driver_gate_close(fx->td, TD_PAUSE, "sb");
    op_arg pa = {.fx = fx, .id = "sb"}, da = {.fx = fx, .id = "sb"};
    pthread_t pt, dt;
    assert_int_equal(pthread_create(&pt, NULL, pause_thread, &pa), 0);
    assert_true(test_driver_wait_blocked(fx->td, TD_PAUSE, "sb", 1, WAIT_MS));
    /* a slow pause does not block ping, list, get: they answer at once */
    assert_int_equal(lifecycle_ping(fx->lc, "sb", NULL, &e), AGENT_FAILED_PRECONDITION);
    lifecycle_info *infos;
    size_t n;
    assert_int_equal(lifecycle_list(fx->lc, &infos, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(infos[0].status, SANDBOX_PAUSING);
    free(infos);
    assert_int_equal(pthread_create(&dt, NULL, destroy_thread, &da), 0);
    /* destroy queues behind the lifecycle lock: the driver has not been called */
    assert_int_equal(test_driver_calls(fx->td, TD_DESTROY, "sb"), 0);
    test_driver_gate_open(fx->td, TD_PAUSE, "sb");
    pthread_join(pt, NULL);
    pthread_join(dt, NULL);
    assert_int_equal(pa.code, AGENT_OK);
    assert_int_equal(da.code, AGENT_OK);
    assert_int_equal(test_driver_calls(fx->td, TD_DESTROY, "sb"), 1);
    assert_int_equal(fx_status(fx, "sb"), -1);
}

static void test_ping_and_set_timeout(void **state)
{
    agent_fx *fx = *state;
    terr e;
    int64_t last;
    lifecycle_info info;
    assert_int_equal(lifecycle_ping(fx->lc, "nope", NULL, &e), AGENT_NOT_FOUND);
    assert_int_equal(lifecycle_ping(fx->lc, "../x", NULL, &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(fx_create(fx, "sb", 5), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 4000);
    assert_int_equal(lifecycle_ping(fx->lc, "sb", &last, &e), AGENT_OK);
    assert_int_equal(last, FX_T0_MS + 4000);
    assert_int_equal(fx_last_active(fx, "sb"), FX_T0_MS + 4000);

    agent_clock_advance_ms(&fx->clock, 1000);
    assert_int_equal(lifecycle_set_timeout(fx->lc, "sb", 9, &info, &e), AGENT_OK);
    assert_int_equal(info.spec.timeout_sec, 9);
    assert_int_equal(info.last_active_ms, FX_T0_MS + 5000); /* activity when running */
    assert_int_equal(lifecycle_set_timeout(fx->lc, "sb", 2592001, NULL, &e),
                     AGENT_INVALID_ARGUMENT);
    assert_int_equal(lifecycle_set_timeout(fx->lc, "nope", 1, NULL, &e), AGENT_NOT_FOUND);

    assert_int_equal(lifecycle_pause(fx->lc, "sb", NULL, &e), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 1000);
    assert_int_equal(lifecycle_set_timeout(fx->lc, "sb", 11, &info, &e), AGENT_OK);
    assert_int_equal(info.spec.timeout_sec, 11);
    assert_int_equal(info.last_active_ms, FX_T0_MS + 5000); /* paused: no activity */
    assert_int_equal(lifecycle_ping(fx->lc, "sb", NULL, &e), AGENT_FAILED_PRECONDITION);
    assert_int_equal(fx_last_active(fx, "sb"), FX_T0_MS + 5000);
}

typedef struct exec_arg {
    agent_fx *fx;
    agent_code code;
    runtime_exec_result res;
} exec_arg;

static void *exec_thread(void *p)
{
    exec_arg *a = p;
    runtime_exec_request req = {.cmd = "echo hi"};
    terr e;
    a->code = lifecycle_exec(a->fx->lc, "sb", &req, &a->res, &e);
    return NULL;
}

static void test_exec_activity_and_rules(void **state)
{
    agent_fx *fx = *state;
    terr e;
    runtime_exec_result res;
    runtime_exec_request req = {.cmd = "echo hi"};
    assert_int_equal(lifecycle_exec(fx->lc, "nope", &req, &res, &e), AGENT_NOT_FOUND);
    assert_int_equal(fx_create(fx, "sb", 5), AGENT_OK);
    runtime_exec_request empty = {.cmd = ""};
    assert_int_equal(lifecycle_exec(fx->lc, "sb", &empty, &res, &e), AGENT_INVALID_ARGUMENT);
    runtime_exec_request too_long = {.cmd = "x", .timeout_sec = 3601};
    assert_int_equal(lifecycle_exec(fx->lc, "sb", &too_long, &res, &e), AGENT_INVALID_ARGUMENT);
    runtime_exec_request neg = {.cmd = "x", .timeout_sec = -1};
    assert_int_equal(lifecycle_exec(fx->lc, "sb", &neg, &res, &e), AGENT_INVALID_ARGUMENT);

    /* start and end both count as activity */
    test_driver_gate_close(fx->td, TD_EXEC, "sb");
    exec_arg a = {.fx = fx};
    pthread_t t;
    agent_clock_advance_ms(&fx->clock, 1000);
    assert_int_equal(pthread_create(&t, NULL, exec_thread, &a), 0);
    assert_true(test_driver_wait_blocked(fx->td, TD_EXEC, "sb", 1, WAIT_MS));
    assert_int_equal(fx_last_active(fx, "sb"), FX_T0_MS + 1000);
    agent_clock_advance_ms(&fx->clock, 2000);
    test_driver_gate_open(fx->td, TD_EXEC, "sb");
    pthread_join(t, NULL);
    assert_int_equal(a.code, AGENT_OK);
    assert_int_equal(a.res.out_len, 8);
    assert_memory_equal(a.res.out, "echo hi\n", 8);
    runtime_exec_result_free(&a.res);
    assert_int_equal(fx_last_active(fx, "sb"), FX_T0_MS + 3000);

    /* an exec cut short by a pause answers FAILED_PRECONDITION */
    test_driver_gate_close(fx->td, TD_EXEC, "sb");
    exec_arg b = {.fx = fx};
    assert_int_equal(pthread_create(&t, NULL, exec_thread, &b), 0);
    assert_true(test_driver_wait_blocked(fx->td, TD_EXEC, "sb", 1, WAIT_MS));
    assert_int_equal(lifecycle_pause(fx->lc, "sb", NULL, &e), AGENT_OK);
    test_driver_gate_open(fx->td, TD_EXEC, "sb");
    pthread_join(t, NULL);
    assert_int_equal(b.code, AGENT_FAILED_PRECONDITION);
    assert_int_equal(lifecycle_exec(fx->lc, "sb", &req, &res, &e), AGENT_FAILED_PRECONDITION);
}

static void test_files(void **state)
{
    agent_fx *fx = *state;
    terr e;
    uint8_t *data;
    size_t len;
    assert_int_equal(fx_create(fx, "sb", 0), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 500);
    const uint8_t bin[4] = {0, 1, 0xff, '\n'};
    assert_int_equal(lifecycle_write_file(fx->lc, "sb", "/tmp/f", bin, 4, 0, &e), AGENT_OK);
    assert_int_equal(fx_last_active(fx, "sb"), FX_T0_MS + 500);
    assert_int_equal(lifecycle_write_file(fx->lc, "sb", "", bin, 4, 0, &e), AGENT_INVALID_ARGUMENT);
    assert_int_equal(lifecycle_write_file(fx->lc, "sb", "/x", bin, 4, 010000, &e),
                     AGENT_INVALID_ARGUMENT);
    assert_int_equal(lifecycle_read_file(fx->lc, "sb", "/nope", &data, &len, &e), AGENT_INTERNAL);
    assert_int_equal(lifecycle_pause(fx->lc, "sb", NULL, &e), AGENT_OK);
    assert_int_equal(lifecycle_read_file(fx->lc, "sb", "/tmp/f", &data, &len, &e),
                     AGENT_FAILED_PRECONDITION);
    assert_int_equal(lifecycle_write_file(fx->lc, "sb", "/tmp/f", bin, 4, 0, &e),
                     AGENT_FAILED_PRECONDITION);
    assert_int_equal(lifecycle_resume(fx->lc, "sb", 0, NULL, &e), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 500);
    assert_int_equal(lifecycle_read_file(fx->lc, "sb", "/tmp/f", &data, &len, &e), AGENT_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(data, bin, 4);
    free(data);
    assert_int_equal(fx_last_active(fx, "sb"), FX_T0_MS + 1000);
}

static void *create_thread(void *p)
{
    op_arg *a = p;
    terr e;
    runtime_spec s = spec_of(a->id, "minimal", 1, 128, 0);
    a->code = lifecycle_create(a->fx->lc, &s, NULL, &e);
    return NULL;
}

static void test_list_hides_creating_and_shows_paused(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "run", 0), AGENT_OK);
    assert_int_equal(fx_create(fx, "psd", 0), AGENT_OK);
    assert_int_equal(lifecycle_pause(fx->lc, "psd", NULL, &e), AGENT_OK);
    test_driver_gate_close(fx->td, TD_CREATE, "new");
    op_arg a = {.fx = fx, .id = "new"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, create_thread, &a), 0);
    assert_true(test_driver_wait_blocked(fx->td, TD_CREATE, "new", 1, WAIT_MS));
    assert_int_equal(fx_create(fx, "new", 0), AGENT_ALREADY_EXISTS);
    assert_int_equal(lifecycle_ping(fx->lc, "new", NULL, &e), AGENT_FAILED_PRECONDITION);
    lifecycle_info *infos;
    size_t n;
    assert_int_equal(lifecycle_list(fx->lc, &infos, &n, &e), 0);
    assert_int_equal(n, 2);
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(infos[i].spec.sandbox_id, "run") == 0 && infos[i].status == SANDBOX_RUNNING)
            seen |= 1;
        if (strcmp(infos[i].spec.sandbox_id, "psd") == 0 && infos[i].status == SANDBOX_PAUSED)
            seen |= 2;
    }
    free(infos);
    assert_int_equal(seen, 3);
    test_driver_gate_open(fx->td, TD_CREATE, "new");
    pthread_join(t, NULL);
    assert_int_equal(a.code, AGENT_OK);
}

static void test_restart_recovers_running_and_paused(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "run", 4), AGENT_OK);
    assert_int_equal(fx_create(fx, "psd", 4), AGENT_OK);
    assert_int_equal(lifecycle_pause(fx->lc, "psd", NULL, &e), AGENT_OK);
    assert_int_equal(fx_create(fx, "died", 4), AGENT_OK);
    test_driver_kill(fx->td, "died"); /* debris while the agent was down */
    agent_clock_advance_ms(&fx->clock, 10000);
    fx_restart(fx);
    assert_int_equal(fx_status(fx, "run"), SANDBOX_RUNNING);
    assert_int_equal(fx_status(fx, "psd"), SANDBOX_PAUSED);
    assert_int_equal(fx_status(fx, "died"), -1);
    /* the TTL restarts with the agent, and the re-attached VM works */
    assert_int_equal(fx_last_active(fx, "run"), FX_T0_MS + 10000);
    runtime_exec_request req = {.cmd = "true"};
    runtime_exec_result res;
    assert_int_equal(lifecycle_exec(fx->lc, "run", &req, &res, &e), AGENT_OK);
    runtime_exec_result_free(&res);
    assert_int_equal(lifecycle_resume(fx->lc, "psd", 4, NULL, &e), AGENT_OK);
}

/* Recovered metadata is validated like a create request: a spec create
 * would refuse is removed, not served (timeout_sec near 2^31 used to wrap
 * to a negative TTL). */
static void test_restart_rejects_out_of_range_recovered_spec(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "good", 0), AGENT_OK);
    assert_int_equal(fx_create(fx, "good-psd", 0), AGENT_OK);
    assert_int_equal(lifecycle_pause(fx->lc, "good-psd", NULL, &e), AGENT_OK);
    const struct {
        const char *id;
        bool paused;
        int vcpus, mem, timeout;
        const char *tmpl;
    } bad[] = {
        {"bad-timeout", true, 1, 128, (int)(-2147483647 - 1), "minimal"},
        {"bad-timeout-hi", true, 1, 128, 2592001, "minimal"},
        {"bad-vcpus", false, 0, 128, 0, "minimal"},
        {"bad-mem", true, 1, 16, 0, "minimal"},
        {"bad-tmpl", false, 1, 128, 0, "../x"},
    };
    size_t nbad = sizeof bad / sizeof bad[0];
    for (size_t i = 0; i < nbad; i++) {
        assert_int_equal(fx_create(fx, bad[i].id, 0), AGENT_OK);
        if (bad[i].paused) assert_int_equal(lifecycle_pause(fx->lc, bad[i].id, NULL, &e), AGENT_OK);
        runtime_spec s = spec_of(bad[i].id, bad[i].tmpl, bad[i].vcpus, bad[i].mem, bad[i].timeout);
        test_driver_set_spec(fx->td, bad[i].id, &s);
    }
    fx_restart(fx);
    for (size_t i = 0; i < nbad; i++) {
        assert_int_equal(fx_status(fx, bad[i].id), -1);
        assert_int_equal(test_driver_calls(fx->td, TD_DESTROY, bad[i].id), 1);
        assert_int_equal(test_driver_disk_state(fx->td, bad[i].id), 0);
    }
    assert_int_equal(fx_status(fx, "good"), SANDBOX_RUNNING);
    assert_int_equal(fx_status(fx, "good-psd"), SANDBOX_PAUSED);
    assert_int_equal(test_driver_calls(fx->td, TD_DESTROY, "good"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_refuses_uppercase_template, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_that_loses_the_snapshot_destroys, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_resume_lost_with_failed_cleanup_still_not_paused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_failure_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_waits_for_pause_and_ping_does_not, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_ping_and_set_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_activity_and_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_hides_creating_and_shows_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_recovers_running_and_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_rejects_out_of_range_recovered_spec, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
