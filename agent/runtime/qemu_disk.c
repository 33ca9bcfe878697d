/* qemu_disk: root disk overlays of the QEMU driver (see qemu_disk.h). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guest_protocol.h"
#include "log.h"
#include "qemu_internal.h"

#define QEMU_IMG_LOG "qemu-img.log"
#define QEMU_IMG_MS 30000
/* The guest waits this long for the kernel to see the new capacity. */
#define GROW_EXEC_SEC 60

int qemu_disk_check_mb(int disk_mb, terr *err)
{
    if (disk_mb == 0 || (disk_mb >= QEMU_DISK_MB_MIN && disk_mb <= QEMU_DISK_MB_MAX)) return 0;
    return terr_set(err, "disk_mb must be %d..%d, got %d", QEMU_DISK_MB_MIN, QEMU_DISK_MB_MAX,
                    disk_mb);
}

int qemu_disk_template_mb(const qemu_shape *s, int disk_mb)
{
    if (!s->rootfs[0]) return 0;
    if (disk_mb == 0) disk_mb = QEMU_DISK_MB_DEFAULT;
    return disk_mb >= QEMU_DISK_MB_DEFAULT ? QEMU_DISK_MB_DEFAULT : 0;
}

int qemu_disk_image(const qemu_drv *d, const char *name, qemu_shape *s, terr *err)
{
    s->rootfs[0] = s->rootfs_digest[0] = '\0';
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s/" QEMU_DISK_IMAGE, d->image_dir, name);
    if (n < 0 || (size_t)n >= sizeof path) return terr_set(err, "image path too long");
    if (access(path, F_OK) < 0) return 0; /* no root disk (e.g. minimal) */
    char *real = realpath(path, NULL);
    if (!real) return terr_set(err, "template %s: %s: %s", name, path, strerror(errno));
    /* ',' and ':' would be read as QEMU option / protocol syntax. */
    if (strlen(real) >= sizeof s->rootfs || strpbrk(real, ",:\n")) {
        free(real);
        return terr_set(err, "template %s: unusable root disk path", name);
    }
    snprintf(s->rootfs, sizeof s->rootfs, "%s", real);
    free(real);
    /* The digest file sits next to the (resolved) image. */
    char dpath[PATH_MAX + 16];
    snprintf(dpath, sizeof dpath, "%s", s->rootfs);
    char *slash = strrchr(dpath, '/');
    snprintf(slash + 1, sizeof dpath - (size_t)(slash + 1 - dpath), "%s", QEMU_DISK_DIGEST);
    FILE *f = fopen(dpath, "re");
    if (!f)
        return terr_set(err, "template %s: no %s next to its root disk", name, QEMU_DISK_DIGEST);
    char line[128] = "";
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!ok || strlen(line) != 64 || strspn(line, "0123456789abcdef") != 64)
        return terr_set(err, "template %s: malformed %s", name, QEMU_DISK_DIGEST);
    snprintf(s->rootfs_digest, sizeof s->rootfs_digest, "%s", line);
    return 0;
}

/* qemu-img next to the QEMU binary, else the usual places. */
static int find_qemu_img(const qemu_drv *d, char *out, size_t n)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", d->qemu_binary);
    snprintf(out, n, "%s/qemu-img", dirname(buf));
    if (access(out, X_OK) == 0) return 0;
    const char *cands[] = {"/usr/bin/qemu-img", "/usr/local/bin/qemu-img"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++)
        if (access(cands[i], X_OK) == 0) {
            snprintf(out, n, "%s", cands[i]);
            return 0;
        }
    return -1;
}

/* The agent (root) makes the overlay; QEMU, perhaps running as --vm-user,
 * writes it: hand it over like the RAM file. */
static int own_overlay(const qemu_drv *d, int dirfd, terr *err)
{
    int fd = openat(dirfd, QEMU_DISK_FILE, O_RDWR | O_CLOEXEC);
    if (fd < 0) return terr_set(err, "open %s: %s", QEMU_DISK_FILE, strerror(errno));
    int rc = qemu_own_for_vm(d, fd, false, err);
    close(fd);
    return rc;
}

