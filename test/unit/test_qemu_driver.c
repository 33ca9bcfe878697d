/* test_qemu_driver: the QEMU runtime driver against real QEMU (TCG) and the
 * real guest image from the build dir (<build>/image/minimal, target
 * guest-image). The build dir is found from this executable's own path
 * (<build>/test/test_qemu_driver) or TORPOR_BUILD_DIR.
 *
 * Few VMs, small (128 MiB), one at a time where possible: the machine has
 * two cores. Waits are polling loops with deadlines, never bare sleeps. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "qemu.h"
#include "qemu_fixture.h"
#include "qemu_internal.h"
#include "qemu_proc.h"
#include "qmp.h"
#include "runtime.h"

typedef qemu_fixture fixture;

static int setup(void **state)
{
    static fixture f;
    if (qemu_fixture_open(&f, "qemu-test", 0) < 0) return -1;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (!f) return -1; /* setup failed: nothing to tear down */
    /* A restart test failed between closing and reopening. */
    if (!f->drv && qemu_fixture_reopen(f) < 0) return -1;
    /* A test that failed half-way may have left VMs running: destroy every
     * sandbox still on disk (destroy kills its QEMU through the pid file). */
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

static runtime_spec spec_of(const char *id)
{
    runtime_spec s = {.vcpus = 1, .memory_mb = 128, .timeout_sec = 0};
    snprintf(s.sandbox_id, sizeof s.sandbox_id, "%s", id);
    snprintf(s.template_name, sizeof s.template_name, "minimal");
    s.created_at_unix = time(NULL);
    return s;
}

static bool sb_path_exists(fixture *f, const char *id, const char *file)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/sandboxes/%s%s%s", f->state_dir, id, file ? "/" : "",
             file ? file : "");
    struct stat st;
    return stat(p, &st) == 0;
}

static pid_t sb_pid(fixture *f, const char *id)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/sandboxes/%s/qemu.pid", f->state_dir, id);
    FILE *fp = fopen(p, "r");
    if (!fp) return -1;
    int pid = -1;
    if (fscanf(fp, "%d", &pid) != 1) pid = -1;
    fclose(fp);
    return pid;
}

static bool pid_running(pid_t pid)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(p, "r");
    if (!fp) return false;
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

/* create -> exec echo -> write a file, start a counter -> pause -> resume ->
 * file intact, counter continued -> destroy removes everything. */
static void test_lifecycle(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_spec s = spec_of("sb-life");
    runtime_vm *vm = NULL;
    int r = ops->create(f->drv, &s, &vm, &err);
    if (r < 0) fprintf(stderr, "create: %s\n", err.msg);
    assert_int_equal(r, 0);
    assert_true(ops->vm_alive(f->drv, vm));

    char *out = fixture_sh(f, vm, "echo hello");
    assert_string_equal(out, "hello\n");
    free(out);

    const char *content = "kept across pause\n";
    assert_int_equal(ops->write_file(f->drv, vm, "/root/keep.txt", (const uint8_t *)content,
                                     strlen(content), 0644, &err),
                     0);
    out = fixture_sh(
        f, vm,
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; "
        "mv /tmp/counter.new /tmp/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1 & echo started");
    assert_string_equal(out, "started\n");
    free(out);
    long before = fixture_wait_counter(f, vm, 3);

    pid_t pid = sb_pid(f, "sb-life");
    assert_true(pid > 0 && pid_running(pid));
    r = ops->pause(f->drv, vm, &s, &err);
    if (r < 0) fprintf(stderr, "pause: %s\n", err.msg);
    assert_int_equal(r, 0);
    assert_false(pid_running(pid));
    assert_false(ops->vm_alive(f->drv, vm));
    assert_true(sb_path_exists(f, "sb-life", "meta"));
    assert_true(sb_path_exists(f, "sb-life", "state"));
    assert_true(sb_path_exists(f, "sb-life", "ram"));
    /* A paused handle refuses guest calls. */
    runtime_exec_request req = {.cmd = "true", .timeout_sec = 5};
    runtime_exec_result res;
    assert_int_equal(ops->exec(f->drv, vm, &req, &res, &err), -1);
    runtime_vm_unref(vm);
    vm = NULL;

    r = ops->resume(f->drv, &s, &vm, &err);
    if (r < 0) fprintf(stderr, "resume: %s\n", err.msg);
    assert_int_equal(r, 0);
    assert_false(sb_path_exists(f, "sb-life", "meta")); /* consumed */
    uint8_t *data;
    size_t len;
    assert_int_equal(ops->read_file(f->drv, vm, "/root/keep.txt", &data, &len, &err), 0);
    assert_int_equal(len, strlen(content));
    assert_memory_equal(data, content, len);
    free(data);
    long after = fixture_counter_value(f, vm);
    /* Continued, not restarted: a restart would start again from 1. */
    assert_true(after >= before);
    fixture_wait_counter(f, vm, after + 2); /* and it keeps counting */

    assert_int_equal(ops->destroy(f->drv, "sb-life", vm, &err), 0);
    assert_false(ops->vm_alive(f->drv, vm));
    assert_false(sb_path_exists(f, "sb-life", NULL));
    runtime_vm_unref(vm);
    /* Idempotent. */
    assert_int_equal(ops->destroy(f->drv, "sb-life", NULL, &err), 0);
    /* Nothing to resume any more. */
    assert_int_equal(ops->resume(f->drv, &s, &vm, &err), -1);
}

