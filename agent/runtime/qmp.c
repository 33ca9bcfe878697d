/* qmp: blocking QMP client (see qmp.h). */
#include "qmp.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mono_time.h"
#include "qemu_json.h"

/* QMP lines are small (query-migrate is the largest we read, < 2 KB), but
 * leave room for events carrying bigger payloads. */
#define QMP_LINE_MAX (256 * 1024)

struct qmp {
    int fd;
    char *buf;
    size_t len;
};

static bool pid_exited(int pidfd)
{
    if (pidfd < 0) return false;
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* Reads one '\n'-terminated line into a malloc'd string (without the
 * line end). */
static int read_line(qmp *q, long long deadline, char **line, terr *err)
{
    for (;;) {
        char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->buf);
            char *l = malloc(n + 1);
            if (!l) return terr_set(err, "qmp: out of memory");
            memcpy(l, q->buf, n);
            l[n] = '\0';
            if (n && l[n - 1] == '\r') l[n - 1] = '\0';
            memmove(q->buf, nl + 1, q->len - n - 1);
            q->len -= n + 1;
            *line = l;
            return 0;
        }
        if (q->len >= QMP_LINE_MAX) return terr_set(err, "qmp: line longer than %d bytes", QMP_LINE_MAX);
        long long left = deadline - mono_ms();
        if (left <= 0) return terr_set(err, "qmp: timed out waiting for QEMU");
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno != EINTR) return terr_set(err, "qmp: poll: %s", strerror(errno));
        if (r <= 0) continue;
        ssize_t got = read(q->fd, q->buf + q->len, QMP_LINE_MAX - q->len);
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return terr_set(err, "qmp: connection closed (read: %s)", strerror(errno));
        }
        if (got == 0) return terr_set(err, "qmp: connection closed by QEMU");
        q->len += (size_t)got;
    }
}

static int write_all(int fd, const char *s, size_t n, terr *err)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return terr_set(err, "qmp: connection closed (write: %s)", strerror(errno));
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Waits for the answer to the command just sent: skips events, turns an
 * "error" answer into a failure. */
static int read_answer(qmp *q, const char *what, long long deadline, char **reply, terr *err)
{
    for (;;) {
        char *line;
        if (read_line(q, deadline, &line, err) < 0) return terr_wrap(err, "%s", what);
        if (qjson_has(line, "return")) {
            if (reply) *reply = line;
            else free(line);
            return 0;
        }
        if (qjson_has(line, "error")) {
            char desc[400];
            const char *k[] = {"error", "desc"};
            if (qjson_get_string(line, k, 2, desc, sizeof desc) < 0) snprintf(desc, sizeof desc, "?");
            free(line);
            return terr_set(err, "qmp %s: %s", what, desc);
        }
        /* events ({"event":...}) and anything else: not our answer */
        free(line);
    }
}

int qmp_connect(int dirfd, const char *name, int pidfd, int timeout_ms, qmp **out, terr *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dirfd, name);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) return terr_set(err, "qmp: socket name too long");
    long long deadline = mono_ms() + timeout_ms;
    int fd = -1;
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return terr_set(err, "qmp: socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) break;
        int e = errno;
        close(fd);
        fd = -1;
        if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN)
            return terr_set(err, "qmp: connect %s: %s", name, strerror(e));
        if (pid_exited(pidfd)) return terr_set(err, "qmp: QEMU exited before its QMP socket was ready");
        if (mono_ms() >= deadline) return terr_set(err, "qmp: QEMU did not open %s in %d ms", name, timeout_ms);
        /* QEMU creates the socket a few tens of ms after exec. */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    qmp *q = calloc(1, sizeof *q);
    char *buf = malloc(QMP_LINE_MAX);
    if (!q || !buf) {
        free(q);
        free(buf);
        close(fd);
        return terr_set(err, "qmp: out of memory");
    }
    q->fd = fd;
    q->buf = buf;
    char *greeting;
    if (read_line(q, deadline, &greeting, err) < 0) {
        qmp_close(q);
        return terr_wrap(err, "qmp greeting");
    }
    bool ok = qjson_has(greeting, "QMP");
    free(greeting);
    if (!ok) {
        qmp_close(q);
        return terr_set(err, "qmp: unexpected greeting from QEMU");
    }
    if (qmp_call(q, "qmp_capabilities", NULL, (int)(deadline - mono_ms() > 0 ? deadline - mono_ms() : 1),
                 NULL, err) < 0) {
        qmp_close(q);
        return -1;
    }
    *out = q;
    return 0;
}

int qmp_call(qmp *q, const char *cmd, const char *args_json, int timeout_ms, char **reply,
             terr *err)
{
    if (!q) return terr_set(err, "qmp %s: not connected", cmd);
    size_t n = strlen(cmd) + (args_json ? strlen(args_json) : 0) + 48;
    char *msg = malloc(n);
    if (!msg) return terr_set(err, "qmp: out of memory");
    if (args_json)
        snprintf(msg, n, "{\"execute\":\"%s\",\"arguments\":%s}\n", cmd, args_json);
    else
        snprintf(msg, n, "{\"execute\":\"%s\"}\n", cmd);
    int r = write_all(q->fd, msg, strlen(msg), err);
    free(msg);
    if (r < 0) return terr_wrap(err, "%s", cmd);
    return read_answer(q, cmd, mono_ms() + timeout_ms, reply, err);
}

int qmp_getfd(qmp *q, const char *fdname, int fd, int timeout_ms, terr *err)
{
    if (!q) return terr_set(err, "qmp getfd: not connected");
    char msg[160];
    int n = snprintf(msg, sizeof msg, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\"%s\"}}\n",
                     fdname);
    if (n < 0 || (size_t)n >= sizeof msg) return terr_set(err, "qmp getfd: name too long");
    struct iovec iov = {msg, (size_t)n};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t w;
    do w = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0) return terr_set(err, "qmp getfd: connection closed (%s)", strerror(errno));
    /* QMP lines are tiny: a short write here would be a broken socket. */
    if (w != n) return terr_set(err, "qmp getfd: short write");
    return read_answer(q, "getfd", mono_ms() + timeout_ms, NULL, err);
}

int qmp_send(qmp *q, const char *cmd, terr *err)
{
    if (!q) return terr_set(err, "qmp %s: not connected", cmd);
    char msg[128];
    snprintf(msg, sizeof msg, "{\"execute\":\"%s\"}\n", cmd);
    return write_all(q->fd, msg, strlen(msg), err);
}

void qmp_close(qmp *q)
{
    if (!q) return;
    if (q->fd >= 0) close(q->fd);
    free(q->buf);
    free(q);
}
