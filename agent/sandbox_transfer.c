#include "sandbox_transfer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs_util.h"
#include "log.h"
#include "torpor_limits.h"

#define INCOMING_PREFIX ".incoming-"

bool transfer_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof((transfer_file *)0)->name || name[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static agent_code bad(terr *err, agent_code c, const char *fmt, const char *a, const char *b)
{
    terr_set(err, fmt, a, b);
    return c;
}

/* <state>/sandboxes/<id> (incoming: .incoming-<id>), optionally /<name>. */
static int path_of(char *out, size_t size, const char *state_dir, const char *id, bool incoming,
                   const char *name)
{
    int n = snprintf(out, size, "%s/sandboxes/%s%s%s%s", state_dir, incoming ? INCOMING_PREFIX : "",
                     id, name ? "/" : "", name ? name : "");
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static agent_code require_paused(lifecycle *lc, const char *id, terr *err)
{
    lifecycle_info info;
    agent_code c = lifecycle_get(lc, id, &info, err);
    if (c != AGENT_OK) return c;
    if (info.status != SANDBOX_PAUSED)
        return bad(err, AGENT_FAILED_PRECONDITION, "sandbox %s is not paused (%s)", id,
                   sandbox_status_name(info.status));
    return AGENT_OK;
}

int transfer_file_sha256(const char *path, char out[65], int64_t *size, terr *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return terr_set(err, "open %s: %s", path, strerror(errno));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t *buf = malloc(TRANSFER_CHUNK_MAX);
    int rc = -1;
    *size = 0;
    if (!md || !buf || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        terr_set(err, "sha256: out of memory");
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf, TRANSFER_CHUNK_MAX);
        if (r < 0) {
            if (errno == EINTR) continue;
            terr_set(err, "read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0) break;
        EVP_DigestUpdate(md, buf, (size_t)r);
        *size += r;
    }
    unsigned char dg[32];
    unsigned int dl = 0;
    if (EVP_DigestFinal_ex(md, dg, &dl) != 1 || dl != 32) {
        terr_set(err, "sha256 of %s failed", path);
        goto out;
    }
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", dg[i]);
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    free(buf);
    close(fd);
    return rc;
}

agent_code transfer_export_manifest(lifecycle *lc, const char *state_dir, const char *id,
                                    transfer_file *files, size_t *n, terr *err)
{
    *n = 0;
    agent_code c = require_paused(lc, id, err);
    if (c != AGENT_OK) return c;
    char dir[PATH_MAX];
    if (path_of(dir, sizeof dir, state_dir, id, false, NULL) != 0)
        return bad(err, AGENT_INTERNAL, "path too long%s%s", "", "");
    DIR *d = opendir(dir);
    if (!d) {
        terr_set(err, "open %s: %s", dir, strerror(errno));
        return AGENT_INTERNAL;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!transfer_name_ok(e->d_name)) continue;
        char path[PATH_MAX];
        struct stat st;
        if (path_of(path, sizeof path, state_dir, id, false, e->d_name) != 0 ||
            lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue; /* sockets, pid files gone, links: not part of a snapshot */
        if (*n == TRANSFER_FILES_MAX) {
            closedir(d);
            return bad(err, AGENT_INTERNAL, "sandbox %s has more files than a transfer carries%s",
                       id, "");
        }
        transfer_file *f = &files[*n];
        snprintf(f->name, sizeof f->name, "%s", e->d_name);
        if (transfer_file_sha256(path, f->sha256, &f->size, err) != 0) {
            closedir(d);
            return AGENT_INTERNAL;
        }
        (*n)++;
    }
    closedir(d);
    return AGENT_OK;
}

agent_code transfer_read_chunk(lifecycle *lc, const char *state_dir, const char *id,
                               const char *name, int64_t offset, size_t max_len, uint8_t *buf,
                               size_t *len, bool *zero, terr *err)
{
    *len = 0;
    *zero = false;
    if (!transfer_name_ok(name) || offset < 0)
        return bad(err, AGENT_INVALID_ARGUMENT, "bad file name or offset%s%s", "", "");
    agent_code c = require_paused(lc, id, err);
    if (c != AGENT_OK) return c;
    if (max_len == 0 || max_len > TRANSFER_CHUNK_MAX) max_len = TRANSFER_CHUNK_MAX;
    char path[PATH_MAX];
    if (path_of(path, sizeof path, state_dir, id, false, name) != 0)
        return bad(err, AGENT_INTERNAL, "path too long%s%s", "", "");
    return transfer_file_read(path, offset, buf, max_len, len, zero, err);
}

agent_code transfer_write_chunk(lifecycle *lc, const char *state_dir, const char *id,
                                const char *name, int64_t offset, const uint8_t *data, size_t len,
                                size_t zero_len, terr *err)
{
    if (!limits_sandbox_id_valid(id) || !transfer_name_ok(name) || offset < 0 ||
        len > TRANSFER_CHUNK_MAX || zero_len > TRANSFER_CHUNK_MAX)
        return bad(err, AGENT_INVALID_ARGUMENT, "bad sandbox id, file name, offset or length%s%s",
                   "", "");
    lifecycle_info info;
    terr ign;
    if (lifecycle_get(lc, id, &info, &ign) == AGENT_OK)
        return bad(err, AGENT_ALREADY_EXISTS, "sandbox %s is already held here%s", id, "");
    char dir[PATH_MAX], path[PATH_MAX];
    if (path_of(dir, sizeof dir, state_dir, id, true, NULL) != 0 ||
        path_of(path, sizeof path, state_dir, id, true, name) != 0)
        return bad(err, AGENT_INTERNAL, "path too long%s%s", "", "");
    if (fs_mkdir_p(dir, 0700, err) != 0) return AGENT_INTERNAL;
    return transfer_file_write(path, offset, data, len, zero_len, err);
}

agent_code transfer_file_read(const char *path, int64_t offset, uint8_t *buf, size_t max_len,
                              size_t *len, bool *zero, terr *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        terr_set(err, "open %s: %s", path, strerror(errno));
        return errno == ENOENT ? AGENT_NOT_FOUND : AGENT_INTERNAL;
    }
    size_t got = 0;
    while (got < max_len) {
        ssize_t r = pread(fd, buf + got, max_len - got, offset + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            terr_set(err, "read %s: %s", path, strerror(errno));
            close(fd);
            return AGENT_INTERNAL;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    size_t i = 0;
    while (i < got && buf[i] == 0) i++;
    *zero = got > 0 && i == got;
    return AGENT_OK;
}

agent_code transfer_file_write(const char *path, int64_t offset, const uint8_t *data, size_t len,
                               size_t zero_len, terr *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        terr_set(err, "open %s: %s", path, strerror(errno));
        return AGENT_INTERNAL;
    }
    int rc = 0;
    if (zero_len > 0) {
        /* A hole: only make sure the file reaches that far. */
        struct stat st;
        if (fstat(fd, &st) != 0 ||
            (st.st_size < offset + (off_t)zero_len && ftruncate(fd, offset + (off_t)zero_len) != 0))
            rc = -1;
    } else {
        size_t done = 0;
        while (done < len) {
            ssize_t w = pwrite(fd, data + done, len - done, offset + (off_t)done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                rc = -1;
                break;
            }
            done += (size_t)w;
        }
    }
    if (rc != 0) terr_set(err, "write %s: %s", path, strerror(errno));
    close(fd);
    return rc == 0 ? AGENT_OK : AGENT_INTERNAL;
}

/* The value of "key=" in the meta file at path ("" when absent). */
static void meta_value(const char *path, const char *key, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f) return;
    char line[PATH_MAX + 64];
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, key, kl) == 0 && line[kl] == '=') {
            snprintf(out, size, "%s", line + kl + 1);
            break;
        }
    }
    fclose(f);
}

