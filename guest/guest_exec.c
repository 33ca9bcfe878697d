/* guest_exec: fork + exec one command with pipes, a deadline and output caps. */
#include "guest_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mono_time.h"

extern char **environ;

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* What the child reports through the CLOEXEC error pipe when it fails
 * before (or at) execve. */
enum { STAGE_CHDIR = 1, STAGE_EXEC = 2, STAGE_DUP = 3 };

static size_t key_len(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* environ + request env (a request entry replaces a base entry with the same
 * key). Returns a malloc'd NULL-terminated array of borrowed strings. */
static char **build_env(const gp_exec_req *req, terr *err)
{
    size_t nbase = 0;
    while (environ && environ[nbase]) nbase++;
    char **v = calloc(nbase + req->n_env + 1, sizeof *v);
    if (!v) return terr_set(err, "exec: out of memory building env"), NULL;
    size_t n = 0;
    for (size_t i = 0; i < nbase; i++) v[n++] = environ[i];
    for (size_t i = 0; i < req->n_env; i++) {
        const char *kv = req->env[i];
        size_t kl = key_len(kv);
        if (kl == 0 || kv[kl] != '=') {
            free(v);
            return terr_set(err, "exec: env entry %zu (\"%.64s\") is not KEY=VALUE", i, kv), NULL;
        }
        size_t j = 0;
        for (; j < n; j++)
            if (key_len(v[j]) == kl && strncmp(v[j], kv, kl) == 0) break;
        v[j] = (char *)kv;
        if (j == n) n++;
    }
    v[n] = NULL;
    return v;
}

static const char *env_get(char **envp, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; envp[i]; i++)
        if (strncmp(envp[i], key, kl) == 0 && envp[i][kl] == '=') return envp[i] + kl + 1;
    return NULL;
}

/* PATH lookup in the command's own environment, done before fork so the
 * child only calls async-signal-safe functions. Returns malloc'd path or
 * NULL (not found / out of memory). */
static char *resolve_path(const char *cmd, char **envp)
{
    if (strchr(cmd, '/')) return strdup(cmd);
    const char *path = env_get(envp, "PATH");
    if (!path || !*path) path = DEFAULT_PATH;
    size_t cl = strlen(cmd);
    for (const char *p = path;;) {
        const char *end = strchrnul(p, ':');
        size_t dl = (size_t)(end - p);
        char *cand = malloc(dl + cl + 3);
        if (!cand) return NULL;
        if (dl == 0) {
            cand[0] = '.';
            dl = 1;
        } else {
            memcpy(cand, p, dl);
        }
        cand[dl] = '/';
        memcpy(cand + dl + 1, cmd, cl + 1);
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0) return cand;
        free(cand);
        if (!*end) return NULL;
        p = end + 1;
    }
}

/* Appends up to the cap, counts the rest as dropped. */
static int collect(gp_buf *b, bool *truncated, const uint8_t *data, size_t n, terr *err)
{
    size_t room = GP_EXEC_OUTPUT_CAP - b->len;
    if (n > room) {
        *truncated = true;
        n = room;
    }
    return gp_buf_append(b, data, n, err);
}

static void close_fd(int *fd)
{
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* In the child: make `from` the descriptor `to` (clearing CLOEXEC). */
static int move_fd(int from, int to)
{
    if (from == to) return fcntl(to, F_SETFD, 0);
    return dup2(from, to) < 0 ? -1 : 0;
}

static void child_fail(int errfd, int stage)
{
    int msg[2] = {stage, errno};
    ssize_t w = write(errfd, msg, sizeof msg);
    (void)w;
    _exit(127);
}

/* Reads and discards the command's stdout/stderr until every writer (its
 * background children) has closed them. */
static void *drain_main(void *p)
{
    int *fds = p;
    char buf[4096];
    while (fds[0] >= 0 || fds[1] >= 0) {
        struct pollfd pf[2] = {{.fd = fds[0], .events = POLLIN}, {.fd = fds[1], .events = POLLIN}};
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i] < 0 || !pf[i].revents) continue;
            ssize_t r = read(fds[i], buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) close_fd(&fds[i]);
        }
    }
    close_fd(&fds[0]);
    close_fd(&fds[1]);
    free(fds);
    return NULL;
}

/* Hands the read ends still open to a detached drain thread (takes them);
 * on failure they are closed as before. */
