/* guest_files: bounded file read, atomic file write with mkdir -p. */
#include "guest_files.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fd_io.h"

/* Sets status + "<what>: <path>" style message. Returns 0, or -1 on OOM. */
static int set_status(gp_status_result *res, int status, const char *path, terr *err)
{
    char msg[700];
    switch (status) {
    case ENOENT: snprintf(msg, sizeof msg, "no such file: %.600s", path); break;
    case EISDIR: snprintf(msg, sizeof msg, "is a directory: %.600s", path); break;
    case EACCES: snprintf(msg, sizeof msg, "permission denied: %.600s", path); break;
    case EFBIG:
        snprintf(msg, sizeof msg, "file too large (limit %u bytes): %.600s", GP_FILE_MAX, path);
        break;
    default: snprintf(msg, sizeof msg, "%s: %.600s", strerror(status), path); break;
    }
    res->status = status;
    res->message = strdup(msg);
    if (!res->message) return terr_set(err, "file: out of memory");
    return 0;
}

static int read_fail(gp_read_result *res, int status, const char *path, terr *err)
{
    gp_status_result s = {0};
    if (set_status(&s, status, path, err) < 0) return -1;
    res->status = s.status;
    res->message = s.message;
    res->data = malloc(1);
    res->len = 0;
    if (!res->data) {
        gp_read_result_free(res);
        return terr_set(err, "file: out of memory");
    }
    return 0;
}

int guest_files_read(const gp_read_file_req *req, gp_read_result *res, terr *err)
{
    memset(res, 0, sizeof *res);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    int fd = open(req->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return read_fail(res, errno, req->path, err);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return read_fail(res, e, req->path, err);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return read_fail(res, EISDIR, req->path, err);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return read_fail(res, EINVAL, req->path, err);
    }
    if ((uint64_t)st.st_size > GP_FILE_MAX) {
        close(fd);
        return read_fail(res, EFBIG, req->path, err);
    }
    /* Read to EOF rather than trusting st_size (/proc files say 0), but
     * size the buffer from st_size first: growing by doubling would need up
     * to twice the file's size in a guest that may have ~56 MiB free. */
    gp_buf b;
    gp_buf_init(&b);
    if (st.st_size > 0) {
        b.data = malloc((size_t)st.st_size + 1);
        if (!b.data) {
            close(fd);
            return terr_set(err, "file: out of memory for %lld bytes", (long long)st.st_size);
        }
        b.cap = (size_t)st.st_size + 1; /* +1: EOF is seen without a regrow */
    }
    for (;;) {
        uint8_t chunk[65536];
        size_t room = b.cap - b.len;
        uint8_t *dst = room > 0 ? b.data + b.len : chunk;
        size_t want = room > 0 ? room : sizeof chunk;
        ssize_t r = read(fd, dst, want);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            gp_buf_free(&b);
            return read_fail(res, e, req->path, err);
        }
        if (r == 0) break;
        if (b.len + (size_t)r > GP_FILE_MAX) {
            close(fd);
            gp_buf_free(&b);
            return read_fail(res, EFBIG, req->path, err);
        }
        if (dst != chunk) {
            b.len += (size_t)r;
        } else if (gp_buf_append(&b, chunk, (size_t)r, err) < 0) {
            close(fd);
            gp_buf_free(&b);
            return -1;
        }
    }
    close(fd);
    res->len = b.len;
    res->data = b.data ? b.data : malloc(1);
    res->message = strdup("");
    if (!res->data || !res->message) {
        gp_read_result_free(res);
        return terr_set(err, "file: out of memory");
    }
    return 0;
}

/* mkdir -p of every parent of path (path is absolute). Returns 0 or errno. */
static int make_parents(const char *path)
{
    char *p = strdup(path);
    if (!p) return ENOMEM;
    int rc = 0;
    for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            rc = errno;
            break;
        }
        *s = '/';
    }
    free(p);
    return rc;
}