int qemu_disk_overlay_create(const qemu_drv *d, int dirfd, const char *base, terr *err)
{
    char img[PATH_MAX];
    if (find_qemu_img(d, img, sizeof img) < 0)
        return terr_set(err, "qemu-img not found (install the qemu-utils package)");
    char *argv[] = {img,          "create", "-q",  "-f",           "qcow2", "-b",
                    (char *)base, "-F",     "raw", QEMU_DISK_FILE, NULL};
    qemu_proc p;
    if (qemu_proc_spawn(argv, dirfd, QEMU_IMG_LOG, NULL, -1, &p, err) < 0)
        return terr_wrap(err, "qemu-img create");
    bool done = qemu_proc_wait(&p, QEMU_IMG_MS);
    if (!done) {
        qemu_proc_kill(&p);
        return terr_set(err, "qemu-img create did not finish in %d ms", QEMU_IMG_MS);
    }
    bool clean = qemu_proc_exited_cleanly(&p);
    qemu_proc_release(&p);
    if (!clean) {
        terr_set(err, "qemu-img create failed");
        int fd = openat(dirfd, QEMU_IMG_LOG, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            char buf[200];
            ssize_t r = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (r > 0) {
                buf[r] = '\0';
                for (char *q = buf; *q; q++)
                    if (*q == '\n' || *q == '"') *q = ' ';
                size_t l = strlen(err->msg);
                snprintf(err->msg + l, sizeof err->msg - l, ": %s", buf);
            }
        }
        return -1;
    }
    unlinkat(dirfd, QEMU_IMG_LOG, 0);
    return own_overlay(d, dirfd, err);
}

int qemu_disk_clone(const qemu_drv *d, int tplfd, int sbfd, const qemu_shape *s, terr *err)
{
    if (!s->rootfs[0]) return 0;
    int src = openat(tplfd, QEMU_DISK_FILE, O_RDONLY | O_CLOEXEC);
    if (src < 0) return terr_set(err, "template has no %s: %s", QEMU_DISK_FILE, strerror(errno));
    int r = qemu_copy_sparse(src, sbfd, QEMU_DISK_FILE, err);
    close(src);
    if (r < 0) return terr_wrap(err, "copy the template's root disk overlay");
    return own_overlay(d, sbfd, err);
}

int qemu_disk_sync(int dirfd, const qemu_shape *s, terr *err)
{
    if (!s->rootfs[0]) return 0;
    int fd = openat(dirfd, QEMU_DISK_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return terr_set(err, "open %s: %s", QEMU_DISK_FILE, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r < 0) return terr_set(err, "fsync %s: %s", QEMU_DISK_FILE, strerror(e));
    return 0;
}

int qemu_disk_grow(qmp *q, guest_channel *ch, const qemu_shape *s, int from_mb, int to_mb,
                   terr *err)
{
    if (!s->rootfs[0] || to_mb <= 0) return 0;
    long long have = (long long)from_mb << 20;
    if (from_mb <= 0) {
        struct stat st;
        if (stat(s->rootfs, &st) < 0)
            return terr_set(err, "root disk base %s: %s", s->rootfs, strerror(errno));
        have = (long long)st.st_size;
    }
    long long want = (long long)to_mb << 20;
    if (want <= have) return 0; /* never shrinks: already that size */
    if (!q || !ch) return terr_set(err, "grow the root disk: no QMP or guest connection");
    char args[128];
    snprintf(args, sizeof args, "{\"node-name\":\"root\",\"size\":%lld}", want);
    if (qmp_call(q, "block_resize", args, QEMU_GUEST_CALL_MS, NULL, err) < 0)
        return terr_wrap(err, "block_resize of the root disk");
    /* The capacity change reaches the guest kernel through a config
     * interrupt: wait until it sees the new size, then grow ext4 online. */
    char cmd[400];
    snprintf(
        cmd, sizeof cmd,
        "i=0; while [ \"$(cat /sys/block/vda/size)\" -lt %lld ]; do i=$((i+1)); "
        "[ $i -gt 1000 ] && { echo 'capacity change not seen' >&2; exit 3; }; sleep 0.01; done; "
        "exec resize2fs /dev/vda",
        want / 512);
    gp_exec_req m = {.cmd = cmd, .timeout_sec = GROW_EXEC_SEC};
    gp_buf b = {0};
    if (gp_encode_exec(&b, &m, err) < 0) {
        gp_buf_free(&b);
        return terr_wrap(err, "grow the root disk");
    }
    uint8_t *p = NULL;
    size_t n = 0;
    int r = guest_channel_call(ch, GP_EXEC, b.data, b.len, GP_EXEC_RESULT,
                               (GROW_EXEC_SEC + 15) * 1000, &p, &n, err);
    gp_buf_free(&b);
    if (r < 0) return terr_wrap(err, "resize2fs in the guest");
    gp_exec_result gr;
    r = gp_decode_exec_result(p, n, &gr, err);
    free(p);
    if (r < 0) return terr_wrap(err, "resize2fs in the guest: exec result");
    int rc = 0;
    if (gr.exit_code != 0) {
        char msg[200];
        size_t l = gr.err_len < sizeof msg - 1 ? gr.err_len : sizeof msg - 1;
        memcpy(msg, gr.err, l);
        msg[l] = '\0';
        for (char *c = msg; *c; c++)
            if (*c == '\n' || *c == '"' || (unsigned char)*c < 0x20) *c = ' ';
        rc = terr_set(err, "resize2fs in the guest failed (exit %d): %s", gr.exit_code, msg);
    }
    gp_exec_result_free(&gr);
    return rc;
}
