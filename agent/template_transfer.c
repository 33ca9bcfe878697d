/* template_transfer: a ready template image leaving one host and arriving at
 * another, in bounded chunks (contract in template_builder.h, "Copies"; the
 * chunk and manifest shapes are sandbox_transfer's). The control plane reads
 * from the source and writes to the target; agents never talk to each other.
 * Nothing of an import is usable before its commit has verified every byte
 * against the digest. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sandbox_transfer.h"
#include "template_builder_internal.h"
#include "torpor_limits.h"

#define INCOMING_PREFIX ".incoming-"

static agent_code fail(terr *err, agent_code c, const char *msg, const char *a)
{
    terr_set(err, msg, a);
    return c;
}

static bool digest_ok(const char *d)
{
    return d && strlen(d) == 64 && strspn(d, "0123456789abcdef") == 64;
}

static int incoming_dir(const template_builder *tb, const char *name, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/" INCOMING_PREFIX "%s", tb->images_dir, name);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

void tb_imports_clean(template_builder *tb)
{
    DIR *d = opendir(tb->images_dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, INCOMING_PREFIX, strlen(INCOMING_PREFIX)) != 0) continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", tb->images_dir, de->d_name) >= (int)sizeof p) continue;
        tb_remove_tree(p);
    }
    closedir(d);
}

/* Imports under way now; one untouched for TB_IMPORT_STALE_SEC (its
 * control plane died) is removed and not counted. */
static size_t imports_active(template_builder *tb)
{
    DIR *d = opendir(tb->images_dir);
    if (!d) return 0;
    size_t n = 0;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, INCOMING_PREFIX, strlen(INCOMING_PREFIX)) != 0) continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (now - st.st_mtime > TB_IMPORT_STALE_SEC) {
            char p[PATH_MAX];
            if (snprintf(p, sizeof p, "%s/%s", tb->images_dir, de->d_name) < (int)sizeof p) {
                char q[LOG_QUOTE_MAX];
                log_warn("event=template_import_stale path=\"%s\"", log_quote(p, q, sizeof q));
                tb_remove_tree(p);
            }
            continue;
        }
        n++;
    }
    closedir(d);
    return n;
}

/* The name is a build, an import or any image of the image dir here. */
static bool name_taken(template_builder *tb, const char *name)
{
    tb_info info;
    terr ign;
    if (tb_ready_info(tb, name, &info, &ign) != AGENT_NOT_FOUND) return true;
    char link[4200];
    struct stat st;
    tb_image_link(tb, name, link, sizeof link);
    return lstat(link, &st) == 0;
}

/* The resolved image directory of a ready entry. */
static agent_code ready_dir(template_builder *tb, const char *name, tb_info *info, char *dir,
                            size_t size, terr *err)
{
    agent_code c = tb_ready_info(tb, name, info, err);
    if (c != AGENT_OK) return c;
    char link[4200];
    tb_image_link(tb, name, link, sizeof link);
    char *real = realpath(link, NULL);
    if (!real || strlen(real) >= size) {
        free(real);
        return fail(err, AGENT_INTERNAL, "template %s: its image is missing on this host", name);
    }
    snprintf(dir, size, "%s", real);
    free(real);
    return AGENT_OK;
}

agent_code tb_image_export(template_builder *tb, const char *name, char digest[65],
                           struct transfer_file *files, size_t max, size_t *n, terr *err)
{
    *n = 0;
    tb_info info;
    char dir[PATH_MAX];
    agent_code c = ready_dir(tb, name, &info, dir, sizeof dir, err);
    if (c != AGENT_OK) return c;
    snprintf(digest, 65, "%s", info.digest);
    DIR *d = opendir(dir);
    if (!d) return fail(err, AGENT_INTERNAL, "open the image of %s", name);
    struct dirent *de;
    c = AGENT_OK;
    while (c == AGENT_OK && (de = readdir(d))) {
        if (!transfer_name_ok(de->d_name)) continue;
        char path[PATH_MAX + 80];
        struct stat st;
        size_t nl = strlen(de->d_name);
        if (nl >= sizeof files[0].name || strlen(dir) + nl + 2 > sizeof path) continue;
        memcpy(path, dir, strlen(dir));
        path[strlen(dir)] = '/';
        memcpy(path + strlen(dir) + 1, de->d_name, nl + 1);
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (*n == max) {
            c = fail(err, AGENT_INTERNAL, "the image of %s has more files than a copy carries",
                     name);
            break;
        }
        transfer_file *f = &files[*n];
        memcpy(f->name, de->d_name, nl + 1);
        if (transfer_file_sha256(path, f->sha256, &f->size, err) != 0) c = AGENT_INTERNAL;
        else (*n)++;
    }
    closedir(d);
    return c;
}