int guest_files_write(const gp_write_file_req *req, gp_status_result *res, terr *err)
{
    memset(res, 0, sizeof *res);
    const char *path = req->path;
    size_t plen = strlen(path);
    if (path[0] != '/') {
        res->status = EINVAL;
        res->message = strdup("path must be absolute");
        return res->message ? 0 : terr_set(err, "file: out of memory");
    }
    if (path[plen - 1] == '/') return set_status(res, EISDIR, path, err);
    if (req->len > GP_FILE_MAX) return set_status(res, EFBIG, path, err);
    int e = make_parents(path);
    if (e) return set_status(res, e, path, err);

    /* Temp name in the same directory so rename() is atomic. Unique per
     * thread (a thread runs one request at a time), so concurrent writes of
     * one path never share it. */
    char *tmp = malloc(plen + 64);
    if (!tmp) return terr_set(err, "file: out of memory");
    const char *slash = strrchr(path, '/');
    size_t dl = (size_t)(slash - path) + 1;
    memcpy(tmp, path, dl);
    snprintf(tmp + dl, plen + 64 - dl, ".torpor-tmp.%d.%d", (int)getpid(), (int)gettid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        e = errno;
        free(tmp);
        return set_status(res, e, path, err);
    }
    e = fd_write_all(fd, req->content, req->len) != 0 ? errno : 0;
    if (!e && fchmod(fd, req->mode & 07777) < 0) e = errno;
    if (!e && fsync(fd) < 0) e = errno;
    if (close(fd) < 0 && !e) e = errno;
    if (!e && rename(tmp, path) < 0) e = errno;
    if (e) unlink(tmp);
    free(tmp);
    if (e) return set_status(res, e, path, err);
    res->message = strdup("");
    return res->message ? 0 : terr_set(err, "file: out of memory");
}

/* ---- chunked files ---- */

static int chunk_fail(gp_chunk_result *res, int status, const char *path, terr *err)
{
    gp_status_result s = {0};
    if (set_status(&s, status, path, err) < 0) return -1;
    res->status = s.status;
    res->message = s.message;
    return 0;
}

/* "<dir of path>/.torpor-up.<id>" (malloc'd) or NULL. */
static char *upload_temp(const char *path, const char *id)
{
    const char *slash = strrchr(path, '/');
    size_t dl = (size_t)(slash - path) + 1, n = dl + strlen(id) + 16;
    char *tmp = malloc(n);
    if (!tmp) return NULL;
    memcpy(tmp, path, dl);
    snprintf(tmp + dl, n - dl, ".torpor-up.%s", id);
    return tmp;
}

/* Removes upload temp files of path's directory untouched for
 * GUEST_UPLOAD_STALE_SEC: uploads cut short by a pause, a destroyed agent
 * connection or a dead control plane. A live upload writes its temp file at
 * least once per chunk deadline (50 s), so it is never this old. */
static void remove_stale_uploads(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dl = (size_t)(slash - path);
    char *dir = strndup(path, dl ? dl : 1);
    if (!dir) return;
    DIR *d = opendir(dir);
    free(dir);
    if (!d) return;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".torpor-up.", 11) != 0) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            now - st.st_mtime > GUEST_UPLOAD_STALE_SEC)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

int guest_files_write_chunk(const gp_write_chunk_req *req, gp_chunk_result *res, terr *err)
{
    memset(res, 0, sizeof *res);
    const char *path = req->path;
    size_t plen = strlen(path);
    if (path[0] != '/' || !gp_upload_id_valid(req->upload_id))
        return chunk_fail(res, EINVAL, path, err);
    if (path[plen - 1] == '/') return chunk_fail(res, EISDIR, path, err);
    char *tmp = upload_temp(path, req->upload_id);
    if (!tmp) return terr_set(err, "file: out of memory");
    int e = 0, fd = -1;
    struct stat st;
    if (req->flags & GP_CHUNK_F_ABORT) {
        unlink(tmp);
        free(tmp);
        res->message = strdup("");
        return res->message ? 0 : terr_set(err, "file: out of memory");
    }
    if (req->offset == 0) {
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            e = EISDIR;
            goto fail;
        }
        if ((e = make_parents(path))) goto fail;
        remove_stale_uploads(path);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    } else {
        fd = open(tmp, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        /* A later chunk without its temp file: the upload was aborted or
         * never began (ENOENT would read as "no such file: <path>"). */
        e = errno == ENOENT && req->offset ? ESTALE : errno;
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        e = errno;
        goto fail;
    }
    if ((uint64_t)st.st_size < req->offset) {
        e = EINVAL; /* a gap: chunks out of order */
        goto fail;
    }
    if ((uint64_t)st.st_size > req->offset && ftruncate(fd, (off_t)req->offset) < 0) {
        e = errno;
        goto fail;
    }
    const uint8_t *p = req->data;
    size_t left = req->len;
    off_t at = (off_t)req->offset;
    while (left > 0) {
        ssize_t w = pwrite(fd, p, left, at);
        if (w < 0) {
            if (errno == EINTR) continue;
            e = errno;
            goto fail;
        }
        p += w;
        at += w;
        left -= (size_t)w;
    }
    res->size = (uint64_t)at;
    if (req->flags & GP_CHUNK_F_COMMIT) {
        if (fchmod(fd, (req->mode ? req->mode : 0644) & 07777) < 0 || fsync(fd) < 0) {
            e = errno;
            goto fail;
        }
    }
    if (close(fd) < 0) {
        fd = -1;
        e = errno;
        goto fail;
    }
    fd = -1;
    if ((req->flags & GP_CHUNK_F_COMMIT) && rename(tmp, path) < 0) {
        e = errno;
        goto fail;
    }
    free(tmp);
    res->message = strdup("");
    return res->message ? 0 : terr_set(err, "file: out of memory");
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    free(tmp);
    return chunk_fail(res, e, path, err);
}

