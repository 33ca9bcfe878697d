/* bench_runtime: figures of the QEMU runtime driver on this host.
 *
 * For each guest size (default 128 MiB and 1 GiB), builds the template once
 * (reported separately), then runs N rounds of:
 *   create (restore of the template snapshot) -> exec `true`
 *   -> pause (durable) -> resume -> first exec after resume -> destroy
 * and prints median and p90 of each phase, the snapshot's size on disk, and
 * the idle cost (PSS, CPU% over a window) of one idle sandbox and of three.
 * The idle PSS is split into the guest RAM file's mapped pages and the
 * process's private pages (USS); the rest is shared with other processes
 * (QEMU binary, libraries). It never passes or fails on time: it only prints.
 *
 * Usage: bench_runtime [--rounds N] [--sizes 128,1024] [--idle-sec S]
 *                      [--image-dir DIR] [--state-dir DIR] [--idle-trim-ms N]
 *                      [--template NAME] [--disk-mb N] [--vm-user NAME]
 * (--template: default minimal; with a root disk template (debian) it also
 * reports the overlay's new bytes right after create; --disk-mb: the
 * sandboxes' disk_mb, default 0 = the driver's default; --write-mb N: each
 * round writes N MiB into /root before the pause, timed, so the pause
 * includes flushing them.)
 * (--idle-trim-ms: the driver's idle trim delay; -1 turns it off.)
 * (--vm-user: QEMU runs as that user, as with torpor-agent --vm-user.)
 * Default image dir: <build>/image (from this executable's path). */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "qemu.h"
#include "qemu_stats.h"
#include "runtime.h"

#define MAX_ROUNDS 200
#define MAX_SIZES 4

enum {
    M_CREATE,
    M_CREATE_COPY,
    M_CREATE_RUNNING,
    M_CREATE_EXEC,
    M_PAUSE,
    M_PAUSE_SAVE,
    M_PAUSE_FSYNC,
    M_RESUME_RUNNING,
    M_RESUME_READY,
    M_RESUME_EXEC,
    M_STATE_KB,
    M_DIR_MB,
    M_RAM_MB,
    M_DISK_NEW_MB,
    M_WRITE,
    M_PY_WARM,
    M_COUNT
};

static const char *const metric_names[M_COUNT] = {
    "create: total (guest answered + SYNC), ms",
    "  create: RAM file copy, ms",
    "  create: VM running (after cont), ms",
    "  create -> first exec done, ms",
    "pause (durable: snapshot + quit + fsync + meta), ms",
    "  pause: stop + device state migrated, ms",
    "  pause: fsync RAM + state, ms",
    "resume -> VM running (after cont), ms",
    "resume -> guest ready (PING + SYNC), ms",
    "resume -> first exec done, ms",
    "snapshot state file, KB",
    "sandbox dir on disk (paused), MB",
    "  of which RAM file, MB",
    "root disk overlay right after create, MB",
    "write --write-mb MiB to /root in the guest (no sync), ms",
    "python3 -c 'print(1)', warm (2nd run), ms (not minimal)",
};

static char g_template[64] = "minimal";
static int g_disk_mb = 0;
static int g_write_mb = 0; /* --write-mb: written to the root disk before each pause */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double *v, int n, double p)
{
    if (n == 0) return 0;
    double *c = malloc(sizeof *c * (size_t)n);
    memcpy(c, v, sizeof *c * (size_t)n);
    qsort(c, (size_t)n, sizeof *c, cmp_double);
    int idx = (int)(p * (n - 1) + 0.5);
    double r = c[idx];
    free(c);
    return r;
}

static int64_t dir_disk_bytes(const char *dir)
{
    char cmd[PATH_MAX + 256];
    snprintf(cmd, sizeof cmd, "du -sB1 '%.4100s' 2>/dev/null", dir);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    long long b = -1;
    if (fscanf(p, "%lld", &b) != 1) b = -1;
    pclose(p);
    return b;
}

static int exec_true(runtime_driver *d, runtime_vm *vm, terr *err)
{
    runtime_exec_request req = {.cmd = "true", .timeout_sec = 30};
    runtime_exec_result res;
    if (d->ops->exec(d, vm, &req, &res, err) < 0) return -1;
    int code = res.exit_code;
    runtime_exec_result_free(&res);
    return code == 0 ? 0 : terr_set(err, "true exited %d", code);
}

