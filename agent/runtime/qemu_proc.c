/* qemu_proc: spawn/watch/reap/kill one QEMU process (see qemu_proc.h). */
#include "qemu_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mono_time.h"

#define PIDFILE "qemu.pid"
#define PIDFILE_TMP "qemu.pid.tmp"
/* fd slots QEMU starts with (see qemu_proc_spawn). */
#define QEMU_FD_TABLE_MIN 256

int qemu_proc_spawn(char *const argv[], int dirfd, const char *log_name, const qemu_run_as *run_as,
                    int pass_fd, qemu_proc *p, terr *err)
{
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    /* Everything the child needs is opened before fork: after fork in a
     * threaded process only async-signal-safe calls are allowed. */
    int logfd = openat(dirfd, log_name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (logfd < 0) return terr_set(err, "open %s: %s", log_name, strerror(errno));
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nullfd < 0) {
        close(logfd);
        return terr_set(err, "open /dev/null: %s", strerror(errno));
    }
    /* Report exec failures through a CLOEXEC pipe: EOF = exec succeeded. */
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        close(logfd);
        close(nullfd);
        return terr_set(err, "pipe: %s", strerror(errno));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(logfd);
        close(nullfd);
        close(pfd[0]);
        close(pfd[1]);
        return terr_set(err, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls from here on. */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        int errfd = pfd[1];
        int e = 0;
        /* No transparent huge pages for QEMU: it madvises its TCG code buffer
         * HUGEPAGE, so an idle VM would hold 2 MiB pages of which it uses a
         * few KiB (measured: ~14 MB of an idle sandbox's PSS). Inherited
         * across exec; best effort. */
        prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
        if (setsid() < 0 || fchdir(dirfd) < 0) e = errno;
        if (!e && (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)) e = errno;
        /* Drop to the VM user: raw system calls (this child has one thread;
         * glibc's set*id wrappers are not async-signal-safe). gid first. */
        if (!e && run_as &&
            (syscall(SYS_setgroups, run_as->n_groups, run_as->groups) < 0 ||
             syscall(SYS_setresgid, run_as->gid, run_as->gid, run_as->gid) < 0 ||
             syscall(SYS_setresuid, run_as->uid, run_as->uid, run_as->uid) < 0))
            e = errno;
        /* Keep only stdio and the error pipe (moved to fd 3). */
        if (!e && errfd != 3) {
            if (dup3(errfd, 3, O_CLOEXEC) < 0) e = errno;
            else errfd = 3;
        }
        /* The passed fd becomes QEMU_PASS_FD without CLOEXEC (dup2 clears
         * it); the error pipe (3) was moved before, so it cannot be hit. */
        if (!e && pass_fd >= 0 && pass_fd != QEMU_PASS_FD && dup2(pass_fd, QEMU_PASS_FD) < 0)
            e = errno;
        if (!e && pass_fd == QEMU_PASS_FD && fcntl(pass_fd, F_SETFD, 0) < 0) e = errno;
        if (!e) {
            close_range(pass_fd >= 0 ? QEMU_PASS_FD + 1 : QEMU_PASS_FD, ~0u, 0);
            /* Size QEMU's fd table now, while it has one thread: QEMU opens
             * ~90 fds (an eventfd per virtqueue at `cont`), and growing the
             * table past 64 in a threaded process waits for an RCU grace
             * period (expand_fdtable -> synchronize_rcu), measured 10-15 ms
             * in every resume and create. exec closes this fd (CLOEXEC) but
             * keeps the table. Best effort. */
            dup3(0, QEMU_FD_TABLE_MIN - 1, O_CLOEXEC);
            execv(argv[0], argv);
            e = errno;
        }
        ssize_t w = write(errfd, &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(logfd);
    close(nullfd);
    close(pfd[1]);
    int child_err = 0;
    ssize_t r;
    do r = read(pfd[0], &child_err, sizeof child_err);
    while (r < 0 && errno == EINTR);
    close(pfd[0]);
    p->pid = pid;
    p->child = true;
    if (r == (ssize_t)sizeof child_err) {
        waitpid(pid, NULL, 0);
        p->exited = true;
        return terr_set(err, "exec %s: %s", argv[0], strerror(child_err));
    }
    p->pidfd = pidfd_open(pid, 0);
    if (p->pidfd < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        p->exited = true;
        return terr_set(err, "pidfd_open: %s", strerror(e));
    }
    return 0;
}

int qemu_proc_starttime(pid_t pid, unsigned long long *out, terr *err)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return terr_set(err, "process %d is gone", (int)pid);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return terr_set(err, "read %s failed", path);
    buf[n] = '\0';
    /* comm may contain spaces and ')': fields resume after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p) return terr_set(err, "malformed %s", path);
    p++;
    /* field 3 (state) is the first after ')'; starttime is field 22 */
    char state = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 3) state = tok[0];
        if (field == 22) {
            if (state == 'Z' || state == 'X')
                return terr_set(err, "process %d has exited", (int)pid);
            *out = strtoull(tok, NULL, 10);
            return 0;
        }
    }
    return terr_set(err, "malformed %s", path);
}

