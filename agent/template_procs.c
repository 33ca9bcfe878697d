#include "template_procs.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "mono_time.h"

/* True when /proc/<pid>/environ holds the entry marker. */
static bool environ_has(const char *pid, const char *marker)
{
    char p[300];
    snprintf(p, sizeof p, "/proc/%s/environ", pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    static __thread char buf[65536];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    size_t ml = strlen(marker);
    for (ssize_t i = 0; i < n;) {
        size_t len = strnlen(buf + i, (size_t)(n - i));
        if (len == ml && memcmp(buf + i, marker, ml) == 0) return true;
        i += (ssize_t)len + 1;
    }
    return false;
}

int tproc_members(int pgid, const char *marker)
{
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int members = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
        char sp[300], st[512];
        snprintf(sp, sizeof sp, "/proc/%s/stat", de->d_name);
        int fd = open(sp, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, st, sizeof st - 1);
        close(fd);
        if (n <= 0) continue;
        st[n] = '\0';
        const char *rp = strrchr(st, ')'); /* comm may hold spaces and parentheses */
        char state;
        int ppid, pgrp;
        if (rp && sscanf(rp + 1, " %c %d %d", &state, &ppid, &pgrp) == 3 && pgrp == pgid &&
            state != 'Z' && state != 'X' && environ_has(de->d_name, marker))
            members++;
    }
    closedir(d);
    return members;
}

int tproc_stop_group(int pgid, const char *marker, int grace_ms)
{
    if (pgid <= 1) return 0;
    int n = tproc_members(pgid, marker);
    if (!n) return 0;
    kill(-pgid, SIGTERM);
    int64_t end = mono_ms() + grace_ms;
    while (tproc_members(pgid, marker) > 0 && mono_ms() < end) usleep(100 * 1000);
    if (tproc_members(pgid, marker) > 0) kill(-pgid, SIGKILL);
    return n;
}
