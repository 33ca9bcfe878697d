/* fd_io: whole-buffer writes (see fd_io.h). */
#include "fd_io.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

static int all(int fd, const char *p, size_t n, int use_send)
{
    while (n > 0) {
        ssize_t w = use_send ? send(fd, p, n, MSG_NOSIGNAL) : write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) {
            errno = EPIPE;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int fd_write_all(int fd, const void *buf, size_t n)
{
    return all(fd, buf, n, 0);
}

int fd_send_all(int fd, const void *buf, size_t n)
{
    return all(fd, buf, n, 1);
}
