/* template_files: the template builder's file helpers (private to it, see
 * template_builder_internal.h): paths under its state dir and the image dir,
 * atomic writes (tmp + fsync + rename) and small reads, inspection of an
 * image directory (complete? size, digest), the tail of a build log, and the
 * removal of a build's state dir. No locking: callers hold what they need;
 * none of these touches the builder's in-memory state. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "template_builder_internal.h"

/* snprintf that may truncate (messages, bounded names). */
void tb_setf(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, size, fmt, ap);
    va_end(ap);
}

/* dir + "/" + file into out ("" when it does not fit). */
void tb_pjoin(char *out, size_t size, const char *dir, const char *file)
{
    int n = snprintf(out, size, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= size) out[0] = '\0';
}

void tb_state_path(const template_builder *tb, const char *name, const char *file, char *out,
                   size_t size)
{
    int n = snprintf(out, size, "%s/%s/%s", tb->state_dir, name, file);
    if (n < 0 || (size_t)n >= size) out[0] = '\0';
}

/* Writes file atomically (tmp + rename). */
int tb_write_file(const char *path, const char *text, terr *err)
{
    char tmp[4200];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof tmp) return terr_set(err, "path too long");
    FILE *f = fopen(tmp, "w");
    if (!f) return terr_set(err, "open %s: %s", tmp, strerror(errno));
    fputs(text, f);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int e = errno;
        fclose(f);
        return terr_set(err, "write %s: %s", tmp, strerror(e));
    }
    fclose(f);
    if (rename(tmp, path) != 0) return terr_set(err, "rename %s: %s", tmp, strerror(errno));
    return 0;
}

int tb_read_small(const char *path, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, size - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' ')) out[--n] = '\0';
    return 0;
}

void tb_image_link(const template_builder *tb, const char *name, char *out, size_t size)
{
    tb_pjoin(out, size, tb->image_dir, name);
}

/* Sum of the image's regular files (following the link). */
int64_t tb_image_size(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode)) total += st.st_size;
    }
    closedir(d);
    return total;
}

bool tb_image_complete(const char *dir)
{
    char p[4200];
    tb_pjoin(p, sizeof p, dir, "vmlinux");
    if (access(p, R_OK) != 0) return false;
    tb_pjoin(p, sizeof p, dir, "initramfs.cpio.gz");
    return access(p, R_OK) == 0;
}

void tb_builtin_info(const template_builder *tb, const char *name, tb_info *out)
{
    memset(out, 0, sizeof *out);
    char dir[4200], p[4300];
    tb_image_link(tb, name, dir, sizeof dir);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->status = TB_READY;
    out->builtin = true;
    out->size_bytes = tb_image_size(dir);
    tb_pjoin(p, sizeof p, dir, "rootfs.sha256");
    tb_read_small(p, out->digest, sizeof out->digest);
    struct stat st;
    tb_pjoin(p, sizeof p, dir, "vmlinux");
    if (stat(p, &st) == 0) out->created_at_unix = st.st_mtime;
}

char *tb_read_tail(const char *path, size_t tail, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    size_t want = size < tail ? size : tail;
    char *buf = malloc(want + 1);
    if (!buf) {
        close(fd);
        return NULL;
    }
    ssize_t n = pread(fd, buf, want, (off_t)(size - want));
    close(fd);
    if (n < 0) n = 0;
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* Removes dir and everything below it (no symlink is followed). */
static void remove_tree_at(int parent, const char *name)
{
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT) return;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    struct stat here, up;
    if (fstat(fd, &here) != 0 || fstatat(parent, ".", &up, 0) != 0 || here.st_dev != up.st_dev) {
        close(fd); /* another filesystem mounted here: never removed through */
        return;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            remove_tree_at(dirfd(d), de->d_name);
    closedir(d);
    unlinkat(parent, name, AT_REMOVEDIR);
}

void tb_remove_tree(const char *dir) { remove_tree_at(AT_FDCWD, dir); }
