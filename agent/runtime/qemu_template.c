/* qemu_template: per-host template snapshots — boot a template once, pause
 * it into templates/<key>/, and hand that snapshot to every create.
 *
 * The key names everything the snapshot depends on: template name, memory
 * size, vCPUs, accelerator, and a hash of the image files' size+mtime, the
 * kernel command line and the QEMU binary's size+mtime. A rebuilt image or
 * a new QEMU gets a new key (and so a fresh build); old keys stay valid for
 * the sandboxes made from them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mono_time.h"
#include "qemu_internal.h"

#define BUILDING_SUFFIX ".building"
#define LAST_USED_FILE "last_used" /* its mtime: the LRU clock, kept across restarts */
/* Bumped when the way templates are built changes (part of the key). */
#define TEMPLATE_FORMAT "torpor-template-4" /* 4: virtio-net NIC */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_stat(uint64_t h, const struct stat *st)
{
    int64_t v[3] = {(int64_t)st->st_size, (int64_t)st->st_mtim.tv_sec,
                    (int64_t)st->st_mtim.tv_nsec};
    return fnv1a(h, v, sizeof v);
}

/* Fills the machine shape for the template from its image folder. */
static int image_shape(qemu_drv *d, const char *name, int vcpus, int memory_mb, qemu_shape *s,
                       uint64_t *hash, terr *err)
{
    memset(s, 0, sizeof *s);
    if (!qemu_valid_name(name, RUNTIME_TEMPLATE_MAX))
        return terr_set(err, "unknown template %s", name);
    char cmdline_path[PATH_MAX];
    struct stat sk, si, sc, sq;
    int n1 = snprintf(s->kernel, sizeof s->kernel, "%s/%s/vmlinux", d->image_dir, name);
    int n2 = snprintf(s->initrd, sizeof s->initrd, "%s/%s/initramfs.cpio.gz", d->image_dir, name);
    int n3 = snprintf(cmdline_path, sizeof cmdline_path, "%s/%s/cmdline", d->image_dir, name);
    if (n1 < 0 || n2 < 0 || n3 < 0 || (size_t)n1 >= sizeof s->kernel ||
        (size_t)n2 >= sizeof s->initrd || (size_t)n3 >= sizeof cmdline_path)
        return terr_set(err, "image path too long");
    if (stat(s->kernel, &sk) < 0 || stat(s->initrd, &si) < 0 || stat(cmdline_path, &sc) < 0)
        return terr_set(err, "unknown template %s (no complete image in %s/%s)", name, d->image_dir,
                        name);
    if (stat(d->qemu_binary, &sq) < 0)
        return terr_set(err, "stat %s: %s", d->qemu_binary, strerror(errno));
    FILE *f = fopen(cmdline_path, "re");
    if (!f) return terr_set(err, "open %s: %s", cmdline_path, strerror(errno));
    size_t n = fread(s->cmdline, 1, sizeof s->cmdline - 1, f);
    fclose(f);
    s->cmdline[n] = '\0';
    for (char *p = s->cmdline; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    while (n && s->cmdline[n - 1] == ' ') s->cmdline[--n] = '\0';
    snprintf(s->accel, sizeof s->accel, "%s", d->accel);
    s->vcpus = vcpus;
    s->memory_mb = memory_mb;
    s->net = 1;
    if (qemu_disk_image(d, name, s, err) < 0) return -1;
    uint64_t h = 1469598103934665603ull;
    h = hash_stat(h, &sk);
    h = hash_stat(h, &si);
    h = hash_stat(h, &sq);
    h = fnv1a(h, TEMPLATE_FORMAT, strlen(TEMPLATE_FORMAT));
    h = fnv1a(h, s->cmdline, strlen(s->cmdline));
    h = fnv1a(h, s->kernel, strlen(s->kernel));
    h = fnv1a(h, s->initrd, strlen(s->initrd));
    h = fnv1a(h, s->rootfs, strlen(s->rootfs));
    h = fnv1a(h, s->rootfs_digest, strlen(s->rootfs_digest));
    *hash = h;
    return 0;
}

static bool is_building(qemu_drv *d, const char *key)
{
    for (qemu_tpl_build *b = d->building; b; b = b->next)
        if (!strcmp(b->key, key)) return true;
    return false;
}

/* Opens templates/<key>/ if it holds a committed snapshot. */
static int open_committed(qemu_drv *d, const char *key, int *fd, qemu_meta *meta)
{
    int f = openat(d->tpl_dirfd, key, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f < 0) return -1;
    terr e;
    if (qemu_meta_read(f, QEMU_META_FILE, meta, &e) < 0 ||
        qemu_file_size(f, QEMU_STATE_FILE) != meta->state_bytes) {
        close(f);
        return -1;
    }
    *fd = f;
    return 0;
}

static int build(qemu_drv *d, const char *name, const char *key, const qemu_shape *shape,
                 int disk_mb, terr *err)
{
    long long t0 = mono_ms();
    char bname[QEMU_TEMPLATE_KEY_MAX + 16];
    snprintf(bname, sizeof bname, "%s" BUILDING_SUFFIX, key);
    if (qemu_rmtree(d->tpl_dirfd, bname, err) < 0) return -1;
    if (mkdirat(d->tpl_dirfd, bname, 0750) < 0)
        return terr_set(err, "mkdir %s: %s", bname, strerror(errno));
    int bfd = openat(d->tpl_dirfd, bname, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0) return terr_set(err, "open %s: %s", bname, strerror(errno));
    log_info("event=template_build_start template=%s key=%s accel=%s", name, key, d->accel);
    qemu_inst in = {.dirfd = bfd, .run_as = d->run_as};
    terr e2;
    if (qemu_own_for_vm(d, bfd, true, err) < 0) {
        close(bfd);
        qemu_rmtree(d->tpl_dirfd, bname, &e2);
        return -1;
    }
    snprintf(in.id, sizeof in.id, "torpor-template-%s", name);
    guest_channel *ch = NULL;
    int state_fd = -1, ram_fd = -1;
    if (shape->rootfs[0] && qemu_disk_overlay_create(d, bfd, shape->rootfs, err) < 0) goto fail;
    if (qemu_inst_start(&in, d->qemu_binary, shape, -1, -1, err) < 0) goto fail;
    if (guest_channel_open(bfd, QEMU_GUEST_SOCK, in.id, in.proc.pidfd, QEMU_GUEST_BOOT_MS, &ch,
                           err) < 0) {
        terr_wrap(err, "template %s did not come up", name);
        qemu_inst_console_tail(&in, err);
        qemu_inst_log_tail(bfd, err);
        goto fail;
    }
    long long booted = mono_ms();
    if (qemu_disk_grow(in.qmp, ch, shape, 0, disk_mb, err) < 0) goto fail;
    /* The snapshot is taken with no host connected, as every clone starts. */
    guest_channel_close(ch, "template snapshot");
    guest_channel_unref(ch);
    ch = NULL;
    state_fd = openat(bfd, QEMU_STATE_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    ram_fd = openat(bfd, QEMU_RAM_FILE, O_RDONLY | O_CLOEXEC);
    if (state_fd < 0 || ram_fd < 0) {
        terr_set(err, "open template snapshot files: %s", strerror(errno));
        goto fail;
    }
    if (qemu_inst_save(&in, state_fd, ram_fd, err) < 0) goto fail;
    if (qemu_inst_quit(&in, QEMU_QUIT_GRACE_MS, err) < 0) goto fail;
    close(ram_fd);
    ram_fd = openat(bfd, QEMU_RAM_FILE, O_RDWR | O_CLOEXEC);
    if (ram_fd < 0) {
        terr_set(err, "open template RAM: %s", strerror(errno));
        goto fail;
    }
    if (qemu_punch_zeros(ram_fd, err) < 0) goto fail;
    /* Built: back to root, so no VM user (a QEMU escape) can alter what
     * every later clone starts from. */
    if (d->run_as && (fchown(ram_fd, 0, 0) < 0 || fchown(bfd, 0, 0) < 0 || fchmod(bfd, 0755) < 0)) {
        terr_set(err, "give the template back to root: %s", strerror(errno));
        goto fail;
    }
    if (fsync(ram_fd) < 0 || fsync(state_fd) < 0) {
        terr_set(err, "fsync template snapshot: %s", strerror(errno));
        goto fail;
    }
    if (qemu_disk_sync(bfd, shape, err) < 0) goto fail;
    close(ram_fd);
    close(state_fd);
    ram_fd = state_fd = -1;
    unlinkat(bfd, "qemu.pid", 0);
    qemu_meta m = {0};
    snprintf(m.spec.template_name, sizeof m.spec.template_name, "%s", name);
    m.spec.vcpus = shape->vcpus;
    m.spec.memory_mb = shape->memory_mb;
    m.spec.disk_mb = disk_mb;
    m.shape = *shape;
    snprintf(m.template_key, sizeof m.template_key, "%s", key);
    m.state_bytes = qemu_file_size(bfd, QEMU_STATE_FILE);
    m.ram_disk_bytes = qemu_file_disk_bytes(bfd, QEMU_RAM_FILE);
    m.paused_at_unix_ms = qemu_unix_ms();
    if (qemu_meta_write(bfd, QEMU_META_FILE, &m, err) < 0 || qemu_fsync_dir(bfd, err) < 0)
        goto fail;
    if (renameat(d->tpl_dirfd, bname, d->tpl_dirfd, key) < 0) {
        terr_set(err, "rename template %s: %s", key, strerror(errno));
        goto fail;
    }
    close(bfd);
    if (qemu_fsync_dir(d->tpl_dirfd, err) < 0) return -1;
    log_info(
        "event=template_built template=%s key=%s boot_ms=%lld duration_ms=%lld state_bytes=%lld "
        "ram_disk_bytes=%lld",
        name, key, booted - t0, mono_ms() - t0, (long long)m.state_bytes,
        (long long)m.ram_disk_bytes);
    return 0;
fail:
    if (ch) guest_channel_unref(ch);
    qemu_inst_kill(&in);
    if (ram_fd >= 0) close(ram_fd);
    if (state_fd >= 0) close(state_fd);
    close(bfd);
    qemu_rmtree(d->tpl_dirfd, bname, &e2);
    char q[LOG_QUOTE_MAX];
    log_error("event=template_build_failed template=%s key=%s error=\"%s\"", name, key,
              log_quote(err ? err->msg : "", q, sizeof q));
    return -1;
}

/* Marks the template just handed out: in use (shared flock on its fd, held
 * until the caller closes it) and used now (LRU). tpl_mu held. */
static void mark_used(int tplfd)
{
    flock(tplfd, LOCK_SH);
    int f = openat(tplfd, LAST_USED_FILE, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (f >= 0) close(f);
    utimensat(tplfd, LAST_USED_FILE, NULL, 0);
}

typedef struct tpl_age {
    char name[QEMU_TEMPLATE_KEY_MAX];
    struct timespec used;
} tpl_age;

static int older_first(const void *a, const void *b)
{
    const tpl_age *x = a, *y = b;
    if (x->used.tv_sec != y->used.tv_sec) return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
    if (x->used.tv_nsec != y->used.tv_nsec) return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Keeps at most tpl_cache_max committed templates: removes the least
 * recently used ones that nobody holds (exclusive flock, not waiting) and
 * that are not keep. tpl_mu held, so no get opens one meanwhile. */
static void evict(qemu_drv *d, const char *keep)
{
    if (d->tpl_cache_max <= 0) return;
    int dup_fd = dup(d->tpl_dirfd);
    if (dup_fd < 0) return;
    DIR *dir = fdopendir(dup_fd);
    if (!dir) {
        close(dup_fd);
        return;
    }
    rewinddir(dir);
    tpl_age *all = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t l = strlen(e->d_name), sl = strlen(BUILDING_SUFFIX);
        if (e->d_name[0] == '.' || l >= QEMU_TEMPLATE_KEY_MAX ||
            (l > sl && !strcmp(e->d_name + l - sl, BUILDING_SUFFIX)))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            tpl_age *g = realloc(all, nc * sizeof *g);
            if (!g) break;
            all = g;
            cap = nc;
        }
        memcpy(all[n].name, e->d_name, l + 1);
        char p[QEMU_TEMPLATE_KEY_MAX + 32];
        snprintf(p, sizeof p, "%s/" LAST_USED_FILE, e->d_name);
        struct stat st;
        all[n].used = fstatat(d->tpl_dirfd, p, &st, 0) == 0 ? st.st_mtim : (struct timespec){0, 0};
        n++;
    }
    closedir(dir);
    if (n > (size_t)d->tpl_cache_max) {
        qsort(all, n, sizeof *all, older_first);
        size_t left = n;
        for (size_t i = 0; i < n && left > (size_t)d->tpl_cache_max; i++) {
            if (!strcmp(all[i].name, keep)) continue;
            int f = openat(d->tpl_dirfd, all[i].name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (f < 0) continue;
            if (flock(f, LOCK_EX | LOCK_NB) != 0) { /* a create copies from it */
                close(f);
                continue;
            }
            terr er;
            char q[LOG_QUOTE_MAX];
            int rc = qemu_rmtree(d->tpl_dirfd, all[i].name, &er);
            close(f);
            if (rc < 0) {
                log_warn("event=template_evict_failed key=%s error=\"%s\"", all[i].name,
                         log_quote(er.msg, q, sizeof q));
                continue;
            }
            log_info("event=template_evicted key=%s reason=lru cache_max=%d", all[i].name,
                     d->tpl_cache_max);
            left--;
        }
    }
    free(all);
}

int qemu_template_get(qemu_drv *d, const char *name, int vcpus, int memory_mb, int disk_mb,
                      int *tplfd, qemu_meta *meta, terr *err)
{
    qemu_shape shape;
    uint64_t h = 0;
    if (image_shape(d, name, vcpus, memory_mb, &shape, &h, err) < 0) return -1;
    char key[QEMU_TEMPLATE_KEY_MAX];
    int tpl_disk_mb = qemu_disk_template_mb(&shape, disk_mb);
    char disk[24] = "";
    if (tpl_disk_mb) snprintf(disk, sizeof disk, "-d%d", tpl_disk_mb);
    snprintf(key, sizeof key, "%s-%dM-%dc%s-%s-%016llx", name, memory_mb, vcpus, disk, d->accel,
             (unsigned long long)h);
    pthread_mutex_lock(&d->tpl_mu);
    for (;;) {
        if (open_committed(d, key, tplfd, meta) == 0) {
            mark_used(*tplfd);
            pthread_mutex_unlock(&d->tpl_mu);
            return 0;
        }
        if (!is_building(d, key)) break;
        pthread_cond_wait(&d->tpl_cv, &d->tpl_mu);
    }
    qemu_tpl_build *me = calloc(1, sizeof *me);
    if (!me) {
        pthread_mutex_unlock(&d->tpl_mu);
        return terr_set(err, "out of memory");
    }
    snprintf(me->key, sizeof me->key, "%s", key);
    me->next = d->building;
    d->building = me;
    pthread_mutex_unlock(&d->tpl_mu);

    int rc = build(d, name, key, &shape, tpl_disk_mb, err);

    pthread_mutex_lock(&d->tpl_mu);
    for (qemu_tpl_build **pp = &d->building; *pp; pp = &(*pp)->next)
        if (*pp == me) {
            *pp = me->next;
            break;
        }
    free(me);
    pthread_cond_broadcast(&d->tpl_cv);
    if (rc == 0 && open_committed(d, key, tplfd, meta) < 0)
        rc = terr_set(err, "template %s vanished right after its build", key);
    if (rc == 0) {
        mark_used(*tplfd);
        evict(d, key); /* a new template: the cache may now be over its limit */
    }
    pthread_mutex_unlock(&d->tpl_mu);
    return rc;
}

void qemu_template_cleanup(qemu_drv *d)
{
    int dup_fd = dup(d->tpl_dirfd);
    if (dup_fd < 0) return;
    DIR *dir = fdopendir(dup_fd);
    if (!dir) {
        close(dup_fd);
        return;
    }
    rewinddir(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        char q[LOG_QUOTE_MAX], qd[LOG_QUOTE_MAX];
        size_t l = strlen(e->d_name), sl = strlen(BUILDING_SUFFIX);
        bool half = l > sl && !strcmp(e->d_name + l - sl, BUILDING_SUFFIX);
        if (!half) {
            int fd;
            qemu_meta m;
            if (open_committed(d, e->d_name, &fd, &m) == 0) {
                close(fd);
                continue;
            }
        }
        terr er;
        if (qemu_rmtree(d->tpl_dirfd, e->d_name, &er) < 0)
            log_warn("event=template_cleanup_failed dir=\"%s\" error=\"%s\"",
                     log_quote(e->d_name, qd, sizeof qd), log_quote(er.msg, q, sizeof q));
        else
            log_info("event=template_removed dir=\"%s\" reason=%s",
                     log_quote(e->d_name, qd, sizeof qd), half ? "half-built" : "not committed");
    }
    closedir(dir);
}