int qemu_proc_attach(pid_t pid, unsigned long long starttime, qemu_proc *p, terr *err)
{
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    if (pid <= 1) return terr_set(err, "invalid pid %d", (int)pid);
    int fd = pidfd_open(pid, 0);
    if (fd < 0) return terr_set(err, "process %d is gone", (int)pid);
    /* Check the start time after opening the pidfd: if it matches now, the
     * pidfd refers to that very process, not a later one with the same pid. */
    unsigned long long st;
    if (qemu_proc_starttime(pid, &st, err) < 0) {
        close(fd);
        return -1;
    }
    if (st != starttime) {
        close(fd);
        return terr_set(err, "pid %d belongs to another process now", (int)pid);
    }
    p->pid = pid;
    p->pidfd = fd;
    p->child = false;
    return 0;
}

static void reap(qemu_proc *p)
{
    if (p->child) {
        int st;
        pid_t r;
        do r = waitpid(p->pid, &st, WNOHANG);
        while (r < 0 && errno == EINTR);
        if (r == p->pid) p->status = st;
        else if (r == 0) return; /* pidfd said exited but not yet waitable */
        else p->status = -1;     /* reaped elsewhere (ECHILD) */
    }
    p->exited = true;
}

bool qemu_proc_poll(qemu_proc *p)
{
    if (p->exited) return false;
    if (p->pidfd < 0) return false;
    struct pollfd pf = {.fd = p->pidfd, .events = POLLIN};
    if (poll(&pf, 1, 0) == 1) reap(p);
    return !p->exited;
}

bool qemu_proc_wait(qemu_proc *p, int timeout_ms)
{
    long long deadline = mono_ms() + timeout_ms;
    while (!p->exited && p->pidfd >= 0) {
        long long left = deadline - mono_ms();
        if (left < 0) left = 0;
        struct pollfd pf = {.fd = p->pidfd, .events = POLLIN};
        int r = poll(&pf, 1, (int)left);
        if (r == 1) {
            reap(p);
            if (!p->exited) {
                /* Zombie visible to the pidfd a moment before waitpid. */
                struct timespec ts = {0, 200000};
                nanosleep(&ts, NULL);
            }
        } else if (r == 0 || left == 0) {
            return p->exited;
        }
    }
    return p->exited || p->pidfd < 0;
}

void qemu_proc_kill(qemu_proc *p)
{
    if (p->pidfd >= 0 && !p->exited) {
        pidfd_send_signal(p->pidfd, SIGKILL, NULL, 0);
        qemu_proc_wait(p, 10000);
    }
    qemu_proc_release(p);
}

void qemu_proc_release(qemu_proc *p)
{
    if (p->pidfd >= 0) close(p->pidfd);
    p->pidfd = -1;
}

bool qemu_proc_exited_cleanly(const qemu_proc *p)
{
    return p->exited && p->child && WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
}

int qemu_proc_write_pidfile(int dirfd, const qemu_proc *p, terr *err)
{
    unsigned long long st;
    if (qemu_proc_starttime(p->pid, &st, err) < 0) return -1;
    char line[64];
    int n = snprintf(line, sizeof line, "%d %llu\n", (int)p->pid, st);
    int fd = openat(dirfd, PIDFILE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return terr_set(err, "open %s: %s", PIDFILE_TMP, strerror(errno));
    ssize_t w = write(fd, line, (size_t)n);
    close(fd);
    if (w != n) return terr_set(err, "write %s failed", PIDFILE_TMP);
    /* No fsync: the pid file only matters while the host stays up. */
    if (renameat(dirfd, PIDFILE_TMP, dirfd, PIDFILE) < 0)
        return terr_set(err, "rename %s: %s", PIDFILE, strerror(errno));
    return 0;
}

int qemu_proc_read_pidfile(int dirfd, pid_t *pid, unsigned long long *starttime, terr *err)
{
    int fd = openat(dirfd, PIDFILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return terr_set(err, "no pid file: %s", strerror(errno));
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return terr_set(err, "empty pid file");
    buf[n] = '\0';
    int ipid;
    if (sscanf(buf, "%d %llu", &ipid, starttime) != 2 || ipid <= 1)
        return terr_set(err, "malformed pid file");
    *pid = ipid;
    return 0;
}
