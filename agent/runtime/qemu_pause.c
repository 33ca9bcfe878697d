/* qemu_pause: pause = durable snapshot + VM process gone.
 *
 * Order (each step's failure mode in brackets):
 *   close the guest channel        [in-flight exec/file calls fail now]
 *   QMP stop, start RAM writeback, migrate device state into state.tmp
 *                                  [VM alive: cont + reconnect, return -1;
 *                                   VM dead: clean up, return -1]
 *   QMP quit, wait for a clean exit [-1, VM gone, nothing committed]
 *   fsync ram + state.tmp, rename state.tmp -> state, write meta (tmp +
 *   fsync + rename), fsync dir     [-1, VM gone, nothing committed]
 * The snapshot is committed exactly when "meta" exists (qemu_meta.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mono_time.h"
#include "qemu_internal.h"

/* Removes every trace of an uncommitted snapshot. */
static void discard_snapshot(qemu_vm *v)
{
    unlinkat(v->dirfd, QEMU_META_FILE, 0);
    unlinkat(v->dirfd, "meta.tmp", 0);
    unlinkat(v->dirfd, QEMU_STATE_TMP, 0);
    unlinkat(v->dirfd, QEMU_STATE_FILE, 0);
    fsync(v->dirfd);
}

static void set_state(qemu_vm *v, qvm_state st)
{
    pthread_mutex_lock(&v->mu);
    v->state = st;
    v->busy = false;
    pthread_mutex_unlock(&v->mu);
}