/* Two creates from one template snapshot must not be twins. */
static void test_clones_differ(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_spec a = spec_of("sb-clone-a"), b = spec_of("sb-clone-b");
    runtime_vm *va = NULL, *vb = NULL;
    assert_int_equal(ops->create(f->drv, &a, &va, &err), 0);
    assert_int_equal(ops->create(f->drv, &b, &vb, &err), 0);
    char *ua = fixture_sh(
        f, va, "cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1");
    char *ub = fixture_sh(
        f, vb, "cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1");
    assert_true(strlen(ua) > 36);
    assert_string_not_equal(ua, ub);
    free(ua);
    free(ub);
    /* The guest clock was set from the host's. */
    char *d = fixture_sh(f, va, "date +%s");
    long long guest = atoll(d), host = (long long)time(NULL);
    free(d);
    assert_true(guest > host - 60 && guest < host + 60);
    /* A second create with a used id is refused, the first stays intact. */
    runtime_vm *dup = NULL;
    assert_int_equal(ops->create(f->drv, &a, &dup, &err), -1);
    assert_true(ops->vm_alive(f->drv, va));
    assert_int_equal(ops->destroy(f->drv, "sb-clone-a", va, &err), 0);
    /* Without a handle, destroy still finds and kills the VM (pid file). */
    pid_t pb = sb_pid(f, "sb-clone-b");
    assert_true(pb > 0 && pid_running(pb));
    assert_int_equal(ops->destroy(f->drv, "sb-clone-b", NULL, &err), 0);
    assert_false(pid_running(pb));
    assert_false(ops->vm_alive(f->drv, vb));
    assert_false(sb_path_exists(f, "sb-clone-a", NULL));
    assert_false(sb_path_exists(f, "sb-clone-b", NULL));
    runtime_vm_unref(va);
    runtime_vm_unref(vb);
}

/* Binary-safe, multi-megabyte file round trip and exec output. */
static void test_big_files(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_spec s = spec_of("sb-big");
    runtime_vm *vm = NULL;
    assert_int_equal(ops->create(f->drv, &s, &vm, &err), 0);
    size_t n = 8u << 20;
    uint8_t *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++) data[i] = (uint8_t)(i * 2654435761u >> 13);
    assert_int_equal(ops->write_file(f->drv, vm, "/tmp/big.bin", data, n, 0600, &err), 0);
    uint8_t *back;
    size_t len;
    assert_int_equal(ops->read_file(f->drv, vm, "/tmp/big.bin", &back, &len, &err), 0);
    assert_int_equal(len, n);
    assert_memory_equal(back, data, n);
    free(back);
    runtime_exec_request req = {.cmd = "cat /tmp/big.bin", .timeout_sec = 60};
    runtime_exec_result res;
    assert_int_equal(ops->exec(f->drv, vm, &req, &res, &err), 0);
    assert_int_equal(res.out_len, n);
    assert_memory_equal(res.out, data, n);
    runtime_exec_result_free(&res);
    free(data);
    /* A missing file is an error with the guest's reason, not a crash. */
    assert_int_equal(ops->read_file(f->drv, vm, "/no/such/file", &back, &len, &err), -1);
    assert_int_equal(ops->destroy(f->drv, "sb-big", vm, &err), 0);
    runtime_vm_unref(vm);
}

typedef struct creator {
    fixture *f;
    runtime_spec spec;
    runtime_vm *vm;
    int rc;
    terr err;
} creator;

static void *creator_main(void *arg)
{
    creator *c = arg;
    c->rc = c->f->drv->ops->create(c->f->drv, &c->spec, &c->vm, &c->err);
    return NULL;
}

/* Two creates racing for a template nobody built yet: one build, both work. */
static void test_concurrent_template_build(void **state)
{
    fixture *f = *state;
    creator c[2] = {{.f = f, .spec = spec_of("sb-tpl-1")}, {.f = f, .spec = spec_of("sb-tpl-2")}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        c[i].spec.memory_mb = 96; /* a size no other test uses */
        assert_int_equal(pthread_create(&t[i], NULL, creator_main, &c[i]), 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        if (c[i].rc < 0) fprintf(stderr, "create: %s\n", c[i].err.msg);
        assert_int_equal(c[i].rc, 0);
    }
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/templates", f->state_dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n96 = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "minimal-96M-", 12)) n96++;
    closedir(d);
    assert_int_equal(n96, 1);
    terr err;
    for (int i = 0; i < 2; i++) {
        char *out = fixture_sh(f, c[i].vm, "echo up");
        assert_string_equal(out, "up\n");
        free(out);
        assert_int_equal(f->drv->ops->destroy(f->drv, c[i].spec.sandbox_id, c[i].vm, &err), 0);
        runtime_vm_unref(c[i].vm);
    }
}

typedef struct killer {
    char dir[PATH_MAX * 2];
    pid_t pid;
    int ifd;
    bool killed;
} killer;

/* Kills QEMU with SIGKILL at its first write into the snapshot file. From
 * that write to QEMU's clean exit the pause still needs several ms
 * (the rest of the stream, query-migrate, quit, teardown); a real-time
 * priority (best effort, needs root) makes this thread run the moment
 * inotify wakes it, so the kill lands inside that window even on a busy
 * machine. */
static void *killer_main(void *arg)
{
    killer *k = arg;
    struct sched_param sp = {.sched_priority = 10};
    pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(k->ifd, buf, sizeof buf);
        if (n <= 0) return NULL;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if ((ev->mask & IN_MODIFY) && ev->len && !strcmp(ev->name, "state.tmp")) {
                kill(k->pid, SIGKILL);
                k->killed = true;
                return NULL;
            }
            p += sizeof *ev + ev->len;
        }
    }
}

