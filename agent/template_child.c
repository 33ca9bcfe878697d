/* template_child: a build's child process (private to the template builder,
 * see template_builder_internal.h). tb_run_child forks argv in its own
 * process group (it dies with the agent: PR_SET_PDEATHSIG), records the
 * group in a pgid file for the next start, and waits for it; when the
 * build's time limit passes or the builder stops it sends SIGTERM to the
 * group, waits up to TB_TERM_GRACE_MS for the leader, stops the group's
 * members that carry the build's marker (tproc_stop_group) and SIGKILLs
 * the leader. tb->running_pid is the child while it runs (under
 * tb->mu). tb_kill_orphan_group ends a group left by an agent that died. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "mono_time.h"
#include "template_builder_internal.h"
#include "template_procs.h"

/* Runs argv (a prepared envp) as a child in its own process group with its
 * output in logfd, until it exits, the build's time limit (from t0) passes
 * or the builder stops (both kill the group). 0 = exited 0; 1 = exited
 * otherwise (reason ""); -1 = spawn failure, time limit or stop (reason set). */
int tb_run_child(template_builder *tb, char *const argv[], char *const envp[], int logfd,
                 int devnull, int64_t t0, const char *pgid_path, const char *marker, char *reason,
                 size_t rsize)
{
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    if (pid < 0) {
        snprintf(reason, rsize, "could not start %s: %s", argv[0], strerror(errno));
        return -1;
    }
    setpgid(pid, pid);
    /* For the next start, should the agent die now: the child dies with it
     * (PR_SET_PDEATHSIG) but its own children (mmdebstrap, apt) would not. */
    char pg[32];
    snprintf(pg, sizeof pg, "%d\n", (int)pid);
    terr werr;
    if (tb_write_file(pgid_path, pg, &werr) != 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=template_pgid_write_failed error=\"%s\"", log_quote(werr.msg, q, sizeof q));
    }
    pthread_mutex_lock(&tb->mu);
    tb->running_pid = pid;
    pthread_mutex_unlock(&tb->mu);
    int status = 0;
    bool timed_out = false, stopped = false;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) break;
        pthread_mutex_lock(&tb->mu);
        stopped = tb->stopping;
        pthread_mutex_unlock(&tb->mu);
        if (!timed_out && !stopped && mono_ms() - t0 > (int64_t)tb->time_limit_sec * 1000)
            timed_out = true;
        if (timed_out || stopped) {
            kill(-pid, SIGTERM);
            int64_t end = mono_ms() + TB_TERM_GRACE_MS;
            while (waitpid(pid, &status, WNOHANG) == 0 && mono_ms() < end) usleep(100 * 1000);
            tproc_stop_group(pid, marker, TB_TERM_GRACE_MS);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(200 * 1000);
    }
    pthread_mutex_lock(&tb->mu);
    tb->running_pid = 0;
    pthread_mutex_unlock(&tb->mu);
    unlink(pgid_path);
    if (timed_out) {
        snprintf(reason, rsize, "build timed out after %d s", tb->time_limit_sec);
        return -1;
    }
    if (stopped) {
        snprintf(reason, rsize, "interrupted: the agent stopped during the build");
        return -1;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

/* What is left of the process group of a build whose agent died: its
 * leader (the recipe's bash) died with the agent, its children (mmdebstrap,
 * apt) may still run. Only processes of that group that carry the build's
 * marker in their environment (TB_MARKER_ENV=<name>) count, so a reused id
 * never touches anything else. */
void tb_kill_orphan_group(const char *pgid_path, const char *name)
{
    char text[32];
    if (tb_read_small(pgid_path, text, sizeof text) != 0) return;
    unlink(pgid_path);
    int pgid = atoi(text);
    if (pgid <= 1) return;
    char marker[128];
    snprintf(marker, sizeof marker, TB_MARKER_ENV "=%s", name);
    int n = tproc_stop_group(pgid, marker, TB_TERM_GRACE_MS);
    if (!n) return;
    char q[LOG_QUOTE_MAX];
    log_warn("event=template_build_orphans_killed name=\"%s\" pgid=%d processes=%d",
             log_quote(name, q, sizeof q), pgid, n);
}
