#include "qemu_fixture.h"

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

void fixture_nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* The build dir: TORPOR_BUILD_DIR, else <build>/test/<exe> -> <build>. */
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

int qemu_fixture_reopen(qemu_fixture *f)
{
    runtime_qemu_config cfg = {.state_dir = f->state_dir,
                               .image_dir = f->image_dir,
                               .accel = QEMU_ACCEL_AUTO,
                               .idle_trim_ms = f->idle_trim_ms,
                               .template_cache_max = f->template_cache_max};
    terr err = {""};
    if (runtime_qemu_open(&cfg, &f->drv, &err) < 0) {
        fprintf(stderr, "runtime_qemu_open: %s\n", err.msg);
        return -1;
    }
    return 0;
}

int qemu_fixture_open(qemu_fixture *f, const char *name, int idle_trim_ms)
{
    memset(f, 0, sizeof *f);
    f->idle_trim_ms = idle_trim_ms;
    char build[PATH_MAX - 16];
    if (find_build_dir(build, sizeof build) < 0) return -1;
    snprintf(f->image_dir, sizeof f->image_dir, "%s/image", build);
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/minimal/vmlinux", f->image_dir);
    if (access(probe, R_OK) != 0) {
        fprintf(stderr, "guest image missing: %s (build the guest-image target)\n", probe);
        return -1;
    }
    snprintf(f->state_dir, sizeof f->state_dir, "/tmp/torpor-%s-XXXXXX", name);
    if (!mkdtemp(f->state_dir)) return -1;
    return qemu_fixture_reopen(f);
}

char *fixture_sh(qemu_fixture *f, runtime_vm *vm, const char *cmd)
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

long fixture_counter_value(qemu_fixture *f, runtime_vm *vm)
{
    char *s = fixture_sh(f, vm, "cat /tmp/counter 2>/dev/null || echo 0");
    long v = strtol(s, NULL, 10);
    free(s);
    return v;
}

long fixture_wait_counter(qemu_fixture *f, runtime_vm *vm, long min)
{
    long long deadline = mono_ms() + 20000;
    long v;
    while ((v = fixture_counter_value(f, vm)) < min) {
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(100);
    }
    return v;
}