/* A pause whose QEMU is killed mid-migration leaves nothing resume takes. */
static void test_pause_killed_midway(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_spec s = spec_of("sb-killed");
    runtime_vm *vm = NULL;
    assert_int_equal(ops->create(f->drv, &s, &vm, &err), 0);
    killer k = {.pid = sb_pid(f, "sb-killed")};
    assert_true(k.pid > 0);
    snprintf(k.dir, sizeof k.dir, "%s/sandboxes/sb-killed", f->state_dir);
    k.ifd = inotify_init1(IN_CLOEXEC);
    assert_true(k.ifd >= 0);
    assert_true(inotify_add_watch(k.ifd, k.dir, IN_MODIFY) >= 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, killer_main, &k), 0);

    assert_int_equal(ops->pause(f->drv, vm, &s, &err), -1);
    pthread_join(t, NULL);
    close(k.ifd);
    assert_true(k.killed);
    assert_false(ops->vm_alive(f->drv, vm));
    assert_false(pid_running(k.pid));
    assert_false(sb_path_exists(f, "sb-killed", "meta"));
    runtime_vm *again = NULL;
    assert_int_equal(ops->resume(f->drv, &s, &again, &err), -1);
    assert_int_equal(ops->destroy(f->drv, "sb-killed", vm, &err), 0);
    assert_false(sb_path_exists(f, "sb-killed", NULL));
    runtime_vm_unref(vm);
}

/* A VM killed from outside: vm_alive turns false, guest calls fail, pause
 * fails without leaving a snapshot. */
static void test_killed_from_outside(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_spec s = spec_of("sb-outside");
    runtime_vm *vm = NULL;
    assert_int_equal(ops->create(f->drv, &s, &vm, &err), 0);
    pid_t pid = sb_pid(f, "sb-outside");
    assert_int_equal(kill(pid, SIGKILL), 0);
    long long deadline = mono_ms() + 10000;
    while (ops->vm_alive(f->drv, vm)) {
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(10);
    }
    runtime_exec_request req = {.cmd = "true", .timeout_sec = 5};
    runtime_exec_result res;
    assert_int_equal(ops->exec(f->drv, vm, &req, &res, &err), -1);
    assert_int_equal(ops->pause(f->drv, vm, &s, &err), -1);
    assert_false(sb_path_exists(f, "sb-outside", "meta"));
    assert_int_equal(ops->destroy(f->drv, "sb-outside", vm, &err), 0);
    runtime_vm_unref(vm);
}

typedef struct slow_exec {
    fixture *f;
    runtime_vm *vm;
    int rc;
    double took_ms;
    terr err;
} slow_exec;

static void *slow_exec_main(void *arg)
{
    slow_exec *x = arg;
    runtime_exec_request req = {.cmd = "sleep 60", .timeout_sec = 120};
    runtime_exec_result res;
    long long t0 = mono_ms();
    x->rc = x->f->drv->ops->exec(x->f->drv, x->vm, &req, &res, &x->err);
    x->took_ms = (double)(mono_ms() - t0);
    if (x->rc == 0) runtime_exec_result_free(&res);
    return NULL;
}

/* Several guest calls in flight at once; a pause makes the in-flight one
 * fail promptly, and the sandbox works again after resume. */
static void test_concurrent_calls_and_pause(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_spec s = spec_of("sb-conc");
    runtime_vm *vm = NULL;
    assert_int_equal(ops->create(f->drv, &s, &vm, &err), 0);
    slow_exec x = {.f = f, .vm = vm};
    runtime_vm_ref(vm); /* the thread's own reference, as the contract asks */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_exec_main, &x), 0);
    /* While `sleep 60` runs, other calls are answered. */
    long long deadline = mono_ms() + 20000;
    for (;;) {
        char *out = fixture_sh(f, vm, "pidof sleep >/dev/null && echo yes || echo no");
        bool running = !strcmp(out, "yes\n");
        free(out);
        if (running) break;
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(50);
    }
    assert_int_equal(ops->pause(f->drv, vm, &s, &err), 0);
    pthread_join(t, NULL);
    runtime_vm_unref(vm);
    assert_int_equal(x.rc, -1);
    assert_true(x.took_ms < 30000); /* failed by the pause, not by a timeout */
    runtime_vm_unref(vm);
    vm = NULL;
    assert_int_equal(ops->resume(f->drv, &s, &vm, &err), 0);
    char *out = fixture_sh(f, vm, "echo back");
    assert_string_equal(out, "back\n");
    free(out);
    assert_int_equal(ops->destroy(f->drv, "sb-conc", vm, &err), 0);
    runtime_vm_unref(vm);
}

typedef struct recovered {
    int paused, running;
    char paused_id[RUNTIME_ID_MAX];
    runtime_vm *vm;
    runtime_vm *all[8];  /* every running one, in report order (the first 8) */
    int announced, gone; /* live VMs announced as recovering; reported gone */
    bool all_announced;  /* the "every sandbox is known" call came */
} recovered;

static void on_recover(void *ctx, const runtime_spec *spec, runtime_vm *vm)
{
    recovered *r = ctx;
    if (!spec) {
        r->all_announced = true;
        return;
    }
    if (vm == RUNTIME_VM_RECOVERING) {
        r->announced++;
        return;
    }
    if (vm == RUNTIME_VM_GONE) {
        r->gone++;
        return;
    }
    if (vm) {
        if (r->running < 8) r->all[r->running] = vm;
        r->running++;
        r->vm = vm;
    } else {
        r->paused++;
        snprintf(r->paused_id, sizeof r->paused_id, "%s", spec->sandbox_id);
    }
}

