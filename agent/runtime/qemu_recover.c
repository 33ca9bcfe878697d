/* qemu_recover: recover() of the QEMU driver — after an agent restart, turns
 * each sandboxes/<id>/ directory back into a sandbox: a committed snapshot
 * is reported paused (any QEMU of it is killed); a live QEMU is re-attached
 * (QMP, a stopped VM brought back to running, the guest channel, the
 * process watch) and reported running; anything else is debris and
 * removed. Never deletes a live VM it could not re-attach. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mono_time.h"
#include "qemu_internal.h"
#include "qemu_json.h"
#include "qemu_scan.h"

static bool status_is(const char *st, const char *a) { return !strcmp(st, a); }

/* resume_stopped() result: the VM is a create cut short before its
 * snapshot load started (see below). */
#define RESUME_NEVER_LOADED 1

/* Migration status (query-migrate) into ms; "" when there is none. */
static int migration_status(qemu_vm *v, char *ms, size_t n, terr *err)
{
    char *mig;
    if (qmp_call(v->inst.qmp, "query-migrate", NULL, QEMU_RECOVER_QMP_MS, &mig, err) < 0) return -1;
    const char *km[] = {"return", "status"};
    ms[0] = '\0';
    if (qjson_get_string(mig, km, 2, ms, n) < 0) ms[0] = '\0';
    free(mig);
    return 0;
}

/* Brings a re-attached VM back to `running`. A VM found stopped is a pause
 * the previous agent did not finish (stop and maybe the migration done,
 * quit not): without a committed snapshot its RAM is the only copy of the
 * guest, so it runs again. Failures are reported, the VM is kept anyway.
 * RESUME_NEVER_LOADED: `inmigrate` with no incoming migration (or a failed
 * one) — a create whose agent died before `migrate-incoming`: QEMU waits
 * for a load nobody will send, the guest never existed, and a caller
 * without a committed snapshot (ours) has nothing to keep. */
