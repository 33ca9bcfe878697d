/* qemu_stats: phase timings of the last lifecycle call on a QEMU handle, for
 * bench/bench_runtime.c and diagnostics (the same figures are logged).
 *
 * Contract: qemu_vm_last_timing() copies what the last create, resume or
 * pause on this handle measured; fields a call does not have are 0. Only
 * meaningful for handles of the QEMU driver (returns -1 otherwise). Call it
 * under the same serialisation as lifecycle calls (the agent's lock). */
#ifndef TORPOR_QEMU_STATS_H
#define TORPOR_QEMU_STATS_H

#include <stdint.h>

#include "runtime.h"

typedef struct qemu_timing {
    /* create / resume */
    double copy_ms;    /* create: template RAM file -> sandbox RAM file */
    double load_ms;    /* QEMU started and the snapshot loaded (paused) */
    double running_ms; /* ... and `cont` done: the VM runs */
    double total_ms;   /* ... and torpor-guest answered PING + SYNC */
    /* pause */
    double save_ms;  /* stop + device state migrated */
    double quit_ms;  /* QEMU exited */
    double fsync_ms; /* RAM + state fsync'd */
    int64_t state_bytes;
    int64_t ram_disk_bytes;
} qemu_timing;

int qemu_vm_last_timing(runtime_vm *vm, qemu_timing *out);

/* PID of the VM's QEMU process (0 if none), for measuring its PSS/CPU. */
int qemu_vm_pid(runtime_vm *vm);

#endif