/* Opens a new driver over the same state dir (the old one is closed: the
 * agent "died") and runs recover() into r. */
static void reopen_and_recover(fixture *f, recovered *r)
{
    terr err = {""};
    assert_int_equal(qemu_fixture_reopen(f), 0);
    memset(r, 0, sizeof *r);
    int rc = f->drv->ops->recover(f->drv, on_recover, r, &err);
    if (rc < 0) fprintf(stderr, "recover: %s\n", err.msg);
    assert_int_equal(rc, 0);
}

/* "Restart": closes the driver (VMs keep running, handles are released)
 * and opens a new one over the same state dir, then recover(). */
static void restart_driver(fixture *f, recovered *r)
{
    f->drv->ops->close(f->drv);
    reopen_and_recover(f, r);
}

/* After an agent restart: a committed snapshot is reported paused, a VM that
 * still runs is re-attached, debris is removed. */
static void test_recover(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_spec p = spec_of("sb-rec-paused"), q = spec_of("sb-rec-running");
    runtime_vm *vp = NULL, *vq = NULL;
    assert_int_equal(ops->create(f->drv, &p, &vp, &err), 0);
    assert_int_equal(ops->pause(f->drv, vp, &p, &err), 0);
    runtime_vm_unref(vp);
    assert_int_equal(ops->create(f->drv, &q, &vq, &err), 0);
    runtime_vm_unref(vq);
    char junk[PATH_MAX * 2];
    snprintf(junk, sizeof junk, "%s/sandboxes/sb-junk", f->state_dir);
    assert_int_equal(mkdir(junk, 0755), 0);

    recovered r;
    restart_driver(f, &r);
    ops = f->drv->ops;
    assert_int_equal(r.paused, 1);
    assert_string_equal(r.paused_id, "sb-rec-paused");
    assert_int_equal(r.running, 1);
    assert_false(sb_path_exists(f, "sb-junk", NULL));
    char *out = fixture_sh(f, r.vm, "echo reattached");
    assert_string_equal(out, "reattached\n");
    free(out);
    assert_int_equal(ops->destroy(f->drv, "sb-rec-running", r.vm, &err), 0);
    runtime_vm_unref(r.vm);
    assert_int_equal(ops->destroy(f->drv, "sb-rec-paused", NULL, &err), 0);
}

/* Starts a counter in the guest and writes a file; returns the counter
 * value seen (>= 3). */
static long start_counter_and_file(fixture *f, runtime_vm *vm, const char *content)
{
    terr err = {""};
    assert_int_equal(f->drv->ops->write_file(f->drv, vm, "/root/keep.txt", (const uint8_t *)content,
                                             strlen(content), 0644, &err),
                     0);
    char *out = fixture_sh(
        f, vm,
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; "
        "mv /tmp/counter.new /tmp/counter; sleep 0.2; done' </dev/null >/dev/null 2>&1 & "
        "echo started");
    assert_string_equal(out, "started\n");
    free(out);
    return fixture_wait_counter(f, vm, 3);
}

static void check_file(fixture *f, runtime_vm *vm, const char *content)
{
    terr err = {""};
    uint8_t *data;
    size_t len;
    int r = f->drv->ops->read_file(f->drv, vm, "/root/keep.txt", &data, &len, &err);
    if (r < 0) fprintf(stderr, "read_file: %s\n", err.msg);
    assert_int_equal(r, 0);
    assert_int_equal(len, strlen(content));
    assert_memory_equal(data, content, len);
    free(data);
}

/* Polls query-status over QMP until it equals want (deadline 20 s). */
static void wait_qmp_status(qmp *q, const char *want)
{
    long long deadline = mono_ms() + 20000;
    char needle[80];
    snprintf(needle, sizeof needle, "\"status\": \"%s\"", want);
    for (;;) {
        char *reply;
        terr err = {""};
        assert_int_equal(qmp_call(q, "query-status", NULL, 10000, &reply, &err), 0);
        bool ok = strstr(reply, needle) != NULL;
        if (!ok && mono_ms() > deadline) fprintf(stderr, "query-status: %s\n", reply);
        free(reply);
        if (ok) return;
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(20);
    }
}

/* An agent that died in the middle of a pause (QMP stop and the migration
 * done, no quit, no committed snapshot): the stopped VM's RAM is the only
 * copy of the guest, so recover conts it and re-attaches it as running —
 * same process, file intact, counter continues. */