static int resume_stopped(qemu_vm *v, terr *err)
{
    char st[64] = "";
    long long deadline = mono_ms() + QEMU_RECOVER_QMP_MS;
    bool cancelled = false;
    for (;;) {
        char *reply;
        if (qmp_call(v->inst.qmp, "query-status", NULL, QEMU_RECOVER_QMP_MS, &reply, err) < 0)
            return -1;
        const char *k[] = {"return", "status"};
        int r = qjson_get_string(reply, k, 2, st, sizeof st);
        free(reply);
        if (r < 0) return terr_set(err, "query-status: no status in the answer");
        /* A migration still in flight (the agent died mid-save) must end
         * before cont; an incoming load that started (a create cut short
         * after migrate-incoming) finishes on its own. */
        bool settling = status_is(st, "finish-migrate");
        if (!settling) {
            char ms[32];
            if (migration_status(v, ms, sizeof ms, err) < 0) return -1;
            if (status_is(st, "inmigrate")) {
                /* The runstate is set before the incoming status turns
                 * "completed": only none/failed means no load is coming. */
                if (!ms[0] || status_is(ms, "none") || status_is(ms, "failed") ||
                    status_is(ms, "cancelled")) {
                    terr_set(
                        err,
                        "VM in state inmigrate with %s incoming migration: its snapshot load never "
                        "started",
                        ms[0] ? ms : "no");
                    return RESUME_NEVER_LOADED;
                }
                settling = true;
            } else {
                settling = status_is(ms, "active") || status_is(ms, "setup") ||
                           status_is(ms, "device") || status_is(ms, "pre-switchover") ||
                           status_is(ms, "cancelling");
            }
        }
        if (!settling) break;
        if (!cancelled && !status_is(st, "inmigrate")) {
            terr e;
            qmp_call(v->inst.qmp, "migrate_cancel", NULL, QEMU_RECOVER_QMP_MS, NULL, &e);
            cancelled = true;
        }
        if (mono_ms() > deadline) return terr_set(err, "VM stuck in state %s", st);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (status_is(st, "running")) return 0;
    char q[LOG_QUOTE_MAX];
    log_warn("event=recover_cont sandbox_id=%s status=\"%s\"", v->base.sandbox_id,
             log_quote(st, q, sizeof q));
    if (qmp_call(v->inst.qmp, "cont", NULL, QEMU_RECOVER_QMP_MS, NULL, err) < 0)
        return terr_wrap(err, "cont from status %s", st);
    return 0;
}

/* recover() for sandboxes/<id>/ without a committed snapshot. 0 and *out:
 * a live QEMU re-attached as running (always, once the process is found
 * alive and described: QMP, cont or the guest failing only gets logged,
 * the guest channel is connected lazily on the next guest call and QMP on
 * the next lifecycle call), except a create cut short before its snapshot
 * load started (killed). -1: no live QEMU for it (any found is killed);
 * the caller removes the directory. */
static int reattach(qemu_drv *d, const char *id, int sbfd, qemu_vm **out, terr *err)
{
    char q[LOG_QUOTE_MAX];
    pid_t pid;
    unsigned long long st;
    if (qemu_proc_read_pidfile(sbfd, &pid, &st, err) < 0) return -1;
    qemu_proc proc;
    if (qemu_proc_attach(pid, st, &proc, err) < 0) return terr_wrap(err, "no live QEMU");
    qemu_meta desc;
    if (qemu_meta_read(sbfd, QEMU_RUNNING_FILE, &desc, err) < 0) {
        /* create and resume write "running" before QEMU starts, so this is
         * a QEMU whose sandbox never existed for anyone (or a corrupt
         * description): nothing to serve it by. */
        qemu_proc_kill(&proc);
        return terr_wrap(err, "live QEMU (killed) without a valid description");
    }
    int fd2 = fcntl(sbfd, F_DUPFD_CLOEXEC, 0);
    qemu_vm *v = fd2 >= 0 ? qemu_vm_new(d, id, fd2, err) : NULL;
    if (!v) {
        if (fd2 >= 0) close(fd2);
        else terr_set(err, "dup: %s", strerror(errno));
        /* Out of resources: keep the VM running for the next restart. */
        qemu_proc_release(&proc);
        return 1;
    }
    v->desc = desc;
    v->inst.proc = proc;
    /* Debris of a pause or resume cut short: not a committed snapshot, the
     * live VM is the sandbox. */
    unlinkat(sbfd, QEMU_META_FILE, 0);
    unlinkat(sbfd, "meta.tmp", 0);
    unlinkat(sbfd, QEMU_STATE_TMP, 0);
    unlinkat(sbfd, QEMU_STATE_FILE, 0);
    terr why;
    int rs = qemu_vm_ensure_qmp(v, &why) < 0 ? -1 : resume_stopped(v, &why);
    if (rs == RESUME_NEVER_LOADED) {
        /* Nothing of the user's exists yet (no committed snapshot either:
         * recover() handled that before calling us): a VM that can never
         * run must not be reported running. */
        log_warn("event=recover_create_incomplete sandbox_id=%s pid=%d error=\"%s\" action=kill",
                 id, (int)pid, log_quote(why.msg, q, sizeof q));
        terr_set(err, "create cut short before its snapshot was loaded (QEMU killed): %s", why.msg);
        qemu_inst_kill(&v->inst);
        runtime_vm_unref(&v->base);
        return -1;
    }
    if (rs < 0) {
        if (!qemu_proc_poll(&v->inst.proc)) goto gone;
        log_warn("event=recover_qmp_failed sandbox_id=%s pid=%d error=\"%s\"", id, (int)pid,
                 log_quote(why.msg, q, sizeof q));
    }
    /* SYNC too: the clock stood still while the VM was stopped, and a
     * create cut short may not have reseeded the guest yet. */
    if (qemu_vm_connect_guest(v, QEMU_RECOVER_GUEST_MS, true, &why) < 0) {
        if (!qemu_proc_poll(&v->inst.proc)) goto gone;
        /* Counts as an attempt: the first calls right after do not wait
         * for the same silence again. */
        qemu_vm_note_connect_failed(v, why.msg);
        log_warn(
            "event=recover_guest_failed sandbox_id=%s pid=%d error=\"%s\" action=reconnect_on_next_call",
            id, (int)pid, log_quote(why.msg, q, sizeof q));
    }
    if (qemu_watch_add(d->watch, v, &why) < 0)
        log_warn("event=recover_watch_failed sandbox_id=%s error=\"%s\"", id,
                 log_quote(why.msg, q, sizeof q));
    *out = v;
    return 0;
gone:
    terr_set(err, "QEMU exited while being re-attached: %s", why.msg);
    qemu_inst_kill(&v->inst);
    runtime_vm_unref(&v->base);
    return -1;
}

/* Kills the QEMUs of sandboxes/<id>/ that no pid file names (the agent died
 * between their spawn and the pid file): called for a directory about to be
 * removed or holding a committed snapshot, where no QEMU may live on. The
 * /proc scan is taken once, on first need. */
static void kill_strays(qemu_scan **scan, bool *scanned, const char *id, int sbfd)
{
    if (!*scanned) {
        *scanned = true;
        terr e;
        if (qemu_scan_take(scan, &e) < 0) {
            *scan = NULL;
            char q[LOG_QUOTE_MAX];
            log_warn("event=recover_scan_failed error=\"%s\"", log_quote(e.msg, q, sizeof q));
        }
    }
    int n = qemu_scan_kill_in(*scan, id, sbfd);
    if (n > 0)
        log_warn(
            "event=recover_stray_killed sandbox_id=%s count=%d reason=\"a QEMU of this sandbox that no pid "
            "file names\"",
            id, n);
}

/* Live VMs are re-attached in parallel, each within its own bounded waits
 * (QMP QEMU_RECOVER_QMP_MS, guest QEMU_RECOVER_GUEST_MS), so N silent guests
 * cost about one guest timeout, not N. */
#define RECOVER_PARALLEL 16

typedef struct recover_run {
    qemu_drv *d;
    runtime_recover_fn cb;
    void *ctx;
    pthread_mutex_t mu; /* serialises cb, the stray scan and the counters */
    qemu_scan *scan;
    bool scanned;
    int running, removed, kept;
    char (*ids)[RUNTIME_ID_MAX];
    int *fds;
    runtime_spec *specs; /* announced ones: specs[i].sandbox_id[0] != 0 */
    size_t n, next;
} recover_run;

static void remove_dir(qemu_drv *d, const char *id, const char *why)
{
    char q[LOG_QUOTE_MAX], qid[LOG_QUOTE_MAX];
    terr rerr;
    if (qemu_rmtree(d->sb_dirfd, id, &rerr) < 0)
        log_warn("event=recover_remove_failed sandbox_id=\"%s\" error=\"%s\"",
                 log_quote(id, qid, sizeof qid), log_quote(rerr.msg, q, sizeof q));
    else
        log_info("event=recover_removed sandbox_id=\"%s\" reason=\"%s\"",
                 log_quote(id, qid, sizeof qid), log_quote(why, q, sizeof q));
}

static void recover_live(recover_run *rr, const char *id, int sbfd, const runtime_spec *announced)
{
    char q[LOG_QUOTE_MAX];
    terr why = {"not a sandbox directory"};
    qemu_vm *v = NULL;
    int r = reattach(rr->d, id, sbfd, &v, &why);
    pthread_mutex_lock(&rr->mu);
    if (r < 0) kill_strays(&rr->scan, &rr->scanned, id, sbfd);
    close(sbfd);
    if (r == 0) {
        pthread_mutex_lock(&v->mu);
        bool guest = v->ch != NULL;
        pthread_mutex_unlock(&v->mu);
        log_info("event=recovered sandbox_id=%s state=running pid=%d guest=%s qmp=%s", id,
                 (int)v->inst.proc.pid, guest ? "connected" : "pending",
                 v->inst.qmp ? "connected" : "pending");
        rr->cb(rr->ctx, &v->desc.spec, &v->base);
        rr->running++;
    } else if (r > 0) {
        /* Alive but not re-attachable now: never delete a live VM. */
        log_error("event=recover_skipped sandbox_id=%s error=\"%s\"", id,
                  log_quote(why.msg, q, sizeof q));
        rr->kept++;
    } else {
        remove_dir(rr->d, id, why.msg);
        rr->removed++;
    }
    if (r != 0 && announced) rr->cb(rr->ctx, announced, RUNTIME_VM_GONE);
    pthread_mutex_unlock(&rr->mu);
}

static void *recover_worker(void *arg)
{
    recover_run *rr = arg;
    for (;;) {
        pthread_mutex_lock(&rr->mu);
        size_t i = rr->next < rr->n ? rr->next++ : rr->n;
        pthread_mutex_unlock(&rr->mu);
        if (i >= rr->n) return NULL;
        recover_live(rr, rr->ids[i], rr->fds[i], rr->specs[i].sandbox_id[0] ? &rr->specs[i] : NULL);
    }
}

int qemu_recover(runtime_driver *rd, runtime_recover_fn cb, void *ctx, terr *err)
{
    qemu_drv *d = qemu_drv_of(rd);
    qemu_template_cleanup(d);
    int dup_fd = dup(d->sb_dirfd);
    if (dup_fd < 0) return terr_set(err, "dup: %s", strerror(errno));
    DIR *dir = fdopendir(dup_fd);
    if (!dir) {
        close(dup_fd);
        return terr_set(err, "read %s/sandboxes: %s", d->state_dir, strerror(errno));
    }
    rewinddir(dir);
    struct dirent *e;
    int paused = 0;
    recover_run rr = {.d = d, .cb = cb, .ctx = ctx};
    pthread_mutex_init(&rr.mu, NULL);
    size_t cap = 0;
    while ((e = readdir(dir))) {
        const char *id = e->d_name;
        if (!strcmp(id, ".") || !strcmp(id, "..")) continue;
        terr why = {"not a sandbox directory"};
        int sbfd = qemu_valid_name(id, RUNTIME_ID_MAX)
                       ? openat(d->sb_dirfd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                       : -1;
        if (sbfd >= 0) {
            qemu_meta meta;
            if (qemu_meta_read(sbfd, QEMU_META_FILE, &meta, &why) == 0 && meta.state_bytes > 0 &&
                qemu_file_size(sbfd, QEMU_STATE_FILE) == meta.state_bytes) {
                /* Committed snapshot: whatever else is there is debris. */
                qemu_kill_by_pidfile(sbfd);
                kill_strays(&rr.scan, &rr.scanned, id, sbfd);
                unlinkat(sbfd, QEMU_STATE_TMP, 0);
                unlinkat(sbfd, QEMU_RUNNING_FILE, 0);
                unlinkat(sbfd, "qemu.pid", 0);
                /* id passed qemu_valid_name(): shorter than RUNTIME_ID_MAX */
                memcpy(meta.spec.sandbox_id, id, strlen(id) + 1);
                log_info("event=recovered sandbox_id=%s state=paused", id);
                cb(ctx, &meta.spec, NULL);
                close(sbfd);
                paused++;
                continue;
            }
            /* A live VM (or debris): re-attached below, in parallel. */
            if (rr.n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                void *ni = realloc(rr.ids, nc * sizeof *rr.ids);
                if (ni) rr.ids = ni;
                void *nf = ni ? realloc(rr.fds, nc * sizeof *rr.fds) : NULL;
                if (nf) rr.fds = nf;
                void *ns = nf ? realloc(rr.specs, nc * sizeof *rr.specs) : NULL;
                if (ns) rr.specs = ns;
                if (!ni || !nf || !ns) {
                    /* Out of memory: leave this one alone (never delete a live VM). */
                    log_error("event=recover_skipped sandbox_id=%s error=\"out of memory\"", id);
                    close(sbfd);
                    rr.kept++;
                    continue;
                }
                cap = nc;
            }
            memcpy(rr.ids[rr.n], id, strlen(id) + 1);
            /* Announce it (listed as recovering meanwhile) when its
             * description is readable; otherwise it is reported only if it
             * comes back. */
            qemu_meta desc;
            terr derr;
            memset(&rr.specs[rr.n], 0, sizeof rr.specs[rr.n]);
            if (qemu_meta_read(sbfd, QEMU_RUNNING_FILE, &desc, &derr) == 0) {
                rr.specs[rr.n] = desc.spec;
                memcpy(rr.specs[rr.n].sandbox_id, id, strlen(id) + 1);
                cb(ctx, &rr.specs[rr.n], RUNTIME_VM_RECOVERING);
            }
            rr.fds[rr.n++] = sbfd;
            continue;
        }
        remove_dir(d, id, why.msg);
        rr.removed++;
    }
    closedir(dir);
    cb(ctx, NULL, RUNTIME_VM_RECOVERING); /* every sandbox is known now */
    long long t0 = mono_ms();
    pthread_t th[RECOVER_PARALLEL];
    int nth = 0;
    for (size_t i = 0; i < rr.n && nth < RECOVER_PARALLEL; i++)
        if (pthread_create(&th[nth], NULL, recover_worker, &rr) == 0) nth++;
    recover_worker(&rr); /* this thread helps, and does all if no thread started */
    for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
    qemu_scan_free(rr.scan);
    pthread_mutex_destroy(&rr.mu);
    free(rr.ids);
    free(rr.fds);
    free(rr.specs);
    log_info(
        "event=recover_done paused=%d running=%d removed=%d kept=%d live_candidates=%zu workers=%d "
        "reattach_ms=%lld",
        paused, rr.running, rr.removed, rr.kept, rr.n, nth + 1, mono_ms() - t0);
    return 0;
}

int qemu_net_fd(runtime_driver *rd, runtime_vm *vm, terr *err)
{
    (void)rd;
    qemu_vm *v = qemu_vm_of(vm);
    pthread_mutex_lock(&v->mu);
    int pidfd = v->state == QVM_RUNNING ? v->inst.proc.pidfd : -1;
    int fd = pidfd >= 0 ? (int)syscall(SYS_pidfd_getfd, pidfd, QEMU_PASS_FD, 0) : -1;
    int e = errno;
    pthread_mutex_unlock(&v->mu);
    if (pidfd < 0) return terr_set(err, "no running QEMU to take the network fd from");
    if (fd < 0) return terr_set(err, "pidfd_getfd(QEMU fd %d): %s", QEMU_PASS_FD, strerror(e));
    return fd; /* pidfd_getfd sets FD_CLOEXEC */
}
