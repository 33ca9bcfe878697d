/* Admission control on the agent (issue 10, host resources), with the test
 * driver: guest RAM of running sandboxes against host RAM x overcommit (a
 * paused sandbox frees its share, a resume needs room again), disk free
 * space against the new VM's RAM file + the reserve; refusals are
 * AGENT_RESOURCE_EXHAUSTED with a message naming the limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "admission.h"
#include "agent_fixture.h"

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

static agent_code create_mb(agent_fx *fx, const char *id, int mb, terr *e)
{
    runtime_spec spec = {.vcpus = 1, .memory_mb = mb, .timeout_sec = 0};
    snprintf(spec.sandbox_id, sizeof spec.sandbox_id, "%s", id);
    snprintf(spec.template_name, sizeof spec.template_name, "minimal");
    return lifecycle_create(fx->lc, &spec, NULL, e);
}

static void test_ram_beyond_overcommit_is_refused_and_pause_frees_it(void **state)
{
    agent_fx *fx = *state;
    /* 1000 MiB x 0.3 = 300 MiB: two 128 MiB sandboxes fit, a third does not. */
    admission_config adm = {.host_memory_mb = 1000, .overcommit = 0.3, .disk_reserve_mb = -1};
    fx->admission = &adm;
    fx_restart(fx);
    terr e = {{0}};
    assert_int_equal(create_mb(fx, "a", 128, &e), AGENT_OK);
    assert_int_equal(create_mb(fx, "b", 128, &e), AGENT_OK);
    assert_int_equal(create_mb(fx, "c", 128, &e), AGENT_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e.msg, "no capacity"));
    assert_non_null(strstr(e.msg, "overcommit"));
    assert_int_equal(fx_status(fx, "c"), -1);
    assert_int_equal(test_driver_calls(fx->td, TD_CREATE, "c"), 0);

    /* A paused sandbox holds no RAM: room for c. */
    assert_int_equal(lifecycle_pause(fx->lc, "a", NULL, &e), AGENT_OK);
    assert_int_equal(create_mb(fx, "c", 128, &e), AGENT_OK);
    /* ...and now a cannot come back until something else goes. */
    terr e2 = {{0}};
    assert_int_equal(lifecycle_resume(fx->lc, "a", 0, NULL, &e2), AGENT_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e2.msg, "no capacity"));
    assert_int_equal(fx_status(fx, "a"), SANDBOX_PAUSED);
    assert_int_equal(lifecycle_destroy(fx->lc, "b", &e), AGENT_OK);
    assert_int_equal(lifecycle_resume(fx->lc, "a", 0, NULL, &e), AGENT_OK);
    assert_int_equal(fx_status(fx, "a"), SANDBOX_RUNNING);
}

static void test_disk_below_reserve_is_refused(void **state)
{
    agent_fx *fx = *state;
    admission_config adm = {.overcommit = 0, .disk_reserve_mb = 1 << 30, .disk_path = fx->dir};
    fx->admission = &adm;
    fx_restart(fx);
    terr e = {{0}};
    assert_int_equal(create_mb(fx, "d", 128, &e), AGENT_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e.msg, "disk"));

    adm.disk_reserve_mb = 1; /* a sane reserve: admitted */
    fx_restart(fx);
    assert_int_equal(create_mb(fx, "d", 128, &e), AGENT_OK);
}

static void test_host_memory_is_read_from_meminfo(void **state)
{
    (void)state;
    terr e = {{0}};
    assert_true(admission_host_memory_mb(&e) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ram_beyond_overcommit_is_refused_and_pause_frees_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_below_reserve_is_refused, setup, teardown),
        cmocka_unit_test(test_host_memory_is_read_from_meminfo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
