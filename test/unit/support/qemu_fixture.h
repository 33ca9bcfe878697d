/* qemu_fixture: shared set-up for tests that drive the real QEMU driver.
 *
 * qemu_fixture_open finds the guest image of this build (TORPOR_BUILD_DIR, or
 * two levels up from the test executable), FAILS (never skips) when it is
 * missing, makes a temp state dir /tmp/torpor-<name>-XXXXXX and opens the
 * driver on it. qemu_fixture_reopen opens the driver again on the same dirs
 * (restart tests). Deadline polling uses mono_ms (mono_time.h). The
 * guest helpers fail the calling cmocka test on any error. */
#ifndef TORPOR_TEST_QEMU_FIXTURE_H
#define TORPOR_TEST_QEMU_FIXTURE_H

#include <limits.h>

#include "mono_time.h" /* mono_ms for deadline polling */
#include "qemu.h"

typedef struct qemu_fixture {
    char state_dir[PATH_MAX];
    char image_dir[PATH_MAX];
    int idle_trim_ms;
    int template_cache_max; /* runtime_qemu_config's; 0 = its default */
    runtime_driver *drv;
} qemu_fixture;

int qemu_fixture_open(qemu_fixture *f, const char *name, int idle_trim_ms);
int qemu_fixture_reopen(qemu_fixture *f);

/* Runs cmd via /bin/sh -c in the guest (must exit 0); returns its stdout,
 * malloc'd and NUL-terminated. */
char *fixture_sh(qemu_fixture *f, runtime_vm *vm, const char *cmd);
/* The guest counter a test started in /tmp/counter (0 if none yet). */
long fixture_counter_value(qemu_fixture *f, runtime_vm *vm);
/* Polls until that counter reaches at least min (deadline 20 s). */
long fixture_wait_counter(qemu_fixture *f, runtime_vm *vm, long min);

void fixture_nap_ms(long ms);

#endif
