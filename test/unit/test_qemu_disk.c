/* test_qemu_disk: the QEMU driver's root disk (agent/runtime/qemu_disk.h)
 * against real QEMU (TCG) and the `debian` template image of this build
 * (<build>/image/debian, target image-debian). ctest runs the image build
 * first (fixture image_debian, test/CMakeLists.txt); without the image every
 * test here FAILS, never skips.
 *
 * Few VMs, small (128 MiB), one at a time where possible: the machine has
 * two cores. Waits are polling loops with deadlines, never bare sleeps. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "qemu.h"
#include "qemu_fixture.h"
#include "qmp.h"
#include "runtime.h"

typedef qemu_fixture fixture;

static int setup(void **state)
{
    static fixture f;
    if (qemu_fixture_open(&f, "qemu-disk", 0) < 0) return -1;
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/debian/rootfs.img", f.image_dir);
    if (access(probe, R_OK) != 0) {
        fprintf(stderr, "debian image missing: %s (build the image-debian target)\n", probe);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (!f) return -1;
    if (!f->drv && qemu_fixture_reopen(f) < 0) return -1;
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/sandboxes", f->state_dir);
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            terr err;
            if (f->drv->ops->destroy(f->drv, e->d_name, NULL, &err) < 0)
                fprintf(stderr, "teardown: destroy %s: %s\n", e->d_name, err.msg);
        }
        closedir(d);
    }
    f->drv->ops->close(f->drv);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->state_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static runtime_spec spec_of(const char *id, int disk_mb)
{
    runtime_spec s = {.vcpus = 1, .memory_mb = 128, .disk_mb = disk_mb};
    snprintf(s.sandbox_id, sizeof s.sandbox_id, "%s", id);
    snprintf(s.template_name, sizeof s.template_name, "debian");
    s.created_at_unix = time(NULL);
    return s;
}

static runtime_vm *create(fixture *f, runtime_spec *s)
{
    terr err = {""};
    runtime_vm *vm = NULL;
    int r = f->drv->ops->create(f->drv, s, &vm, &err);
    if (r < 0) fprintf(stderr, "create %s: %s\n", s->sandbox_id, err.msg);
    assert_int_equal(r, 0);
    return vm;
}

static void pause_vm(fixture *f, runtime_vm *vm, runtime_spec *s)
{
    terr err = {""};
    int r = f->drv->ops->pause(f->drv, vm, s, &err);
    if (r < 0) fprintf(stderr, "pause %s: %s\n", s->sandbox_id, err.msg);
    assert_int_equal(r, 0);
}

static runtime_vm *resume_vm(fixture *f, runtime_spec *s)
{
    terr err = {""};
    runtime_vm *vm = NULL;
    int r = f->drv->ops->resume(f->drv, s, &vm, &err);
    if (r < 0) fprintf(stderr, "resume %s: %s\n", s->sandbox_id, err.msg);
    assert_int_equal(r, 0);
    return vm;
}

/* Runs cmd and returns its exit code; stdout+stderr into *out (malloc'd). */
static int sh_code(fixture *f, runtime_vm *vm, const char *cmd, char **out)
{
    runtime_exec_request req = {.cmd = cmd, .timeout_sec = 120};
    runtime_exec_result res;
    terr err = {""};
    int r = f->drv->ops->exec(f->drv, vm, &req, &res, &err);
    if (r < 0) fprintf(stderr, "exec %s: %s\n", cmd, err.msg);
    assert_int_equal(r, 0);
    char *s = malloc(res.out_len + res.err_len + 1);
    assert_non_null(s);
    memcpy(s, res.out, res.out_len);
    memcpy(s + res.out_len, res.err, res.err_len);
    s[res.out_len + res.err_len] = '\0';
    int code = res.exit_code;
    runtime_exec_result_free(&res);
    *out = s;
    return code;
}

static bool sb_path_exists(fixture *f, const char *id, const char *file)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/sandboxes/%s%s%s", f->state_dir, id, file ? "/" : "",
             file ? file : "");
    struct stat st;
    return stat(p, &st) == 0;
}