static void drain_detached(int *out_fd, int *err_fd)
{
    if (*out_fd < 0 && *err_fd < 0) return;
    int *fds = malloc(2 * sizeof *fds);
    pthread_attr_t a;
    pthread_t t;
    if (fds) {
        fds[0] = *out_fd;
        fds[1] = *err_fd;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 64 * 1024);
        int rc = pthread_create(&t, &a, drain_main, fds);
        pthread_attr_destroy(&a);
        if (rc == 0) {
            *out_fd = *err_fd = -1;
            return;
        }
        free(fds);
    }
    close_fd(out_fd);
    close_fd(err_fd);
}

static uint8_t *take_buf(gp_buf *b, size_t *len)
{
    *len = b->len;
    uint8_t *d = b->data;
    if (!d) d = malloc(1);
    gp_buf_init(b);
    return d;
}

/* A result without running anything (e.g. command not found). */
static int synth_result(gp_exec_result *res, int code, const char *msg, terr *err)
{
    memset(res, 0, sizeof *res);
    res->exit_code = code;
    uint8_t *o = malloc(1);
    char *e = strdup(msg);
    if (!o || !e) {
        free(o);
        free(e);
        return terr_set(err, "exec: out of memory");
    }
    res->out = o;
    res->err = (const uint8_t *)e;
    res->err_len = strlen(e);
    return 0;
}

