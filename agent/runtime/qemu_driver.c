/* qemu_driver: the QEMU runtime driver — open/close, create (restore of a
 * template snapshot), resume, destroy, liveness and handles. recover()
 * lives in qemu_recover.c, pause in qemu_pause.c, guest calls in
 * qemu_guest_ops.c. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs_util.h"
#include "log.h"
#include "qemu_accel.h"
#include "mono_time.h"
#include "qemu_internal.h"

static const runtime_ops qemu_ops;

/* ---- handles ---- */

qemu_vm *qemu_vm_new(qemu_drv *d, const char *sandbox_id, int dirfd, terr *err)
{
    qemu_vm *v = calloc(1, sizeof *v);
    if (!v) {
        terr_set(err, "out of memory");
        return NULL;
    }
    runtime_vm_init(&v->base, &d->base, sandbox_id, v);
    pthread_mutex_init(&v->mu, NULL);
    pthread_mutex_init(&v->conn_mu, NULL);
    v->state = QVM_RUNNING;
    v->dirfd = dirfd;
    v->inst.dirfd = dirfd;
    v->inst.run_as = d->run_as;
    v->inst.proc.pidfd = -1;
    v->inst.proc.exited = true;
    snprintf(v->inst.id, sizeof v->inst.id, "%s", sandbox_id);
    return v;
}

static void qemu_vm_free(runtime_vm *vm)
{
    qemu_vm *v = qemu_vm_of(vm);
    if (v->ch) {
        guest_channel_close(v->ch, "sandbox handle released");
        guest_channel_unref(v->ch);
    }
    /* A VM still running when its last handle goes (agent shutdown) keeps
     * running: recover() re-attaches it after a restart. */
    qmp_close(v->inst.qmp);
    qemu_proc_release(&v->inst.proc);
    if (v->dirfd >= 0) close(v->dirfd);
    pthread_mutex_destroy(&v->conn_mu);
    pthread_mutex_destroy(&v->mu);
    free(v);
}

int qemu_vm_connect_guest(qemu_vm *v, int timeout_ms, bool sync, terr *err)
{
    guest_channel *ch;
    if (guest_channel_open(v->dirfd, QEMU_GUEST_SOCK, v->base.sandbox_id, v->inst.proc.pidfd,
                           timeout_ms, &ch, err) < 0)
        return -1;
    /* Clones of one template share its RNG state and its clock: reseed and
     * set the time before anyone runs anything. */
    if (sync && guest_channel_sync(ch, QEMU_GUEST_CALL_MS, err) < 0) {
        guest_channel_unref(ch);
        return terr_wrap(err, "guest SYNC");
    }
    pthread_mutex_lock(&v->mu);
    guest_channel *old = v->ch;
    v->ch = ch;
    pthread_mutex_unlock(&v->mu);
    if (old) {
        guest_channel_close(old, "guest channel replaced");
        guest_channel_unref(old);
    }
    return 0;
}

int qemu_vm_ensure_qmp(qemu_vm *v, terr *err)
{
    if (v->inst.qmp) return 0;
    if (qmp_connect(v->dirfd, QEMU_QMP_SOCK, v->inst.proc.pidfd, QEMU_RECOVER_QMP_MS, &v->inst.qmp,
                    err) < 0)
        return terr_wrap(err, "QMP of sandbox %s", v->base.sandbox_id);
    return 0;
}

static int check_spec(const runtime_spec *spec, terr *err)
{
    if (!qemu_valid_name(spec->sandbox_id, RUNTIME_ID_MAX))
        return terr_set(
            err, "invalid sandbox id \"%.64s\" (letters, digits, . _ -; not starting with . or -)",
            spec->sandbox_id);
    if (spec->vcpus < 1 || spec->vcpus > 64)
        return terr_set(err, "vcpus must be 1..64, got %d", spec->vcpus);
    if (spec->memory_mb < 64 || spec->memory_mb > 65536)
        return terr_set(err, "memory_mb must be 64..65536, got %d", spec->memory_mb);
    return qemu_disk_check_mb(spec->disk_mb, err);
}

/* ---- create ---- */

