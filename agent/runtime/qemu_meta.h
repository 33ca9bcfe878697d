/* qemu_meta: the metadata file of a snapshot (sandbox pause or template).
 *
 * A snapshot directory holds the guest RAM file ("ram"), the device state
 * ("state", written by QEMU's migration) and "meta". The snapshot counts as
 * committed only when "meta" exists: it is written last, atomically
 * (meta.tmp + fsync + rename; the caller fsyncs the directory), after the RAM
 * and state files are durable. meta records everything needed to start the
 * same machine again (QEMU refuses a migration stream from another machine
 * shape) and what the snapshot cost.
 *
 * Format: "key=value" lines, one per field, values without newlines; read
 * back strictly (unknown keys are ignored, a missing required key or a bad
 * number is an error: a damaged meta is never taken for a good one). */
#ifndef TORPOR_QEMU_META_H
#define TORPOR_QEMU_META_H

#include <limits.h>
#include <stdint.h>

#include "runtime.h"
#include "terr.h"

#define QEMU_META_FILE "meta"
#define QEMU_RUNNING_FILE "running"
#define QEMU_META_VERSION 1

typedef struct qemu_shape {
    char accel[8]; /* "tcg" | "kvm" */
    int vcpus;
    int memory_mb;
    char kernel[PATH_MAX]; /* absolute paths */
    char initrd[PATH_MAX];
    char cmdline[1024];
    /* Templates with a root disk (qemu_disk.c): the base image (absolute,
     * symlinks resolved: a sandbox's overlay only works on its exact base)
     * and its content digest (sha256 hex). Both "" without a root disk. */
    char rootfs[PATH_MAX];
    char rootfs_digest[72];
    int net; /* 1: the machine has the virtio-net NIC (docs/network.md) */
} qemu_shape;

typedef struct qemu_meta {
    runtime_spec spec; /* sandbox_id empty for a template */
    qemu_shape shape;
    char template_key[160]; /* the template snapshot this came from */
    int64_t state_bytes;    /* size of "state"; checked on resume */
    int64_t ram_disk_bytes; /* blocks allocated to "ram" */
    int64_t paused_at_unix_ms;
    int64_t pause_ms;
} qemu_meta;

/* Writes <dirfd>/<name> atomically (<name>.tmp + fsync + rename). The
 * caller fsyncs the directory to make the rename durable. name is
 * QEMU_META_FILE for a snapshot, QEMU_RUNNING_FILE for the description of a
 * running VM (what recover() reports when it re-attaches one). */
int qemu_meta_write(int dirfd, const char *name, const qemu_meta *m, terr *err);

/* Reads and validates <dirfd>/<name>; fails if absent or malformed. */
int qemu_meta_read(int dirfd, const char *name, qemu_meta *m, terr *err);

#endif
