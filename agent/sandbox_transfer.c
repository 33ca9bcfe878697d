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

agent_code transfer_write_chunk(lifecycle *lc, const char *state_dir, const char *id,
                                const char *name, int64_t offset, const uint8_t *data, size_t len,
                                size_t zero_len, terr *err)
{
    if (!limits_sandbox_id_valid(id) || !transfer_name_ok(name) || offset < 0 || len > TRANSFER_CHUNK_MAX ||
        zero_len > TRANSFER_CHUNK_MAX)
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

/* A disk overlay only works on its exact base: the base image must be here
 * at the same path with the same digest. */
static agent_code check_base_image(const char *meta_path, terr *err)
{
    char rootfs[PATH_MAX], digest[80];
    meta_value(meta_path, "rootfs", rootfs, sizeof rootfs);
    meta_value(meta_path, "base_digest", digest, sizeof digest);
    if (!rootfs[0]) return AGENT_OK; /* no root disk (e.g. minimal) */
    char dpath[PATH_MAX + 32];
    snprintf(dpath, sizeof dpath, "%s", rootfs);
    char *slash = strrchr(dpath, '/');
    if (!slash)
        return bad(err, AGENT_FAILED_PRECONDITION, "snapshot names a relative base image %s%s",
                   rootfs, "");
    snprintf(slash + 1, sizeof dpath - (size_t)(slash + 1 - dpath), "rootfs.sha256");
    char here[80] = "";
    FILE *f = fopen(dpath, "re");
    if (f) {
        if (!fgets(here, sizeof here, f)) here[0] = '\0';
        fclose(f);
        here[strcspn(here, "\r\n")] = '\0';
    }
    if (access(rootfs, R_OK) != 0 || strcmp(here, digest) != 0) {
        terr_set(
            err,
            "this host lacks the sandbox's base image %s with digest %s (here: %s); build or copy the "
            "template image first",
            rootfs, digest, here[0] ? here : "none");
        return AGENT_FAILED_PRECONDITION;
    }
    return AGENT_OK;
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
            agent_code c = check_base_image(path, err);
            if (c != AGENT_OK) return c;
        }
    }
    if (!has_meta)
        return bad(err, AGENT_INVALID_ARGUMENT,
                   "sandbox %s: no committed snapshot (meta) in the transfer%s", id, "");
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
