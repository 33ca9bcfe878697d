#!/bin/bash
# build-rootfs.sh OUT_LINK GUEST_BINARY
#
# Builds the "debian" template image (Debian 12 root disk) into the image
# cache and points OUT_LINK (a symlink, e.g. build/image/debian) at it.
#
# The image folder holds:
#   vmlinux, initramfs.cpio.gz, cmdline, kernel-source
#                  as in `minimal` (guest/build-image.sh), with the virtio-blk
#                  and ext4 modules and guest/init-rootdisk as /init: it mounts
#                  /dev/vda and switch_roots into it
#   rootfs.img     raw ext4 image (ROOTFS_MB), made without mounting
#                  (mke2fs -d); the root disk every sandbox's overlay sits on
#   rootfs.sha256  sha256 of rootfs.img: the image's content digest, recorded
#                  by every sandbox made from it
#   image-id       sha256 over all of the above
#   recipe         what the cache key was computed from
#
# Cache: ${TORPOR_IMAGE_CACHE:-/var/cache/torpor/images}/<recipe-digest>/,
# where the digest covers this script, build-image.sh, both init scripts, the
# package list, the torpor-guest binary and the kernel. A second run with the
# same recipe builds nothing. A build runs in <digest>.tmp.XXXXXX (same
# filesystem) and is renamed into place when complete, under a lock, so a
# reader never sees half an image and two concurrent builds do the work once.
# OUT_LINK is replaced atomically (symlink + rename).
#
# TORPOR_EXTRA_PACKAGES (comma- or space-separated Debian package names) adds
# packages to debian.packages: a custom template (torpor-agent's template
# builder, docs/templates.md). They are part of the recipe, so each package
# list has its own cache entry. A package apt cannot find fails the build with
# apt's message on stderr.
set -euo pipefail

die() { echo "build-rootfs: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: build-rootfs.sh OUT_LINK GUEST_BINARY"
OUT=$1
GUEST=$2
SRC=$(cd "$(dirname "$0")" && pwd)
CACHE=${TORPOR_IMAGE_CACHE:-/var/cache/torpor/images}
SUITE=bookworm
PACKAGES_FILE=$SRC/debian.packages
# The root filesystem's size. Sandboxes grow it to their disk_mb (>= 512),
# never shrink it: so it must not exceed the smallest disk_mb.
ROOTFS_MB=512
# The largest the content may be (the rest is the free space of a 512 MiB
# sandbox).
ROOTFS_CONTENT_MAX_MB=400
EXTRA_MODULES="virtio_blk crc16 mbcache jbd2 crc32c_generic ext4"

[ -x "$GUEST" ] || die "torpor-guest binary not found: $GUEST"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"
command -v mke2fs >/dev/null || die "mke2fs not found (apt-get install e2fsprogs)"
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, device nodes)"
KERNEL=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1 || true)
[ -n "$KERNEL" ] || die "no /boot/vmlinuz-* (install linux-image-amd64)"

# Host apt sources (deb822 or one-line format) for the guest's packages.
SOURCES=""
for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [ -s "$f" ] && grep -qE '^[[:space:]]*(deb |URIs:)' "$f" && SOURCES="$SOURCES $f"
done
[ -n "$SOURCES" ] || die "no apt sources on this host"