agent_code tb_image_read_chunk(template_builder *tb, const char *name, const char *file,
                               int64_t offset, size_t max_len, uint8_t *buf, size_t *len,
                               bool *zero, terr *err)
{
    *len = 0;
    *zero = false;
    if (!transfer_name_ok(file) || offset < 0)
        return fail(err, AGENT_INVALID_ARGUMENT, "bad file name or offset%s", "");
    tb_info info;
    char dir[PATH_MAX];
    agent_code c = ready_dir(tb, name, &info, dir, sizeof dir, err);
    if (c != AGENT_OK) return c;
    if (max_len == 0 || max_len > TRANSFER_CHUNK_MAX) max_len = TRANSFER_CHUNK_MAX;
    char path[PATH_MAX + 80];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return transfer_file_read(path, offset, buf, max_len, len, zero, err);
}

agent_code tb_image_write_chunk(template_builder *tb, const char *name, const char *file,
                                int64_t offset, const uint8_t *data, size_t len, size_t zero_len,
                                terr *err)
{
    if (!limits_template_name_valid(name) || !transfer_name_ok(file) || offset < 0 ||
        len > TRANSFER_CHUNK_MAX || zero_len > TRANSFER_CHUNK_MAX ||
        offset + (int64_t)len + (int64_t)zero_len > TB_IMPORT_FILE_MAX)
        return fail(err, AGENT_INVALID_ARGUMENT, "bad template name, file name, offset or length%s",
                    "");
    if (name_taken(tb, name))
        return fail(err, AGENT_ALREADY_EXISTS, "template %s already exists on this host", name);
    char dir[PATH_MAX], path[PATH_MAX + 80];
    if (incoming_dir(tb, name, dir, sizeof dir) != 0)
        return fail(err, AGENT_INTERNAL, "path too long%s", "");
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (imports_active(tb) >= TB_IMPORTS_MAX) {
            terr_set(err, "%d template copies are already arriving on this host (the limit)",
                     TB_IMPORTS_MAX);
            return AGENT_FAILED_PRECONDITION;
        }
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            terr_set(err, "create %s: %s", dir, strerror(errno));
            return AGENT_INTERNAL;
        }
    }
    if (access(path, F_OK) != 0) {
        /* A new file: bounded in number like a sandbox's. */
        size_t files = 0;
        DIR *d = opendir(dir);
        for (struct dirent *de; d && (de = readdir(d));) files += de->d_name[0] != '.';
        if (d) closedir(d);
        if (files >= TRANSFER_FILES_MAX)
            return fail(err, AGENT_INVALID_ARGUMENT, "too many files in the copy of %s", name);
    }
    agent_code c = transfer_file_write(path, offset, data, len, zero_len, err);
    utimensat(AT_FDCWD, dir, NULL, 0); /* alive: not stale */
    return c;
}

static void fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Verifies the incoming files: manifest (size, sha256), the digest, the
 * boot files; completes trailing holes and makes rootfs.img read-only. */
static agent_code verify(const char *dir, const char *digest, const transfer_file *files, size_t n,
                         int64_t *total, terr *err)
{
    *total = 0;
    bool has_rootfs = false, has_sum = false;
    for (size_t i = 0; i < n; i++) {
        if (!transfer_name_ok(files[i].name) || files[i].size < 0 ||
            files[i].size > TB_IMPORT_FILE_MAX)
            return fail(err, AGENT_INVALID_ARGUMENT, "bad file entry %s", files[i].name);
        char path[PATH_MAX + 80];
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 ||
            (st.st_size < files[i].size && ftruncate(fd, files[i].size) != 0)) {
            if (fd >= 0) close(fd);
            terr_set(err, "complete %s: %s", path, strerror(errno));
            return AGENT_INTERNAL;
        }
        fsync(fd);
        close(fd);
        char sum[65];
        int64_t size;
        if (transfer_file_sha256(path, sum, &size, err) != 0) return AGENT_INTERNAL;
        if (size != files[i].size || strcmp(sum, files[i].sha256) != 0) {
            terr_set(
                err, "file %s arrived damaged (size %lld, want %lld; sha256 %.16s, want %.16s)",
                files[i].name, (long long)size, (long long)files[i].size, sum, files[i].sha256);
            return AGENT_FAILED_PRECONDITION;
        }
        *total += size;
        /* Read-only, and readable by the VM user QEMU runs as (a base disk,
         * a kernel, an initramfs), as the builder leaves its own images. */
        if (chmod(path, 0444) != 0) {
            terr_set(err, "chmod %s: %s", path, strerror(errno));
            return AGENT_INTERNAL;
        }
        if (strcmp(files[i].name, "rootfs.img") == 0) {
            has_rootfs = true;
            if (strcmp(sum, digest) != 0) {
                terr_set(err, "rootfs.img has sha256 %.16s, not the template's digest %.16s", sum,
                         digest);
                return AGENT_FAILED_PRECONDITION;
            }
        } else if (strcmp(files[i].name, "rootfs.sha256") == 0) {
            char said[80];
            if (tb_read_small(path, said, sizeof said) != 0 || strcmp(said, digest) != 0)
                return fail(err, AGENT_FAILED_PRECONDITION,
                            "rootfs.sha256 does not name the digest %.16s", digest);
            has_sum = true;
        }
    }
    if (!has_rootfs || !has_sum || !tb_image_complete(dir))
        return fail(err, AGENT_INVALID_ARGUMENT,
                    "an image needs rootfs.img, rootfs.sha256, vmlinux and initramfs.cpio.gz%s",
                    "");
    return AGENT_OK;
}

