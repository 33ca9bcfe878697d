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
#include "qemu_fixture.h"
#include "runtime.h"

#define SB_ID "sb-trim"
#define FILE_BYTES (4u << 20)

typedef qemu_fixture fixture;

static int setup(void **state)
{
    static fixture f;
    if (qemu_fixture_open(&f, "qemu-trim", 200) < 0) return -1;
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

    char *out = fixture_sh(
        f, vm,
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; "
        "mv /tmp/counter.new /tmp/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1 & "
        "echo started");
    assert_string_equal(out, "started\n");
    free(out);
    long count0 = fixture_wait_counter(f, vm, 2);

    /* The guest writes 4 MiB into its own memory (rootfs is RAM): QEMU has
     * those pages of the RAM file mapped right after this call. */
    uint8_t *data = malloc(FILE_BYTES);
    assert_non_null(data);
    for (size_t i = 0; i < FILE_BYTES; i++) data[i] = (uint8_t)(i * 2654435761u >> 11);
    assert_int_equal(ops->write_file(f->drv, vm, "/root/trim.bin", data, FILE_BYTES, 0644, &err),
                     0);
    long before = ram_rss_kb(f, pid);
    fprintf(stderr, "ram mapping rss before: %ld kB\n", before);
    assert_true(before > 0);

    /* No host calls now: within 200 ms + one watch scan the VM is trimmed.
     * The counter keeps faulting a few pages back, so "well below" is half. */
    long long t0 = mono_ms(), deadline = t0 + 20000;
    long after;
    while ((after = ram_rss_kb(f, pid)) * 2 >= before) {
        assert_true(after >= 0);
        if (mono_ms() > deadline) fprintf(stderr, "ram mapping rss still %ld kB\n", after);
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(50);
    }
    fprintf(stderr, "ram mapping rss after: %ld kB (%lld ms)\n", after, mono_ms() - t0);

    /* Nothing changed for the guest: the file is intact, the counter kept
     * counting through the trim. */
    uint8_t *back;
    size_t len;
    assert_int_equal(ops->read_file(f->drv, vm, "/root/trim.bin", &back, &len, &err), 0);
    assert_int_equal(len, FILE_BYTES);
    assert_memory_equal(back, data, FILE_BYTES);
    free(back);
    free(data);
    long count1 = fixture_counter_value(f, vm);
    assert_true(count1 > count0);
    fixture_wait_counter(f, vm, count1 + 2);

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
