/* guest_sync: clock_settime + RNDADDENTROPY. */
#include "guest_sync.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static int fail(gp_status_result *res, int status, const char *what, terr *err)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(status));
    res->status = status;
    res->message = strdup(msg);
    if (!res->message) return terr_set(err, "sync: out of memory");
    return 0;
}

int guest_sync_apply(const gp_sync_req *req, gp_status_result *res, terr *err)
{
    memset(res, 0, sizeof *res);
    struct timespec ts = {
        .tv_sec = (time_t)(req->unix_time_ns / 1000000000u),
        .tv_nsec = (long)(req->unix_time_ns % 1000000000u),
    };
    if (clock_settime(CLOCK_REALTIME, &ts) < 0) return fail(res, errno, "set clock", err);

    /* rand_pool_info ends in a flexible array of u32: size it in whole words. */
    size_t words = (req->random_len + 3) / 4;
    struct rand_pool_info *info = calloc(1, sizeof *info + words * 4);
    if (!info) return terr_set(err, "sync: out of memory");
    info->entropy_count = (int)(req->random_len * 8);
    info->buf_size = (int)req->random_len;
    memcpy(info->buf, req->random, req->random_len);
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(info);
        return fail(res, e, "open /dev/urandom", err);
    }
    int rc = ioctl(fd, RNDADDENTROPY, info);
    int e = errno;
    close(fd);
    explicit_bzero(info->buf, req->random_len);
    free(info);
    if (rc < 0) return fail(res, e, "add entropy (RNDADDENTROPY)", err);

    res->message = strdup("");
    if (!res->message) return terr_set(err, "sync: out of memory");
    return 0;
}
