#!/bin/bash
# build-image.sh OUT_DIR GUEST_BINARY
#
# Builds the "minimal" guest image into OUT_DIR:
#   vmlinux            uncompressed ELF kernel (PVH entry) from the newest
#                      installed Debian linux-image-amd64 (/boot/vmlinuz-*)
#   initramfs.cpio.gz  busybox-static + virtio modules + torpor-guest + /init
#   cmdline            kernel arguments, one line
#   image-id           sha256 over the three files: changes when the image does
#   kernel-source      which vmlinuz the vmlinux came from (lets a rebuild skip
#                      the 66 MB extraction when the kernel did not change)
# Everything is built in a temp dir next to OUT_DIR (same filesystem) and then
# renamed into place file by file: rename(2) replaces atomically, so a reader
# (a QEMU starting meanwhile, a concurrent build) sees the old or the new file
# and never a missing one, and a failed build leaves the previous image
# untouched. Nothing here ever deletes a file of OUT_DIR. (The CMake rule's
# output is a stamp, so make never deletes the image files either.)
set -euo pipefail

die() { echo "build-image: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: build-image.sh OUT_DIR GUEST_BINARY"
OUT=$1
GUEST=$2
SRC=$(cd "$(dirname "$0")" && pwd)
# sysctl.vm.compaction_proactiveness=0: kcompactd otherwise wakes every 500 ms
# to compact proactively (for huge pages a small VM does not need), and under
# TCG each guest wake-up costs ~1 ms of host CPU: it was most of an idle
# sandbox's cost (0.25 % of a core -> 0.07 %, docs/benchmarks.md).
CMDLINE="console=ttyS0 quiet panic=-1 tsc=reliable nowatchdog nmi_watchdog=0 audit=0 sysctl.vm.compaction_proactiveness=0"
# Load order matters: virtio_ring before virtio (virtio needs its symbols).
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console failover net_failover virtio_net"
# Other templates (guest/build-rootfs.sh) reuse this script for their boot
# files: more modules after these, another /init, more kernel arguments.
MODULES="$MODULES ${BUILD_IMAGE_EXTRA_MODULES:-}"
INIT=${BUILD_IMAGE_INIT:-$SRC/init}
CMDLINE="$CMDLINE${BUILD_IMAGE_EXTRA_CMDLINE:+ $BUILD_IMAGE_EXTRA_CMDLINE}"

[ -x "$GUEST" ] || die "torpor-guest binary not found: $GUEST"
BUSYBOX=$(command -v busybox || true)
for b in /bin/busybox /usr/bin/busybox "$BUSYBOX"; do
    [ -n "$b" ] && [ -x "$b" ] && { BUSYBOX=$b; break; }
done
[ -n "$BUSYBOX" ] || die "busybox not found (install busybox-static)"
if readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'INTERP'; then
    die "$BUSYBOX is dynamically linked (install busybox-static)"
fi
if readelf -l "$GUEST" 2>/dev/null | grep -q 'INTERP'; then
    die "$GUEST is dynamically linked; it must be static"
fi

KERNEL=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1 || true)
[ -n "$KERNEL" ] || die "no /boot/vmlinuz-* (install linux-image-amd64)"
KVER=${KERNEL#/boot/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -d "$MODDIR" ] || die "no module directory $MODDIR for $KERNEL"

mkdir -p "$(dirname "$OUT")"
TMP=$(mktemp -d "$OUT.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# --- kernel -------------------------------------------------------------
STAMP="$KERNEL $(stat -c '%s %Y' "$KERNEL")"
if [ -f "$OUT/vmlinux" ] && [ -f "$OUT/kernel-source" ] &&
   [ "$(cat "$OUT/kernel-source")" = "$STAMP" ]; then
    cp "$OUT/vmlinux" "$TMP/vmlinux"
else
    # The bzImage wraps an xz stream; QEMU boots the inner ELF directly (PVH),
    # which saves the slow in-guest decompression under TCG. xz complains
    # about the trailing bytes after the stream: harmless, checked below.
    found=0
    for off in $(LC_ALL=C grep -abo $'\xfd7zXZ' "$KERNEL" | cut -d: -f1); do
        tail -c +$((off + 1)) "$KERNEL" | xz -dc >"$TMP/vmlinux" 2>/dev/null || true
        if [ "$(head -c 4 "$TMP/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            found=1
            break
        fi
    done
    [ $found -eq 1 ] || die "could not extract an ELF vmlinux from $KERNEL"
    readelf -n "$TMP/vmlinux" 2>/dev/null | grep -q 'Xen' ||
        die "$KERNEL: extracted vmlinux has no PVH (Xen) entry note"
fi
printf '%s\n' "$STAMP" >"$TMP/kernel-source"

# --- initramfs ------------------------------------------------------------
R=$TMP/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lib/modules,var/tmp}
chmod 1777 "$R/tmp" "$R/var/tmp"
chmod 0700 "$R/root"
cp "$BUSYBOX" "$R/bin/busybox"
# Applet links at their usual paths; never a "busybox" link to itself.
"$BUSYBOX" --list-full | while read -r applet; do
    [ "$(basename "$applet")" = busybox ] && continue
    [ -e "$R/$applet" ] || ln -s /bin/busybox "$R/$applet"
done
[ -e "$R/bin/sh" ] || die "busybox has no sh applet"

install -m 0755 "$GUEST" "$R/sbin/torpor-guest"
strip --strip-unneeded "$R/sbin/torpor-guest" 2>/dev/null || true
install -m 0755 "$INIT" "$R/init"

: >"$R/lib/modules/order"
for m in $MODULES; do
    if grep -q "/$m\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then
        continue # built into this kernel: nothing to load
    fi
    f=$(find "$MODDIR/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \
             -o -name "$m.ko.gz" | head -1)
    [ -n "$f" ] || die "module $m not found under $MODDIR"
    case "$f" in
        *.ko.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -q -dc "$f" >"$R/lib/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$f" >"$R/lib/modules/$m.ko" ;;
        *) cp "$f" "$R/lib/modules/$m.ko" ;;
    esac
    echo "$m" >>"$R/lib/modules/order"
done

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
printf 'torpor\n' >"$R/etc/hostname"
printf '127.0.0.1 localhost torpor\n::1 localhost\n' >"$R/etc/hosts"
# The kernel opens /dev/console for init before devtmpfs is mounted.
if [ "$(id -u)" = 0 ]; then
    mknod -m 600 "$R/dev/console" c 5 1
    mknod -m 666 "$R/dev/null" c 1 3
fi

(cd "$R" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --quiet | gzip -9 -n) >"$TMP/initramfs.cpio.gz"
rm -rf "$R"

printf '%s\n' "$CMDLINE" >"$TMP/cmdline"
(cd "$TMP" && cat vmlinux initramfs.cpio.gz cmdline | sha256sum | cut -d' ' -f1) >"$TMP/image-id"

# --- move into place ------------------------------------------------------
mkdir -p "$OUT"
for f in vmlinux initramfs.cpio.gz cmdline kernel-source image-id; do
    mv -f "$TMP/$f" "$OUT/$f"
done
echo "build-image: $OUT ($(du -sh "$OUT/initramfs.cpio.gz" | cut -f1) initramfs, kernel $KVER)"
