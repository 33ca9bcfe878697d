/* qemu_inst: command line, start/restore, save, quit of one QEMU instance
 * (see qemu_inst.h). */
#include "qemu_inst.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mono_time.h"
#include "qemu_disk.h"
#include "qemu_json.h"

#define QMP_CONNECT_MS 15000
#define QMP_CALL_MS 10000
#define MIGRATE_MS 60000
/* 100 GiB/s: the default migration bandwidth (32 MiB/s) throttles even the
 * small device-state stream. */
#define MAX_BANDWIDTH "107374182400"

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

void qemu_inst_log_tail(int dirfd, terr *err)
{
    if (!err) return;
    int fd = openat(dirfd, QEMU_LOG_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[240];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > (off_t)sizeof buf - 1 ? end - (off_t)sizeof buf + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof buf - 1, from);
    close(fd);
    if (n <= 0) return;
    buf[n] = '\0';
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    size_t l = strlen(err->msg);
    snprintf(err->msg + l, sizeof err->msg - l, " (qemu.log: ...%s)", buf);
}

/* argv storage: a fixed array of pointers into one arena. */
typedef struct argv_builder {
    char *argv[64]; /* root disk + NIC + -sandbox + incoming: ~50 */
    int argc;
    char arena[8192];
    size_t used;
    bool overflow;
} argv_builder;