static void test_recover_stopped_mid_pause(void **state)
{
    fixture *f = *state;
    terr err = {""};
    runtime_spec s = spec_of("sb-rec-stop");
    runtime_vm *vm = NULL;
    assert_int_equal(f->drv->ops->create(f->drv, &s, &vm, &err), 0);
    const char *content = "kept across an agent crash mid-pause\n";
    long before = start_counter_and_file(f, vm, content);
    pid_t pid = sb_pid(f, "sb-rec-stop");
    assert_true(pid > 0);
    /* The agent "dies": its handles and QMP connection go, the VM stays. */
    runtime_vm_unref(vm);
    f->drv->ops->close(f->drv);
    f->drv = NULL;

    /* What the dead agent's pause had done: stop + device state saved. */
    char dir[PATH_MAX * 2];
    snprintf(dir, sizeof dir, "%s/sandboxes/sb-rec-stop", f->state_dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    qmp *q = NULL;
    int r = qmp_connect(dfd, "qmp.sock", -1, 10000, &q, &err);
    if (r < 0) fprintf(stderr, "qmp_connect: %s\n", err.msg);
    assert_int_equal(r, 0);
    assert_int_equal(qmp_call(q, "stop", NULL, 10000, NULL, &err), 0);
    /* Over an fd, as the agent does: QEMU's seccomp filter (spawn=deny)
     * forbids an exec: migration. */
    int sfd = openat(dfd, "state.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(sfd >= 0);
    assert_int_equal(qmp_getfd(q, "st", sfd, 10000, &err), 0);
    close(sfd);
    assert_int_equal(qmp_call(q, "migrate", "{\"uri\":\"fd:st\"}", 10000, NULL, &err), 0);
    wait_qmp_status(q, "postmigrate");
    qmp_close(q);
    close(dfd);
    assert_true(sb_path_exists(f, "sb-rec-stop", "state.tmp"));
    assert_false(sb_path_exists(f, "sb-rec-stop", "meta"));

    recovered rec;
    reopen_and_recover(f, &rec);
    assert_int_equal(rec.running, 1);
    assert_int_equal(rec.paused, 0);
    assert_true(f->drv->ops->vm_alive(f->drv, rec.vm));
    assert_int_equal(sb_pid(f, "sb-rec-stop"), pid); /* the same QEMU, not a new one */
    assert_true(pid_running(pid));
    assert_false(sb_path_exists(f, "sb-rec-stop", "state.tmp")); /* debris removed */
    check_file(f, rec.vm, content);
    long after = fixture_counter_value(f, rec.vm);
    assert_true(after >= before);
    fixture_wait_counter(f, rec.vm, after + 2); /* running again, not just answering */
    /* And it is fully manageable: pause and resume work. */
    assert_int_equal(f->drv->ops->pause(f->drv, rec.vm, &s, &err), 0);
    runtime_vm_unref(rec.vm);
    runtime_vm *again = NULL;
    assert_int_equal(f->drv->ops->resume(f->drv, &s, &again, &err), 0);
    check_file(f, again, content);
    assert_int_equal(f->drv->ops->destroy(f->drv, "sb-rec-stop", again, &err), 0);
    runtime_vm_unref(again);
}

/* Polls a guest call until the lazy reconnect succeeds (deadline 40 s);
 * meanwhile only "guest not connected" failures are allowed. */
static void wait_guest_back(fixture *f, runtime_vm *vm)
{
    long long deadline = mono_ms() + 40000;
    for (;;) {
        runtime_exec_request req = {.cmd = "true", .timeout_sec = 5};
        runtime_exec_result res;
        terr err = {""};
        if (f->drv->ops->exec(f->drv, vm, &req, &res, &err) == 0) {
            assert_int_equal(res.exit_code, 0);
            runtime_exec_result_free(&res);
            return;
        }
        if (!strstr(err.msg, "guest not connected") || mono_ms() > deadline)
            fprintf(stderr, "exec: %s\n", err.msg);
        assert_non_null(strstr(err.msg, "guest not connected"));
        assert_true(mono_ms() < deadline);
        fixture_nap_ms(200);
    }
}

/* A live VM whose guest does not answer while the agent restarts (here: its
 * guest socket is out of the way) survives recover as running — same
 * process, nothing removed — and the guest channel connects on the first
 * guest call once the guest is reachable again. */
static void test_recover_guest_late(void **state)
{
    fixture *f = *state;
    terr err = {""};
    runtime_spec s = spec_of("sb-rec-late");
    runtime_vm *vm = NULL;
    assert_int_equal(f->drv->ops->create(f->drv, &s, &vm, &err), 0);
    const char *content = "kept across an agent restart\n";
    long before = start_counter_and_file(f, vm, content);
    pid_t pid = sb_pid(f, "sb-rec-late");
    runtime_vm_unref(vm);
    char sock[PATH_MAX * 2], hidden[PATH_MAX * 2 + 8];
    snprintf(sock, sizeof sock, "%s/sandboxes/sb-rec-late/guest.sock", f->state_dir);
    snprintf(hidden, sizeof hidden, "%s.hidden", sock);

    f->drv->ops->close(f->drv);
    f->drv = NULL;
    /* A listening unix socket keeps working under another name. */
    assert_int_equal(rename(sock, hidden), 0);
    recovered rec;
    reopen_and_recover(f, &rec);
    assert_int_equal(rec.running, 1);
    assert_true(f->drv->ops->vm_alive(f->drv, rec.vm));
    assert_true(pid_running(pid));
    assert_true(sb_path_exists(f, "sb-rec-late", "ram"));
    /* Still unreachable: the call fails, the VM stays. Two in a row: the
     * second does not wait out another connect, it fails at once with the
     * back-off message (the attempt of recover or of the first call). */
    runtime_exec_request req = {.cmd = "true", .timeout_sec = 5};
    runtime_exec_result res;
    assert_int_equal(f->drv->ops->exec(f->drv, rec.vm, &req, &res, &err), -1);
    assert_non_null(strstr(err.msg, "guest not connected"));
    err.msg[0] = '\0';
    assert_int_equal(f->drv->ops->exec(f->drv, rec.vm, &req, &res, &err), -1);
    assert_non_null(strstr(err.msg, "sb-rec-late: guest not connected (last attempt "));
    assert_non_null(strstr(err.msg, " s ago failed: "));
    assert_true(f->drv->ops->vm_alive(f->drv, rec.vm));
    /* Reachable again: a later call (once the back-off is over) connects. */
    assert_int_equal(rename(hidden, sock), 0);
    wait_guest_back(f, rec.vm);
    check_file(f, rec.vm, content);
    long after = fixture_counter_value(f, rec.vm);
    assert_true(after >= before);
    fixture_wait_counter(f, rec.vm, after + 2);
    assert_int_equal(sb_pid(f, "sb-rec-late"), pid);

    /* A second restart with the guest answering: re-attached directly. */
    runtime_vm_unref(rec.vm);
    restart_driver(f, &rec);
    assert_int_equal(rec.running, 1);
    assert_int_equal(sb_pid(f, "sb-rec-late"), pid);
    check_file(f, rec.vm, content);
    assert_int_equal(f->drv->ops->destroy(f->drv, "sb-rec-late", rec.vm, &err), 0);
    assert_false(pid_running(pid));
    runtime_vm_unref(rec.vm);
}

/* N running VMs whose torpor-guest is stopped (kill -STOP from inside):
 * an agent restart re-attaches them in parallel, so it waits about one
 * guest timeout (QEMU_RECOVER_GUEST_MS, 30 s), not N of them; each is
 * reported running and can be destroyed. */
static void test_recover_silent_guests_in_parallel(void **state)
{
    fixture *f = *state;
    terr err = {""};
    enum { N = 3 };
    char ids[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "sb-silent-%d", i);
        runtime_spec s = spec_of(ids[i]);
        runtime_vm *vm = NULL;
        assert_int_equal(f->drv->ops->create(f->drv, &s, &vm, &err), 0);
        runtime_exec_request req = {
            .cmd =
                "pid=$(pidof torpor-guest); (sleep 1; kill -STOP $pid) </dev/null >/dev/null 2>&1 &",
            .timeout_sec = 10};
        runtime_exec_result res;
        assert_int_equal(f->drv->ops->exec(f->drv, vm, &req, &res, &err), 0);
        runtime_exec_result_free(&res);
        runtime_vm_unref(vm);
    }
    sleep(3);
    recovered rec;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    restart_driver(f, &rec);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("recover of %d silent guests took %.1f s\n", N, took);
    assert_int_equal(rec.running, N);
    assert_int_equal(rec.announced, N); /* listed as recovering while re-attached */
    assert_true(rec.all_announced);
    assert_true(took < 50); /* serial would be >= 90 s */
    for (int i = 0; i < N; i++) {
        assert_int_equal(f->drv->ops->destroy(f->drv, rec.all[i]->sandbox_id, rec.all[i], &err), 0);
        runtime_vm_unref(rec.all[i]);
    }
}

static int count_templates(fixture *f)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/templates", f->state_dir);
    DIR *d = opendir(p);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && !strstr(e->d_name, ".building")) n++;
    closedir(d);
    return n;
}