static int qemu_create(runtime_driver *rd, const runtime_spec *spec, runtime_vm **out, terr *err)
{
    qemu_drv *d = qemu_drv_of(rd);
    long long t0 = mono_ms();
    if (check_spec(spec, err) < 0) return -1;
    int tplfd;
    qemu_meta tmeta;
    if (qemu_template_get(d, spec->template_name, spec->vcpus, spec->memory_mb, spec->disk_mb,
                          &tplfd, &tmeta, err) < 0)
        return -1;
    long long t_tpl = mono_ms();
    if (mkdirat(d->sb_dirfd, spec->sandbox_id, 0750) < 0) {
        int e = errno;
        close(tplfd);
        if (e == EEXIST)
            return terr_set(err, "sandbox %s already exists on this host", spec->sandbox_id);
        return terr_set(err, "mkdir sandbox %s: %s", spec->sandbox_id, strerror(e));
    }
    int sbfd = openat(d->sb_dirfd, spec->sandbox_id, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sbfd < 0) {
        int e = errno;
        close(tplfd);
        unlinkat(d->sb_dirfd, spec->sandbox_id, AT_REMOVEDIR);
        return terr_set(err, "open sandbox dir: %s", strerror(e));
    }
    qemu_vm *v = qemu_own_for_vm(d, sbfd, true, err) == 0
                     ? qemu_vm_new(d, spec->sandbox_id, sbfd, err)
                     : NULL;
    if (!v) {
        close(sbfd);
        close(tplfd);
        qemu_rmtree(d->sb_dirfd, spec->sandbox_id, NULL);
        return -1;
    }
    v->desc = tmeta;
    v->desc.spec = *spec;
    if (!v->desc.spec.disk_mb) v->desc.spec.disk_mb = QEMU_DISK_MB_DEFAULT;
    v->desc.spec.net_fd = 0;
    long long t_copy = 0, t_loaded = 0, t_run = 0, t_conn = 0, t_grown = 0;
    int ramfd = openat(tplfd, QEMU_RAM_FILE, O_RDONLY | O_CLOEXEC);
    int statefd = openat(tplfd, QEMU_STATE_FILE, O_RDONLY | O_CLOEXEC);
    int disk_rc = qemu_disk_clone(d, tplfd, sbfd, &tmeta.shape, err);
    close(tplfd);
    if (ramfd < 0 || statefd < 0) {
        terr_set(err, "template %s is incomplete: %s", tmeta.template_key, strerror(errno));
        goto fail;
    }
    if (disk_rc < 0) goto fail;
    /* The sandbox's own RAM file starts as a copy of the template's, so the
     * sandbox can later pause with x-ignore-shared like any VM. */
    if (qemu_copy_sparse(ramfd, sbfd, QEMU_RAM_FILE, err) < 0) goto fail;
    close(ramfd);
    ramfd = -1;
    if (d->run_as) {
        ramfd = openat(sbfd, QEMU_RAM_FILE, O_RDONLY | O_CLOEXEC);
        int orc = ramfd >= 0 ? qemu_own_for_vm(d, ramfd, false, err)
                             : terr_set(err, "open ram: %s", strerror(errno));
        if (ramfd >= 0) close(ramfd);
        ramfd = -1;
        if (orc < 0) goto fail;
    }
    qemu_writeback_async(sbfd, QEMU_RAM_FILE);
    t_copy = mono_ms();
    /* Written before QEMU starts: recover() re-attaches any live QEMU it
     * finds, and needs to know what it is. */
    if (qemu_meta_write(sbfd, QEMU_RUNNING_FILE, &v->desc, err) < 0) goto fail;
    if (qemu_inst_start(&v->inst, d->qemu_binary, &tmeta.shape, statefd,
                        spec->net_fd > 2 ? spec->net_fd : -1, err) < 0)
        goto fail;
    close(statefd);
    statefd = -1;
    t_loaded = mono_ms();
    if (qemu_inst_cont(&v->inst, err) < 0) goto fail;
    t_run = mono_ms();
    if (qemu_vm_connect_guest(v, QEMU_GUEST_CONNECT_MS, true, err) < 0) goto fail;
    t_conn = mono_ms();
    if (qemu_disk_grow(v->inst.qmp, v->ch, &v->desc.shape, tmeta.spec.disk_mb, v->desc.spec.disk_mb,
                       err) < 0)
        goto fail;
    t_grown = mono_ms();
    if (qemu_watch_add(d->watch, v, err) < 0) goto fail;
    v->timing = (qemu_timing){.copy_ms = (double)(t_copy - t_tpl),
                              .load_ms = (double)(t_loaded - t_copy),
                              .running_ms = (double)(t_run - t_copy),
                              .total_ms = (double)(mono_ms() - t0)};
    log_info("event=create_done sandbox_id=%s template=%s memory_mb=%d vcpus=%d pid=%d "
             "duration_ms=%lld template_ms=%lld copy_ms=%lld restore_ms=%lld guest_ms=%lld "
             "disk_mb=%d disk_grow_ms=%lld base_digest=%s",
             spec->sandbox_id, spec->template_name, spec->memory_mb, spec->vcpus,
             (int)v->inst.proc.pid, mono_ms() - t0, t_tpl - t0, t_copy - t_tpl, t_run - t_copy,
             mono_ms() - t_run, v->desc.shape.rootfs[0] ? v->desc.spec.disk_mb : 0,
             t_grown - t_conn, v->desc.shape.rootfs_digest[0] ? v->desc.shape.rootfs_digest : "-");
    *out = &v->base;
    return 0;
fail:
    if (ramfd >= 0) close(ramfd);
    if (statefd >= 0) close(statefd);
    qemu_inst_kill(&v->inst);
    char q[LOG_QUOTE_MAX];
    log_error("event=create_failed sandbox_id=%s error=\"%s\"", spec->sandbox_id,
              log_quote(err ? err->msg : "", q, sizeof q));
    runtime_vm_unref(&v->base);
    terr e2;
    qemu_rmtree(d->sb_dirfd, spec->sandbox_id, &e2);
    return -1;
}