agent_code tb_image_commit(template_builder *tb, const char *name, const char *digest,
                           const struct transfer_file *files, size_t n, tb_info *out, terr *err)
{
    if (!limits_template_name_valid(name) || !digest_ok(digest) || n == 0 || n > TRANSFER_FILES_MAX)
        return fail(err, AGENT_INVALID_ARGUMENT, "bad template name, digest or file list%s", "");
    tb_info info;
    terr ign;
    agent_code have = tb_ready_info(tb, name, &info, &ign);
    if (have == AGENT_OK && strcmp(info.digest, digest) == 0) {
        *out = info; /* a repeated commit */
        return AGENT_OK;
    }
    if (have != AGENT_NOT_FOUND || name_taken(tb, name))
        return fail(err, AGENT_ALREADY_EXISTS, "template %s already exists on this host", name);
    char dir[PATH_MAX], final[PATH_MAX];
    if (incoming_dir(tb, name, dir, sizeof dir) != 0 ||
        snprintf(final, sizeof final, "%s/%s", tb->images_dir, digest) >= (int)sizeof final)
        return fail(err, AGENT_INTERNAL, "path too long%s", "");
    struct stat st;
    if (stat(dir, &st) != 0)
        return fail(err, AGENT_NOT_FOUND, "no copy of template %s is arriving", name);
    int64_t total;
    agent_code c = verify(dir, digest, files, n, &total, err);
    if (c != AGENT_OK) return c;
    /* Made 0700 while arriving (nobody else may read a partial copy); verified
     * now, so the VM user may enter it like a built image's directory. */
    if (chmod(dir, 0755) != 0) {
        terr_set(err, "chmod %s: %s", dir, strerror(errno));
        return AGENT_INTERNAL;
    }
    if (lstat(final, &st) == 0 && stat(final, &st) != 0) unlink(final); /* a dangling alias */
    if (stat(final, &st) == 0) {
        tb_remove_tree(dir); /* the same content is already here (verified when it came) */
    } else if (rename(dir, final) != 0) {
        terr_set(err, "rename %s: %s", dir, strerror(errno));
        return AGENT_INTERNAL;
    }
    fsync_path(tb->images_dir, O_RDONLY | O_DIRECTORY);
    bool same;
    c = tb_register_import(tb, name, digest, total, out, &same, err);
    if (c == AGENT_ALREADY_EXISTS && same) return AGENT_OK;
    if (c != AGENT_OK) return c;
    /* Linked last: the name is usable only now. */
    char link[4200], tmp[4300];
    tb_image_link(tb, name, link, sizeof link);
    snprintf(tmp, sizeof tmp, "%s/.%s.link", tb->image_dir, name);
    unlink(tmp);
    if (symlink(final, tmp) != 0 || rename(tmp, link) != 0) {
        terr_set(err, "link %s: %s", link, strerror(errno));
        unlink(tmp);
        terr derr;
        tb_delete(tb, name, &derr);
        return AGENT_INTERNAL;
    }
    fsync_path(tb->image_dir, O_RDONLY | O_DIRECTORY);
    char q[LOG_QUOTE_MAX];
    log_info("event=template_imported name=\"%s\" digest=%.16s files=%zu size_bytes=%lld",
             log_quote(name, q, sizeof q), digest, n, (long long)total);
    return AGENT_OK;
}

agent_code tb_image_abort(template_builder *tb, const char *name, terr *err)
{
    if (!limits_template_name_valid(name))
        return fail(err, AGENT_INVALID_ARGUMENT, "bad template name%s", "");
    char dir[PATH_MAX];
    if (incoming_dir(tb, name, dir, sizeof dir) != 0)
        return fail(err, AGENT_INTERNAL, "path too long%s", "");
    struct stat st;
    if (lstat(dir, &st) != 0) return AGENT_OK; /* nothing to abort */
    tb_remove_tree(dir);
    char q[LOG_QUOTE_MAX];
    log_info("event=template_import_aborted name=\"%s\"", log_quote(name, q, sizeof q));
    return AGENT_OK;
}
