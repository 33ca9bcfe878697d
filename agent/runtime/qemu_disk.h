/* qemu_disk: the root disk of templates that have one (e.g. `debian`).
 *
 * Mechanism: the template image folder holds rootfs.img (raw ext4, read-only,
 * never written) and rootfs.sha256 (its content digest). Every VM that boots
 * from it writes only to its own qcow2 overlay "root.qcow2" in its instance
 * directory (qemu-img create -f qcow2 -b <rootfs.img> -F raw), attached as
 * virtio-blk, node "root". The template snapshot is taken with its own
 * overlay; a new sandbox gets a copy of that small overlay (so the restored
 * RAM and the disk agree) and then grows it to its disk_mb (QMP block_resize
 * + online resize2fs in the guest). Pause: QEMU flushes the block layer when
 * it stops the VM for the migration, and the agent fsyncs the overlay before
 * the snapshot is committed, so RAM snapshot and overlay are from the same
 * moment. Destroy removes the overlay with the sandbox directory.
 *
 * The functions are declared in qemu_internal.h (they take driver and VM
 * state); this header holds what the command line needs. */
#ifndef TORPOR_QEMU_DISK_H
#define TORPOR_QEMU_DISK_H

#define QEMU_DISK_FILE "root.qcow2"
#define QEMU_DISK_IMAGE "rootfs.img"
#define QEMU_DISK_DIGEST "rootfs.sha256"

#include "torpor_limits.h"

#define QEMU_DISK_MB_DEFAULT TORPOR_DISK_MB_DEFAULT
#define QEMU_DISK_MB_MIN TORPOR_DISK_MB_MIN
#define QEMU_DISK_MB_MAX TORPOR_DISK_MB_MAX

/* The overlay as a block node (cwd = instance dir; the backing file comes
 * from the overlay's header). cache.direct=off + aio=threads: the page
 * cache absorbs the guest's writes (the guest flushes what it must; pause
 * fsyncs the file); see docs/runtime.md for the measurements. */
#define QEMU_DISK_BLOCKDEV                                                                     \
    "driver=qcow2,node-name=root,discard=unmap,file.driver=file,file.filename=" QEMU_DISK_FILE \
    ",file.aio=threads,cache.direct=off"
#define QEMU_DISK_DEVICE "virtio-blk-pci,drive=root,id=rootdisk"

#endif
