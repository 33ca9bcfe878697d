/* qemu_meta: snapshot metadata file (see qemu_meta.h). */
#include "qemu_meta.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define META_MAX 8192

static bool has_newline(const char *s)
{
    return strchr(s, '\n') != NULL || strchr(s, '\r') != NULL;
}

int qemu_meta_write(int dirfd, const char *name, const qemu_meta *m, terr *err)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    const qemu_shape *s = &m->shape;
    if (has_newline(s->kernel) || has_newline(s->initrd) || has_newline(s->cmdline) ||
        has_newline(s->rootfs) || has_newline(s->rootfs_digest) ||
        has_newline(m->spec.sandbox_id) || has_newline(m->spec.template_name) ||
        has_newline(m->template_key))
        return terr_set(err, "meta: a value contains a newline");
    char buf[META_MAX];
    int n = snprintf(
        buf, sizeof buf,
        "version=%d\nsandbox_id=%s\ntemplate=%s\nvcpus=%d\nmemory_mb=%d\n"
        "timeout_sec=%d\ncreated_at_unix=%lld\naccel=%s\nkernel=%s\ninitrd=%s\n"
        "cmdline=%s\ntemplate_key=%s\nstate_bytes=%lld\nram_disk_bytes=%lld\n"
        "paused_at_unix_ms=%lld\npause_ms=%lld\ndisk_mb=%d\nrootfs=%s\nbase_digest=%s\n"
        "net=%d\n",
        QEMU_META_VERSION, m->spec.sandbox_id, m->spec.template_name, m->spec.vcpus,
        m->spec.memory_mb, m->spec.timeout_sec, (long long)m->spec.created_at_unix, s->accel,
        s->kernel, s->initrd, s->cmdline, m->template_key, (long long)m->state_bytes,
        (long long)m->ram_disk_bytes, (long long)m->paused_at_unix_ms, (long long)m->pause_ms,
        m->spec.disk_mb, s->rootfs, s->rootfs_digest, s->net);
    if (n < 0 || (size_t)n >= sizeof buf) return terr_set(err, "meta: too large");
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return terr_set(err, "open %s: %s", tmp, strerror(errno));
    ssize_t w = write(fd, buf, (size_t)n);
    if (w != n || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlinkat(dirfd, tmp, 0);
        return terr_set(err, "write %s: %s", tmp, w != n ? "short write" : strerror(e));
    }
    close(fd);
    if (renameat(dirfd, tmp, dirfd, name) < 0) {
        int e = errno;
        unlinkat(dirfd, tmp, 0);
        return terr_set(err, "rename %s: %s", name, strerror(e));
    }
    return 0;
}

static int parse_ll(const char *v, long long min, long long max, long long *out)
{
    if (!*v) return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || x < min || x > max) return -1;
    *out = x;
    return 0;
}

static int copy_str(char *dst, size_t n, const char *v)
{
    size_t l = strlen(v);
    if (l >= n) return -1;
    memcpy(dst, v, l + 1);
    return 0;
}

int qemu_meta_read(int dirfd, const char *name, qemu_meta *m, terr *err)
{
    memset(m, 0, sizeof *m);
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return terr_set(err, "no %s file: %s", name, strerror(errno));
    char buf[META_MAX + 1];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
        if (len == sizeof buf - 1) break;
    }
    close(fd);
    if (len == 0 || len >= META_MAX) return terr_set(err, "meta: empty or too large");
    buf[len] = '\0';
    enum { F_VERSION, F_VCPUS, F_MEM, F_ACCEL, F_KERNEL, F_INITRD, F_CMDLINE, F_COUNT };
    bool seen[F_COUNT] = {0};
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq) return terr_set(err, "meta: malformed line");
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        long long x = 0;
        int bad = 0;
        if (!strcmp(k, "version")) {
            bad = parse_ll(v, QEMU_META_VERSION, QEMU_META_VERSION, &x);
            seen[F_VERSION] = true;
        } else if (!strcmp(k, "sandbox_id")) {
            bad = copy_str(m->spec.sandbox_id, sizeof m->spec.sandbox_id, v);
        } else if (!strcmp(k, "template")) {
            bad = copy_str(m->spec.template_name, sizeof m->spec.template_name, v);
        } else if (!strcmp(k, "vcpus")) {
            bad = parse_ll(v, 1, 64, &x);
            m->spec.vcpus = m->shape.vcpus = (int)x;
            seen[F_VCPUS] = true;
        } else if (!strcmp(k, "memory_mb")) {
            bad = parse_ll(v, 16, 1 << 20, &x);
            m->spec.memory_mb = m->shape.memory_mb = (int)x;
            seen[F_MEM] = true;
        } else if (!strcmp(k, "timeout_sec")) {
            bad = parse_ll(v, 0, 1LL << 31, &x);
            m->spec.timeout_sec = (int)x;
        } else if (!strcmp(k, "created_at_unix")) {
            bad = parse_ll(v, 0, 1LL << 62, &x);
            m->spec.created_at_unix = x;
        } else if (!strcmp(k, "accel")) {
            bad = (strcmp(v, "tcg") && strcmp(v, "kvm")) ||
                  copy_str(m->shape.accel, sizeof m->shape.accel, v);
            seen[F_ACCEL] = true;
        } else if (!strcmp(k, "kernel")) {
            bad = v[0] != '/' || copy_str(m->shape.kernel, sizeof m->shape.kernel, v);
            seen[F_KERNEL] = true;
        } else if (!strcmp(k, "initrd")) {
            bad = v[0] != '/' || copy_str(m->shape.initrd, sizeof m->shape.initrd, v);
            seen[F_INITRD] = true;
        } else if (!strcmp(k, "cmdline")) {
            bad = copy_str(m->shape.cmdline, sizeof m->shape.cmdline, v);
            seen[F_CMDLINE] = true;
        } else if (!strcmp(k, "template_key")) {
            bad = copy_str(m->template_key, sizeof m->template_key, v);
        } else if (!strcmp(k, "state_bytes")) {
            bad = parse_ll(v, 0, 1LL << 40, &x);
            m->state_bytes = x;
        } else if (!strcmp(k, "ram_disk_bytes")) {
            bad = parse_ll(v, 0, 1LL << 50, &x);
            m->ram_disk_bytes = x;
        } else if (!strcmp(k, "paused_at_unix_ms")) {
            bad = parse_ll(v, 0, 1LL << 62, &x);
            m->paused_at_unix_ms = x;
        } else if (!strcmp(k, "disk_mb")) {
            bad = parse_ll(v, 0, 1 << 20, &x);
            m->spec.disk_mb = (int)x;
        } else if (!strcmp(k, "rootfs")) {
            bad = (v[0] && v[0] != '/') || copy_str(m->shape.rootfs, sizeof m->shape.rootfs, v);
        } else if (!strcmp(k, "base_digest")) {
            bad = copy_str(m->shape.rootfs_digest, sizeof m->shape.rootfs_digest, v);
        } else if (!strcmp(k, "net")) { /* absent in metadata written before the NIC */
            bad = parse_ll(v, 0, 1, &x);
            m->shape.net = (int)x;
        } else if (!strcmp(k, "pause_ms")) {
            bad = parse_ll(v, 0, 1LL << 40, &x);
            m->pause_ms = x;
        }
        if (bad) return terr_set(err, "meta: bad value for %s", k);
    }
    for (int i = 0; i < F_COUNT; i++)
        if (!seen[i]) return terr_set(err, "meta: a required field is missing");
    return 0;
}
