/* qemu_fs: filesystem helpers of the QEMU driver (names, fsync, rmtree,
 * sparse copy, sizes). */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "qemu_disk.h"
#include "qemu_inst.h"
#include "qemu_internal.h"

bool qemu_valid_name(const char *s, size_t max)
{
    if (!s || !*s || s[0] == '.' || s[0] == '-') return false;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok) return false;
    }
    return n < max;
}

int qemu_fsync_dir(int dirfd, terr *err)
{
    if (fsync(dirfd) < 0) return terr_set(err, "fsync directory: %s", strerror(errno));
    return 0;
}

static int rm_contents(int fd, int depth, terr *err)
{
    if (depth > 8) return terr_set(err, "directory tree too deep");
    int dup_fd = dup(fd);
    if (dup_fd < 0) return terr_set(err, "dup: %s", strerror(errno));
    DIR *dir = fdopendir(dup_fd);
    if (!dir) {
        close(dup_fd);
        return terr_set(err, "fdopendir: %s", strerror(errno));
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (unlinkat(fd, e->d_name, 0) == 0) continue;
        if (errno == EISDIR || errno == EPERM) {
            if (qemu_rmtree(fd, e->d_name, err) < 0) rc = -1;
        } else if (errno != ENOENT) {
            rc = terr_set(err, "unlink %s: %s", e->d_name, strerror(errno));
        }
    }
    closedir(dir);
    return rc;
}

int qemu_rmtree(int parentfd, const char *name, terr *err)
{
    int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        if (errno == ENOTDIR || errno == ELOOP) {
            if (unlinkat(parentfd, name, 0) == 0 || errno == ENOENT) return 0;
        }
        return terr_set(err, "open %s: %s", name, strerror(errno));
    }
    int rc = rm_contents(fd, 0, err);
    close(fd);
    if (rc < 0) return -1;
    if (unlinkat(parentfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return terr_set(err, "rmdir %s: %s", name, strerror(errno));
    return 0;
}

/* read/pwrite fallback for copy_file_range (same contract: advances the
 * offsets, returns bytes copied, 0 at EOF, -1 with errno). */
static ssize_t copy_rw(int in_fd, off_t *in, int out_fd, off_t *out, size_t len)
{
    char buf[1 << 16];
    if (len > sizeof buf) len = sizeof buf;
    ssize_t n = pread(in_fd, buf, len, *in);
    if (n <= 0) return n;
    ssize_t w = pwrite(out_fd, buf, (size_t)n, *out);
    if (w < 0) return -1;
    *in += w;
    *out += w;
    return w;
}

int qemu_copy_sparse(int srcfd, int dstdirfd, const char *dst_name, terr *err)
{
    struct stat st;
    if (fstat(srcfd, &st) < 0) return terr_set(err, "stat template RAM: %s", strerror(errno));
    int dst = openat(dstdirfd, dst_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (dst < 0) return terr_set(err, "create %s: %s", dst_name, strerror(errno));
    int rc = 0;
    if (ftruncate(dst, st.st_size) < 0) {
        rc = terr_set(err, "truncate %s: %s", dst_name, strerror(errno));
        goto out;
    }
    /* Copy only the data extents: the file is the guest's RAM, mostly holes
     * where the guest never wrote. copy_file_range stays in the kernel (and
     * shares blocks on filesystems with reflinks). */
    bool use_cfr = true;
    off_t pos = 0;
    while (pos < st.st_size) {
        off_t data = lseek(srcfd, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break; /* only a hole is left */
            rc = terr_set(err, "seek template RAM: %s", strerror(errno));
            goto out;
        }
        off_t hole = lseek(srcfd, data, SEEK_HOLE);
        if (hole < 0) hole = st.st_size;
        off_t in = data, out = data;
        while (in < hole) {
            ssize_t n = use_cfr ? copy_file_range(srcfd, &in, dst, &out, (size_t)(hole - in), 0)
                                : copy_rw(srcfd, &in, dst, &out, (size_t)(hole - in));
            if (n < 0) {
                if (errno == EINTR) continue;
                if (use_cfr &&
                    (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
                    use_cfr = false; /* e.g. another filesystem: plain copy */
                    continue;
                }
                rc = terr_set(err, "copy template RAM: %s", strerror(errno));
                goto out;
            }
            if (n == 0) break;
        }
        pos = hole;
    }
out:
    close(dst);
    if (rc < 0) unlinkat(dstdirfd, dst_name, 0);
    return rc;
}

int qemu_punch_zeros(int fd, terr *err)
{
    enum { PAGE = 4096, CHUNK = 1 << 20 };
    static const uint8_t zero[PAGE];
    struct stat st;
    if (fstat(fd, &st) < 0) return terr_set(err, "stat: %s", strerror(errno));
    uint8_t *buf = malloc(CHUNK);
    if (!buf) return terr_set(err, "out of memory");
    int rc = 0;
    off_t run_start = -1, pos = 0;
    while (pos < st.st_size) {
        ssize_t n = pread(fd, buf, CHUNK, pos);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t off = 0; off < n; off += PAGE) {
            size_t len = (size_t)(n - off) < PAGE ? (size_t)(n - off) : PAGE;
            bool z = len == PAGE && memcmp(buf + off, zero, PAGE) == 0;
            off_t at = pos + off;
            if (z && run_start < 0) run_start = at;
            if (!z && run_start >= 0) {
                if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, run_start,
                              at - run_start) < 0) {
                    rc = terr_set(err, "punch hole: %s", strerror(errno));
                    goto out;
                }
                run_start = -1;
            }
        }
        pos += n;
    }
    if (run_start >= 0 &&
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, run_start, pos - run_start) < 0)
        rc = terr_set(err, "punch hole: %s", strerror(errno));
out:
    free(buf);
    return rc;
}

static void *writeback_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    close(fd);
    return NULL;
}

void qemu_writeback_async(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    if (pthread_create(&t, &a, writeback_main, (void *)(intptr_t)fd) != 0) close(fd);
    pthread_attr_destroy(&a);
}

int64_t qemu_file_disk_bytes(int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return -1;
    return (int64_t)st.st_blocks * 512;
}

int64_t qemu_file_size(int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return -1;
    return (int64_t)st.st_size;
}

int64_t qemu_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int qemu_own_for_vm(const qemu_drv *d, int fd, bool dir, terr *err)
{
    if (!d->run_as) return 0;
    if (fchown(fd, d->run_as->uid, d->run_as->gid) < 0 || fchmod(fd, dir ? 0700 : 0600) < 0)
        return terr_set(err, "give %s to the VM user: %s", dir ? "a directory" : "a file",
                        strerror(errno));
    return 0;
}

int qemu_own_sandbox_for_vm(const qemu_drv *d, int sbfd, terr *err)
{
    if (!d->run_as) return 0;
    if (qemu_own_for_vm(d, sbfd, true, err) < 0) return -1;
    static const char *const files[] = {QEMU_RAM_FILE, QEMU_DISK_FILE};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        int fd = openat(sbfd, files[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            if (errno == ENOENT) continue; /* no disk: a template without one */
            return terr_set(err, "open %s: %s", files[i], strerror(errno));
        }
        int rc = qemu_own_for_vm(d, fd, false, err);
        close(fd);
        if (rc < 0) return -1;
    }
    return 0;
}
