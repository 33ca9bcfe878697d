/* test_qemu_trim: the QEMU driver's idle trim (qemu_trim.c, qemu_watch.c)
 * against real QEMU (TCG) and the real guest image from the build dir
 * (<build>/image/minimal, target guest-image; found from this executable's
 * path <build>/test/test_qemu_trim or TORPOR_BUILD_DIR).
 *
 * With idle_trim_ms = 200, a sandbox left without host calls must have its
 * guest-RAM mapping unmapped from QEMU (Rss of the "ram" file mapping in
 * /proc/<pid>/smaps drops well below what it was after the guest wrote a
 * file), and the trim must change no memory contents: the file reads back
 * intact and a background counter in the guest keeps counting. Waits are
 * polling loops with deadlines. */
#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "qemu.h"
#include "runtime.h"

#define SB_ID "sb-trim"
#define FILE_BYTES (4u << 20)

typedef struct fixture {
    char state_dir[PATH_MAX];
    char image_dir[PATH_MAX];
    runtime_driver *drv;
} fixture;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int find_build_dir(char *out, size_t n)
{
    const char *env = getenv("TORPOR_BUILD_DIR");
    if (env && *env) {
        if (strlen(env) >= n) return -1;
        memcpy(out, env, strlen(env) + 1);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (l <= 0) return -1;
    exe[l] = '\0';
    for (int i = 0; i < 2; i++) {
        char *s = strrchr(exe, '/');
        if (!s) return -1;
        *s = '\0';
    }
    if (strlen(exe) >= n) return -1;
    memcpy(out, exe, strlen(exe) + 1);
    return 0;
}

static int setup(void **state)
{
    static fixture f;
    char build[PATH_MAX - 16];
    if (find_build_dir(build, sizeof build) < 0) return -1;
    snprintf(f.image_dir, sizeof f.image_dir, "%s/image", build);
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/minimal/vmlinux", f.image_dir);
    if (access(probe, R_OK) != 0) {
        fprintf(stderr, "guest image missing: %s (build the guest-image target)\n", probe);
        return -1;
    }
    snprintf(f.state_dir, sizeof f.state_dir, "/tmp/torpor-qemu-trim-XXXXXX");
    if (!mkdtemp(f.state_dir)) return -1;
    runtime_qemu_config cfg = {.state_dir = f.state_dir, .image_dir = f.image_dir,
                               .accel = QEMU_ACCEL_AUTO, .idle_trim_ms = 200};
    terr err = {""};
    if (runtime_qemu_open(&cfg, &f.drv, &err) < 0) {
        fprintf(stderr, "runtime_qemu_open: %s\n", err.msg);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    /* A failed test may have left its VM: destroy kills it via the pid file. */
    terr err;
    if (f->drv->ops->destroy(f->drv, SB_ID, NULL, &err) < 0)
        fprintf(stderr, "teardown: destroy: %s\n", err.msg);
    f->drv->ops->close(f->drv);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->state_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static pid_t sb_pid(fixture *f)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/sandboxes/" SB_ID "/qemu.pid", f->state_dir);
    FILE *fp = fopen(p, "r");
    if (!fp) return -1;
    int pid = -1;
    if (fscanf(fp, "%d", &pid) != 1) pid = -1;
    fclose(fp);
    return pid;
}

/* Rss (kB) of QEMU's mapping of the sandbox's guest RAM file, -1 if none. */
static long ram_rss_kb(fixture *f, pid_t pid)
{
    char path[64], want[PATH_MAX * 2];
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)pid);
    snprintf(want, sizeof want, "%s/sandboxes/" SB_ID "/ram", f->state_dir);
    FILE *fp = fopen(path, "r");
    if (!fp) return -1;
    char line[PATH_MAX * 2 + 128];
    bool in_ram = false;
    long rss = -1;
    while (fgets(line, sizeof line, fp)) {
        unsigned long a, b;
        int name_at = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &a, &b, &name_at) == 2 && name_at > 0) {
            /* A mapping header line: does it name our RAM file? */
            char *name = line + name_at;
            name[strcspn(name, "\n")] = '\0';
            in_ram = !strcmp(name, want);
            continue;
        }
        long kb;
        if (in_ram && sscanf(line, "Rss: %ld kB", &kb) == 1) rss = (rss < 0 ? 0 : rss) + kb;
    }
    fclose(fp);
    return rss;
}

