/* qemu_proc: one QEMU process — spawn, watch, reap, kill.
 *
 * Contract:
 * - qemu_proc_spawn() forks and execs argv[0] (an absolute path) in its own
 *   session (setsid: not in the agent's process group, so a Ctrl-C or a
 *   group kill of the agent does not hit VMs), with the working directory
 *   set to dirfd (so QEMU's socket/RAM paths are short relative names),
 *   stdin from /dev/null, stdout+stderr appended to <dir>/<log_name>, and no
 *   other inherited descriptor.
 * - Every process is tracked through a pidfd, for children and for
 *   processes re-attached after an agent restart alike, so "exited" is never
 *   fooled by pid reuse. qemu_proc_poll() reaps a child that exited (no
 *   zombies) and is safe to call from several threads only under the
 *   owner's lock.
 * - The pid file (<dir>/qemu.pid: "pid starttime") lets recover() find a
 *   VM after a restart and check it is still the same process. */
#ifndef TORPOR_QEMU_PROC_H
#define TORPOR_QEMU_PROC_H

#include <stdbool.h>
#include <sys/types.h>

#include "terr.h"

typedef struct qemu_proc {
    pid_t pid;
    int pidfd;  /* -1 when none */
    bool child; /* ours to reap */
    bool exited;
    int status; /* wait status when child && exited */
} qemu_proc;

/* run_as (NULL = unchanged): the child drops to this uid/gid (with
 * n_groups supplementary groups, 0 or 1: the group of /dev/kvm when KVM is
 * used) after entering dirfd and before exec. */
typedef struct qemu_run_as {
    uid_t uid;
    gid_t gid;
    gid_t groups[1];
    int n_groups;
} qemu_run_as;
/* pass_fd >= 0: handed to the child as its fd 4 (QEMU_PASS_FD), e.g. a TAP
 * device (opened by the agent, so an unprivileged run_as child can use it). */
#define QEMU_PASS_FD 4
int qemu_proc_spawn(char *const argv[], int dirfd, const char *log_name, const qemu_run_as *run_as,
                    int pass_fd, qemu_proc *p, terr *err);

/* Attaches to an existing process (not a child) after checking that its
 * start time (from /proc/<pid>/stat) equals starttime. */
int qemu_proc_attach(pid_t pid, unsigned long long starttime, qemu_proc *p, terr *err);

/* Non-blocking: true while the process runs; reaps it once it exited. */
bool qemu_proc_poll(qemu_proc *p);

/* Waits up to timeout_ms for the exit; true if it exited (and is reaped). */
bool qemu_proc_wait(qemu_proc *p, int timeout_ms);

/* SIGKILL (if still running) and wait for it; closes the pidfd. */
void qemu_proc_kill(qemu_proc *p);

/* Closes the pidfd (after the process is gone or handed over). */
void qemu_proc_release(qemu_proc *p);

/* True when the exit was a clean exit(0) (QEMU "quit"). */
bool qemu_proc_exited_cleanly(const qemu_proc *p);

int qemu_proc_starttime(pid_t pid, unsigned long long *out, terr *err);

/* <dir>/qemu.pid, written atomically. */
int qemu_proc_write_pidfile(int dirfd, const qemu_proc *p, terr *err);
int qemu_proc_read_pidfile(int dirfd, pid_t *pid, unsigned long long *starttime, terr *err);

#endif