static long long sb_file_blocks_bytes(fixture *f, const char *id, const char *file)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/sandboxes/%s/%s", f->state_dir, id, file);
    struct stat st;
    if (stat(p, &st) < 0) return -1;
    return (long long)st.st_blocks * 512;
}

/* python3 runs and prints; the root filesystem shows disk_mb; the sandbox's
 * metadata records the base image's digest. */
static void test_python_and_disk_size(void **state)
{
    fixture *f = *state;
    runtime_spec s = spec_of("dd-py", 1024);
    runtime_vm *vm = create(f, &s);
    char *out = fixture_sh(f, vm, "python3 -c 'print(6 * 7)'");
    assert_string_equal(out, "42\n");
    free(out);
    /* df: 1 KiB blocks of /; ext4 metadata takes a few percent. */
    out = fixture_sh(f, vm, "df -k --output=size / | tail -1");
    long kb = strtol(out, NULL, 10);
    free(out);
    assert_true(kb > 1024L * 1024 * 90 / 100 && kb <= 1024L * 1024);
    /* Right after create the overlay holds only what the template boot and
     * the grow wrote. */
    long long overlay = sb_file_blocks_bytes(f, "dd-py", "root.qcow2");
    assert_true(overlay > 0 && overlay < 16LL << 20);
    pause_vm(f, vm, &s);
    runtime_vm_unref(vm);
    char digest_path[PATH_MAX + 32], want[80] = "", meta_path[PATH_MAX * 2];
    snprintf(digest_path, sizeof digest_path, "%s/debian/rootfs.sha256", f->image_dir);
    FILE *fp = fopen(digest_path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(want, sizeof want, fp));
    fclose(fp);
    want[strcspn(want, "\n")] = '\0';
    snprintf(meta_path, sizeof meta_path, "%s/sandboxes/dd-py/meta", f->state_dir);
    fp = fopen(meta_path, "r");
    assert_non_null(fp);
    char line[PATH_MAX + 64], got[80] = "";
    while (fgets(line, sizeof line, fp))
        if (!strncmp(line, "base_digest=", 12)) snprintf(got, sizeof got, "%.64s", line + 12);
    fclose(fp);
    assert_int_equal(strlen(want), 64);
    assert_string_equal(got, want);
    terr err = {""};
    assert_int_equal(f->drv->ops->destroy(f->drv, "dd-py", NULL, &err), 0);
}

typedef struct recovered {
    int paused, running;
    runtime_vm *vm;
} recovered;

static void on_recover(void *ctx, const runtime_spec *spec, runtime_vm *vm)
{
    recovered *r = ctx;
    /* Announcements (a live VM still being re-attached, the end of the
     * list) and VMs that could not be re-attached are not outcomes here. */
    if (!spec || vm == RUNTIME_VM_RECOVERING || vm == RUNTIME_VM_GONE) return;
    if (vm) {
        r->running++;
        r->vm = vm;
    } else {
        r->paused++;
    }
}

static void restart_driver(fixture *f, recovered *r)
{
    f->drv->ops->close(f->drv);
    f->drv = NULL;
    assert_int_equal(qemu_fixture_reopen(f), 0);
    memset(r, 0, sizeof *r);
    terr err = {""};
    assert_int_equal(f->drv->ops->recover(f->drv, on_recover, r, &err), 0);
}

#define BG_PY                                               \
    "nohup python3 -c 'import os, time\n"                   \
    "i = 0\n"                                               \
    "while True:\n"                                         \
    "    i += 1\n"                                          \
    "    open(\"/root/bg.new\", \"w\").write(str(i))\n"     \
    "    os.rename(\"/root/bg.new\", \"/root/bg.count\")\n" \
    "    time.sleep(0.1)\n' >/root/bg.log 2>&1 &\n"         \
    "echo $! > /root/bg.pid; echo started"

static long bg_count(fixture *f, runtime_vm *vm)
{
    char *s = fixture_sh(f, vm, "cat /root/bg.count 2>/dev/null || echo 0");
    long v = strtol(s, NULL, 10);
    free(s);
    return v;
}