/* ---- resume ---- */

static int qemu_resume(runtime_driver *rd, const runtime_spec *spec, runtime_vm **out, terr *err)
{
    qemu_drv *d = qemu_drv_of(rd);
    long long t0 = mono_ms();
    const char *id = spec->sandbox_id;
    if (!qemu_valid_name(id, RUNTIME_ID_MAX))
        return terr_set(err, "invalid sandbox id \"%.64s\"", id);
    int sbfd = openat(d->sb_dirfd, id, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sbfd < 0) return terr_set(err, "sandbox %s has no snapshot on this host", id);
    qemu_meta meta;
    if (qemu_meta_read(sbfd, QEMU_META_FILE, &meta, err) < 0) {
        close(sbfd);
        return terr_wrap(err, "sandbox %s is not paused", id);
    }
    if (meta.state_bytes <= 0 || qemu_file_size(sbfd, QEMU_STATE_FILE) != meta.state_bytes) {
        close(sbfd);
        return terr_set(err, "sandbox %s: snapshot state file does not match its metadata", id);
    }
    qemu_vm *v = qemu_vm_new(d, id, sbfd, err);
    if (!v) {
        close(sbfd);
        return -1;
    }
    v->desc = meta;
    v->desc.spec.timeout_sec = spec->timeout_sec;
    snprintf(v->desc.spec.sandbox_id, sizeof v->desc.spec.sandbox_id, "%s", id);
    bool consumed = false, ran = false;
    if (qemu_own_sandbox_for_vm(d, sbfd, err) < 0) goto fail;
    /* Before the snapshot is uncommitted: from then on a live QEMU is the
     * sandbox, and recover() must be able to re-attach it. */
    if (qemu_meta_write(sbfd, QEMU_RUNNING_FILE, &v->desc, err) < 0) goto fail;
    int statefd = openat(sbfd, QEMU_STATE_FILE, O_RDONLY | O_CLOEXEC);
    if (statefd < 0) {
        terr_set(err, "open snapshot state: %s", strerror(errno));
        goto fail;
    }
    int r = qemu_inst_start(&v->inst, d->qemu_binary, &meta.shape, statefd,
                            spec->net_fd > 2 ? spec->net_fd : -1, err);
    close(statefd);
    if (r < 0) goto fail;
    long long t_loaded = mono_ms();
    /* From `cont` on, the guest writes to the RAM file: the snapshot stops
     * being valid, so it must stop being committed first (durably). */
    if (unlinkat(sbfd, QEMU_META_FILE, 0) < 0) {
        terr_set(err, "uncommit snapshot: %s", strerror(errno));
        goto fail;
    }
    consumed = true;
    if (qemu_fsync_dir(sbfd, err) < 0) goto fail;
    ran = true; /* from here on the RAM file may change */
    if (qemu_inst_cont(&v->inst, err) < 0) goto fail;
    long long t_run = mono_ms();
    unlinkat(sbfd, QEMU_STATE_FILE, 0);
    if (qemu_vm_connect_guest(v, QEMU_GUEST_CONNECT_MS, true, err) < 0) goto fail;
    if (qemu_watch_add(d->watch, v, err) < 0) goto fail;
    v->timing = (qemu_timing){.load_ms = (double)(t_loaded - t0),
                              .running_ms = (double)(t_run - t0),
                              .total_ms = (double)(mono_ms() - t0)};
    log_info("event=resume_done sandbox_id=%s pid=%d duration_ms=%lld load_ms=%lld running_ms=%lld "
             "guest_ms=%lld",
             id, (int)v->inst.proc.pid, mono_ms() - t0, t_loaded - t0, t_run - t0,
             mono_ms() - t_run);
    *out = &v->base;
    return 0;
fail:
    qemu_inst_kill(&v->inst);
    unlinkat(sbfd, QEMU_RUNNING_FILE, 0);
    if (consumed && !ran) {
        /* The guest never ran: the snapshot is still good, commit it again. */
        terr e2;
        if (qemu_meta_write(sbfd, QEMU_META_FILE, &meta, &e2) == 0 &&
            qemu_fsync_dir(sbfd, &e2) == 0)
            consumed = false;
    }
    char q[LOG_QUOTE_MAX];
    log_error("event=resume_failed sandbox_id=%s snapshot=%s error=\"%s\"", id,
              consumed ? "lost" : "kept", log_quote(err ? err->msg : "", q, sizeof q));
    if (consumed) terr_wrap(err, "resume failed after the snapshot was consumed");
    runtime_vm_unref(&v->base);
    return consumed ? RUNTIME_SNAPSHOT_LOST : -1;
}

