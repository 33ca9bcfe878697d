/* qemu_internal: state shared by the QEMU driver's files (not a public API).
 *
 * Layout under <state_dir>:
 *   sandboxes/<id>/   one sandbox: see qemu_inst.h for the files; "meta"
 *                     present = committed paused snapshot; "running" =
 *                     description of the running VM (for recover()).
 *   templates/<key>/  one template snapshot (ram, state, meta); <key> names
 *                     everything the snapshot depends on. Built in
 *                     <key>.building/ and renamed into place when complete.
 *
 * Locking: qemu_vm.mu guards a VM's state, channel pointer and process
 * bookkeeping; lifecycle calls for one VM are serialised by the agent
 * (runtime.h) and mark the VM busy so the watcher leaves reaping to them.
 * qemu_drv.tpl_mu guards the set of templates being built. */
#ifndef TORPOR_QEMU_INTERNAL_H
#define TORPOR_QEMU_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "guest_channel.h"
#include "qemu.h"
#include "qemu_disk.h"
#include "qemu_inst.h"
#include "qemu_meta.h"
#include "qemu_stats.h"

#define QEMU_TEMPLATE_KEY_MAX 160

typedef struct qemu_watch qemu_watch;

typedef struct qemu_tpl_build {
    char key[QEMU_TEMPLATE_KEY_MAX];
    struct qemu_tpl_build *next;
} qemu_tpl_build;

typedef struct qemu_drv {
    runtime_driver base;
    char *state_dir;
    char *image_dir;
    char *qemu_binary; /* absolute */
    const char *accel; /* "tcg" | "kvm" */
    int sb_dirfd;      /* <state_dir>/sandboxes */
    int tpl_dirfd;     /* <state_dir>/templates */
    pthread_mutex_t tpl_mu;
    pthread_cond_t tpl_cv;
    qemu_tpl_build *building;
    qemu_watch *watch;
    int idle_trim_ms;          /* > 0: trim a VM's QEMU after this long without calls */
    int tpl_cache_max;         /* > 0: committed templates kept (LRU); 0 = unlimited */
    qemu_run_as vm_user;       /* valid when run_as != NULL */
    const qemu_run_as *run_as; /* &vm_user, or NULL: QEMU runs as the agent's user */
} qemu_drv;

typedef enum { QVM_RUNNING, QVM_PAUSED, QVM_DESTROYED, QVM_DEAD } qvm_state;

typedef struct qemu_vm {
    runtime_vm base; /* base.priv points back here */
    pthread_mutex_t mu;
    /* Serialises lazy guest reconnects (qemu_guest_ops.c): a re-attached VM
     * whose guest did not answer during recover() gets its channel on the
     * first guest call. Never held together with mu across the connect. */
    pthread_mutex_t conn_mu;
    /* Back-off of those reconnects (under conn_mu): when the last failed
     * attempt ended (0: none or it succeeded since) and why. Within
     * QEMU_RECONNECT_BACKOFF_MS of it calls fail at once, so a guest that
     * never answers costs one waiting caller per period, not one each. */
    long long conn_failed_ms;
    terr conn_failed_why;
    qvm_state state;
    bool busy; /* a lifecycle call owns the process right now */
    int dirfd; /* sandboxes/<id>, owned */
    qemu_inst inst;
    guest_channel *ch;  /* NULL while pausing, when not running, or while a
                          * re-attached VM's guest has not answered yet */
    qemu_meta desc;     /* spec + shape + template key */
    qemu_timing timing; /* of the last lifecycle call */
    /* Idle trim bookkeeping (under mu): host calls in flight, when the last
     * one ended (or the VM came up), and whether it was trimmed since. */
    int calls;
    long long last_call_ms;
    bool trimmed;
} qemu_vm;

static inline qemu_drv *qemu_drv_of(runtime_driver *d) { return (qemu_drv *)d->priv; }

static inline qemu_vm *qemu_vm_of(runtime_vm *vm) { return (qemu_vm *)vm->priv; }

/* Default idle time before a VM's QEMU is trimmed (qemu_trim.c). */
#define QEMU_IDLE_TRIM_MS_DEFAULT 5000