/* The background process runs on and is the same process (pid file) and
 * counts on from where it was. */
static void check_bg_alive(fixture *f, runtime_vm *vm, long at_least)
{
    char *out = fixture_sh(f, vm, "kill -0 $(cat /root/bg.pid) && echo alive");
    assert_string_equal(out, "alive\n");
    free(out);
    long v = bg_count(f, vm);
    assert_true(v >= at_least);
    long long deadline = mono_ms() + 20000;
    while (bg_count(f, vm) < v + 2) {
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(100);
    }
}

static void check_keep(fixture *f, runtime_vm *vm)
{
    char *out = fixture_sh(f, vm, "cat /root/keep.txt && sha256sum /usr/local/blob | cut -c1-16");
    char *want = fixture_sh(f, vm, "cat /root/blob.sum");
    assert_true(!strncmp(out, "kept on the root disk\n", 22));
    assert_string_equal(out + 22, want);
    free(out);
    free(want);
}

/* A file under /root (and one elsewhere in the root filesystem) and a
 * background process started by an exec survive pause/resume, an agent
 * restart while running and an agent restart while paused. */
static void test_root_disk_survives_pause_and_restart(void **state)
{
    fixture *f = *state;
    runtime_spec s = spec_of("dd-keep", 0);
    runtime_vm *vm = create(f, &s);
    char *out = fixture_sh(f, vm,
                           "echo 'kept on the root disk' > /root/keep.txt && "
                           "head -c 3000000 /dev/urandom > /usr/local/blob && "
                           "sha256sum /usr/local/blob | cut -c1-16 > /root/blob.sum && echo ok");
    assert_string_equal(out, "ok\n");
    free(out);
    /* The default disk (4096 MiB) comes pre-grown with the template. */
    out = fixture_sh(f, vm, "df -k --output=size / | tail -1");
    long kb = strtol(out, NULL, 10);
    free(out);
    assert_true(kb > 4096L * 1024 * 90 / 100 && kb <= 4096L * 1024);
    long long t0 = mono_ms();
    out = fixture_sh(f, vm, BG_PY);
    long long exec_ms = mono_ms() - t0;
    assert_string_equal(out, "started\n");
    free(out);
    /* The exec returned without waiting for its background child (which
     * never ends: waiting for it would run into the exec's 30 s timeout);
     * 20 s leaves room for a loaded TCG host. */
    assert_true(exec_ms < 20000);
    long long deadline = mono_ms() + 30000;
    while (bg_count(f, vm) < 3) {
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(100);
    }

    pause_vm(f, vm, &s);
    runtime_vm_unref(vm);
    vm = resume_vm(f, &s);
    check_keep(f, vm);
    check_bg_alive(f, vm, 3);
    long c = bg_count(f, vm);
    runtime_vm_unref(vm);

    recovered r;
    restart_driver(f, &r); /* agent restart, VM running */
    assert_int_equal(r.running, 1);
    vm = r.vm;
    check_keep(f, vm);
    check_bg_alive(f, vm, c);
    c = bg_count(f, vm);

    pause_vm(f, vm, &s);
    runtime_vm_unref(vm);
    restart_driver(f, &r); /* agent restart, VM paused */
    assert_int_equal(r.paused, 1);
    vm = resume_vm(f, &s);
    check_keep(f, vm);
    check_bg_alive(f, vm, c);

    terr err = {""};
    assert_int_equal(f->drv->ops->destroy(f->drv, "dd-keep", vm, &err), 0);
    runtime_vm_unref(vm);
    assert_false(sb_path_exists(f, "dd-keep", NULL));
}

/* An agent that died in the middle of a pause (QMP stop + migration done,
 * so QEMU has handed its disk over: block devices inactive; no quit, no
 * meta): recover conts the VM, and its root disk is writable again — a file
 * written and synced after that survives a pause/resume. */
