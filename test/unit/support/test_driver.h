/* test_driver: an in-memory runtime driver for unit tests (never shipped).
 *
 * It models a host's "disk": every sandbox it created is an entry that is
 * running (with a live handle) or paused (a "snapshot"), survives the close
 * of a lifecycle (so reopening a lifecycle on the same driver is an agent
 * restart: recover() reports the entries), and goes away on destroy. Guest
 * files live in the entry, so they survive pause/resume.
 *
 * Controls, all thread-safe:
 * - gates: while the gate of (op, sandbox) is closed, calls of op on that
 *   sandbox block; test_driver_wait_blocked lets a test wait (with a polling
 *   deadline) until a call is parked there. This makes "a slow pause" exact.
 * - failure injection: the next call of op on a sandbox fails with a message
 *   (for resume: failing with the snapshot kept, -1). The next resume can
 *   also fail after consuming the snapshot: RUNTIME_SNAPSHOT_LOST, and the
 *   entry is left as debris (disk state 3: no snapshot, no VM).
 * - metadata: a test can overwrite the spec recorded on "disk" (corruption).
 * - kill: the VM "process" dies: vm_alive false, pause/exec fail.
 * - counters: how many times op was called on a sandbox.
 * - recover: a running entry whose TD_RECOVER gate is closed (or that has a
 *   TD_RECOVER failure injected) is announced first (RUNTIME_VM_RECOVERING),
 *   then everything else is reported and "all announced" is called, then it
 *   waits at its gate and is reported with a handle (or RUNTIME_VM_GONE on
 *   the injected failure): a slow re-attach after an agent restart.
 * Templates: "minimal" and "base" exist; any other name fails with
 * "unknown template <name>". Exec answers stdout = "<cmd>\n", exit 0. */
#ifndef TORPOR_TEST_DRIVER_H
#define TORPOR_TEST_DRIVER_H

#include <stdbool.h>

#include "runtime.h"

typedef enum {
    TD_CREATE = 0,
    TD_PAUSE,
    TD_RESUME,
    TD_DESTROY,
    TD_EXEC,
    TD_READ,
    TD_WRITE,
    TD_RECOVER, /* re-attach of one running entry in recover() (see below) */
    TD_OP_COUNT,
} td_op;

typedef struct test_driver test_driver;

test_driver *test_driver_new(void); /* room for 64 sandboxes */
/* Room for max sandboxes (benchmarks; lookups are linear). */
test_driver *test_driver_new_sized(int max);
runtime_driver *test_driver_runtime(test_driver *td);
/* Frees everything (call after the lifecycle using it is closed). */
void test_driver_free(test_driver *td);

void test_driver_gate_close(test_driver *td, td_op op, const char *id);
void test_driver_gate_open(test_driver *td, td_op op, const char *id);
/* True once at least n calls of op on id are parked at its gate. */
bool test_driver_wait_blocked(test_driver *td, td_op op, const char *id, int n, int timeout_ms);

void test_driver_fail_next(test_driver *td, td_op op, const char *id, const char *msg);
void test_driver_lose_snapshot_next(test_driver *td, const char *id, const char *msg);
/* Replaces the spec an entry records (what recover() will report). */
void test_driver_set_spec(test_driver *td, const char *id, const runtime_spec *spec);
void test_driver_kill(test_driver *td, const char *id);

int test_driver_calls(test_driver *td, td_op op, const char *id);
/* 0 = not on disk, 1 = running, 2 = paused, 3 = debris of a lost resume. */
int test_driver_disk_state(test_driver *td, const char *id);

#endif