static int read_chunk_fail(gp_read_chunk_result *res, int status, const char *path, terr *err)
{
    gp_status_result s = {0};
    if (set_status(&s, status, path, err) < 0) return -1;
    res->status = s.status;
    res->message = s.message;
    res->data = malloc(1);
    if (!res->data) {
        gp_read_chunk_result_free(res);
        return terr_set(err, "file: out of memory");
    }
    return 0;
}

int guest_files_read_chunk(const gp_read_chunk_req *req, gp_read_chunk_result *res, terr *err)
{
    memset(res, 0, sizeof *res);
    int fd = open(req->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return read_chunk_fail(res, errno, req->path, err);
    struct stat st;
    int e = 0;
    if (fstat(fd, &st) < 0) e = errno;
    else if (S_ISDIR(st.st_mode)) e = EISDIR;
    else if (!S_ISREG(st.st_mode)) e = EINVAL;
    else if (req->expect_ino && (uint64_t)st.st_ino != req->expect_ino) e = ESTALE;
    if (e) {
        close(fd);
        return read_chunk_fail(res, e, req->path, err);
    }
    size_t want = req->max_len > GP_CHUNK_MAX ? GP_CHUNK_MAX : req->max_len;
    uint8_t *buf = malloc(want ? want : 1);
    if (!buf) {
        close(fd);
        return terr_set(err, "file: out of memory for a %zu-byte chunk", want);
    }
    size_t got = 0;
    while (got < want) {
        ssize_t r = pread(fd, buf + got, want - got, (off_t)(req->offset + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            e = errno;
            break;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (e) {
        free(buf);
        return read_chunk_fail(res, e, req->path, err);
    }
    res->file_size = (uint64_t)st.st_size;
    res->ino = (uint64_t)st.st_ino;
    res->data = buf;
    res->len = got;
    res->message = strdup("");
    if (!res->message) {
        gp_read_chunk_result_free(res);
        return terr_set(err, "file: out of memory");
    }
    return 0;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const gp_dir_entry *)a)->name, ((const gp_dir_entry *)b)->name);
}

int guest_files_list(const gp_list_dir_req *req, gp_list_result *res, terr *err)
{
    memset(res, 0, sizeof *res);
    int dfd = open(req->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int e = errno;
        struct stat st;
        if (e == ENOTDIR || (stat(req->path, &st) == 0 && !S_ISDIR(st.st_mode))) e = ENOTDIR;
        gp_status_result s = {0};
        if (set_status(&s, e, req->path, err) < 0) return -1;
        res->status = s.status;
        res->message = s.message;
        return 0;
    }
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return terr_set(err, "file: fdopendir: %s", strerror(errno));
    }
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (res->n >= req->max_entries) {
            res->truncated = true;
            break;
        }
        if (res->n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            gp_dir_entry *g = realloc(res->entries, nc * sizeof *g);
            if (!g) goto oom;
            res->entries = g;
            cap = nc;
        }
        gp_dir_entry *e = &res->entries[res->n];
        memset(e, 0, sizeof *e);
        if (!(e->name = strdup(de->d_name))) goto oom;
        res->n++;
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            e->type = GP_ENTRY_OTHER; /* vanished meanwhile */
            continue;
        }
        e->type = S_ISREG(st.st_mode)   ? GP_ENTRY_FILE
                  : S_ISDIR(st.st_mode) ? GP_ENTRY_DIR
                  : S_ISLNK(st.st_mode) ? GP_ENTRY_SYMLINK
                                        : GP_ENTRY_OTHER;
        e->mode = st.st_mode & 07777;
        e->size = (uint64_t)st.st_size;
        e->mtime_sec = (int64_t)st.st_mtime;
    }
    closedir(d);
    if (res->n > 1) qsort(res->entries, res->n, sizeof *res->entries, entry_cmp);
    res->message = strdup("");
    if (!res->message) {
        gp_list_result_free(res);
        return terr_set(err, "file: out of memory");
    }
    return 0;
oom:
    closedir(d);
    gp_list_result_free(res);
    return terr_set(err, "file: out of memory listing a directory");
}