/* ---- destroy ---- */

void qemu_kill_by_pidfile(int sbfd)
{
    pid_t pid;
    unsigned long long st;
    terr e;
    if (qemu_proc_read_pidfile(sbfd, &pid, &st, &e) < 0) return;
    qemu_proc p;
    if (qemu_proc_attach(pid, st, &p, &e) < 0) return;
    qemu_proc_kill(&p);
}

static int qemu_destroy(runtime_driver *rd, const char *sandbox_id, runtime_vm *vm, terr *err)
{
    qemu_drv *d = qemu_drv_of(rd);
    long long t0 = mono_ms();
    if (!qemu_valid_name(sandbox_id, RUNTIME_ID_MAX))
        return terr_set(err, "invalid sandbox id \"%.64s\"", sandbox_id);
    if (vm) {
        qemu_vm *v = qemu_vm_of(vm);
        pthread_mutex_lock(&v->mu);
        v->busy = true;
        guest_channel *ch = v->ch;
        v->ch = NULL;
        bool running = v->state == QVM_RUNNING;
        pthread_mutex_unlock(&v->mu);
        if (ch) {
            guest_channel_close(ch, "sandbox destroyed");
            guest_channel_unref(ch);
        }
        if (running && v->inst.qmp) {
            terr e;
            /* A short grace: nothing of the VM is kept. */
            qemu_inst_quit(&v->inst, 500, &e);
        }
        qemu_inst_kill(&v->inst);
        pthread_mutex_lock(&v->mu);
        v->state = QVM_DESTROYED;
        v->busy = false;
        pthread_mutex_unlock(&v->mu);
    }
    int sbfd = openat(d->sb_dirfd, sandbox_id, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sbfd >= 0) {
        qemu_kill_by_pidfile(sbfd);
        close(sbfd);
    }
    if (qemu_rmtree(d->sb_dirfd, sandbox_id, err) < 0)
        return terr_wrap(err, "destroy %s", sandbox_id);
    qemu_fsync_dir(d->sb_dirfd, NULL);
    log_info("event=destroy_done sandbox_id=%s duration_ms=%lld", sandbox_id, mono_ms() - t0);
    return 0;
}

/* ---- stats ---- */