/* The digest in the rootfs.sha256 next to image path ("" when none). */
static void digest_next_to(const char *image, char *out, size_t size)
{
    out[0] = '\0';
    char dpath[PATH_MAX + 32];
    snprintf(dpath, sizeof dpath, "%s", image);
    char *slash = strrchr(dpath, '/');
    if (!slash) return;
    snprintf(slash + 1, sizeof dpath - (size_t)(slash + 1 - dpath), "rootfs.sha256");
    FILE *f = fopen(dpath, "re");
    if (!f) return;
    if (!fgets(out, (int)size, f)) out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
}

/* Runs argv (no shell) and waits; 0 when it exited 0. */
static int run_quiet(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Rewrites the values of rootfs= (and kernel=/initrd= when given) in the
 * meta file (tmp + fsync + rename). */
static int meta_rewrite(const char *meta_path, const char *rootfs, const char *kernel,
                        const char *initrd, terr *err)
{
    FILE *in = fopen(meta_path, "re");
    if (!in) return terr_set(err, "open %s: %s", meta_path, strerror(errno));
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", meta_path);
    FILE *out = fopen(tmp, "we");
    if (!out) {
        fclose(in);
        return terr_set(err, "open %s: %s", tmp, strerror(errno));
    }
    char line[PATH_MAX + 64];
    while (fgets(line, sizeof line, in)) {
        if (strncmp(line, "rootfs=", 7) == 0) fprintf(out, "rootfs=%s\n", rootfs);
        else if (kernel && strncmp(line, "kernel=", 7) == 0) fprintf(out, "kernel=%s\n", kernel);
        else if (initrd && strncmp(line, "initrd=", 7) == 0) fprintf(out, "initrd=%s\n", initrd);
        else fputs(line, out);
    }
    fclose(in);
    int rc = fflush(out) != 0 || fsync(fileno(out)) != 0 ? -1 : 0;
    fclose(out);
    if (rc != 0 || rename(tmp, meta_path) != 0) {
        unlink(tmp);
        return terr_set(err, "rewrite %s: %s", meta_path, strerror(errno));
    }
    return 0;
}

/* A disk overlay only works on its exact base: the base image must be here
 * with the same digest. At the same path (hosts sharing an image cache, or
 * a `debian` built from one recipe), or else as a template image this host
 * holds by digest (<state_dir>/template-images/<digest>/: a copy, or an
 * image the builder made, docs/templates.md "Copies"): then the overlay is
 * pointed at it (qemu-img rebase -u: the bytes are the same, only the path
 * changes) and the meta says so (and names this host's kernel and initrd
 * of that image when the source's are not here). */
static agent_code check_base_image(const char *state_dir, const char *dir, const char *meta_path,
                                   terr *err)
{
    char rootfs[PATH_MAX], digest[80];
    meta_value(meta_path, "rootfs", rootfs, sizeof rootfs);
    meta_value(meta_path, "base_digest", digest, sizeof digest);
    if (!rootfs[0]) return AGENT_OK; /* no root disk (e.g. minimal) */
    if (!strrchr(rootfs, '/'))
        return bad(err, AGENT_FAILED_PRECONDITION, "snapshot names a relative base image %s%s",
                   rootfs, "");
    char here[80];
    digest_next_to(rootfs, here, sizeof here);
    if (access(rootfs, R_OK) == 0 && strcmp(here, digest) == 0) return AGENT_OK;
    char alt[PATH_MAX], alt_dig[80] = "";
    bool have_alt = strlen(digest) == 64 && strspn(digest, "0123456789abcdef") == 64 &&
                    snprintf(alt, sizeof alt, "%s/template-images/%s/rootfs.img", state_dir,
                             digest) < (int)sizeof alt;
    if (have_alt) digest_next_to(alt, alt_dig, sizeof alt_dig);
    char *real = have_alt && access(alt, R_OK) == 0 && strcmp(alt_dig, digest) == 0
                     ? realpath(alt, NULL)
                     : NULL;
    if (!real || strpbrk(real, ",:\n") || strlen(real) >= PATH_MAX - 32) {
        free(real);
        terr_set(
            err,
            "this host lacks the sandbox's base image %s with digest %s (here: %s); build or copy the "
            "template image first",
            rootfs, digest, here[0] ? here : "none");
        return AGENT_FAILED_PRECONDITION;
    }
    char overlay[PATH_MAX + 16];
    snprintf(overlay, sizeof overlay, "%s/root.qcow2", dir);
    static const char *const imgs[] = {"/usr/bin/qemu-img", "/usr/local/bin/qemu-img"};
    const char *img = NULL;
    for (size_t i = 0; i < sizeof imgs / sizeof imgs[0] && !img; i++)
        if (access(imgs[i], X_OK) == 0) img = imgs[i];
    char *argv[] = {(char *)(img ? img : "qemu-img"),
                    "rebase",
                    "-u",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    "-b",
                    real,
                    overlay,
                    NULL};
    if (access(overlay, F_OK) == 0 && (!img || run_quiet(argv) != 0)) {
        terr_set(err, "could not point the disk overlay of the snapshot at %s (qemu-img rebase)",
                 real);
        free(real);
        return AGENT_INTERNAL;
    }
    char kernel[PATH_MAX], initrd[PATH_MAX], k2[PATH_MAX], i2[PATH_MAX];
    meta_value(meta_path, "kernel", kernel, sizeof kernel);
    meta_value(meta_path, "initrd", initrd, sizeof initrd);
    char base_dir[PATH_MAX];
    snprintf(base_dir, sizeof base_dir, "%s", real);
    *strrchr(base_dir, '/') = '\0';
    bool kmiss = kernel[0] && access(kernel, R_OK) != 0;
    bool imiss = initrd[0] && access(initrd, R_OK) != 0;
    snprintf(k2, sizeof k2, "%.*s/vmlinux", PATH_MAX - 16, base_dir);
    snprintf(i2, sizeof i2, "%.*s/initramfs.cpio.gz", PATH_MAX - 32, base_dir);
    int rc = meta_rewrite(meta_path, real, kmiss ? k2 : NULL, imiss ? i2 : NULL, err);
    if (rc == 0) log_info("event=sandbox_import_rebased digest=%.16s", digest);
    free(real);
    return rc == 0 ? AGENT_OK : AGENT_INTERNAL;
}

agent_code transfer_commit(lifecycle *lc, const char *state_dir, const runtime_spec *spec,
                           const transfer_file *files, size_t n, terr *err)
{
    const char *id = spec->sandbox_id;
    if (!limits_sandbox_id_valid(id) || n == 0 || n > TRANSFER_FILES_MAX)
        return bad(err, AGENT_INVALID_ARGUMENT, "bad sandbox id or file list for %s%s", id, "");
    char dir[PATH_MAX], final[PATH_MAX];
    if (path_of(dir, sizeof dir, state_dir, id, true, NULL) != 0 ||
        path_of(final, sizeof final, state_dir, id, false, NULL) != 0)
        return bad(err, AGENT_INTERNAL, "path too long%s%s", "", "");
    struct stat st;
    if (stat(dir, &st) != 0) {
        /* Repeated commit: already in place and adopted. */
        lifecycle_info info;
        terr ign;
        if (stat(final, &st) == 0 && lifecycle_get(lc, id, &info, &ign) == AGENT_OK &&
            info.status == SANDBOX_PAUSED)
            return AGENT_OK;
        return bad(err, AGENT_NOT_FOUND, "no import of sandbox %s in progress%s", id, "");
    }
    bool has_meta = false;
    for (size_t i = 0; i < n; i++) {
        if (!transfer_name_ok(files[i].name))
            return bad(err, AGENT_INVALID_ARGUMENT, "bad file name%s%s", "", "");
        char path[PATH_MAX];
        path_of(path, sizeof path, state_dir, id, true, files[i].name);
        /* Trailing holes were never written. */
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
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
                err,
                "file %s of sandbox %s arrived damaged (size %lld, want %lld; sha256 %s, want %s)",
                files[i].name, id, (long long)size, (long long)files[i].size, sum, files[i].sha256);
            return AGENT_FAILED_PRECONDITION;
        }
        if (strcmp(files[i].name, "meta") == 0) {
            has_meta = true;
        }
    }
    if (!has_meta)
        return bad(err, AGENT_INVALID_ARGUMENT,
                   "sandbox %s: no committed snapshot (meta) in the transfer%s", id, "");
    /* After every file is verified: this may point the overlay elsewhere. */
    char meta_path[PATH_MAX];
    path_of(meta_path, sizeof meta_path, state_dir, id, true, "meta");
    agent_code bc = check_base_image(state_dir, dir, meta_path, err);
    if (bc != AGENT_OK) return bc;
    lifecycle_info info;
    terr ign;
    if (lifecycle_get(lc, id, &info, &ign) == AGENT_OK || stat(final, &st) == 0)
        return bad(err, AGENT_ALREADY_EXISTS, "sandbox %s is already held here%s", id, "");
    if (rename(dir, final) != 0) {
        terr_set(err, "rename %s: %s", dir, strerror(errno));
        return AGENT_INTERNAL;
    }
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s/sandboxes", state_dir);
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd >= 0) {
        fsync(pfd);
        close(pfd);
    }
    agent_code c = lifecycle_adopt_paused(lc, spec, err);
    if (c == AGENT_OK) log_info("event=sandbox_imported sandbox_id=%s files=%zu", id, n);
    return c;
}

agent_code transfer_abort(const char *state_dir, const char *id, terr *err)
{
    if (!limits_sandbox_id_valid(id))
        return bad(err, AGENT_INVALID_ARGUMENT, "bad sandbox id%s%s", "", "");
    char dir[PATH_MAX];
    if (path_of(dir, sizeof dir, state_dir, id, true, NULL) != 0)
        return bad(err, AGENT_INTERNAL, "path too long%s%s", "", "");
    DIR *d = opendir(dir);
    if (!d) return AGENT_OK; /* nothing to abort */
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path) unlink(path);
    }
    closedir(d);
    if (rmdir(dir) != 0) {
        terr_set(err, "rmdir %s: %s", dir, strerror(errno));
        return AGENT_INTERNAL;
    }
    log_info("event=sandbox_import_aborted sandbox_id=%s", id);
    return AGENT_OK;
}
