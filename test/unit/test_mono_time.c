/* mono_time (common/mono_time.h): mono_ms moves forward with real time,
 * mono_us is the same clock in microseconds, and
 * mono_deadline is an absolute CLOCK_MONOTONIC time that a condition
 * variable on that clock honours (not earlier, not much later). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "mono_time.h"

static int64_t ts_ms(struct timespec ts)
{
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_mono_ms_follows_sleep(void **state)
{
    int64_t t0 = mono_ms();
    struct timespec d = {0, 30 * 1000000};
    nanosleep(&d, NULL);
    int64_t dt = mono_ms() - t0;
    assert_true(dt >= 30);
    assert_true(dt < 30000); /* a starved machine, not a wrong unit */
}

/* mono_us is the same clock as mono_ms, in microseconds. */
static void test_mono_us_is_mono_ms_in_microseconds(void **state)
{
    int64_t ms0 = mono_ms();
    int64_t us = mono_us();
    int64_t ms1 = mono_ms();
    assert_true(us / 1000 >= ms0);
    assert_true(us / 1000 <= ms1);
    int64_t u0 = mono_us();
    struct timespec d = {0, 2 * 1000000};
    nanosleep(&d, NULL);
    int64_t du = mono_us() - u0;
    assert_true(du >= 2000);
    assert_true(du < 30000000);
}

static void test_deadline_is_now_plus_the_delay_normalised(void **state)
{
    for (int64_t after = 0; after <= 2999; after += 333) {
        int64_t before = mono_ms();
        struct timespec ts = mono_deadline(after);
        int64_t at = ts_ms(ts);
        assert_true(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
        assert_true(at >= before + after);
        assert_true(at <= mono_ms() + after + 1);
    }
}

static void test_negative_delay_is_now(void **state)
{
    int64_t before = mono_ms();
    struct timespec ts = mono_deadline(-5000);
    assert_true(ts_ms(ts) >= before);
    assert_true(ts_ms(ts) <= mono_ms() + 1);
}

static void test_timedwait_on_a_monotonic_condvar_waits_until_the_deadline(void **state)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_t cv;
    pthread_cond_init(&cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_lock(&mu);
    int64_t t0 = mono_ms();
    struct timespec until = mono_deadline(80);
    int rc;
    do rc = pthread_cond_timedwait(&cv, &mu, &until);
    while (rc == 0); /* spurious wake-ups */
    int64_t dt = mono_ms() - t0;
    pthread_mutex_unlock(&mu);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(dt >= 79); /* ms rounding of t0 */
    assert_true(dt < 30000);
    pthread_cond_destroy(&cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mono_ms_follows_sleep),
        cmocka_unit_test(test_mono_us_is_mono_ms_in_microseconds),
        cmocka_unit_test(test_deadline_is_now_plus_the_delay_normalised),
        cmocka_unit_test(test_negative_delay_is_now),
        cmocka_unit_test(test_timedwait_on_a_monotonic_condvar_waits_until_the_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