static void arg(argv_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(argv_builder *b, const char *fmt, ...)
{
    if (b->argc >= (int)(sizeof b->argv / sizeof b->argv[0]) - 1) {
        b->overflow = true;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->arena + b->used, sizeof b->arena - b->used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof b->arena - b->used) {
        b->overflow = true;
        return;
    }
    b->argv[b->argc++] = b->arena + b->used;
    b->argv[b->argc] = NULL;
    b->used += (size_t)n + 1;
}

static int build_argv(argv_builder *b, const char *binary, const char *name, const qemu_shape *s,
                      bool incoming, bool tap, terr *err)
{
    memset(b, 0, sizeof *b);
    /* -name must not contain ',' (QEMU option syntax); ids are validated
     * upstream, this is the last line of defence. */
    if (strchr(name, ',')) return terr_set(err, "invalid VM name %s", name);
    arg(b, "%s", binary);
    arg(b, "-name");
    arg(b, "%s", name);
    if (!strcmp(s->accel, "kvm")) {
        arg(b, "-accel");
        arg(b, "kvm");
        arg(b, "-cpu");
        arg(b, "host");
    } else {
        arg(b, "-accel");
        arg(b, "tcg");
    }
    arg(b, "-machine");
    arg(b, "pc,memory-backend=mem");
    arg(b, "-m");
    arg(b, "%d", s->memory_mb);
    arg(b, "-smp");
    arg(b, "%d", s->vcpus);
    arg(b, "-nodefaults");
    arg(b, "-no-user-config");
    arg(b, "-display");
    arg(b, "none");
    arg(b, "-no-reboot");
    /* seccomp confinement (docs/security.md): no exec/fork of helpers, no
     * setuid/setgid/capabilities, no obsolete syscalls, no scheduler or
     * affinity changes. */
    arg(b, "-sandbox");
    arg(b, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
    arg(b, "-object");
    arg(b, "memory-backend-file,id=mem,size=%dM,mem-path=" QEMU_RAM_FILE ",share=on", s->memory_mb);
    arg(b, "-kernel");
    arg(b, "%s", s->kernel);
    arg(b, "-initrd");
    arg(b, "%s", s->initrd);
    arg(b, "-append");
    arg(b, "%s", s->cmdline);
    if (s->rootfs[0]) { /* root disk: the overlay in the instance dir (qemu_disk.h) */
        arg(b, "-blockdev");
        arg(b, "%s", QEMU_DISK_BLOCKDEV);
        arg(b, "-device");
        arg(b, "%s", QEMU_DISK_DEVICE);
    }
    arg(b, "-qmp");
    arg(b, "unix:" QEMU_QMP_SOCK ",server=on,wait=off");
    arg(b, "-chardev");
    /* The guest's serial console goes to a 64 KiB ring in QEMU, not to a
     * file: the guest is untrusted and must not be able to fill the host's
     * disk by printing. Read it with qemu_inst_console_tail(). */
    arg(b, "ringbuf,id=con,size=65536");
    arg(b, "-serial");
    arg(b, "chardev:con");
    arg(b, "-device");
    arg(b, "virtio-serial-pci,id=vs");
    arg(b, "-chardev");
    arg(b, "socket,id=tg,path=" QEMU_GUEST_SOCK ",server=on,wait=off");
    arg(b, "-device");
    arg(b, "virtserialport,bus=vs.0,chardev=tg,name=torpor");
    if (s->net) {
        /* The NIC is part of the machine (so of every snapshot); its
         * backend is not: a TAP in the sandbox's network namespace, handed
         * over as an fd, or an unconnected hub port (template builds,
         * sandboxes without network). No option ROM: nothing boots from it. */
        arg(b, "-netdev");
        if (tap) arg(b, "tap,id=n0,fd=%d", QEMU_PASS_FD);
        else arg(b, "hubport,id=n0,hubid=0");
        arg(b, "-device");
        arg(b, "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:02,romfile=");
    }
    if (incoming) {
        arg(b, "-incoming");
        arg(b, "defer");
    }
    if (b->overflow) return terr_set(err, "QEMU command line too long");
    return 0;
}

static int status_of(qemu_inst *in, char *status, size_t n, terr *err)
{
    char *reply;
    if (qmp_call(in->qmp, "query-status", NULL, QMP_CALL_MS, &reply, err) < 0) return -1;
    const char *k[] = {"return", "status"};
    int r = qjson_get_string(reply, k, 2, status, n);
    free(reply);
    if (r < 0) return terr_set(err, "query-status: no status in the answer");
    return 0;
}

int qemu_inst_start(qemu_inst *in, const char *qemu_binary, const qemu_shape *shape,
                    int incoming_fd, int tap_fd, terr *err)
{
    in->qmp = NULL;
    in->proc.pid = 0;
    in->proc.pidfd = -1;
    in->proc.exited = true;
    /* Stale sockets from an earlier instance would be connected to by
     * mistake before QEMU replaces them. */
    unlinkat(in->dirfd, QEMU_QMP_SOCK, 0);
    unlinkat(in->dirfd, QEMU_GUEST_SOCK, 0);
    argv_builder *b = malloc(sizeof *b);
    if (!b) return terr_set(err, "out of memory");
    bool tap = shape->net && tap_fd >= 0;
    if (build_argv(b, qemu_binary, in->id, shape, incoming_fd >= 0, tap, err) < 0) {
        free(b);
        return -1;
    }
    int r = qemu_proc_spawn(b->argv, in->dirfd, QEMU_LOG_FILE, in->run_as, tap ? tap_fd : -1,
                            &in->proc, err);
    free(b);
    if (r < 0) return -1;
    if (qemu_proc_write_pidfile(in->dirfd, &in->proc, err) < 0) goto fail;
    if (qmp_connect(in->dirfd, QEMU_QMP_SOCK, in->proc.pidfd, QMP_CONNECT_MS, &in->qmp, err) < 0)
        goto fail;
    if (qmp_call(in->qmp, "migrate-set-capabilities",
                 "{\"capabilities\":[{\"capability\":\"x-ignore-shared\",\"state\":true}]}",
                 QMP_CALL_MS, NULL, err) < 0 ||
        /* announce-rounds 0: no gratuitous ARPs after a restore (QEMU's own,
         * and virtio-net asking the guest for its own, 5 rounds from the
         * first 50 ms on). They tell switches where a migrated VM went; a
         * sandbox's TAP is its own link with a fixed MAC, and the guest's
         * announce work competed with the resume (~8-15 ms under TCG). */
        qmp_call(in->qmp, "migrate-set-parameters",
                 "{\"max-bandwidth\":" MAX_BANDWIDTH ",\"announce-rounds\":0}", QMP_CALL_MS, NULL,
                 err) < 0)
        goto fail;
    if (incoming_fd >= 0) {
        if (qmp_getfd(in->qmp, "snap", incoming_fd, QMP_CALL_MS, err) < 0 ||
            qmp_call(in->qmp, "migrate-incoming", "{\"uri\":\"fd:snap\"}", QMP_CALL_MS, NULL, err) <
                0)
            goto fail;
        long long deadline = mono_ms() + MIGRATE_MS;
        char st[64];
        for (;;) {
            if (status_of(in, st, sizeof st, err) < 0) goto fail;
            if (strcmp(st, "inmigrate") != 0) break;
            if (mono_ms() > deadline) {
                terr_set(err, "loading the snapshot did not finish in %d ms", MIGRATE_MS);
                goto fail;
            }
            sleep_us(500);
        }
        if (strcmp(st, "paused") != 0 && strcmp(st, "prelaunch") != 0) {
            terr_set(err, "unexpected VM status %s after loading the snapshot", st);
            goto fail;
        }
    }
    return 0;
fail:
    qemu_inst_kill(in);
    qemu_inst_log_tail(in->dirfd, err);
    return -1;
}

void qemu_inst_console_tail(qemu_inst *in, terr *err)
{
    if (!err || !in->qmp) return;
    char *reply;
    terr e;
    if (qmp_call(in->qmp, "ringbuf-read", "{\"device\":\"con\",\"size\":65536,\"format\":\"utf8\"}",
                 2000, &reply, &e) < 0)
        return;
    size_t cap = 65536 + 1;
    char *text = malloc(cap);
    const char *k[] = {"return"};
    if (text && qjson_get_string(reply, k, 1, text, cap) == 0) {
        size_t n = strlen(text);
        const char *tail = n > 200 ? text + n - 200 : text;
        char clean[201];
        size_t o = 0;
        for (const char *p = tail; *p && o < sizeof clean - 1; p++)
            clean[o++] = (*p == '\n' || *p == '\r' || *p == '"') ? ' ' : *p;
        clean[o] = '\0';
        size_t l = strlen(err->msg);
        snprintf(err->msg + l, sizeof err->msg - l, " (console: ...%s)", clean);
    }
    free(text);
    free(reply);
}

int qemu_inst_cont(qemu_inst *in, terr *err)
{
    return qmp_call(in->qmp, "cont", NULL, QMP_CALL_MS, NULL, err);
}

int qemu_inst_save(qemu_inst *in, int state_fd, int ram_fd, terr *err)
{
    if (qmp_call(in->qmp, "stop", NULL, QMP_CALL_MS, NULL, err) < 0) return -1;
    /* The guest cannot dirty RAM any more: start writing it back now, in
     * parallel with the migration (best effort; the fsync later is what
     * guarantees durability). */
    if (ram_fd >= 0) sync_file_range(ram_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (qmp_getfd(in->qmp, "snap", state_fd, QMP_CALL_MS, err) < 0) return -1;
    if (qmp_call(in->qmp, "migrate", "{\"uri\":\"fd:snap\"}", QMP_CALL_MS, NULL, err) < 0)
        return -1;
    long long deadline = mono_ms() + MIGRATE_MS;
    for (;;) {
        char *reply;
        if (qmp_call(in->qmp, "query-migrate", NULL, QMP_CALL_MS, &reply, err) < 0) return -1;
        char st[64] = "";
        const char *k[] = {"return", "status"};
        qjson_get_string(reply, k, 2, st, sizeof st);
        if (!strcmp(st, "completed")) {
            free(reply);
            return 0;
        }
        if (!strcmp(st, "failed") || !strcmp(st, "cancelled")) {
            char desc[300] = "";
            const char *ke[] = {"return", "error-desc"};
            qjson_get_string(reply, ke, 2, desc, sizeof desc);
            free(reply);
            return terr_set(err, "migration %s%s%s", st, desc[0] ? ": " : "", desc);
        }
        free(reply);
        if (mono_ms() > deadline)
            return terr_set(err, "migration did not finish in %d ms", MIGRATE_MS);
        sleep_us(500);
    }
}

int qemu_inst_quit(qemu_inst *in, int grace_ms, terr *err)
{
    terr ignored;
    /* The answer to quit may be lost when QEMU exits first: only the exit
     * counts. */
    qmp_send(in->qmp, "quit", &ignored);
    bool gone = qemu_proc_wait(&in->proc, grace_ms);
    qmp_close(in->qmp);
    in->qmp = NULL;
    if (!gone) {
        qemu_proc_kill(&in->proc);
        return terr_set(err, "QEMU did not exit within %d ms of quit (killed)", grace_ms);
    }
    bool clean = qemu_proc_exited_cleanly(&in->proc) || !in->proc.child;
    qemu_proc_release(&in->proc);
    if (!clean) return terr_set(err, "QEMU did not exit cleanly (killed or crashed)");
    return 0;
}

void qemu_inst_kill(qemu_inst *in)
{
    qmp_close(in->qmp);
    in->qmp = NULL;
    qemu_proc_kill(&in->proc);
}