typedef struct mem_kb {
    long long pss;     /* the whole process */
    long long ram_pss; /* its mapping of the guest RAM file (<sandbox>/ram) */
    long long uss;     /* private pages (Private_Clean + Private_Dirty) */
} mem_kb;

/* Sums /proc/<pid>/smaps. */
static int proc_mem(int pid, mem_kb *m)
{
    char p[64], line[512];
    snprintf(p, sizeof p, "/proc/%d/smaps", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    memset(m, 0, sizeof *m);
    bool in_ram = false;
    while (fgets(line, sizeof line, f)) {
        long long kb;
        char name[32];
        if (sscanf(line, "%31[A-Za-z_]: %lld kB", name, &kb) == 2) {
            if (!strcmp(name, "Pss")) {
                m->pss += kb;
                if (in_ram) m->ram_pss += kb;
            } else if (!strcmp(name, "Private_Clean") || !strcmp(name, "Private_Dirty")) {
                m->uss += kb;
            }
        } else if (strchr(line, '-') && strchr(line, ' ')) {
            /* a mapping header: "start-end perms offset dev inode [path]" */
            size_t l = strlen(line);
            while (l && (line[l - 1] == '\n' || line[l - 1] == ' ')) line[--l] = '\0';
            in_ram = l >= 4 && !strcmp(line + l - 4, "/ram");
        }
    }
    fclose(f);
    return 0;
}

static long long proc_cpu_ticks(int pid)
{
    char p[64], buf[2048];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = strrchr(buf, ')');
    if (!s) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ')': state(3) ... utime(14) stime(15) */
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

typedef struct size_result {
    int memory_mb;
    double template_build_ms;
    double v[M_COUNT][MAX_ROUNDS];
    int n;
    mem_kb idle; /* one idle sandbox alone */
    double idle_cpu_pct;
    mem_kb idle3; /* per sandbox, three idle at once (shared pages split) */
    double idle3_cpu_pct;
    double idle_settle_cpu_ms, idle3_settle_cpu_ms; /* CPU before the window, per sandbox */
} size_result;

/* Idle cost of k sandboxes that were created, used once, then left alone:
 * average PSS and CPU% (of one core) per sandbox over a window, and the CPU
 * each spent in the settle period before it. */
static int idle_measure(runtime_driver *d, int mem, int k, int idle_sec, int settle_ms, mem_kb *mkb,
                        double *cpu_pct, double *settle_cpu_ms, terr *err)
{
    runtime_vm *vms[8] = {0};
    int pids[8] = {0};
    int rc = 0;
    runtime_spec s = {.vcpus = 1, .memory_mb = mem, .disk_mb = g_disk_mb};
    snprintf(s.template_name, sizeof s.template_name, "%s", g_template);
    for (int i = 0; i < k && rc == 0; i++) {
        snprintf(s.sandbox_id, sizeof s.sandbox_id, "bench-%d-idle%d", mem, i);
        if (d->ops->create(d, &s, &vms[i], err) < 0 || exec_true(d, vms[i], err) < 0) rc = -1;
        else pids[i] = qemu_vm_pid(vms[i]);
    }
    if (rc == 0) {
        long long cs = 0;
        for (int i = 0; i < k; i++) cs += proc_cpu_ticks(pids[i]);
        struct timespec settle = {settle_ms / 1000, (settle_ms % 1000) * 1000000L};
        nanosleep(&settle, NULL);
        long long c0 = 0, c1 = 0;
        mem_kb sum = {0};
        for (int i = 0; i < k; i++) c0 += proc_cpu_ticks(pids[i]);
        double w0 = now_ms();
        struct timespec win = {idle_sec, 0};
        nanosleep(&win, NULL);
        for (int i = 0; i < k; i++) {
            c1 += proc_cpu_ticks(pids[i]);
            mem_kb one;
            if (proc_mem(pids[i], &one) < 0) {
                rc = terr_set(err, "cannot read /proc/%d/smaps", pids[i]);
                break;
            }
            sum.pss += one.pss;
            sum.ram_pss += one.ram_pss;
            sum.uss += one.uss;
        }
        double w1 = now_ms();
        long hz = sysconf(_SC_CLK_TCK);
        *mkb = (mem_kb){sum.pss / k, sum.ram_pss / k, sum.uss / k};
        *cpu_pct = 100.0 * (double)(c1 - c0) / (double)hz / ((w1 - w0) / 1000.0) / k;
        *settle_cpu_ms = 1000.0 * (double)(c0 - cs) / (double)hz / k;
    }
    for (int i = 0; i < k; i++) {
        if (!vms[i]) continue;
        terr e2;
        snprintf(s.sandbox_id, sizeof s.sandbox_id, "bench-%d-idle%d", mem, i);
        d->ops->destroy(d, s.sandbox_id, vms[i], &e2);
        runtime_vm_unref(vms[i]);
    }
    return rc;
}

static void sandbox_dir(char *out, size_t n, const char *state_dir, const char *id)
{
    snprintf(out, n, "%s/sandboxes/%s", state_dir, id);
}

static int run_size(runtime_driver *d, const char *state_dir, int mem, int rounds, int idle_sec,
                    int settle_ms, size_result *r)
{
    const runtime_ops *ops = d->ops;
    terr err = {""};
    r->memory_mb = mem;
    runtime_spec s = {.vcpus = 1, .memory_mb = mem, .disk_mb = g_disk_mb};
    snprintf(s.template_name, sizeof s.template_name, "%s", g_template);

    /* Round 0 builds the template (first create on this host). */
    snprintf(s.sandbox_id, sizeof s.sandbox_id, "bench-%d-warm", mem);
    runtime_vm *vm = NULL;
    double t = now_ms();
    if (ops->create(d, &s, &vm, &err) < 0) {
        fprintf(stderr, "create (template build) %d MiB: %s\n", mem, err.msg);
        return -1;
    }
    r->template_build_ms = now_ms() - t;
    ops->destroy(d, s.sandbox_id, vm, &err);
    runtime_vm_unref(vm);

    for (int i = 0; i < rounds; i++) {
        snprintf(s.sandbox_id, sizeof s.sandbox_id, "bench-%d-%d", mem, i);
        qemu_timing tm;
        t = now_ms();
        if (ops->create(d, &s, &vm, &err) < 0) goto fail;
        r->v[M_CREATE][i] = now_ms() - t;
        {
            char disk[PATH_MAX + 100];
            sandbox_dir(disk, sizeof disk, state_dir, s.sandbox_id);
            strcat(disk, "/root.qcow2");
            struct stat st;
            r->v[M_DISK_NEW_MB][i] =
                stat(disk, &st) == 0 ? (double)st.st_blocks * 512 / 1048576.0 : 0;
        }
        qemu_vm_last_timing(vm, &tm);
        r->v[M_CREATE_COPY][i] = tm.copy_ms;
        r->v[M_CREATE_RUNNING][i] = tm.running_ms + tm.copy_ms;
        if (exec_true(d, vm, &err) < 0) goto fail;
        r->v[M_CREATE_EXEC][i] = now_ms() - t;
        if (strcmp(g_template, "minimal") != 0) {
            runtime_exec_request req = {.cmd = "python3 -c 'print(1)'", .timeout_sec = 60};
            runtime_exec_result res;
            for (int k = 0; k < 2; k++) {
                t = now_ms();
                if (ops->exec(d, vm, &req, &res, &err) < 0) goto fail;
                r->v[M_PY_WARM][i] = now_ms() - t;
                runtime_exec_result_free(&res);
            }
        }
        if (g_write_mb > 0) {
            char cmd[128];
            snprintf(cmd, sizeof cmd, "head -c %dM /dev/urandom > /root/bench.w", g_write_mb);
            runtime_exec_request req = {.cmd = cmd, .timeout_sec = 300};
            runtime_exec_result res;
            t = now_ms();
            if (ops->exec(d, vm, &req, &res, &err) < 0) goto fail;
            r->v[M_WRITE][i] = now_ms() - t;
            runtime_exec_result_free(&res);
        }

        t = now_ms();
        if (ops->pause(d, vm, &s, &err) < 0) goto fail;
        r->v[M_PAUSE][i] = now_ms() - t;
        qemu_vm_last_timing(vm, &tm);
        r->v[M_PAUSE_SAVE][i] = tm.save_ms;
        r->v[M_PAUSE_FSYNC][i] = tm.fsync_ms;
        r->v[M_STATE_KB][i] = (double)tm.state_bytes / 1024.0;
        r->v[M_RAM_MB][i] = (double)tm.ram_disk_bytes / 1048576.0;
        char dir[PATH_MAX + 80];
        sandbox_dir(dir, sizeof dir, state_dir, s.sandbox_id);
        r->v[M_DIR_MB][i] = (double)dir_disk_bytes(dir) / 1048576.0;
        runtime_vm_unref(vm);
        vm = NULL;

        t = now_ms();
        if (ops->resume(d, &s, &vm, &err) < 0) goto fail;
        r->v[M_RESUME_READY][i] = now_ms() - t;
        qemu_vm_last_timing(vm, &tm);
        r->v[M_RESUME_RUNNING][i] = tm.running_ms;
        if (exec_true(d, vm, &err) < 0) goto fail;
        r->v[M_RESUME_EXEC][i] = now_ms() - t;

        if (ops->destroy(d, s.sandbox_id, vm, &err) < 0) goto fail;
        runtime_vm_unref(vm);
        vm = NULL;
        r->n = i + 1;
    }

    if (idle_measure(d, mem, 1, idle_sec, settle_ms, &r->idle, &r->idle_cpu_pct,
                     &r->idle_settle_cpu_ms, &err) < 0 ||
        idle_measure(d, mem, 3, idle_sec, settle_ms, &r->idle3, &r->idle3_cpu_pct,
                     &r->idle3_settle_cpu_ms, &err) < 0) {
        fprintf(stderr, "idle measurement (%d MiB): %s\n", mem, err.msg);
        return -1;
    }
    return 0;
fail:
    fprintf(stderr, "round failed (%d MiB, %s): %s\n", mem, s.sandbox_id, err.msg);
    if (vm) {
        ops->destroy(d, s.sandbox_id, vm, &err);
        runtime_vm_unref(vm);
    }
    return -1;
}

static void print_mem(size_result *rs, int nsizes, const char *title, size_t off)
{
    const char *rows[3] = {title, "  of which its guest RAM file mapped, MB",
                           "  private to it (USS), MB"};
    for (int row = 0; row < 3; row++) {
        printf("\n%-52s", rows[row]);
        for (int j = 0; j < nsizes; j++) {
            const mem_kb *m = (const mem_kb *)((const char *)&rs[j] + off);
            long long v = row == 0 ? m->pss : row == 1 ? m->ram_pss : m->uss;
            printf(" | %17.1f %7s", (double)v / 1024.0, "");
        }
    }
}

static void print_table(size_result *rs, int nsizes)
{
    printf("\n%-52s", "metric (median / p90)");
    for (int j = 0; j < nsizes; j++) printf(" | %8d MiB: med     p90", rs[j].memory_mb);
    printf("\n");
    for (int m = 0; m < M_COUNT; m++) {
        printf("%-52s", metric_names[m]);
        for (int j = 0; j < nsizes; j++)
            printf(" | %17.1f %7.1f", percentile(rs[j].v[m], rs[j].n, 0.5),
                   percentile(rs[j].v[m], rs[j].n, 0.9));
        printf("\n");
    }
    printf("%-52s", "template build (first create on the host), ms");
    for (int j = 0; j < nsizes; j++) printf(" | %17.0f %7s", rs[j].template_build_ms, "");
    print_mem(rs, nsizes, "idle sandbox: PSS of its QEMU, MB", offsetof(size_result, idle));
    printf("\n%-52s", "idle sandbox: CPU, % of one core");
    for (int j = 0; j < nsizes; j++) printf(" | %17.2f %7s", rs[j].idle_cpu_pct, "");
    printf("\n%-52s", "  CPU before the window (incl. idle trim), ms");
    for (int j = 0; j < nsizes; j++) printf(" | %17.0f %7s", rs[j].idle_settle_cpu_ms, "");
    print_mem(rs, nsizes, "3 idle sandboxes: PSS per sandbox, MB", offsetof(size_result, idle3));
    printf("\n%-52s", "3 idle sandboxes: CPU per sandbox, % of one core");
    for (int j = 0; j < nsizes; j++) printf(" | %17.2f %7s", rs[j].idle3_cpu_pct, "");
    printf("\n%-52s", "  CPU before the window (incl. idle trim), ms");
    for (int j = 0; j < nsizes; j++) printf(" | %17.0f %7s", rs[j].idle3_settle_cpu_ms, "");
    printf("\n%-52s", "rounds");
    for (int j = 0; j < nsizes; j++) printf(" | %17d %7s", rs[j].n, "");
    printf("\n");
}

int main(int argc, char **argv)
{
    int rounds = 10, idle_sec = 10, idle_trim_ms = 0;
    const char *vm_user = NULL;
    int sizes[MAX_SIZES] = {128, 1024};
    int nsizes = 2;
    char image_dir[PATH_MAX] = "", state_dir[PATH_MAX] = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--idle-sec") && i + 1 < argc) idle_sec = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--idle-trim-ms") && i + 1 < argc) idle_trim_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--vm-user") && i + 1 < argc) vm_user = argv[++i];
        else if (!strcmp(argv[i], "--image-dir") && i + 1 < argc)
            snprintf(image_dir, sizeof image_dir, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--state-dir") && i + 1 < argc)
            snprintf(state_dir, sizeof state_dir, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--template") && i + 1 < argc)
            snprintf(g_template, sizeof g_template, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--disk-mb") && i + 1 < argc) g_disk_mb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--write-mb") && i + 1 < argc) g_write_mb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            nsizes = 0;
            for (char *tok = strtok(argv[++i], ","); tok && nsizes < MAX_SIZES;
                 tok = strtok(NULL, ","))
                sizes[nsizes++] = atoi(tok);
        } else {
            fprintf(
                stderr,
                "usage: %s [--rounds N] [--sizes 128,1024] [--idle-sec S] [--image-dir DIR] [--state-dir DIR] "
                "[--idle-trim-ms N] [--template NAME] [--disk-mb N] [--write-mb N]\n",
                argv[0]);
            return 2;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS || idle_sec < 1 || nsizes < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    if (!image_dir[0]) {
        char exe[PATH_MAX];
        ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (l <= 0) return 1;
        exe[l] = '\0';
        for (int k = 0; k < 2; k++) {
            char *s = strrchr(exe, '/');
            if (s) *s = '\0';
        }
        snprintf(image_dir, sizeof image_dir, "%.4000s/image", exe);
    }
    bool own_state = !state_dir[0];
    if (own_state) {
        snprintf(state_dir, sizeof state_dir, "/tmp/torpor-bench-XXXXXX");
        if (!mkdtemp(state_dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    /* The idle window starts 3 s after the driver's idle trim (default 5 s
     * after the last call), so it measures the steady state; the CPU spent
     * before it (the trim's one-off refaults included) is printed apart. */
    int trim_ms = idle_trim_ms == 0 ? 5000 : idle_trim_ms;
    int settle_ms = trim_ms > 0 ? trim_ms + 3000 : 2000;
    printf("idle: window of %d s after %d ms of settling (idle trim %s)\n", idle_sec, settle_ms,
           trim_ms > 0 ? "on" : "off");
    runtime_qemu_config cfg = {.state_dir = state_dir,
                               .image_dir = image_dir,
                               .accel = QEMU_ACCEL_AUTO,
                               .idle_trim_ms = idle_trim_ms,
                               .vm_user = vm_user};
    const char *env = getenv("TORPOR_ACCEL");
    if (env && runtime_qemu_parse_accel(env, &cfg.accel) < 0) {
        fprintf(stderr, "TORPOR_ACCEL must be auto|kvm|tcg\n");
        return 2;
    }
    runtime_driver *d;
    terr err = {""};
    if (runtime_qemu_open(&cfg, &d, &err) < 0) {
        fprintf(stderr, "runtime_qemu_open: %s\n", err.msg);
        return 1;
    }
    size_result *rs = calloc((size_t)nsizes, sizeof *rs);
    int rc = 0;
    for (int j = 0; j < nsizes && rs; j++) {
        if (run_size(d, state_dir, sizes[j], rounds, idle_sec, settle_ms, &rs[j]) < 0) rc = 1;
    }
    if (rs) print_table(rs, nsizes);
    free(rs);
    d->ops->close(d);
    if (own_state) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", state_dir);
        if (system(cmd) != 0) rc = 1;
    }
    return rc;
}