int qemu_vm_last_timing(runtime_vm *vm, qemu_timing *out)
{
    if (!vm || vm->driver->ops != &qemu_ops) return -1;
    *out = qemu_vm_of(vm)->timing;
    return 0;
}

int qemu_vm_pid(runtime_vm *vm)
{
    if (!vm || vm->driver->ops != &qemu_ops) return 0;
    qemu_vm *v = qemu_vm_of(vm);
    pthread_mutex_lock(&v->mu);
    int pid = v->state == QVM_RUNNING && !v->inst.proc.exited ? (int)v->inst.proc.pid : 0;
    pthread_mutex_unlock(&v->mu);
    return pid;
}

/* ---- liveness ---- */

static bool qemu_vm_alive(runtime_driver *rd, runtime_vm *vm)
{
    qemu_vm *v = qemu_vm_of(vm);
    pthread_mutex_lock(&v->mu);
    bool alive = v->state == QVM_RUNNING;
    if (alive && !v->busy) {
        alive = qemu_proc_poll(&v->inst.proc);
        if (!alive) {
            v->state = QVM_DEAD;
            if (v->ch) guest_channel_close(v->ch, "the VM process exited");
        }
    }
    /* While busy, a lifecycle call owns the process (and reaps it): the
     * answer is "running" until that call has decided. */
    pthread_mutex_unlock(&v->mu);
    return alive;
}

/* ---- open / close ---- */

static void qemu_close(runtime_driver *rd)
{
    if (!rd) return;
    qemu_drv *d = qemu_drv_of(rd);
    qemu_watch_stop(d->watch);
    if (d->sb_dirfd >= 0) close(d->sb_dirfd);
    if (d->tpl_dirfd >= 0) close(d->tpl_dirfd);
    pthread_mutex_destroy(&d->tpl_mu);
    pthread_cond_destroy(&d->tpl_cv);
    free(d->state_dir);
    free(d->image_dir);
    free(d->qemu_binary);
    free(d);
}

static const runtime_ops qemu_ops = {
    .name = "qemu",
    .create = qemu_create,
    .pause = qemu_op_pause,
    .resume = qemu_resume,
    .destroy = qemu_destroy,
    .exec = qemu_op_exec,
    .read_file = qemu_op_read_file,
    .write_file = qemu_op_write_file,
    .guest_call = qemu_op_guest_call,
    .vm_alive = qemu_vm_alive,
    .recover = qemu_recover,
    .net_fd = qemu_net_fd,
    .vm_free = qemu_vm_free,
    .close = qemu_close,
};

