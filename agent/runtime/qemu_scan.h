/* qemu_scan: finds QEMU processes through /proc, for recover(): a QEMU that
 * no pid file names (the agent died between QEMU's spawn and the rename of
 * its pid file) would otherwise run on untracked after its directory is
 * gone.
 *
 * Contract:
 * - qemu_scan_take() lists, once, every live process whose argv[0] has a
 *   basename starting with "qemu-system" and that has a "-name <x>"
 *   argument, with its pid, start time and the device/inode of its cwd.
 * - qemu_scan_kill_in() kills (SIGKILL, then waits for the exit) every
 *   listed process named `name` whose cwd is the directory dirfd; the start
 *   time is checked through a pidfd first, so a pid reused since the scan
 *   is never hit. Returns how many it killed.
 * - Only QEMUs started with the sandbox's own directory as cwd match
 *   (qemu_proc_spawn() sets it), so a QEMU of another state dir with the
 *   same -name is left alone. */
#ifndef TORPOR_QEMU_SCAN_H
#define TORPOR_QEMU_SCAN_H

#include "terr.h"

typedef struct qemu_scan qemu_scan;

int qemu_scan_take(qemu_scan **out, terr *err);
int qemu_scan_kill_in(qemu_scan *s, const char *name, int dirfd);
void qemu_scan_free(qemu_scan *s); /* NULL-safe */

#endif
