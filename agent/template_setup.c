/* template_setup: a template's setup script, run inside a VM (private to
 * the template builder, see template_builder_internal.h). The script never
 * runs on the host. The VM is one of the runtime driver's (not a sandbox of
 * the lifecycle); tb->setup_vm is it while it lives (under tb->mu), so
 * tb_close can destroy it to end the script at once. The VM is destroyed in
 * every case; its output goes to the build log. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mono_time.h"
#include "template_builder_internal.h"
#include "torpor_limits.h"

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
int tb_run_setup(template_builder *tb, const char *name, const char *base, const char *setup,
                 char *const envp[], int logfd, int devnull, int64_t t0, char *reason, size_t rsize)
{
    runtime_driver *d = tb->driver;
    runtime_spec spec = {.vcpus = 1,
                         .memory_mb = TB_SETUP_MEMORY_MB,
                         .disk_mb = TORPOR_DISK_MB_MIN,
                         .created_at_unix = time(NULL)};
    tb_setf(spec.sandbox_id, sizeof spec.sandbox_id, "%s.setup", name);
    tb_setf(spec.template_name, sizeof spec.template_name, "%s", base);
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
            tb_setf(reason, rsize, "setup VM did not start: %s", err.msg);
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
        tb_setf(reason, rsize, "interrupted: the agent stopped during the build");
        goto out;
    }
    if (d->ops->write_file(d, vm, "/tmp/torpor-setup.sh", (const uint8_t *)setup, strlen(setup),
                           0700, &err) < 0) {
        tb_setf(reason, rsize, "could not copy the setup script into the VM: %s", err.msg);
        goto out;
    }
    static const char *const env[] = {
        "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8"};
    int remaining = tb->time_limit_sec - (int)((mono_ms() - t0) / 1000);
    if (remaining > TORPOR_EXEC_TIMEOUT_MAX_SEC) remaining = TORPOR_EXEC_TIMEOUT_MAX_SEC;
    if (remaining < 1) {
        tb_setf(reason, rsize, "build timed out after %d s", tb->time_limit_sec);
        goto out;
    }
    runtime_exec_request req = {.cmd = "/bin/bash /tmp/torpor-setup.sh",
                                .env = env,
                                .n_env = sizeof env / sizeof env[0],
                                .cwd = "/root",
                                .timeout_sec = remaining};
    int64_t ts = mono_ms();
    dprintf(logfd, "torpor-agent: running the setup script (%zu bytes, time limit %d s)\n",
            strlen(setup), remaining);
    if (d->ops->exec(d, vm, &req, &res, &err) < 0) {
        pthread_mutex_lock(&tb->mu);
        stopping = tb->stopping;
        pthread_mutex_unlock(&tb->mu);
        if (stopping) tb_setf(reason, rsize, "interrupted: the agent stopped during the build");
        else tb_setf(reason, rsize, "setup script: %s", err.msg);
        goto out;
    }
    log_output(logfd, "setup stdout", res.out, res.out_len, res.out_truncated);
    log_output(logfd, "setup stderr", res.err, res.err_len, res.err_truncated);
    dprintf(logfd, "torpor-agent: setup script exit code %d in %lld ms\n", res.exit_code,
            (long long)(mono_ms() - ts));
    if (res.timed_out) {
        tb_setf(reason, rsize, "setup script timed out after %d s", remaining);
        goto out;
    }
    if (res.exit_code != 0) {
        tb_setf(reason, rsize, "setup script exited with code %d", res.exit_code);
        goto out;
    }
    runtime_exec_result_free(&res);
    memset(&res, 0, sizeof res);
    /* Everything on disk, the journal checkpointed, nothing written after. */
    runtime_exec_request fz = {.cmd = "rm -f /tmp/torpor-setup.sh; sync && fsfreeze --freeze /",
                               .timeout_sec = 60};
    if (d->ops->exec(d, vm, &fz, &res, &err) < 0 || res.exit_code != 0) {
        tb_setf(reason, rsize, "could not flush the VM's disk: %s",
                err.msg[0] ? err.msg : (res.err_len ? "fsfreeze failed" : "sync failed"));
        goto out;
    }
    if (d->ops->pause(d, vm, &spec, &err) < 0) {
        tb_setf(reason, rsize, "could not stop the setup VM: %s", err.msg);
        goto out;
    }
    char overlay[4200], img[4200], base_dir[4200], link[4200];
    int n1 = snprintf(overlay, sizeof overlay, "%s/sandboxes/%s/root.qcow2", tb->agent_state_dir,
                      spec.sandbox_id);
    int n2 = snprintf(img, sizeof img, "%s/%s/image", tb->state_dir, name);
    tb_image_link(tb, base, base_dir, sizeof base_dir);
    tb_image_link(tb, name, link, sizeof link);
    if (n1 < 0 || (size_t)n1 >= sizeof overlay || n2 < 0 || (size_t)n2 >= sizeof img) {
        tb_setf(reason, rsize, "path too long");
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
    tb_state_path(tb, name, "pgid", pgid_path, sizeof pgid_path);
    tb_setf(marker, sizeof marker, TB_MARKER_ENV "=%s", name);
    int r = tb_run_child(tb, argv, envp, logfd, devnull, t0, pgid_path, marker, reason, rsize);
    if (r == 1)
        tb_setf(reason, rsize, "flattening the setup VM's disk into the template image failed");
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
        log_warn("event=template_setup_vm_destroy_failed sandbox_id=%s error=\"%s\"",
                 spec.sandbox_id, log_quote(derr.msg, q, sizeof q));
    }
    runtime_vm_unref(vm);
    return rc;
}