static char *find_binary(const char *name, terr *err)
{
    if (strchr(name, '/')) {
        char *r = realpath(name, NULL);
        if (!r || access(r, X_OK) != 0) {
            free(r);
            terr_set(err, "QEMU binary %s is not executable", name);
            return NULL;
        }
        return r;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    const char *p = path;
    while (*p) {
        const char *c = strchr(p, ':');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        char cand[PATH_MAX];
        if (l > 0 && l + strlen(name) + 2 < sizeof cand) {
            snprintf(cand, sizeof cand, "%.*s/%s", (int)l, p, name);
            if (access(cand, X_OK) == 0) return realpath(cand, NULL);
        }
        p += l + (c ? 1 : 0);
    }
    terr_set(err, "%s not found in PATH (install the qemu-system-x86 package)", name);
    return NULL;
}

int runtime_qemu_open(const runtime_qemu_config *cfg, runtime_driver **out, terr *err)
{
    if (!cfg || !cfg->state_dir || !*cfg->state_dir)
        return terr_set(err, "qemu driver: state_dir is required");
    if (!cfg->image_dir || !*cfg->image_dir)
        return terr_set(err, "qemu driver: image_dir is required");
    const char *accel;
    char why[200];
    if (qemu_accel_resolve(cfg->accel, &accel, why, sizeof why, err) < 0) return -1;
    qemu_drv *d = calloc(1, sizeof *d);
    if (!d) return terr_set(err, "out of memory");
    d->sb_dirfd = d->tpl_dirfd = -1;
    pthread_mutex_init(&d->tpl_mu, NULL);
    pthread_cond_init(&d->tpl_cv, NULL);
    d->base.ops = &qemu_ops;
    d->base.priv = d;
    d->accel = accel;
    d->state_dir = strdup(cfg->state_dir);
    /* A missing image dir is not fatal: creates then fail with "unknown
     * template" (the image may be built after the agent started). */
    d->image_dir = realpath(cfg->image_dir, NULL);
    if (!d->image_dir) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=image_dir_missing image_dir=\"%s\" error=\"%s\"",
                 log_quote(cfg->image_dir, q, sizeof q), strerror(errno));
        char cwd[PATH_MAX] = "";
        if (cfg->image_dir[0] != '/' && !getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
        size_t n = strlen(cwd) + strlen(cfg->image_dir) + 2;
        d->image_dir = malloc(n);
        if (!d->image_dir) {
            terr_set(err, "out of memory");
            goto fail;
        }
        snprintf(d->image_dir, n, "%s%s%s", cwd, cwd[0] ? "/" : "", cfg->image_dir);
    }
    d->qemu_binary = find_binary(cfg->qemu_binary ? cfg->qemu_binary : "qemu-system-x86_64", err);
    if (!d->state_dir || !d->qemu_binary) goto fail;
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/sandboxes", cfg->state_dir);
    if (fs_mkdir_p(sub, 0755, err) < 0) goto fail;
    d->sb_dirfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(sub, sizeof sub, "%s/templates", cfg->state_dir);
    if (fs_mkdir_p(sub, 0755, err) < 0) goto fail;
    d->tpl_dirfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d->sb_dirfd < 0 || d->tpl_dirfd < 0) {
        terr_set(err, "open state dir %s: %s", cfg->state_dir, strerror(errno));
        goto fail;
    }
    if (cfg->vm_user) {
        struct passwd *pw = getpwnam(cfg->vm_user);
        if (!pw) {
            terr_set(
                err,
                "VM user \"%s\" does not exist (create it: useradd --system --no-create-home torpor-vm)",
                cfg->vm_user);
            goto fail;
        }
        if (pw->pw_uid == 0) {
            terr_set(err, "VM user \"%s\" is root: it must be an unprivileged user", cfg->vm_user);
            goto fail;
        }
        d->vm_user = (qemu_run_as){.uid = pw->pw_uid, .gid = pw->pw_gid};
        /* Under KVM the VM user needs /dev/kvm (root:kvm 0660 on Debian):
         * its group as the one supplementary group. */
        struct stat ks;
        if (!strcmp(accel, "kvm") && stat("/dev/kvm", &ks) == 0 && ks.st_gid != 0 &&
            ks.st_gid != pw->pw_gid) {
            d->vm_user.groups[0] = ks.st_gid;
            d->vm_user.n_groups = 1;
        }
        d->run_as = &d->vm_user;
        log_info("event=vm_user user=%s uid=%u gid=%u kvm_group=%d", cfg->vm_user,
                 (unsigned)pw->pw_uid, (unsigned)pw->pw_gid,
                 d->vm_user.n_groups ? (int)d->vm_user.groups[0] : -1);
    }
    d->tpl_cache_max = cfg->template_cache_max == 0  ? QEMU_TEMPLATE_CACHE_DEFAULT
                       : cfg->template_cache_max < 0 ? 0
                                                     : cfg->template_cache_max;
    d->idle_trim_ms = cfg->idle_trim_ms == 0  ? QEMU_IDLE_TRIM_MS_DEFAULT
                      : cfg->idle_trim_ms < 0 ? 0
                                              : cfg->idle_trim_ms;
    if (qemu_watch_start(&d->watch, d->idle_trim_ms, err) < 0) goto fail;
    char qr[LOG_QUOTE_MAX], qb[LOG_QUOTE_MAX], qs[LOG_QUOTE_MAX], qi[LOG_QUOTE_MAX];
    log_info("event=runtime_open driver=qemu accel=%s reason=\"%s\" qemu=\"%s\" state_dir=\"%s\" "
             "image_dir=\"%s\" idle_trim_ms=%d",
             accel, log_quote(why, qr, sizeof qr), log_quote(d->qemu_binary, qb, sizeof qb),
             log_quote(d->state_dir, qs, sizeof qs), log_quote(d->image_dir, qi, sizeof qi),
             d->idle_trim_ms);
    *out = &d->base;
    return 0;
fail:
    qemu_close(&d->base);
    return -1;
}