int guest_exec_run(const gp_exec_req *req, gp_exec_result *res, terr *err)
{
    memset(res, 0, sizeof *res);
    char **envp = build_env(req, err);
    if (!envp) return -1;

    const char *sh_argv[] = {"/bin/sh", "-c", req->cmd, NULL};
    const char **argv;
    const char **alloc_argv = NULL;
    if (req->n_args == 0) {
        argv = sh_argv;
    } else {
        alloc_argv = calloc(req->n_args + 2, sizeof *alloc_argv);
        if (!alloc_argv) {
            free(envp);
            return terr_set(err, "exec: out of memory");
        }
        alloc_argv[0] = req->cmd;
        for (size_t i = 0; i < req->n_args; i++) alloc_argv[i + 1] = req->args[i];
        argv = alloc_argv;
    }
    char *path = resolve_path(argv[0], envp);
    if (!path) {
        char msg[600];
        snprintf(msg, sizeof msg, "torpor-guest: %.500s: command not found\n", argv[0]);
        free(alloc_argv);
        free(envp);
        return synth_result(res, 127, msg, err);
    }
    const char *cwd = req->cwd && req->cwd[0] ? req->cwd : "/";

    int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, status_pipe[2] = {-1, -1};
    int rc = -1;
    pid_t pid = -1;
    int pidfd = -1;
    gp_buf ob, eb;
    gp_buf_init(&ob);
    gp_buf_init(&eb);

    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
        pipe2(status_pipe, O_CLOEXEC) < 0) {
        terr_set(err, "exec: pipe: %s", strerror(errno));
        goto done;
    }
    pid = fork();
    if (pid < 0) {
        terr_set(err, "exec: fork: %s", strerror(errno));
        goto done;
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls from here on. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        setsid();
        if (move_fd(in[0], 0) < 0 || move_fd(out[1], 1) < 0 || move_fd(errp[1], 2) < 0)
            child_fail(status_pipe[1], STAGE_DUP);
        if (chdir(cwd) < 0) child_fail(status_pipe[1], STAGE_CHDIR);
        execve(path, (char *const *)argv, envp);
        child_fail(status_pipe[1], STAGE_EXEC);
    }
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&errp[1]);
    close_fd(&status_pipe[1]);

    /* The status pipe closes at execve (CLOEXEC) or carries why it failed. */
    int msg[2];
    ssize_t got;
    do got = read(status_pipe[0], msg, sizeof msg);
    while (got < 0 && errno == EINTR);
    close_fd(&status_pipe[0]);
    if (got == (ssize_t)sizeof msg) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        pid = -1;
        char text[700];
        const char *what = msg[0] == STAGE_CHDIR ? "cannot change directory to"
                           : msg[0] == STAGE_DUP ? "cannot set up stdio for"
                                                 : "cannot execute";
        snprintf(text, sizeof text, "torpor-guest: %s %.500s: %s\n", what,
                 msg[0] == STAGE_CHDIR ? cwd : path, strerror(msg[1]));
        int code = (msg[0] == STAGE_EXEC && msg[1] == ENOENT) ? 127 : 126;
        rc = synth_result(res, code, text, err);
        goto done;
    }

    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        terr_set(err, "exec: pidfd_open: %s", strerror(errno));
        kill(-pid, SIGKILL);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        pid = -1;
        goto done;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(errp[0], F_SETFL, O_NONBLOCK);

    size_t in_off = 0;
    if (req->stdin_len == 0) close_fd(&in[1]);
    int64_t deadline = req->timeout_sec > 0 ? mono_ms() + (int64_t)req->timeout_sec * 1000 : -1;
    int64_t drain_deadline = -1;
    bool exited = false, timed_out = false, out_trunc = false, err_trunc = false;
    int wstatus = 0;
    uint8_t chunk[65536];

    for (;;) {
        if (exited && out[0] < 0 && errp[0] < 0) break;
        int64_t now = mono_ms();
        if (exited && now >= drain_deadline) break; /* background children hold pipes */
        if (!exited && !timed_out && deadline >= 0 && now >= deadline) {
            kill(-pid, SIGKILL);
            timed_out = true;
        }
        int64_t wait_ms = -1;
        if (exited) wait_ms = drain_deadline - now;
        else if (!timed_out && deadline >= 0) wait_ms = deadline - now;
        struct pollfd pf[4];
        int n = 0, i_in = -1, i_out = -1, i_err = -1, i_pid = -1;
        if (in[1] >= 0) {
            i_in = n;
            pf[n++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
        }
        if (out[0] >= 0) {
            i_out = n;
            pf[n++] = (struct pollfd){.fd = out[0], .events = POLLIN};
        }
        if (errp[0] >= 0) {
            i_err = n;
            pf[n++] = (struct pollfd){.fd = errp[0], .events = POLLIN};
        }
        if (!exited) {
            i_pid = n;
            pf[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        }
        int pr = poll(pf, (nfds_t)n, wait_ms > INT32_MAX ? INT32_MAX : (int)wait_ms);
        if (pr < 0) {
            if (errno == EINTR) continue;
            terr_set(err, "exec: poll: %s", strerror(errno));
            kill(-pid, SIGKILL);
            int st;
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
            pid = -1;
            goto done;
        }
        if (i_in >= 0 && pf[i_in].revents) {
            ssize_t w = write(in[1], req->stdin_data + in_off, req->stdin_len - in_off);
            if (w > 0) in_off += (size_t)w;
            /* EPIPE: the command does not read its stdin; that is its choice. */
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == req->stdin_len)
                close_fd(&in[1]);
        }
        int *fds[2] = {&out[0], &errp[0]};
        int idx[2] = {i_out, i_err};
        for (int s = 0; s < 2; s++) {
            if (idx[s] < 0 || !pf[idx[s]].revents) continue;
            ssize_t r = read(*fds[s], chunk, sizeof chunk);
            if (r > 0) {
                if (collect(s ? &eb : &ob, s ? &err_trunc : &out_trunc, chunk, (size_t)r, err) <
                    0) {
                    kill(-pid, SIGKILL);
                    int st;
                    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
                    pid = -1;
                    goto done;
                }
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                close_fd(fds[s]);
            }
        }
        if (i_pid >= 0 && pf[i_pid].revents) {
            while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {}
            pid = -1;
            exited = true;
            drain_deadline = mono_ms() + GUEST_EXEC_DRAIN_MS;
            close_fd(&in[1]);
        }
    }

    if (exited) drain_detached(&out[0], &errp[0]);
    res->timed_out = timed_out;
    res->exit_code = (!timed_out && WIFEXITED(wstatus)) ? WEXITSTATUS(wstatus) : -1;
    res->stdout_truncated = out_trunc;
    res->stderr_truncated = err_trunc;
    res->out = take_buf(&ob, &res->out_len);
    res->err = take_buf(&eb, &res->err_len);
    if (!res->out || !res->err) {
        gp_exec_result_free(res);
        terr_set(err, "exec: out of memory");
        goto done;
    }
    rc = 0;

done:
    close_fd(&in[0]);
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&out[1]);
    close_fd(&errp[0]);
    close_fd(&errp[1]);
    close_fd(&status_pipe[0]);
    close_fd(&status_pipe[1]);
    close_fd(&pidfd);
    gp_buf_free(&ob);
    gp_buf_free(&eb);
    free(path);
    free(alloc_argv);
    free(envp);
    return rc;
}
