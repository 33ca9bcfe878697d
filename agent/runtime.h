/* runtime: the VM driver interface of torpor-agent.
 *
 * A driver turns a sandbox spec into a running VM and back: create, pause
 * (snapshot to disk, VM process gone), resume (from that snapshot), destroy,
 * and talk to the guest (exec, read/write file). The shipped driver is QEMU
 * (agent/runtime/qemu.h); a test driver lives under test/ only.
 *
 * Disk ownership: a driver owns <state_dir>/sandboxes/<sandbox_id>/ (the VM's
 * sockets, RAM file, snapshot, metadata) and <state_dir>/templates/. Nothing
 * else writes there. Destroy removes the whole sandbox directory.
 *
 * Concurrency: calls for different sandboxes may run concurrently. The agent
 * serialises lifecycle calls (create, pause, resume, destroy) for one sandbox
 * under that sandbox's lifecycle lock. exec/read_file/write_file may run
 * concurrently with each other and with a pause or destroy of the same VM: a
 * pause/destroy makes them fail promptly with an error, never hang or crash.
 *
 * Handles: a runtime_vm is reference-counted. create/resume return a handle
 * holding one reference, owned by the caller. Whoever uses a handle outside
 * the lifecycle lock (an exec) takes its own reference first. After a
 * successful pause or destroy the handle stays valid memory (until the last
 * unref) but every operation on it fails.
 *
 * Pause atomicity: pause returns 0 only when the snapshot is durable on disk
 * (fsync + atomic rename + metadata) and the VM process is gone. If it fails
 * before the VM was torn down, the VM is running again (`cont`) and usable,
 * and no half-written snapshot is ever taken for a good one by resume or
 * recover. If it fails because the VM is already dead, it returns -1 and
 * vm_alive() reports false; the caller then destroys.
 *
 * Resume atomicity: resume returns -1 when it failed but the snapshot is
 * still committed (the sandbox stays paused and may be retried), and
 * RUNTIME_SNAPSHOT_LOST when it failed after the snapshot was consumed (the
 * guest ran): nothing resumable remains and the caller destroys. */
#ifndef TORPOR_RUNTIME_H
#define TORPOR_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "terr.h"

#define RUNTIME_ID_MAX 64
#define RUNTIME_TEMPLATE_MAX 64

/* resume's return value when the failure consumed the snapshot. */
#define RUNTIME_SNAPSHOT_LOST (-2)

typedef struct runtime_driver runtime_driver;
typedef struct runtime_vm runtime_vm;

/* The shape of a sandbox. Also what a paused sandbox's metadata records. */
typedef struct runtime_spec {
    char sandbox_id[RUNTIME_ID_MAX];
    char template_name[RUNTIME_TEMPLATE_MAX];
    int vcpus;
    int memory_mb;
    int timeout_sec; /* recorded in the snapshot metadata */
    int64_t created_at_unix;
    int disk_mb; /* root disk size (templates with a root disk);
                              * 0 = default (4096), else 512..65536 */
    /* Not recorded: for create/resume only, a TAP device (> 2) the VM's NIC
     * uses; 0 = none (the NIC, if the machine has one, stays unconnected). */
    int net_fd;
} runtime_spec;

typedef struct runtime_exec_request {
    const char *cmd; /* no args: run via /bin/sh -c cmd */
    const char *const *args;
    size_t n_args;
    const char *const *env; /* "KEY=VALUE" */
    size_t n_env;
    const char *cwd; /* NULL or "" = / */
    int timeout_sec; /* > 0 */
    const uint8_t *stdin_data;
    size_t stdin_len;
} runtime_exec_request;

typedef struct runtime_exec_result {
    uint8_t *out; /* malloc'd, binary-safe */
    size_t out_len;
    uint8_t *err;
    size_t err_len;
    int exit_code; /* -1 when killed (timeout or signal) */
    bool timed_out;
    bool out_truncated; /* output over the guest's cap (see guest/README) */
    bool err_truncated;
} runtime_exec_result;

void runtime_exec_result_free(runtime_exec_result *r);

/* The deadline of the request the calling thread serves (mono_ms instant;
 * 0 = none), set by the RPC handlers around exec/read_file/write_file so a
 * driver's guest calls end before the caller stops waiting. Thread-local. */
