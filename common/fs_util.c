#include "fs_util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int mkdir_one(const char *path, mode_t mode, terr *err)
{
    if (mkdir(path, mode) == 0) return 0;
    int e = errno;
    struct stat st;
    if (e == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    return terr_set(err, "mkdir %s: %s", path, strerror(e == EEXIST ? ENOTDIR : e));
}

int fs_mkdir_p(const char *path, mode_t mode, terr *err)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return terr_set(err, "mkdir: path empty or too long");
    memcpy(buf, path, n + 1);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int rc = mkdir_one(buf, mode, err);
        *p = '/';
        if (rc != 0) return -1;
    }
    return mkdir_one(buf, mode, err);
}