static void test_recover_mid_pause_disk_writable(void **state)
{
    fixture *f = *state;
    terr err = {""};
    runtime_spec s = spec_of("dd-midpause", 0);
    runtime_vm *vm = create(f, &s);
    free(fixture_sh(f, vm, "echo before > /root/before && sync"));
    runtime_vm_unref(vm);
    f->drv->ops->close(f->drv);
    f->drv = NULL;
    char dir[PATH_MAX * 2];
    snprintf(dir, sizeof dir, "%s/sandboxes/dd-midpause", f->state_dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    qmp *q = NULL;
    assert_int_equal(qmp_connect(dfd, "qmp.sock", -1, 10000, &q, &err), 0);
    assert_int_equal(qmp_call(q, "stop", NULL, 10000, NULL, &err), 0);
    /* Over an fd, as the agent does: QEMU's seccomp filter (spawn=deny)
     * forbids an exec: migration. */
    int sfd = openat(dfd, "state.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(sfd >= 0);
    assert_int_equal(qmp_getfd(q, "st", sfd, 10000, &err), 0);
    close(sfd);
    assert_int_equal(qmp_call(q, "migrate", "{\"uri\":\"fd:st\"}", 10000, NULL, &err), 0);
    long long deadline = mono_ms() + 20000;
    for (;;) {
        char *reply = NULL;
        assert_int_equal(qmp_call(q, "query-status", NULL, 10000, &reply, &err), 0);
        bool done = strstr(reply, "\"postmigrate\"") != NULL;
        free(reply);
        if (done) break;
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(20);
    }
    qmp_close(q);
    close(dfd);

    recovered r;
    assert_int_equal(qemu_fixture_reopen(f), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(f->drv->ops->recover(f->drv, on_recover, &r, &err), 0);
    assert_int_equal(r.running, 1);
    vm = r.vm;
    char *out =
        fixture_sh(f, vm, "echo after > /root/after && sync && cat /root/before /root/after");
    assert_string_equal(out, "before\nafter\n");
    free(out);
    pause_vm(f, vm, &s);
    runtime_vm_unref(vm);
    vm = resume_vm(f, &s);
    out = fixture_sh(f, vm, "cat /root/before /root/after && dmesg | grep -ci 'I/O error' || true");
    assert_string_equal(out, "before\nafter\n0\n");
    free(out);
    assert_int_equal(f->drv->ops->destroy(f->drv, "dd-midpause", vm, &err), 0);
    runtime_vm_unref(vm);
}

/* Two sandboxes of one template each write the same path: each sees only
 * its own file; a third sees neither. */
static void test_sandboxes_do_not_share_writes(void **state)
{
    fixture *f = *state;
    runtime_spec a = spec_of("dd-a", 0), b = spec_of("dd-b", 0);
    runtime_vm *va = create(f, &a);
    runtime_vm *vb = create(f, &b);
    free(fixture_sh(f, va, "echo from-a > /etc/owner && sync"));
    free(fixture_sh(f, vb, "echo from-b > /etc/owner && sync"));
    char *oa = fixture_sh(f, va, "cat /etc/owner");
    char *ob = fixture_sh(f, vb, "cat /etc/owner");
    assert_string_equal(oa, "from-a\n");
    assert_string_equal(ob, "from-b\n");
    free(oa);
    free(ob);
    terr err = {""};
    assert_int_equal(f->drv->ops->destroy(f->drv, "dd-b", vb, &err), 0);
    runtime_vm_unref(vb);
    runtime_spec c = spec_of("dd-c", 0);
    runtime_vm *vc = create(f, &c);
    char *oc;
    assert_int_not_equal(sh_code(f, vc, "cat /etc/owner", &oc), 0);
    free(oc);
    assert_int_equal(f->drv->ops->destroy(f->drv, "dd-c", vc, &err), 0);
    runtime_vm_unref(vc);
    assert_int_equal(f->drv->ops->destroy(f->drv, "dd-a", va, &err), 0);
    runtime_vm_unref(va);
    assert_false(sb_path_exists(f, "dd-a", NULL));
    assert_false(sb_path_exists(f, "dd-b", NULL));
    assert_false(sb_path_exists(f, "dd-c", NULL));
}

/* Filling the root disk fails inside the guest with ENOSPC; the sandbox
 * keeps working, the host file stays bounded by disk_mb, and the space comes
 * back when the file is removed. */
static void test_full_disk_gives_enospc_in_guest(void **state)
{
    fixture *f = *state;
    runtime_spec s = spec_of("dd-full", 600);
    runtime_vm *vm = create(f, &s);
    char *out;
    int code = sh_code(f, vm, "dd if=/dev/zero of=/root/fill bs=1M 2>&1; sync", &out);
    (void)code;
    if (!strstr(out, "No space left on device")) fprintf(stderr, "dd: %s\n", out);
    assert_non_null(strstr(out, "No space left on device"));
    free(out);
    long long overlay = sb_file_blocks_bytes(f, "dd-full", "root.qcow2");
    assert_true(overlay > 0 && overlay < (600LL + 64) << 20);
    out = fixture_sh(f, vm, "rm /root/fill && sync && echo again > /root/after && cat /root/after");
    assert_string_equal(out, "again\n");
    free(out);
    out = fixture_sh(f, vm, "python3 -c 'print(1)'");
    assert_string_equal(out, "1\n");
    free(out);
    terr err = {""};
    assert_int_equal(f->drv->ops->destroy(f->drv, "dd-full", vm, &err), 0);
    runtime_vm_unref(vm);
    assert_false(sb_path_exists(f, "dd-full", NULL));
}

/* A background process whose output still goes to the exec's pipes (no
 * redirection: `nohup cmd &` with stdout not a terminal) keeps running and
 * printing after the exec returned. */
static void test_background_printer_outlives_exec(void **state)
{
    fixture *f = *state;
    runtime_spec s = spec_of("dd-bgprint", 0);
    runtime_vm *vm = create(f, &s);
    long long t0 = mono_ms();
    char *out = fixture_sh(f, vm,
                           "nohup python3 -c 'import time\n"
                           "i = 0\n"
                           "while True:\n"
                           "    i += 1\n"
                           "    print(i, flush=True)\n"
                           "    open(\"/root/p.count\", \"w\").write(str(i))\n"
                           "    time.sleep(0.05)\n' &\n"
                           "echo $! > /root/p.pid; sleep 0.5; echo started");
    assert_true(mono_ms() - t0 < 20000); /* not the exec's 30 s timeout */
    assert_non_null(strstr(out, "started\n"));
    free(out);
    long long deadline = mono_ms() + 20000;
    long first = 0, v = 0;
    for (;;) {
        /* python3 may take a while to start under TCG: no count file yet is 0. */
        out = fixture_sh(
            f, vm, "kill -0 $(cat /root/p.pid) && { cat /root/p.count 2>/dev/null || echo 0; }");
        v = strtol(out, NULL, 10);
        free(out);
        if (!first) first = v ? v : -1;
        if (v >= first + 20) break;
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(200);
    }
    terr err = {""};
    assert_int_equal(f->drv->ops->destroy(f->drv, "dd-bgprint", vm, &err), 0);
    runtime_vm_unref(vm);
}

/* disk_mb outside 512..65536 is refused before anything is made. */
static void test_bad_disk_mb_refused(void **state)
{
    fixture *f = *state;
    terr err = {""};
    runtime_vm *vm = NULL;
    runtime_spec s = spec_of("dd-bad", 100);
    assert_int_equal(f->drv->ops->create(f->drv, &s, &vm, &err), -1);
    assert_non_null(strstr(err.msg, "disk_mb"));
    s = spec_of("dd-bad", 65537);
    assert_int_equal(f->drv->ops->create(f->drv, &s, &vm, &err), -1);
    assert_false(sb_path_exists(f, "dd-bad", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_disk_mb_refused),
        cmocka_unit_test(test_python_and_disk_size),
        cmocka_unit_test(test_root_disk_survives_pause_and_restart),
        cmocka_unit_test(test_sandboxes_do_not_share_writes),
        cmocka_unit_test(test_recover_mid_pause_disk_writable),
        cmocka_unit_test(test_background_printer_outlives_exec),
        cmocka_unit_test(test_full_disk_gives_enospc_in_guest),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