void runtime_call_deadline_set(long long mono_ms);
long long runtime_call_deadline(void);

/* Called by recover() once per sandbox found on disk from an earlier run.
 * vm == NULL: the sandbox is paused (committed snapshot). vm != NULL: a VM
 * still running that the driver re-attached; the callee takes that reference.
 * A driver that re-attaches slowly may first announce a live VM with
 * vm == RUNTIME_VM_RECOVERING and report it again later (vm, or
 * RUNTIME_VM_GONE when it could not be re-attached); once every sandbox is
 * announced (paused ones reported) it calls cb(ctx, NULL,
 * RUNTIME_VM_RECOVERING). Calls may come from several threads, one at a
 * time. recover() returns when every sandbox has its final report. */
typedef void (*runtime_recover_fn)(void *ctx, const runtime_spec *spec, runtime_vm *vm);
#define RUNTIME_VM_RECOVERING ((runtime_vm *)1)
#define RUNTIME_VM_GONE ((runtime_vm *)2)

typedef struct runtime_ops {
    const char *name;
    int (*create)(runtime_driver *d, const runtime_spec *spec, runtime_vm **out, terr *err);
    int (*pause)(runtime_driver *d, runtime_vm *vm, const runtime_spec *spec, terr *err);
    int (*resume)(runtime_driver *d, const runtime_spec *spec, runtime_vm **out, terr *err);
    /* Kills the VM if vm != NULL and running, removes every file of the
     * sandbox. Succeeds when there is nothing left to remove. */
    int (*destroy)(runtime_driver *d, const char *sandbox_id, runtime_vm *vm, terr *err);
    int (*exec)(runtime_driver *d, runtime_vm *vm, const runtime_exec_request *req,
                runtime_exec_result *res, terr *err);
    /* *data is malloc'd. */
    int (*read_file)(runtime_driver *d, runtime_vm *vm, const char *path, uint8_t **data,
                     size_t *len, terr *err);
    int (*write_file)(runtime_driver *d, runtime_vm *vm, const char *path, const uint8_t *data,
                      size_t len, unsigned mode, terr *err);
    /* One request/answer with the guest agent (common/guest_protocol.h):
     * sends payload as a req_type frame, waits up to timeout_ms for the
     * resp_type answer and returns its payload in *resp (malloc'd, NULL
     * when empty). For the chunked file requests; NULL in drivers without
     * a guest protocol (the call then fails). */
    int (*guest_call)(runtime_driver *d, runtime_vm *vm, const char *what, uint8_t req_type,
                      const void *payload, size_t len, uint8_t resp_type, int timeout_ms,
                      uint8_t **resp, size_t *resp_len, terr *err);
    /* False once the VM process has exited (killed from outside, crashed). */
    bool (*vm_alive)(runtime_driver *d, runtime_vm *vm);
    /* Reports sandboxes left on disk by an earlier agent run; removes debris
     * (half-written pauses, dead VMs without a snapshot). */
    int (*recover)(runtime_driver *d, runtime_recover_fn cb, void *ctx, terr *err);
    /* Optional: a duplicate (CLOEXEC, the caller's to close) of the network
     * backend fd the running VM holds (its TAP), so the sandbox's network
     * namespace can be found from the VM after an agent restart lost its
     * mount; -1 with err if it has none or it cannot be taken. */
    int (*net_fd)(runtime_driver *d, runtime_vm *vm, terr *err);
    /* Frees a handle (its driver state and the struct, which the driver
     * allocated); called by the last runtime_vm_unref. */
    void (*vm_free)(runtime_vm *vm);
    void (*close)(runtime_driver *d);
} runtime_ops;

struct runtime_driver {
    const runtime_ops *ops;
    void *priv;
};

struct runtime_vm {
    runtime_driver *driver;
    char sandbox_id[RUNTIME_ID_MAX];
    atomic_int refs;
    void *priv;
};

/* Used by drivers to initialise a new handle with one reference. */
void runtime_vm_init(runtime_vm *vm, runtime_driver *d, const char *sandbox_id, void *priv);
void runtime_vm_ref(runtime_vm *vm);
void runtime_vm_unref(runtime_vm *vm); /* NULL-safe */

#endif
