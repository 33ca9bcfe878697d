/* qemu_trim: idle trim of a QEMU process's file-backed memory (see
 * qemu_internal.h).
 *
 * Why: right after a create or resume the guest touches ~15-20 MB of its RAM
 * (restore, reseed, the first exec), and the kernel's read fault-around maps
 * up to 16 cached neighbours of each of those pages into QEMU; an idle guest
 * then uses only ~4 MB of them. Likewise QEMU's binary and libraries: ~25 MB
 * resident after start-up, a few MB used by an idle main loop.
 * MADV_PAGEOUT (process_madvise on QEMU's pidfd) unmaps those pages: clean
 * ones leave the page cache, dirty ones (guest RAM) stay cached until
 * writeback and are reclaimable from then on. Pages still mapped by another
 * process (a library every QEMU uses) are left alone by the kernel, and
 * anonymous memory (heap, TCG code cache) is not touched: there is no swap.
 *
 * Contents never change (the RAM file is the guest memory; text is re-read
 * from its file), so this is correct at any moment, even racing a guest
 * call, a pause or the process's exit: the next access is a page fault. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "qemu_internal.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

/* process_madvise takes at most UIO_MAXIOV ranges per call; QEMU has ~300
 * file mappings. */
#define TRIM_MAX_RANGES 1024

/* Collects the file-backed mappings of /proc/<pid>/maps. */
static int file_mappings(pid_t pid, struct iovec *iov, int max, int *n, terr *err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return terr_set(err, "open %s: %s", path, strerror(errno));
    char line[512];
    *n = 0;
    while (*n < max && fgets(line, sizeof line, f)) {
        unsigned long long a, b, off, inode;
        unsigned maj, min;
        char perms[8];
        int name_at = 0;
        if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &a, &b, perms, &off, &maj, &min,
                   &inode, &name_at) != 7)
            continue;
        /* inode 0: anonymous, stack, vdso...; a '/' name: a real file. */
        if (inode == 0 || line[name_at] != '/' || b <= a) continue;
        iov[*n].iov_base = (void *)(uintptr_t)a;
        iov[*n].iov_len = (size_t)(b - a);
        (*n)++;
    }
    fclose(f);
    return 0;
}

int qemu_trim_vm(pid_t pid, int pidfd, long long *advised, bool *unsupported, terr *err)
{
    *advised = 0;
    *unsupported = false;
    struct iovec *iov = calloc(TRIM_MAX_RANGES, sizeof *iov);
    if (!iov) return terr_set(err, "out of memory");
    int n;
    if (file_mappings(pid, iov, TRIM_MAX_RANGES, &n, err) < 0) {
        free(iov);
        return -1;
    }
    long r = n ? syscall(SYS_process_madvise, pidfd, iov, (unsigned long)n, MADV_PAGEOUT, 0U) : 0;
    int e = errno;
    free(iov);
    if (r < 0) {
        if (e == EPERM) {
            *unsupported = true;
            return terr_set(err, "process_madvise: %s (needs CAP_SYS_NICE)", strerror(e));
        }
        if (e == ENOSYS) {
            *unsupported = true;
            return terr_set(err, "process_madvise: %s (kernel older than 5.10)", strerror(e));
        }
        return terr_set(err, "process_madvise: %s", strerror(e));
    }
    *advised = r;
    return 0;
}
