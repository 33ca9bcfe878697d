#include "template_builder.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs_util.h"
#include "log.h"
#include "mono_time.h"
#include "template_limits.h"
#include "template_procs.h"
#include "torpor_limits.h"

extern char **environ;

/* In the environment of every process of a build: tells its leftovers. */
#define TB_MARKER_ENV "TORPOR_TEMPLATE_BUILD"

typedef struct tb_entry {
    tb_info info;
    bool queued;  /* waiting for or in the worker */
    char *packages; /* comma-separated */
    char *setup;    /* NULL = none; kept in memory only (a restart ends the build) */
    struct tb_entry *next;
} tb_entry;

struct template_builder {
    char *agent_state_dir; /* the agent's state dir (the driver's sandboxes/) */
    char *state_dir;       /* <state_dir>/template-builds */
    runtime_driver *driver; /* for setup VMs; NULL = no setup scripts */
    runtime_vm *setup_vm;   /* the setup VM running now, if any */
    char *image_dir;
    char *recipe_script;
    char *guest_binary;
    int time_limit_sec;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tb_entry *entries; /* in creation order */
    bool stopping;
    pid_t running_pid; /* 0 = none */
    pthread_t worker;
    bool worker_started;
};

const char *tb_status_name(tb_status s)
{
    switch (s) {
    case TB_BUILDING: return "building";
    case TB_READY: return "ready";
    case TB_ERROR: return "error";
    }
    return "error";
}

/* snprintf that may truncate (messages, bounded names). */
static void setf(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void setf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, size, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ state files */

/* dir + "/" + file into out ("" when it does not fit). */
static void pjoin(char *out, size_t size, const char *dir, const char *file)
{
    int n = snprintf(out, size, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= size) out[0] = '\0';
}

static void state_path(const template_builder *tb, const char *name, const char *file, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s/%s", tb->state_dir, name, file);
    if (n < 0 || (size_t)n >= size) out[0] = '\0';
}

/* Writes file atomically (tmp + rename). */
static int write_file(const char *path, const char *text, terr *err)
{
    char tmp[4200];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof tmp) return terr_set(err, "path too long");
    FILE *f = fopen(tmp, "w");
    if (!f) return terr_set(err, "open %s: %s", tmp, strerror(errno));
    fputs(text, f);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int e = errno;
        fclose(f);
        return terr_set(err, "write %s: %s", tmp, strerror(e));
    }
    fclose(f);
    if (rename(tmp, path) != 0) return terr_set(err, "rename %s: %s", tmp, strerror(errno));
    return 0;
}

static int read_small(const char *path, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, size - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) out[--n] = '\0';
    return 0;
}

/* The state file: "status\nsize\ndigest\ncreated\n" and error in its own file. */
static int save_state(const template_builder *tb, const tb_entry *e, terr *err)
{
    char path[4096], text[256];
    state_path(tb, e->info.name, "error", path, sizeof path);
    if (write_file(path, e->info.error, err) != 0) return -1;
    snprintf(text, sizeof text, "%s\n%lld\n%s\n%lld\n", tb_status_name(e->info.status),
             (long long)e->info.size_bytes, e->info.digest[0] ? e->info.digest : "-",
             (long long)e->info.created_at_unix);
    state_path(tb, e->info.name, "state", path, sizeof path);
    return write_file(path, text, err);
}

static int load_state(const template_builder *tb, const char *name, tb_entry *e)
{
    char path[4096], text[256], status[32] = "", digest[80] = "";
    long long size = 0, created = 0;
    state_path(tb, name, "state", path, sizeof path);
    if (read_small(path, text, sizeof text) != 0) return -1;
    if (sscanf(text, "%31s %lld %79s %lld", status, &size, digest, &created) != 4) return -1;
    if (strlen(name) >= sizeof e->info.name) return -1;
    memcpy(e->info.name, name, strlen(name) + 1);
    e->info.status = strcmp(status, "ready") == 0 ? TB_READY : strcmp(status, "building") == 0 ? TB_BUILDING
                                                                                             : TB_ERROR;
    e->info.size_bytes = size;
    snprintf(e->info.digest, sizeof e->info.digest, "%s", strcmp(digest, "-") == 0 ? "" : digest);
    e->info.created_at_unix = created;
    state_path(tb, name, "error", path, sizeof path);
    read_small(path, e->info.error, sizeof e->info.error);
    state_path(tb, name, "packages", path, sizeof path);
    char pk[8192];
    if (read_small(path, pk, sizeof pk) == 0) e->packages = strdup(pk);
    return 0;
}