static void create_and_destroy(fixture *f, const char *id, int memory_mb)
{
    terr err = {""};
    runtime_spec s = spec_of(id);
    s.memory_mb = memory_mb;
    runtime_vm *vm = NULL;
    assert_int_equal(f->drv->ops->create(f->drv, &s, &vm, &err), 0);
    assert_int_equal(f->drv->ops->destroy(f->drv, id, vm, &err), 0);
    runtime_vm_unref(vm);
}

/* The template cache keeps at most template_cache_max (template, shape)
 * snapshots, evicting the least recently used, never one a create still
 * holds (simulated by holding qemu_template_get's fd). */
static void test_template_cache_is_bounded_and_spares_one_in_use(void **state)
{
    fixture *f = *state;
    f->drv->ops->close(f->drv);
    f->template_cache_max = 1;
    assert_int_equal(qemu_fixture_reopen(f), 0);
    terr err = {""};
    int held;
    qemu_meta m;
    assert_int_equal(qemu_template_get(qemu_drv_of(f->drv), "minimal", 1, 128, 0, &held, &m, &err),
                     0);
    create_and_destroy(f, "sb-tpl-144", 144); /* a new shape: built, cache over its limit */
    assert_int_equal(count_templates(f), 2);  /* the 128 MiB one is in use: kept */
    close(held);
    create_and_destroy(f, "sb-tpl-160", 160);
    assert_int_equal(count_templates(f), 1); /* both older ones evicted */

    f->drv->ops->close(f->drv);
    f->template_cache_max = 0;
    assert_int_equal(qemu_fixture_reopen(f), 0);
}

/* A committed snapshot next to a live QEMU (the agent died after the
 * commit, before QEMU was gone): the snapshot wins — that QEMU is killed and
 * the sandbox reported paused, and it resumes. Simulated by pointing the
 * paused sandbox's pid file at another sandbox's live QEMU. */