PACKAGES=$(grep -v '^[[:space:]]*#' "$PACKAGES_FILE" | tr -s ' \n' '\n' | grep -v '^$' | paste -sd, -)
EXTRA=$(printf '%s' "${TORPOR_EXTRA_PACKAGES:-}" | tr -s ', \n' '\n' | grep -v '^$' | sort -u | paste -sd, - || true)
if [ -n "$EXTRA" ]; then
    for p in ${EXTRA//,/ }; do
        [[ "$p" =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || die "invalid package name: $p"
    done
    PACKAGES="$PACKAGES,$EXTRA"
fi

recipe() {
    echo "format=torpor-rootfs-1 suite=$SUITE rootfs_mb=$ROOTFS_MB packages=$PACKAGES"
    echo "kernel=$KERNEL $(stat -c '%s %Y' "$KERNEL")"
    sha256sum "$0" "$SRC/build-image.sh" "$SRC/init" "$SRC/init-rootdisk" "$PACKAGES_FILE" "$GUEST" |
        sed "s#  .*/#  #"
}
DIGEST=$(recipe | sha256sum | cut -c1-32)
DEST=$CACHE/$DIGEST

link_out() {
    mkdir -p "$(dirname "$OUT")"
    ln -sfn "$DEST" "$OUT.tmp.$$"
    mv -T "$OUT.tmp.$$" "$OUT"
}

# Removes a build dir. A killed mmdebstrap leaves proc, sys, dev/pts and a
# bind mount of the host's /dev/shm mounted inside its tree: unmount them
# first (deepest first), and never let rm cross into another filesystem.
remove_build_dir() {
    local m
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$1"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$DIGEST"
flock 9
if [ -f "$DEST/image-id" ]; then
    link_out
    echo "build-rootfs: cached $DEST"
    exit 0
fi

# A package apt cannot find fails in ~1 s here instead of after mmdebstrap
# has installed the essential set (~35 s): ask the host's apt, which has the
# same sources, when the host runs the same suite. Only "Unable to locate"
# is taken as final; anything else is left to mmdebstrap.
if [ -n "$EXTRA" ] && grep -q "^VERSION_CODENAME=$SUITE\$" /etc/os-release 2>/dev/null; then
    missing=$(apt-get -s install --no-install-recommends -o Debug::NoLocking=1 ${EXTRA//,/ } 2>&1 |
              grep -E '^E: Unable to locate package' || true)
    [ -z "$missing" ] || { echo "$missing" >&2; die "unknown package(s)"; }
fi

# Leftovers of a build of this recipe that was killed (we hold its lock, so
# nobody else is building it).
for d in "$DEST".tmp.*; do if [ -e "$d" ]; then remove_build_dir "$d"; fi; done
T0=$(date +%s)
TMP=$(mktemp -d "$DEST.tmp.XXXXXX")
trap 'remove_build_dir "$TMP"' EXIT

# --- boot files (kernel, initramfs with the root-disk /init) ---------------
BUILD_IMAGE_EXTRA_MODULES=$EXTRA_MODULES BUILD_IMAGE_INIT=$SRC/init-rootdisk \
    BUILD_IMAGE_EXTRA_CMDLINE="rootfstype=ext4" \
    bash "$SRC/build-image.sh" "$TMP/boot" "$GUEST" >/dev/null
for f in vmlinux initramfs.cpio.gz cmdline kernel-source; do mv "$TMP/boot/$f" "$TMP/$f"; done
rm -rf "$TMP/boot"

# --- root filesystem -------------------------------------------------------
R=$TMP/root
# No docs, man pages or translations: ~75 MB less in every template.
# shellcheck disable=SC2086
mmdebstrap --mode=root --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --aptopt='Acquire::Languages "none"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
    "$SUITE" "$R" $SOURCES >"$TMP/mmdebstrap.log" 2>&1 ||
    { grep -E '^(E|W): ' "$TMP/mmdebstrap.log" | head -20 >&2; tail -20 "$TMP/mmdebstrap.log" >&2
      die "mmdebstrap failed"; }

install -m 0755 "$GUEST" "$R/usr/sbin/torpor-guest"
strip --strip-unneeded "$R/usr/sbin/torpor-guest" 2>/dev/null || true
install -m 0755 "$SRC/init" "$R/usr/sbin/torpor-init"
printf 'torpor\n' >"$R/etc/hostname"
printf '127.0.0.1 localhost torpor\n::1 localhost\n' >"$R/etc/hosts"
printf '/dev/vda / ext4 noatime,noinit_itable 0 1\n' >"$R/etc/fstab"
: >"$R/etc/machine-id"
chmod 0700 "$R/root"

used_mb=$(du -sm "$R" | cut -f1)
[ "$used_mb" -le "$ROOTFS_CONTENT_MAX_MB" ] ||
    die "root filesystem is ${used_mb} MiB, more than ${ROOTFS_CONTENT_MAX_MB} MiB"
# 16 KiB per inode: enough files for pip trees when grown to a few GiB; no
# reserved blocks (one user, root); lazy init so a grown disk costs nothing
# until used (the guest mounts it noinit_itable: guest/init-rootdisk).
mke2fs -q -t ext4 -d "$R" -L torpor-root -m 0 -i 16384 \
    -E lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0 \
    "$TMP/rootfs.img" "${ROOTFS_MB}M"
remove_build_dir "$R"
(cd "$TMP" && sha256sum rootfs.img | cut -d' ' -f1) >"$TMP/rootfs.sha256"
(cd "$TMP" && cat vmlinux initramfs.cpio.gz cmdline rootfs.sha256 | sha256sum | cut -d' ' -f1) >"$TMP/image-id"
recipe >"$TMP/recipe"
chmod 0755 "$TMP"
chmod 0644 "$TMP"/*
chmod 0444 "$TMP/rootfs.img"

mv -T "$TMP" "$DEST"
trap - EXIT
link_out
echo "build-rootfs: built $DEST in $(($(date +%s) - T0)) s (content ${used_mb} MiB," \
     "image ${ROOTFS_MB} MiB, digest $(cut -c1-16 "$DEST/rootfs.sha256"))"