/* Timeouts (ms). */
#define QEMU_GUEST_CONNECT_MS 20000 /* restore: guest answers quickly */
#define QEMU_GUEST_BOOT_MS 120000   /* cold boot of a template under TCG */
#define QEMU_GUEST_CALL_MS 10000    /* PING / SYNC / small calls */
#define QEMU_QUIT_GRACE_MS 5000
/* recover(): generous, a loaded 2-core TCG host may answer slowly, and
 * giving up must never cost a live VM. */
#define QEMU_RECOVER_QMP_MS 10000
#define QEMU_RECOVER_GUEST_MS 30000
/* Lazy guest reconnect: after a failed attempt, calls fail fast this long. */
#define QEMU_RECONNECT_BACKOFF_MS 5000

/* ---- qemu_fs.c ---- */
bool qemu_valid_name(const char *s, size_t max);
int qemu_fsync_dir(int dirfd, terr *err);
/* Removes <parent>/<name> recursively; 0 if it did not exist. */
int qemu_rmtree(int parentfd, const char *name, terr *err);
/* Copies src to <dstdir>/<dst_name> (new file) keeping holes, fast. */
int qemu_copy_sparse(int srcfd, int dstdirfd, const char *dst_name, terr *err);
/* With a VM user: gives it fd (a directory: 0700, a file: 0600). No-op
 * without. */
int qemu_own_for_vm(const qemu_drv *d, int fd, bool dir, terr *err);
/* With a VM user: gives it a paused sandbox's directory, RAM file and disk
 * overlay before QEMU starts on them (a sandbox received by a move, or
 * paused while QEMU ran as another user). No-op without. */
int qemu_own_sandbox_for_vm(const qemu_drv *d, int sbfd, terr *err);
/* Turns every all-zero 4 KiB page of the file into a hole (same content,
 * fewer blocks): done once per template so each clone copies less. */
int qemu_punch_zeros(int fd, terr *err);
/* Starts writeback of <dirfd>/<name> on a detached thread (best effort):
 * a fresh RAM copy is ~60-80 MB of dirty page cache, and writing it back
 * early leaves little for the fsync of the first pause. */
void qemu_writeback_async(int dirfd, const char *name);
int64_t qemu_file_disk_bytes(int dirfd, const char *name);
int64_t qemu_file_size(int dirfd, const char *name);
int64_t qemu_unix_ms(void);

/* ---- qemu_template.c ---- */
/* Finds or builds the template snapshot for (name, vcpus, memory_mb, and
 * for templates with a root disk qemu_disk_template_mb(disk_mb));
 * concurrent callers for one key wait for a single build. On success
 * *tplfd is an open fd of templates/<key>/ and *meta its metadata. */
int qemu_template_get(qemu_drv *d, const char *name, int vcpus, int memory_mb, int disk_mb,
                      int *tplfd, qemu_meta *meta, terr *err);
#define QEMU_TEMPLATE_CACHE_DEFAULT 8
/* The template fd qemu_template_get hands out holds a shared flock on the
 * directory until closed: eviction (LRU beyond tpl_cache_max, after each
 * get) takes an exclusive one without waiting, so a template a create still
 * copies from is never removed. */
/* recover(): removes half-built template dirs. */
void qemu_template_cleanup(qemu_drv *d);

/* ---- qemu_disk.c (see qemu_disk.h) ---- */
/* Fills s->rootfs / s->rootfs_digest from <image_dir>/<name>/ (both "" when
 * the template has no root disk). */
int qemu_disk_image(const qemu_drv *d, const char *name, qemu_shape *s, terr *err);
/* Validates spec->disk_mb (0 = default, else QEMU_DISK_MB_MIN..MAX). */
int qemu_disk_check_mb(int disk_mb, terr *err);
/* Creates <dirfd>/root.qcow2 on top of the base image (qemu-img). */
int qemu_disk_overlay_create(const qemu_drv *d, int dirfd, const char *base, terr *err);
/* Copies the template's overlay into a new sandbox dir (no-op without a
 * root disk). */
int qemu_disk_clone(const qemu_drv *d, int tplfd, int sbfd, const qemu_shape *s, terr *err);
/* fsyncs <dirfd>/root.qcow2 if the shape has a root disk. */
int qemu_disk_sync(int dirfd, const qemu_shape *s, terr *err);
/* Grows a running VM's root disk from from_mb (0: the base image's size) to
 * to_mb: QMP block_resize, then resize2fs in the guest (online, over ch).
 * No-op without a root disk or when to_mb <= from_mb. */