static void test_recover_snapshot_wins(void **state)
{
    fixture *f = *state;
    terr err = {""};
    runtime_spec p = spec_of("sb-win-paused"), q = spec_of("sb-win-live");
    runtime_vm *vp = NULL, *vq = NULL;
    assert_int_equal(f->drv->ops->create(f->drv, &p, &vp, &err), 0);
    const char *content = "committed before the crash\n";
    assert_int_equal(f->drv->ops->write_file(f->drv, vp, "/root/keep.txt", (const uint8_t *)content,
                                             strlen(content), 0644, &err),
                     0);
    assert_int_equal(f->drv->ops->pause(f->drv, vp, &p, &err), 0);
    runtime_vm_unref(vp);
    assert_int_equal(f->drv->ops->create(f->drv, &q, &vq, &err), 0);
    runtime_vm_unref(vq);
    pid_t live = sb_pid(f, "sb-win-live");
    assert_true(live > 0 && pid_running(live));
    char from[PATH_MAX * 2], to[PATH_MAX * 2], cmd[PATH_MAX * 4 + 16];
    snprintf(from, sizeof from, "%s/sandboxes/sb-win-live/qemu.pid", f->state_dir);
    snprintf(to, sizeof to, "%s/sandboxes/sb-win-paused/qemu.pid", f->state_dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);

    recovered rec;
    restart_driver(f, &rec);
    assert_int_equal(rec.paused, 1);
    assert_string_equal(rec.paused_id, "sb-win-paused");
    assert_int_equal(rec.running, 0); /* its QEMU was the one killed */
    assert_false(pid_running(live));
    assert_false(sb_path_exists(f, "sb-win-live", NULL));
    assert_true(sb_path_exists(f, "sb-win-paused", "meta"));
    runtime_vm *vm = NULL;
    assert_int_equal(f->drv->ops->resume(f->drv, &p, &vm, &err), 0);
    check_file(f, vm, content);
    assert_int_equal(f->drv->ops->destroy(f->drv, "sb-win-paused", vm, &err), 0);
    runtime_vm_unref(vm);
}

/* A live VM whose QMP does not answer during recover (its socket is out of
 * the way; recover waits its full QMP timeout, 10 s) is still re-attached
 * as running and answers guest calls; the next lifecycle call connects QMP
 * and works. */
static void test_recover_qmp_late(void **state)
{
    fixture *f = *state;
    terr err = {""};
    runtime_spec s = spec_of("sb-rec-qmp");
    runtime_vm *vm = NULL;
    assert_int_equal(f->drv->ops->create(f->drv, &s, &vm, &err), 0);
    const char *content = "kept while QMP was away\n";
    assert_int_equal(f->drv->ops->write_file(f->drv, vm, "/root/keep.txt", (const uint8_t *)content,
                                             strlen(content), 0644, &err),
                     0);
    pid_t pid = sb_pid(f, "sb-rec-qmp");
    runtime_vm_unref(vm);
    char sock[PATH_MAX * 2], hidden[PATH_MAX * 2 + 8];
    snprintf(sock, sizeof sock, "%s/sandboxes/sb-rec-qmp/qmp.sock", f->state_dir);
    snprintf(hidden, sizeof hidden, "%s.hidden", sock);
    f->drv->ops->close(f->drv);
    f->drv = NULL;
    assert_int_equal(rename(sock, hidden), 0);
    recovered rec;
    reopen_and_recover(f, &rec);
    assert_int_equal(rec.running, 1);
    assert_true(pid_running(pid));
    check_file(f, rec.vm, content);
    assert_int_equal(rename(hidden, sock), 0);
    int r = f->drv->ops->pause(f->drv, rec.vm, &s, &err);
    if (r < 0) fprintf(stderr, "pause: %s\n", err.msg);
    assert_int_equal(r, 0);
    assert_false(pid_running(pid));
    runtime_vm_unref(rec.vm);
    vm = NULL;
    assert_int_equal(f->drv->ops->resume(f->drv, &s, &vm, &err), 0);
    check_file(f, vm, content);
    assert_int_equal(f->drv->ops->destroy(f->drv, "sb-rec-qmp", vm, &err), 0);
    runtime_vm_unref(vm);
}

/* Splits /proc/<pid>/cmdline (in buf) into argv; returns argc. */
static int read_cmdline(pid_t pid, char *buf, size_t n, char **argv, int max)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/cmdline", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t l = read(fd, buf, n - 1);
    close(fd);
    if (l <= 0) return -1;
    buf[l] = '\0';
    int argc = 0;
    for (char *a = buf; a < buf + l && argc < max - 1; a += strlen(a) + 1) argv[argc++] = a;
    argv[argc] = NULL;
    return argc;
}

/* An agent that died in a create after QEMU started (-incoming defer; the
 * running description written) but before it sent migrate-incoming: that
 * QEMU waits in `inmigrate` for a load nobody will send and can never run.
 * Simulated by starting a created sandbox's QEMU again by hand with its own
 * command line, then restarting the driver. pidfile: whether the agent got
 * as far as the pid file. */
