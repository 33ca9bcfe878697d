/* qemu_inst: one QEMU instance in one directory — the mechanics shared by
 * template builds, creates, pauses and resumes.
 *
 * Contract:
 * - The instance directory (dirfd) holds: "ram" (guest RAM file, mapped
 *   share=on), "qmp.sock", "guest.sock" (virtio-serial port "torpor"),
 *   "qemu.log" (QEMU's stderr), "qemu.pid", and the snapshot files "state"/"meta". QEMU runs with that
 *   directory as its cwd, so all these are short relative names.
 * - The command line is a pure function of the shape (plus -name and
 *   -incoming): the same shape gives the same machine, which a migration
 *   stream requires. Guest RAM is a memory-backend-file (share=on) and the
 *   migration capability x-ignore-shared is on for every instance, so a
 *   snapshot holds only device state (~320 KB) and the RAM stays in "ram".
 * - start(): boots (incoming == NULL) or restores from an open state file
 *   (incoming >= 0: "-incoming defer", migrate-incoming over fd:, waits until
 *   the load finished; the VM is then paused and the caller conts).
 * - save(): stop + migrate the device state into state_fd + wait for
 *   completion. On failure the VM is left stopped or dead; the caller
 *   decides (cont or clean up).
 * - quit(): QMP quit, wait for a clean exit; SIGKILL after the grace. */
#ifndef TORPOR_QEMU_INST_H
#define TORPOR_QEMU_INST_H

#include <stdbool.h>

#include "qemu_meta.h"
#include "qemu_proc.h"
#include "qmp.h"
#include "terr.h"

#define QEMU_RAM_FILE "ram"
#define QEMU_STATE_FILE "state"
#define QEMU_STATE_TMP "state.tmp"
#define QEMU_QMP_SOCK "qmp.sock"
#define QEMU_GUEST_SOCK "guest.sock"
#define QEMU_LOG_FILE "qemu.log"

typedef struct qemu_inst {
    int dirfd;                    /* not owned */
    char id[RUNTIME_ID_MAX + 40]; /* sandbox id or template key, for -name and logs */
    qemu_proc proc;
    qmp *qmp;
    const qemu_run_as *run_as; /* NULL = QEMU runs as the agent's user */
} qemu_inst;

/* incoming_fd < 0: cold boot. Otherwise restore from that (readable) fd. */
/* tap_fd >= 0 and shape->net: the NIC's backend is that TAP device (QEMU
 * gets a copy; the caller keeps and closes its own). */
int qemu_inst_start(qemu_inst *in, const char *qemu_binary, const qemu_shape *shape,
                    int incoming_fd, int tap_fd, terr *err);

int qemu_inst_cont(qemu_inst *in, terr *err);

/* ram_fd (>= 0): the RAM file, whose writeback is started as soon as the VM
 * is stopped so the later fsync has less to wait for. */
int qemu_inst_save(qemu_inst *in, int state_fd, int ram_fd, terr *err);

int qemu_inst_quit(qemu_inst *in, int grace_ms, terr *err);

/* Tears down whatever is left: QMP connection, process (SIGKILL). */
void qemu_inst_kill(qemu_inst *in);

/* Appends the end of the guest's serial console (a 64 KiB ring inside
 * QEMU, read over QMP) to err; nothing if QEMU is gone. */
void qemu_inst_console_tail(qemu_inst *in, terr *err);

/* Appends the last lines of qemu.log to err (for "QEMU failed" messages). */
void qemu_inst_log_tail(int dirfd, terr *err);

#endif