static void image_link(const template_builder *tb, const char *name, char *out, size_t size)
{
    pjoin(out, size, tb->image_dir, name);
}

/* Sum of the image's regular files (following the link). */
static int64_t image_size(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode)) total += st.st_size;
    }
    closedir(d);
    return total;
}

static bool image_complete(const char *dir)
{
    char p[4200];
    pjoin(p, sizeof p, dir, "vmlinux");
    if (access(p, R_OK) != 0) return false;
    pjoin(p, sizeof p, dir, "initramfs.cpio.gz");
    return access(p, R_OK) == 0;
}

static void builtin_info(const template_builder *tb, const char *name, tb_info *out)
{
    memset(out, 0, sizeof *out);
    char dir[4200], p[4300];
    image_link(tb, name, dir, sizeof dir);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->status = TB_READY;
    out->builtin = true;
    out->size_bytes = image_size(dir);
    pjoin(p, sizeof p, dir, "rootfs.sha256");
    read_small(p, out->digest, sizeof out->digest);
    struct stat st;
    pjoin(p, sizeof p, dir, "vmlinux");
    if (stat(p, &st) == 0) out->created_at_unix = st.st_mtime;
}

/* ------------------------------------------------------------ the worker */

static tb_entry *find(template_builder *tb, const char *name)
{
    for (tb_entry *e = tb->entries; e; e = e->next)
        if (strcmp(e->info.name, name) == 0) return e;
    return NULL;
}

/* The most telling line of a failed build's log: apt's "E: ..." if any,
 * else the last non-empty line. */
static void failure_reason(const char *log_path, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen(log_path, "r");
    if (!f) return;
    char line[512], last[512] = "";
    bool have_e = false;
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (!n) continue;
        if (!have_e && strncmp(line, "E: ", 3) == 0) {
            snprintf(out, size, "%s", line);
            have_e = true;
        }
        snprintf(last, sizeof last, "%s", line);
    }
    fclose(f);
    if (!have_e) snprintf(out, size, "%s", last);
}

/* Runs argv (a prepared envp) as a child in its own process group with its
 * output in logfd, until it exits, the build's time limit (from t0) passes
 * or the builder stops (both kill the group). 0 = exited 0; 1 = exited
 * otherwise (reason ""); -1 = spawn failure, time limit or stop (reason set). */