int qemu_op_pause(runtime_driver *rd, runtime_vm *vm, const runtime_spec *spec, terr *err)
{
    char q[LOG_QUOTE_MAX];
    qemu_vm *v = qemu_vm_of(vm);
    const char *id = vm->sandbox_id;
    long long t0 = mono_ms();

    pthread_mutex_lock(&v->mu);
    if (v->state != QVM_RUNNING || v->busy) {
        int st = v->state;
        pthread_mutex_unlock(&v->mu);
        return terr_set(err, "sandbox %s is not running (state %d)", id, st);
    }
    if (!qemu_proc_poll(&v->inst.proc)) {
        v->state = QVM_DEAD;
        pthread_mutex_unlock(&v->mu);
        return terr_set(err, "sandbox %s: the VM process is gone", id);
    }
    pthread_mutex_unlock(&v->mu);
    /* A VM re-attached while its QMP did not answer gets it now (lifecycle
     * calls are serialised per VM, so nobody else touches inst.qmp). */
    if (qemu_vm_ensure_qmp(v, err) < 0)
        return terr_wrap(err, "pause of %s failed (the sandbox keeps running)", id);
    pthread_mutex_lock(&v->mu);
    if (v->state != QVM_RUNNING || v->busy) {
        pthread_mutex_unlock(&v->mu);
        return terr_set(err, "sandbox %s is not running", id);
    }
    v->busy = true;
    guest_channel *ch = v->ch;
    v->ch = NULL;
    pthread_mutex_unlock(&v->mu);
    if (ch) {
        guest_channel_close(ch, "sandbox is pausing");
        guest_channel_unref(ch);
    }

    if (spec) {
        v->desc.spec.timeout_sec = spec->timeout_sec;
        if (spec->created_at_unix) v->desc.spec.created_at_unix = spec->created_at_unix;
    }
    unlinkat(v->dirfd, QEMU_STATE_TMP, 0);
    int state_fd = openat(v->dirfd, QEMU_STATE_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int ram_fd = openat(v->dirfd, QEMU_RAM_FILE, O_RDONLY | O_CLOEXEC);
    long long t_saved = 0, t_quit = 0, t_sync = 0;
    if (state_fd < 0 || ram_fd < 0) {
        terr_set(err, "open snapshot files: %s", strerror(errno));
        goto rollback;
    }
    if (qemu_inst_save(&v->inst, state_fd, ram_fd, err) < 0) goto rollback;
    t_saved = mono_ms();

    /* Point of no return: after quit the VM only lives on in the files. */
    if (qemu_inst_quit(&v->inst, QEMU_QUIT_GRACE_MS, err) < 0) goto dead;
    t_quit = mono_ms();
    if (fsync(ram_fd) < 0 || fsync(state_fd) < 0) {
        terr_set(err, "fsync snapshot: %s", strerror(errno));
        goto dead;
    }
    /* The root disk overlay: QEMU flushed it when it stopped the VM; make it
     * durable before the snapshot that goes with it is committed. */
    if (qemu_disk_sync(v->dirfd, &v->desc.shape, err) < 0) goto dead;
    t_sync = mono_ms();
    close(ram_fd);
    close(state_fd);
    ram_fd = state_fd = -1;
    if (renameat(v->dirfd, QEMU_STATE_TMP, v->dirfd, QEMU_STATE_FILE) < 0) {
        terr_set(err, "rename snapshot: %s", strerror(errno));
        goto dead;
    }
    v->desc.state_bytes = qemu_file_size(v->dirfd, QEMU_STATE_FILE);
    v->desc.ram_disk_bytes = qemu_file_disk_bytes(v->dirfd, QEMU_RAM_FILE);
    v->desc.paused_at_unix_ms = qemu_unix_ms();
    v->desc.pause_ms = mono_ms() - t0;
    snprintf(v->desc.spec.sandbox_id, sizeof v->desc.spec.sandbox_id, "%s", id);
    if (qemu_meta_write(v->dirfd, QEMU_META_FILE, &v->desc, err) < 0) goto dead;
    if (qemu_fsync_dir(v->dirfd, err) < 0) goto dead;
    unlinkat(v->dirfd, QEMU_RUNNING_FILE, 0);
    unlinkat(v->dirfd, "qemu.pid", 0);
    v->timing = (qemu_timing){.save_ms = (double)(t_saved - t0),
                              .quit_ms = (double)(t_quit - t_saved),
                              .fsync_ms = (double)(t_sync - t_quit),
                              .total_ms = (double)(mono_ms() - t0),
                              .state_bytes = v->desc.state_bytes,
                              .ram_disk_bytes = v->desc.ram_disk_bytes};
    set_state(v, QVM_PAUSED);
    log_info(
        "event=pause_done sandbox_id=%s duration_ms=%lld save_ms=%lld quit_ms=%lld fsync_ms=%lld "
        "state_bytes=%lld ram_disk_bytes=%lld",
        id, mono_ms() - t0, t_saved - t0, t_quit - t_saved, t_sync - t_quit,
        (long long)v->desc.state_bytes, (long long)v->desc.ram_disk_bytes);
    return 0;

rollback:
    if (ram_fd >= 0) close(ram_fd);
    if (state_fd >= 0) close(state_fd);
    discard_snapshot(v);
    pthread_mutex_lock(&v->mu);
    bool alive = qemu_proc_poll(&v->inst.proc);
    pthread_mutex_unlock(&v->mu);
    if (alive) {
        /* Still there: run it again and give it a guest channel back. */
        terr e2;
        if (qemu_inst_cont(&v->inst, &e2) == 0 &&
            qemu_vm_connect_guest(v, QEMU_GUEST_CONNECT_MS, false, &e2) == 0) {
            set_state(v, QVM_RUNNING);
            log_warn("event=pause_failed sandbox_id=%s vm=running duration_ms=%lld error=\"%s\"",
                     id, mono_ms() - t0, log_quote(err ? err->msg : "", q, sizeof q));
            return terr_wrap(err, "pause of %s failed (the sandbox keeps running)", id);
        }
        log_error("event=pause_rollback_failed sandbox_id=%s error=\"%s\"", id,
                  log_quote(e2.msg, q, sizeof q));
    }
    qemu_inst_kill(&v->inst);
    set_state(v, QVM_DEAD);
    log_error("event=pause_failed sandbox_id=%s vm=dead duration_ms=%lld error=\"%s\"", id,
              mono_ms() - t0, log_quote(err ? err->msg : "", q, sizeof q));
    return terr_wrap(err, "pause of %s failed and the VM is gone", id);

dead:
    if (ram_fd >= 0) close(ram_fd);
    if (state_fd >= 0) close(state_fd);
    qemu_inst_kill(&v->inst);
    discard_snapshot(v);
    set_state(v, QVM_DEAD);
    log_error("event=pause_failed sandbox_id=%s vm=dead duration_ms=%lld error=\"%s\"", id,
              mono_ms() - t0, log_quote(err ? err->msg : "", q, sizeof q));
    return terr_wrap(err, "pause of %s failed and the VM is gone", id);
}
