/* qemu_scan: QEMU processes found through /proc (see qemu_scan.h). */
#include "qemu_scan.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qemu_proc.h"

#define NAME_MAX_LEN 200

typedef struct scan_entry {
    pid_t pid;
    unsigned long long starttime;
    dev_t cwd_dev;
    ino_t cwd_ino;
    char name[NAME_MAX_LEN];
} scan_entry;

struct qemu_scan {
    scan_entry *e;
    size_t n, cap;
};

/* The -name argument of a qemu-system process, from its cmdline; -1 if the
 * process is something else (or gone). */
static int qemu_name_of(pid_t pid, char *name, size_t n)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    /* Our command lines are a few KiB (qemu_inst.c caps them at 8 KiB). */
    static const size_t cap = 16384;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return -1;
    }
    size_t len = 0;
    ssize_t r;
    while (len < cap - 1 && (r = read(fd, buf + len, cap - 1 - len)) > 0) len += (size_t)r;
    close(fd);
    buf[len] = '\0';
    int rc = -1;
    const char *argv0 = buf, *base = strrchr(argv0, '/');
    base = base ? base + 1 : argv0;
    if (len > 0 && !strncmp(base, "qemu-system", 11)) {
        for (const char *a = buf; a < buf + len; a += strlen(a) + 1) {
            const char *next = a + strlen(a) + 1;
            if (!strcmp(a, "-name") && next < buf + len && strlen(next) < n) {
                memcpy(name, next, strlen(next) + 1);
                rc = 0;
                break;
            }
        }
    }
    free(buf);
    return rc;
}

int qemu_scan_take(qemu_scan **out, terr *err)
{
    qemu_scan *s = calloc(1, sizeof *s);
    if (!s) return terr_set(err, "out of memory");
    DIR *d = opendir("/proc");
    if (!d) {
        free(s);
        return terr_set(err, "open /proc: %s", strerror(errno));
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!isdigit((unsigned char)de->d_name[0])) continue;
        pid_t pid = (pid_t)strtol(de->d_name, NULL, 10);
        scan_entry e = {.pid = pid};
        terr ignored;
        if (qemu_name_of(pid, e.name, sizeof e.name) < 0) continue;
        if (qemu_proc_starttime(pid, &e.starttime, &ignored) < 0) continue;
        char cwd[64];
        snprintf(cwd, sizeof cwd, "/proc/%d/cwd", (int)pid);
        struct stat st;
        if (stat(cwd, &st) < 0) continue;
        e.cwd_dev = st.st_dev;
        e.cwd_ino = st.st_ino;
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 16;
            scan_entry *ne = realloc(s->e, cap * sizeof *ne);
            if (!ne) {
                closedir(d);
                qemu_scan_free(s);
                return terr_set(err, "out of memory");
            }
            s->e = ne;
            s->cap = cap;
        }
        s->e[s->n++] = e;
    }
    closedir(d);
    *out = s;
    return 0;
}

int qemu_scan_kill_in(qemu_scan *s, const char *name, int dirfd)
{
    struct stat dst;
    if (!s || fstat(dirfd, &dst) < 0) return 0;
    int killed = 0;
    for (size_t i = 0; i < s->n; i++) {
        scan_entry *e = &s->e[i];
        if (strcmp(e->name, name) != 0 || e->cwd_dev != dst.st_dev || e->cwd_ino != dst.st_ino)
            continue;
        qemu_proc p;
        terr ignored;
        /* Gone since the scan, or its pid reused: nothing to kill. */
        if (qemu_proc_attach(e->pid, e->starttime, &p, &ignored) < 0) continue;
        qemu_proc_kill(&p);
        e->name[0] = '\0'; /* never twice */
        killed++;
    }
    return killed;
}

void qemu_scan_free(qemu_scan *s)
{
    if (!s) return;
    free(s->e);
    free(s);
}