static char *sh(fixture *f, runtime_vm *vm, const char *cmd)
{
    runtime_exec_request req = {.cmd = cmd, .timeout_sec = 30};
    runtime_exec_result res;
    terr err = {""};
    int r = f->drv->ops->exec(f->drv, vm, &req, &res, &err);
    if (r < 0) fprintf(stderr, "exec %s: %s\n", cmd, err.msg);
    assert_int_equal(r, 0);
    assert_int_equal(res.exit_code, 0);
    char *out = malloc(res.out_len + 1);
    assert_non_null(out);
    memcpy(out, res.out, res.out_len);
    out[res.out_len] = '\0';
    runtime_exec_result_free(&res);
    return out;
}

static long counter_value(fixture *f, runtime_vm *vm)
{
    char *s = sh(f, vm, "cat /tmp/counter 2>/dev/null || echo 0");
    long v = strtol(s, NULL, 10);
    free(s);
    return v;
}

static long wait_counter(fixture *f, runtime_vm *vm, long min)
{
    long long deadline = now_ms() + 20000;
    long v;
    while ((v = counter_value(f, vm)) < min) {
        assert_true(now_ms() < deadline);
        nap_ms(100);
    }
    return v;
}

static void test_idle_trim(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_spec s = {.vcpus = 1, .memory_mb = 128};
    snprintf(s.sandbox_id, sizeof s.sandbox_id, SB_ID);
    snprintf(s.template_name, sizeof s.template_name, "minimal");
    runtime_vm *vm = NULL;
    int r = ops->create(f->drv, &s, &vm, &err);
    if (r < 0) fprintf(stderr, "create: %s\n", err.msg);
    assert_int_equal(r, 0);
    pid_t pid = sb_pid(f);
    assert_true(pid > 0);

    char *out = sh(f, vm, "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; "
                          "mv /tmp/counter.new /tmp/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1 & "
                          "echo started");
    assert_string_equal(out, "started\n");
    free(out);
    long count0 = wait_counter(f, vm, 2);

    /* The guest writes 4 MiB into its own memory (rootfs is RAM): QEMU has
     * those pages of the RAM file mapped right after this call. */
    uint8_t *data = malloc(FILE_BYTES);
    assert_non_null(data);
    for (size_t i = 0; i < FILE_BYTES; i++) data[i] = (uint8_t)(i * 2654435761u >> 11);
    assert_int_equal(ops->write_file(f->drv, vm, "/root/trim.bin", data, FILE_BYTES, 0644, &err), 0);
    long before = ram_rss_kb(f, pid);
    fprintf(stderr, "ram mapping rss before: %ld kB\n", before);
    assert_true(before > 0);

    /* No host calls now: within 200 ms + one watch scan the VM is trimmed.
     * The counter keeps faulting a few pages back, so "well below" is half. */
    long long t0 = now_ms(), deadline = t0 + 20000;
    long after;
    while ((after = ram_rss_kb(f, pid)) * 2 >= before) {
        assert_true(after >= 0);
        if (now_ms() > deadline) fprintf(stderr, "ram mapping rss still %ld kB\n", after);
        assert_true(now_ms() < deadline);
        nap_ms(50);
    }
    fprintf(stderr, "ram mapping rss after: %ld kB (%lld ms)\n", after, now_ms() - t0);

    /* Nothing changed for the guest: the file is intact, the counter kept
     * counting through the trim. */
    uint8_t *back;
    size_t len;
    assert_int_equal(ops->read_file(f->drv, vm, "/root/trim.bin", &back, &len, &err), 0);
    assert_int_equal(len, FILE_BYTES);
    assert_memory_equal(back, data, FILE_BYTES);
    free(back);
    free(data);
    long count1 = counter_value(f, vm);
    assert_true(count1 > count0);
    wait_counter(f, vm, count1 + 2);

    assert_int_equal(ops->destroy(f->drv, SB_ID, vm, &err), 0);
    runtime_vm_unref(vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_trim),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