static int run_child(template_builder *tb, char *const argv[], char *const envp[], int logfd, int devnull,
                     int64_t t0, const char *pgid_path, const char *marker, char *reason, size_t rsize)
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
    if (write_file(pgid_path, pg, &werr) != 0) {
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
        if (!timed_out && !stopped && mono_ms() - t0 > (int64_t)tb->time_limit_sec * 1000) timed_out = true;
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

/* Appends an exec's output to the log, prefixed. */
static void log_output(int logfd, const char *what, const uint8_t *data, size_t len, bool truncated)
{
    if (!len) return;
    dprintf(logfd, "--- %s ---\n", what);
    if (write(logfd, data, len) < 0) return;
    if (data[len - 1] != '\n') dprintf(logfd, "\n");
    if (truncated) dprintf(logfd, "(output truncated by the guest)\n");
}

/* The setup script of a template, inside a VM of the freshly built image
 * <image_dir>/<base>: create a VM (the runtime driver, not a sandbox of the
 * lifecycle), run the script from /tmp (a tmpfs: it does not stay in the
 * image), sync and freeze the root filesystem, pause the VM (its disk
 * overlay is then consistent and no process holds it), then `finish`
 * flattens overlay + base into <state>/<name>/image/rootfs.img with the
 * base's boot files and links <image_dir>/<name> to it. The VM is destroyed
 * in every case. 0 = done; -1 with reason. */
static int run_setup(template_builder *tb, const char *name, const char *base, const char *setup, char *const envp[],
                     int logfd, int devnull, int64_t t0, char *reason, size_t rsize)
{
    runtime_driver *d = tb->driver;
    runtime_spec spec = {.vcpus = 1, .memory_mb = TB_SETUP_MEMORY_MB, .disk_mb = TORPOR_DISK_MB_MIN,
                         .created_at_unix = time(NULL)};
    setf(spec.sandbox_id, sizeof spec.sandbox_id, "%s.setup", name);
    setf(spec.template_name, sizeof spec.template_name, "%s", base);
    terr err = {{0}};
    runtime_vm *vm = NULL;
    dprintf(logfd, "torpor-agent: booting a VM of the new image for the setup script\n");
    /* A leftover of an interrupted build of this name. */
    d->ops->destroy(d, spec.sandbox_id, NULL, &err);
    /* One more try: on a loaded host a first boot can miss the guest's
     * answer deadline. */
    for (int attempt = 1; d->ops->create(d, &spec, &vm, &err) < 0; attempt++) {
        dprintf(logfd, "torpor-agent: setup VM did not start (attempt %d): %s\n", attempt, err.msg);
        terr derr;
        d->ops->destroy(d, spec.sandbox_id, NULL, &derr);
        if (attempt == 2) {
            setf(reason, rsize, "setup VM did not start: %s", err.msg);
            return -1;
        }
    }
    pthread_mutex_lock(&tb->mu);
    tb->setup_vm = vm;
    bool stopping = tb->stopping;
    pthread_mutex_unlock(&tb->mu);
    int rc = -1;
    runtime_exec_result res = {0};
    if (stopping) {
        setf(reason, rsize, "interrupted: the agent stopped during the build");
        goto out;
    }
    if (d->ops->write_file(d, vm, "/tmp/torpor-setup.sh", (const uint8_t *)setup, strlen(setup), 0700, &err) < 0) {
        setf(reason, rsize, "could not copy the setup script into the VM: %s", err.msg);
        goto out;
    }
    static const char *const env[] = {"HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                      "DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8"};
    int remaining = tb->time_limit_sec - (int)((mono_ms() - t0) / 1000);
    if (remaining > TORPOR_EXEC_TIMEOUT_MAX_SEC) remaining = TORPOR_EXEC_TIMEOUT_MAX_SEC;
    if (remaining < 1) {
        setf(reason, rsize, "build timed out after %d s", tb->time_limit_sec);
        goto out;
    }
    runtime_exec_request req = {.cmd = "/bin/bash /tmp/torpor-setup.sh", .env = env,
                                .n_env = sizeof env / sizeof env[0], .cwd = "/root", .timeout_sec = remaining};
    int64_t ts = mono_ms();
    dprintf(logfd, "torpor-agent: running the setup script (%zu bytes, time limit %d s)\n", strlen(setup),
            remaining);
    if (d->ops->exec(d, vm, &req, &res, &err) < 0) {
        pthread_mutex_lock(&tb->mu);
        stopping = tb->stopping;
        pthread_mutex_unlock(&tb->mu);
        if (stopping) setf(reason, rsize, "interrupted: the agent stopped during the build");
        else setf(reason, rsize, "setup script: %s", err.msg);
        goto out;
    }
    log_output(logfd, "setup stdout", res.out, res.out_len, res.out_truncated);
    log_output(logfd, "setup stderr", res.err, res.err_len, res.err_truncated);
    dprintf(logfd, "torpor-agent: setup script exit code %d in %lld ms\n", res.exit_code,
            (long long)(mono_ms() - ts));
    if (res.timed_out) {
        setf(reason, rsize, "setup script timed out after %d s", remaining);
        goto out;
    }
    if (res.exit_code != 0) {
        setf(reason, rsize, "setup script exited with code %d", res.exit_code);
        goto out;
    }
    runtime_exec_result_free(&res);
    memset(&res, 0, sizeof res);
    /* Everything on disk, the journal checkpointed, nothing written after. */
    runtime_exec_request fz = {.cmd = "rm -f /tmp/torpor-setup.sh; sync && fsfreeze --freeze /", .timeout_sec = 60};
    if (d->ops->exec(d, vm, &fz, &res, &err) < 0 || res.exit_code != 0) {
        setf(reason, rsize, "could not flush the VM's disk: %s",
                 err.msg[0] ? err.msg : (res.err_len ? "fsfreeze failed" : "sync failed"));
        goto out;
    }
    if (d->ops->pause(d, vm, &spec, &err) < 0) {
        setf(reason, rsize, "could not stop the setup VM: %s", err.msg);
        goto out;
    }
    char overlay[4200], img[4200], base_dir[4200], link[4200];
    int n1 = snprintf(overlay, sizeof overlay, "%s/sandboxes/%s/root.qcow2", tb->agent_state_dir, spec.sandbox_id);
    int n2 = snprintf(img, sizeof img, "%s/%s/image", tb->state_dir, name);
    image_link(tb, base, base_dir, sizeof base_dir);
    image_link(tb, name, link, sizeof link);
    if (n1 < 0 || (size_t)n1 >= sizeof overlay || n2 < 0 || (size_t)n2 >= sizeof img) {
        setf(reason, rsize, "path too long");
        goto out;
    }
    static const char finish[] =
        "set -e; base=$1; img=$2; ov=$3; link=$4\n"
        "rm -rf \"$img\"; mkdir -p \"$img\"\n"
        "for f in vmlinux initramfs.cpio.gz cmdline kernel-source; do\n"
        "  if [ -e \"$base/$f\" ]; then cp \"$base/$f\" \"$img/$f\"; fi\n"
        "done\n"
        "qemu-img convert -O raw \"$ov\" \"$img/rootfs.img.tmp\"\n"
        "mv \"$img/rootfs.img.tmp\" \"$img/rootfs.img\"; chmod 0444 \"$img/rootfs.img\"\n"
        "cd \"$img\"; sha256sum rootfs.img | cut -d' ' -f1 > rootfs.sha256\n"
        "cat vmlinux initramfs.cpio.gz cmdline rootfs.sha256 | sha256sum | cut -d' ' -f1 > image-id\n"
        "ln -sfn \"$img\" \"$link.tmp\"; mv -T \"$link.tmp\" \"$link\"\n"
        "echo \"torpor-agent: image after setup: $(cat rootfs.sha256)\"\n";
    char *argv[] = {"/bin/sh", "-c", (char *)finish, "finish", base_dir, img, overlay, link, NULL};
    int64_t tf = mono_ms();
    char pgid_path[4096], marker[128];
    state_path(tb, name, "pgid", pgid_path, sizeof pgid_path);
    setf(marker, sizeof marker, TB_MARKER_ENV "=%s", name);
    int r = run_child(tb, argv, envp, logfd, devnull, t0, pgid_path, marker, reason, rsize);
    if (r == 1) setf(reason, rsize, "flattening the setup VM's disk into the template image failed");
    if (r == 0) {
        dprintf(logfd, "torpor-agent: image flattened in %lld ms\n", (long long)(mono_ms() - tf));
        rc = 0;
    }
out:
    runtime_exec_result_free(&res);
    pthread_mutex_lock(&tb->mu);
    tb->setup_vm = NULL;
    pthread_mutex_unlock(&tb->mu);
    terr derr = {{0}};
    if (d->ops->destroy(d, spec.sandbox_id, vm, &derr) < 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=template_setup_vm_destroy_failed sandbox_id=%s error=\"%s\"", spec.sandbox_id,
                 log_quote(derr.msg, q, sizeof q));
    }
    runtime_vm_unref(vm);
    return rc;
}

/* Runs the recipe (and the setup script) for e; returns with e->info
 * settled (ready or error). Without setup the recipe links the image to
 * <image_dir>/<name>; with setup it links it to <image_dir>/<name>.base
 * for the setup VM, and run_setup makes and links the final image. */
static void run_build(template_builder *tb, tb_entry *e, const char *name, const char *packages, const char *setup)
{
    char log_path[4096], link[4200], base_name[80], base_link[4200], qn[LOG_QUOTE_MAX];
    state_path(tb, name, "build.log", log_path, sizeof log_path);
    image_link(tb, name, link, sizeof link);
    snprintf(base_name, sizeof base_name, "%s" TB_BASE_SUFFIX, name);
    image_link(tb, base_name, base_link, sizeof base_link);
    log_quote(name, qn, sizeof qn);

    /* Everything exec needs, prepared before fork (the child of a threaded
     * process may only make async-signal-safe calls). */
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char **envp = calloc(n_env + 3, sizeof *envp);
    char extra[8300], marker[128];
    snprintf(extra, sizeof extra, "TORPOR_EXTRA_PACKAGES=%s", packages ? packages : "");
    snprintf(marker, sizeof marker, TB_MARKER_ENV "=%s", name);
    size_t k = 0;
    if (envp) {
        envp[k++] = marker; /* first: tproc_members reads only the start of an environment */
        envp[k++] = extra;
    }
    for (size_t i = 0; envp && i < n_env; i++)
        if (strncmp(environ[i], "TORPOR_EXTRA_PACKAGES=", 22) != 0 &&
            strncmp(environ[i], TB_MARKER_ENV "=", strlen(TB_MARKER_ENV) + 1) != 0)
            envp[k++] = environ[i];
    char *argv[] = {"/bin/bash", tb->recipe_script, setup ? base_link : link, tb->guest_binary, NULL};
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

    bool ok = false;
    char reason[512] = "";
    int64_t t0 = mono_ms();
    if (!envp || logfd < 0 || devnull < 0) {
        snprintf(reason, sizeof reason, "could not start the build: %s", strerror(errno));
    } else {
        dprintf(logfd, "torpor-agent: building template %s: debian + [%s]%s\n", name, packages ? packages : "",
                setup ? " + setup script" : "");
        char pgid_path[4096];
        state_path(tb, name, "pgid", pgid_path, sizeof pgid_path);
        int r = run_child(tb, argv, envp, logfd, devnull, t0, pgid_path, marker, reason, sizeof reason);
        if (r == 0 && image_complete(setup ? base_link : link)) {
            ok = true;
        } else if (r >= 0) {
            failure_reason(log_path, reason, sizeof reason);
            if (!reason[0]) snprintf(reason, sizeof reason, "build failed");
        }
        if (ok && setup) {
            ok = run_setup(tb, name, base_name, setup, envp, logfd, devnull, t0, reason, sizeof reason) == 0 &&
                 image_complete(link);
            if (!ok && !reason[0]) snprintf(reason, sizeof reason, "setup failed");
        }
    }
    if (setup) unlink(base_link);
    if (logfd >= 0) {
        if (!ok) dprintf(logfd, "torpor-agent: build failed: %s\n", reason);
        else dprintf(logfd, "torpor-agent: build done in %lld ms\n", (long long)(mono_ms() - t0));
        close(logfd);
    }
    if (devnull >= 0) close(devnull);
    free(envp);

    tb_info done = {0};
    if (ok) {
        done.size_bytes = image_size(link);
        char p[4300];
        pjoin(p, sizeof p, link, "rootfs.sha256");
        read_small(p, done.digest, sizeof done.digest);
    } else {
        unlink(link); /* never a half image under the name */
    }
    terr err;
    pthread_mutex_lock(&tb->mu);
    e->info.status = ok ? TB_READY : TB_ERROR;
    e->info.size_bytes = done.size_bytes;
    snprintf(e->info.digest, sizeof e->info.digest, "%s", done.digest);
    snprintf(e->info.error, sizeof e->info.error, "%s", ok ? "" : reason);
    e->queued = false;
    int rc = save_state(tb, e, &err);
    pthread_mutex_unlock(&tb->mu);
    char qr[LOG_QUOTE_MAX];
    if (ok)
        log_info("event=template_built name=\"%s\" ms=%lld size_bytes=%lld digest=%.16s setup=%s", qn,
                 (long long)(mono_ms() - t0), (long long)done.size_bytes, done.digest, setup ? "yes" : "no");
    else
        log_warn("event=template_build_failed name=\"%s\" ms=%lld error=\"%s\"", qn, (long long)(mono_ms() - t0),
                 log_quote(reason, qr, sizeof qr));
    if (rc != 0) log_error("event=template_state_write_failed name=\"%s\" error=\"%s\"", qn,
                           log_quote(err.msg, qr, sizeof qr));
}

static void *worker_main(void *arg)
{
    template_builder *tb = arg;
    pthread_mutex_lock(&tb->mu);
    for (;;) {
        tb_entry *next = NULL;
        for (tb_entry *e = tb->entries; e && !next; e = e->next)
            if (e->queued && e->info.status == TB_BUILDING) next = e;
        if (tb->stopping) break;
        if (!next) {
            pthread_cond_wait(&tb->cv, &tb->mu);
            continue;
        }
        char name[64];
        snprintf(name, sizeof name, "%s", next->info.name);
        char *packages = next->packages ? strdup(next->packages) : NULL;
        char *setup = next->setup ? strdup(next->setup) : NULL;
        pthread_mutex_unlock(&tb->mu);
        /* Entries are only freed by tb_delete, which refuses building ones,
         * and by tb_close after this thread is joined. */
        run_build(tb, next, name, packages, setup);
        free(packages);
        free(setup);
        pthread_mutex_lock(&tb->mu);
    }
    pthread_mutex_unlock(&tb->mu);
    return NULL;
}

/* ------------------------------------------------------------ open/close */

static void entry_free(tb_entry *e)
{
    if (!e) return;
    free(e->packages);
    free(e->setup);
    free(e);
}

/* What is left of the process group of a build whose agent died: its
 * leader (the recipe's bash) died with the agent, its children (mmdebstrap,
 * apt) may still run. Only processes of that group that carry the build's
 * marker in their environment (TB_MARKER_ENV=<name>) count, so a reused id
 * never touches anything else. */
static void kill_orphan_group(const char *pgid_path, const char *name)
{
    char text[32];
    if (read_small(pgid_path, text, sizeof text) != 0) return;
    unlink(pgid_path);
    int pgid = atoi(text);
    if (pgid <= 1) return;
    char marker[128];
    snprintf(marker, sizeof marker, TB_MARKER_ENV "=%s", name);
    int n = tproc_stop_group(pgid, marker, TB_TERM_GRACE_MS);
    if (!n) return;
    char q[LOG_QUOTE_MAX];
    log_warn("event=template_build_orphans_killed name=\"%s\" pgid=%d processes=%d", log_quote(name, q, sizeof q),
             pgid, n);
}

int tb_open(const tb_config *cfg, template_builder **out, terr *err)
{
    *out = NULL;
    template_builder *tb = calloc(1, sizeof *tb);
    if (!tb) return terr_set(err, "out of memory");
    if (asprintf(&tb->state_dir, "%s/template-builds", cfg->state_dir) < 0) tb->state_dir = NULL;
    tb->agent_state_dir = strdup(cfg->state_dir);
    tb->driver = cfg->driver;
    tb->image_dir = strdup(cfg->image_dir);
    tb->recipe_script = strdup(cfg->recipe_script ? cfg->recipe_script : "");
    tb->guest_binary = strdup(cfg->guest_binary ? cfg->guest_binary : "");
    tb->time_limit_sec = cfg->time_limit_sec > 0 ? cfg->time_limit_sec : TB_TIME_LIMIT_DEFAULT;
    pthread_mutex_init(&tb->mu, NULL);
    pthread_cond_init(&tb->cv, NULL);
    if (!tb->state_dir || !tb->agent_state_dir || !tb->image_dir || !tb->recipe_script || !tb->guest_binary) {
        tb_close(tb);
        return terr_set(err, "out of memory");
    }
    if (fs_mkdir_p(tb->state_dir, 0755, err) != 0) {
        tb_close(tb);
        return -1;
    }
    DIR *d = opendir(tb->state_dir);
    if (!d) {
        terr_set(err, "open %s: %s", tb->state_dir, strerror(errno));
        tb_close(tb);
        return -1;
    }
    struct dirent *de;
    tb_entry **tail = &tb->entries;
    while ((de = readdir(d))) {
        if (!limits_template_name_valid(de->d_name)) continue;
        tb_entry *e = calloc(1, sizeof *e);
        if (!e) break;
        if (load_state(tb, de->d_name, e) != 0) {
            entry_free(e);
            continue;
        }
        char q[LOG_QUOTE_MAX];
        if (e->info.status == TB_BUILDING) {
            /* The agent stopped or died mid-build: never a usable half image. */
            char pgid_path[4096];
            state_path(tb, e->info.name, "pgid", pgid_path, sizeof pgid_path);
            kill_orphan_group(pgid_path, e->info.name);
            char link[4200];
            image_link(tb, e->info.name, link, sizeof link);
            unlink(link);
            char base[80];
            snprintf(base, sizeof base, "%s" TB_BASE_SUFFIX, e->info.name);
            image_link(tb, base, link, sizeof link);
            unlink(link);
            e->info.status = TB_ERROR;
            snprintf(e->info.error, sizeof e->info.error, "interrupted: the agent restarted during the build");
            terr werr;
            if (save_state(tb, e, &werr) != 0) log_error("event=template_state_write_failed error=\"%s\"",
                                                         log_quote(werr.msg, q, sizeof q));
            log_warn("event=template_build_interrupted name=\"%s\"", log_quote(e->info.name, q, sizeof q));
        }
        *tail = e;
        tail = &e->next;
    }
    closedir(d);
    if (pthread_create(&tb->worker, NULL, worker_main, tb) != 0) {
        tb_close(tb);
        return terr_set(err, "start the template build thread failed");
    }
    tb->worker_started = true;
    *out = tb;
    return 0;
}

void tb_close(template_builder *tb)
{
    if (!tb) return;
    if (tb->worker_started) {
        pthread_mutex_lock(&tb->mu);
        tb->stopping = true;
        pthread_cond_broadcast(&tb->cv);
        runtime_vm *vm = tb->setup_vm;
        if (vm) runtime_vm_ref(vm);
        pthread_mutex_unlock(&tb->mu);
        if (vm) {
            /* A setup script runs: end it (its exec fails at once). */
            terr err;
            tb->driver->ops->destroy(tb->driver, vm->sandbox_id, vm, &err);
            runtime_vm_unref(vm);
        }
        pthread_join(tb->worker, NULL);
    }
    /* Queued builds that never ran: the next start marks them error. */
    while (tb->entries) {
        tb_entry *e = tb->entries;
        tb->entries = e->next;
        entry_free(e);
    }
    pthread_mutex_destroy(&tb->mu);
    pthread_cond_destroy(&tb->cv);
    free(tb->state_dir);
    free(tb->agent_state_dir);
    free(tb->image_dir);
    free(tb->recipe_script);
    free(tb->guest_binary);
    free(tb);
}

/* ------------------------------------------------------------ calls */

agent_code tb_build(template_builder *tb, const char *name, const char *base, const char *const *packages,
                    size_t n_packages, const char *setup, tb_info *out, terr *err)
{
    if (!limits_template_name_valid(name)) {
        terr_set(err, "invalid template name: must match ^[a-z0-9][a-z0-9._-]{0,62}$");
        return AGENT_INVALID_ARGUMENT;
    }
    if (base && *base && strcmp(base, "debian") != 0) {
        terr_set(err, "invalid base \"%.64s\": only \"debian\" can be built on", base);
        return AGENT_INVALID_ARGUMENT;
    }
    if (n_packages > TEMPLATE_PACKAGES_MAX) {
        terr_set(err, "too many packages: at most %d", TEMPLATE_PACKAGES_MAX);
        return AGENT_INVALID_ARGUMENT;
    }
    size_t plen = 1;
    for (size_t i = 0; i < n_packages; i++) {
        if (!template_package_name_valid(packages[i])) {
            terr_set(err, "invalid package name \"%.130s\": must match ^[a-z0-9][a-z0-9+.-]+$", packages[i]);
            return AGENT_INVALID_ARGUMENT;
        }
        plen += strlen(packages[i]) + 1;
    }
    if (setup && strlen(setup) > TEMPLATE_SETUP_MAX) {
        terr_set(err, "setup script too large: at most %d bytes", TEMPLATE_SETUP_MAX);
        return AGENT_INVALID_ARGUMENT;
    }
    if (setup && *setup && !tb->driver) {
        terr_set(err, "setup scripts are not supported by this agent (no VM driver for the builder)");
        return AGENT_INVALID_ARGUMENT;
    }
    if (!tb->recipe_script[0] || access(tb->recipe_script, R_OK) != 0) {
        terr_set(err, "this agent cannot build templates: recipe script %.300s not found "
                      "(TORPOR_TEMPLATE_RECIPE)", tb->recipe_script);
        return AGENT_FAILED_PRECONDITION;
    }
    char *list = calloc(1, plen);
    if (!list) {
        terr_set(err, "out of memory");
        return AGENT_INTERNAL;
    }
    for (size_t i = 0; i < n_packages; i++) {
        if (i) strcat(list, ",");
        strcat(list, packages[i]);
    }
    char link[4200];
    image_link(tb, name, link, sizeof link);
    pthread_mutex_lock(&tb->mu);
    agent_code code = AGENT_OK;
    size_t active = 0;
    for (tb_entry *e = tb->entries; e; e = e->next)
        if (e->queued) active++;
    struct stat st;
    if (find(tb, name) || lstat(link, &st) == 0) {
        terr_set(err, "template %s already exists on this host", name);
        code = AGENT_ALREADY_EXISTS;
    } else if (active >= TB_QUEUE_MAX) {
        terr_set(err, "%zu template builds are already queued or running on this host (the limit)", active);
        code = AGENT_FAILED_PRECONDITION;
    }
    tb_entry *e = NULL;
    if (code == AGENT_OK) {
        e = calloc(1, sizeof *e);
        char dir[4200], path[4300];
        snprintf(dir, sizeof dir, "%s/%s", tb->state_dir, name);
        if (!e || (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
            terr_set(err, "create %s: %s", dir, e ? strerror(errno) : "out of memory");
            code = AGENT_INTERNAL;
        } else {
            snprintf(e->info.name, sizeof e->info.name, "%s", name);
            e->info.status = TB_BUILDING;
            e->info.created_at_unix = time(NULL);
            e->packages = list;
            list = NULL;
            if (setup && *setup && !(e->setup = strdup(setup))) {
                terr_set(err, "out of memory");
                code = AGENT_INTERNAL;
            }
            e->queued = true;
            pjoin(path, sizeof path, dir, "build.log");
            unlink(path);
            pjoin(path, sizeof path, dir, "packages");
            if (code == AGENT_OK && (write_file(path, e->packages, err) != 0 || save_state(tb, e, err) != 0))
                code = AGENT_INTERNAL;
        }
        if (code != AGENT_OK) {
            entry_free(e);
        } else {
            tb_entry **tail = &tb->entries;
            while (*tail) tail = &(*tail)->next;
            *tail = e;
            *out = e->info;
            pthread_cond_broadcast(&tb->cv);
        }
    }
    pthread_mutex_unlock(&tb->mu);
    free(list);
    if (code == AGENT_OK) {
        char q[LOG_QUOTE_MAX], qp[LOG_QUOTE_MAX];
        log_info("event=template_build_queued name=\"%s\" packages=\"%s\" queued=%zu", log_quote(name, q, sizeof q),
                 log_quote(e->packages ? e->packages : "", qp, sizeof qp), active + 1);
    }
    return code;
}

static char *read_tail(const char *path, size_t tail, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    size_t want = size < tail ? size : tail;
    char *buf = malloc(want + 1);
    if (!buf) {
        close(fd);
        return NULL;
    }
    ssize_t n = pread(fd, buf, want, (off_t)(size - want));
    close(fd);
    if (n < 0) n = 0;
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

agent_code tb_get(template_builder *tb, const char *name, size_t log_tail, tb_info *out, char **log,
                  size_t *log_len, terr *err)
{
    if (log) *log = NULL;
    if (log_len) *log_len = 0;
    if (!limits_template_name_valid(name)) {
        terr_set(err, "invalid template name");
        return AGENT_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&tb->mu);
    tb_entry *e = find(tb, name);
    if (e) *out = e->info;
    pthread_mutex_unlock(&tb->mu);
    if (!e) {
        char link[4200];
        image_link(tb, name, link, sizeof link);
        if (!image_complete(link)) {
            terr_set(err, "unknown template %s", name);
            return AGENT_NOT_FOUND;
        }
        builtin_info(tb, name, out);
        return AGENT_OK;
    }
    if (log && log_tail > 0) {
        char path[4096];
        state_path(tb, name, "build.log", path, sizeof path);
        *log = read_tail(path, log_tail > TB_LOG_TAIL_MAX ? TB_LOG_TAIL_MAX : log_tail, log_len);
    }
    return AGENT_OK;
}

int tb_list(template_builder *tb, tb_info **out, size_t *n, terr *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 16, len = 0;
    tb_info *v = malloc(cap * sizeof *v);
    if (!v) return terr_set(err, "out of memory");
    pthread_mutex_lock(&tb->mu);
    for (tb_entry *e = tb->entries; e; e = e->next) {
        if (len == cap) {
            tb_info *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        v[len++] = e->info;
    }
    pthread_mutex_unlock(&tb->mu);
    DIR *d = opendir(tb->image_dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!limits_template_name_valid(de->d_name)) continue;
        bool managed = false;
        for (size_t i = 0; i < len && !managed; i++) managed = strcmp(v[i].name, de->d_name) == 0;
        char link[4200];
        image_link(tb, de->d_name, link, sizeof link);
        size_t nl = strlen(de->d_name), sl = strlen(TB_BASE_SUFFIX);
        bool base = nl > sl && strcmp(de->d_name + nl - sl, TB_BASE_SUFFIX) == 0;
        if (managed || base || !image_complete(link)) continue;
        if (len == cap) {
            tb_info *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        builtin_info(tb, de->d_name, &v[len++]);
    }
    if (d) closedir(d);
    *out = v;
    *n = len;
    return 0;
}

/* Removes dir and everything below it (no symlink is followed). */
static void remove_tree_at(int parent, const char *name)
{
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT) return;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    struct stat here, up;
    if (fstat(fd, &here) != 0 || fstatat(parent, ".", &up, 0) != 0 || here.st_dev != up.st_dev) {
        close(fd); /* another filesystem mounted here: never removed through */
        return;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) remove_tree_at(dirfd(d), de->d_name);
    closedir(d);
    unlinkat(parent, name, AT_REMOVEDIR);
}

static void remove_state_dir(const char *dir)
{
    remove_tree_at(AT_FDCWD, dir);
}

agent_code tb_delete(template_builder *tb, const char *name, terr *err)
{
    if (!limits_template_name_valid(name)) {
        terr_set(err, "invalid template name");
        return AGENT_INVALID_ARGUMENT;
    }
    char link[4200];
    image_link(tb, name, link, sizeof link);
    pthread_mutex_lock(&tb->mu);
    tb_entry **pp = &tb->entries;
    while (*pp && strcmp((*pp)->info.name, name) != 0) pp = &(*pp)->next;
    agent_code code = AGENT_OK;
    tb_entry *e = *pp;
    if (!e) {
        if (image_complete(link)) {
            terr_set(err, "template %s is built in (not made by the template builder)", name);
            code = AGENT_FAILED_PRECONDITION;
        } else {
            terr_set(err, "unknown template %s", name);
            code = AGENT_NOT_FOUND;
        }
    } else if (e->queued) {
        terr_set(err, "template %s is still building", name);
        code = AGENT_FAILED_PRECONDITION;
    } else {
        *pp = e->next;
        unlink(link);
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/%s", tb->state_dir, name);
        remove_state_dir(dir);
        entry_free(e);
    }
    pthread_mutex_unlock(&tb->mu);
    if (code == AGENT_OK) {
        char q[LOG_QUOTE_MAX];
        log_info("event=template_deleted name=\"%s\"", log_quote(name, q, sizeof q));
    }
    return code;
}