static void cut_short_create(fixture *f, const char *id, bool pidfile)
{
    terr err = {""};
    runtime_spec s = spec_of(id);
    runtime_vm *vm = NULL;
    assert_int_equal(f->drv->ops->create(f->drv, &s, &vm, &err), 0);
    pid_t old = sb_pid(f, id);
    assert_true(old > 0);
    static char buf[16384];
    char *argv[128];
    int argc = read_cmdline(old, buf, sizeof buf, argv, 128);
    assert_true(argc > 2);
    assert_string_equal(argv[argc - 2], "-incoming");
    assert_string_equal(argv[argc - 1], "defer");
    /* The agent "dies"; its QEMU is gone too (the test's own child). */
    runtime_vm_unref(vm);
    f->drv->ops->close(f->drv);
    f->drv = NULL;
    assert_int_equal(kill(old, SIGKILL), 0);
    assert_int_equal(waitpid(old, NULL, 0), old);

    /* What the dead agent's create had done: QEMU spawned (pid file). */
    char dir[PATH_MAX * 2];
    snprintf(dir, sizeof dir, "%s/sandboxes/%s", f->state_dir, id);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    unlinkat(dfd, "qmp.sock", 0);
    unlinkat(dfd, "guest.sock", 0);
    assert_int_equal(unlinkat(dfd, "qemu.pid", 0), 0);
    qemu_proc p;
    assert_int_equal(qemu_proc_spawn(argv, dfd, "qemu.log", NULL, -1, &p, &err), 0);
    if (pidfile) assert_int_equal(qemu_proc_write_pidfile(dfd, &p, &err), 0);
    qmp *q = NULL;
    int r = qmp_connect(dfd, "qmp.sock", p.pidfd, 10000, &q, &err);
    if (r < 0) fprintf(stderr, "qmp_connect: %s\n", err.msg);
    assert_int_equal(r, 0);
    wait_qmp_status(q, "inmigrate");
    qmp_close(q);
    close(dfd);
    assert_true(sb_path_exists(f, id, "running"));
    assert_false(sb_path_exists(f, id, "meta"));
    assert_true(sb_path_exists(f, id, "qemu.pid") == pidfile);

    recovered rec;
    reopen_and_recover(f, &rec);
    assert_int_equal(rec.running, 0);
    assert_int_equal(rec.paused, 0);
    assert_false(sb_path_exists(f, id, NULL));
    /* Killed by recover (it is still the test's child: reap and look; a
     * QEMU left running fails the deadline instead of hanging the test). */
    int status = 0;
    long long deadline = mono_ms() + 10000;
    pid_t w;
    while ((w = waitpid(p.pid, &status, WNOHANG)) == 0 && mono_ms() < deadline) fixture_nap_ms(20);
    if (w == 0) {
        kill(p.pid, SIGKILL);
        waitpid(p.pid, NULL, 0);
    }
    assert_int_equal(w, p.pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    qemu_proc_release(&p);
}

/* recover kills such a QEMU, removes the directory and reports nothing. */
static void test_recover_create_cut_short(void **state)
{
    cut_short_create(*state, "sb-cut", true);
}

/* The same with the agent dead before the pid file: recover finds the QEMU
 * by its -name and cwd instead of leaking it. */
static void test_recover_untracked_qemu(void **state)
{
    cut_short_create(*state, "sb-nopid", false);
}

/* FDSize of a process: the size of its fd table (/proc/<pid>/status).
 * Only read(2) and friends: it runs in a forked child of this threaded
 * test process. */
static int fd_table_size(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    const char *p = strstr(buf, "FDSize:");
    return p ? atoi(p + strlen("FDSize:")) : -1;
}

/* QEMU is spawned with an fd table already past 64 slots: growing it later,
 * once QEMU has threads, waits for an RCU grace period (10-15 ms measured
 * in every resume). A fork copies only as much of the table as the highest
 * open fd needs, so the spawn runs in a child that first closes every fd
 * above 2: without the fix its QEMU (here: sleep) would start with 64. */
static void test_spawned_process_starts_with_a_large_fd_table(void **state)
{
    fixture *f = *state;
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) {
        close_range(3, ~0u, 0);
        int dfd = open(f->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char *argv[] = {"/bin/sleep", "30", NULL};
        terr err;
        qemu_proc p;
        if (dfd < 0 || qemu_proc_spawn(argv, dfd, "spawn-test.log", NULL, -1, &p, &err) < 0)
            _exit(2);
        int size = fd_table_size(p.pid); /* exec is done once spawn returns */
        kill(p.pid, SIGKILL);
        waitpid(p.pid, NULL, 0);
        unlinkat(dfd, "spawn-test.log", 0);
        _exit(size >= 256 ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(c, &status, 0), c);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_bad_input(void **state)
{
    fixture *f = *state;
    const runtime_ops *ops = f->drv->ops;
    terr err = {""};
    runtime_vm *vm = NULL;
    runtime_spec s = spec_of("../escape");
    assert_int_equal(ops->create(f->drv, &s, &vm, &err), -1);
    s = spec_of("sb-bad");
    snprintf(s.template_name, sizeof s.template_name, "no-such-template");
    assert_int_equal(ops->create(f->drv, &s, &vm, &err), -1);
    assert_non_null(strstr(err.msg, "unknown template"));
    s = spec_of("sb-bad");
    s.memory_mb = 1;
    assert_int_equal(ops->create(f->drv, &s, &vm, &err), -1);
    assert_int_equal(ops->destroy(f->drv, "../x", NULL, &err), -1);
    qemu_accel a;
    assert_int_equal(runtime_qemu_parse_accel("tcg", &a), 0);
    assert_int_equal(a, QEMU_ACCEL_TCG);
    assert_int_equal(runtime_qemu_parse_accel("fast", &a), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawned_process_starts_with_a_large_fd_table),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_clones_differ),
        cmocka_unit_test(test_big_files),
        cmocka_unit_test(test_concurrent_template_build),
        cmocka_unit_test(test_pause_killed_midway),
        cmocka_unit_test(test_concurrent_calls_and_pause),
        cmocka_unit_test(test_killed_from_outside),
        cmocka_unit_test(test_recover),
        cmocka_unit_test(test_recover_stopped_mid_pause),
        cmocka_unit_test(test_recover_guest_late),
        cmocka_unit_test(test_recover_silent_guests_in_parallel),
        cmocka_unit_test(test_template_cache_is_bounded_and_spares_one_in_use),
        cmocka_unit_test(test_recover_snapshot_wins),
        cmocka_unit_test(test_recover_qmp_late),
        cmocka_unit_test(test_recover_create_cut_short),
        cmocka_unit_test(test_recover_untracked_qemu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