int qemu_disk_grow(qmp *q, guest_channel *ch, const qemu_shape *s, int from_mb, int to_mb,
                   terr *err);
/* The disk size a template snapshot is pre-grown to for a sandbox that
 * wants disk_mb (0 = default): QEMU_DISK_MB_DEFAULT when disk_mb is at least
 * that (creates at the default size then grow nothing), else 0 (the base
 * image's size; the create grows). 0 without a root disk. */
int qemu_disk_template_mb(const qemu_shape *s, int disk_mb);

/* ---- qemu_trim.c ---- */
/* Unmaps the file-backed pages (guest RAM file, QEMU binary, libraries) of
 * QEMU process pid/pidfd: process_madvise(MADV_PAGEOUT). Guest memory and
 * behaviour are unchanged; pages come back on the next access. *advised =
 * bytes covered. On failure *unsupported tells whether no later call can
 * succeed either (kernel too old, no CAP_SYS_NICE). */
int qemu_trim_vm(pid_t pid, int pidfd, long long *advised, bool *unsupported, terr *err);

/* ---- qemu_watch.c ---- */
/* idle_trim_ms > 0: the watch thread also trims (qemu_trim_vm) every
 * running VM that had no host call in flight for that long, once per idle
 * period (a call re-arms it). */
int qemu_watch_start(qemu_watch **out, int idle_trim_ms, terr *err);
/* Watches vm's process (takes a reference until the process exited): when
 * it exits outside a lifecycle call, the VM becomes dead, its guest channel
 * is closed (in-flight calls fail) and the child is reaped. */
int qemu_watch_add(qemu_watch *w, qemu_vm *vm, terr *err);
void qemu_watch_stop(qemu_watch *w);

/* ---- qemu_driver.c ---- */
/* Allocates a handle for a VM in sandboxes/<id>/ (takes dirfd). */
qemu_vm *qemu_vm_new(qemu_drv *d, const char *sandbox_id, int dirfd, terr *err);
/* Connects the guest channel of a freshly restored VM, then SYNC. */
int qemu_vm_connect_guest(qemu_vm *v, int timeout_ms, bool sync, terr *err);
/* Connects QMP if the VM has no connection (a VM re-attached while its QMP
 * did not answer); for lifecycle calls only. */
int qemu_vm_ensure_qmp(qemu_vm *v, terr *err);
/* Kills a QEMU named by the sandbox's pid file (no handle: e.g. a VM the
 * caller never re-attached). */
void qemu_kill_by_pidfile(int sbfd);

/* ---- qemu_recover.c ---- */
/* runtime_ops.recover (runtime.h). */
int qemu_recover(runtime_driver *rd, runtime_recover_fn cb, void *ctx, terr *err);
/* runtime_ops.net_fd: QEMU's fd QEMU_PASS_FD (the TAP of `-netdev
 * tap,fd=`), taken with pidfd_getfd (Linux 5.6, root). */
int qemu_net_fd(runtime_driver *rd, runtime_vm *vm, terr *err);

/* ---- qemu_pause.c / qemu_guest_ops.c ---- */
/* Records a failed guest connect for the reconnect back-off (takes conn_mu). */
void qemu_vm_note_connect_failed(qemu_vm *v, const char *why);
int qemu_op_pause(runtime_driver *d, runtime_vm *vm, const runtime_spec *spec, terr *err);
int qemu_op_exec(runtime_driver *d, runtime_vm *vm, const runtime_exec_request *req,
                 runtime_exec_result *res, terr *err);
int qemu_op_guest_call(runtime_driver *d, runtime_vm *vm, const char *what, uint8_t req_type,
                       const void *payload, size_t len, uint8_t resp_type, int timeout_ms,
                       uint8_t **resp, size_t *resp_len, terr *err);
int qemu_op_read_file(runtime_driver *d, runtime_vm *vm, const char *path, uint8_t **data,
                      size_t *len, terr *err);
int qemu_op_write_file(runtime_driver *d, runtime_vm *vm, const char *path, const uint8_t *data,
                       size_t len, unsigned mode, terr *err);

#endif
