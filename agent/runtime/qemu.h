/* qemu: the QEMU runtime driver (the agent's default and only shipped driver).
 *
 * One qemu-system-x86_64 process per sandbox, controlled over QMP on a unix
 * socket in <state_dir>/sandboxes/<id>/, talking to torpor-guest over
 * virtio-serial. Guest RAM lives in a file so a pause writes only device
 * state; new sandboxes restore a per-template snapshot instead of booting.
 * See docs/runtime.md for the design and the measured figures.
 *
 * Templates: <image_dir>/<template>/ holds vmlinux, initramfs.cpio.gz and
 * cmdline (kernel arguments, one line). An unknown template is an error whose
 * message starts with "unknown template". */
#ifndef TORPOR_RUNTIME_QEMU_H
#define TORPOR_RUNTIME_QEMU_H

#include "runtime.h"

typedef enum { QEMU_ACCEL_AUTO = 0, QEMU_ACCEL_KVM, QEMU_ACCEL_TCG } qemu_accel;

typedef struct runtime_qemu_config {
    const char *state_dir;   /* e.g. /var/lib/torpor */
    const char *image_dir;   /* holds one folder per template */
    qemu_accel accel;        /* auto: KVM only if it really runs a guest */
    const char *qemu_binary; /* NULL = "qemu-system-x86_64" from PATH */
    /* A running VM with no exec/read/write call for this long has the
     * file-backed pages of its QEMU (guest RAM file, binary, libraries)
     * unmapped; they come back on use (docs/runtime.md, "Idle trim").
     * 0 = default (5000 ms); < 0 = never. */
    int idle_trim_ms;
    /* Template snapshots kept (distinct template x shape), least recently
     * used evicted first; one in use by a create in progress never is.
     * 0 = default (8); < 0 = unlimited. */
    int template_cache_max;
    /* Run every QEMU as this (unprivileged) user and group; each sandbox's
     * directory and RAM file are owned by it (0700 / 0600), templates go
     * back to root once built. NULL = QEMU runs as the agent's user. */
    const char *vm_user;
} runtime_qemu_config;

int runtime_qemu_open(const runtime_qemu_config *cfg, runtime_driver **out, terr *err);

/* "auto" | "kvm" | "tcg" -> enum; -1 on anything else. */
int runtime_qemu_parse_accel(const char *s, qemu_accel *out);

#endif
