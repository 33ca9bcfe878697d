/* qmp: blocking QMP client (see qmp.h). */
#include "qmp.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "fd_io.h"
#include "mono_time.h"

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
        if (q->len >= QMP_LINE_MAX)
            return terr_set(err, "qmp: line longer than %d bytes", QMP_LINE_MAX);
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

/* Waits for the answer to the command just sent: skips events, turns an
 * "error" answer into a failure. */
static int read_answer(qmp *q, const char *what, long long deadline, char **reply, terr *err)
{
    for (;;) {
        char *line;
        if (read_line(q, deadline, &line, err) < 0) return terr_wrap(err, "%s", what);
        json_t *msg = json_loads(line, 0, NULL);
        if (msg && json_object_get(msg, "return")) {
            json_decref(msg);
            if (reply) *reply = line;
            else free(line);
            return 0;
        }
        json_t *e = msg ? json_object_get(msg, "error") : NULL;
        if (e) {
            const char *desc = json_string_value(json_object_get(e, "desc"));
            terr_set(err, "qmp %s: %.400s", what, desc ? desc : "?");
            json_decref(msg);
            free(line);
            return -1;
        }
        /* events ({"event":...}) and anything else: not our answer */
        json_decref(msg);
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
        if (pid_exited(pidfd))
            return terr_set(err, "qmp: QEMU exited before its QMP socket was ready");
        if (mono_ms() >= deadline)
            return terr_set(err, "qmp: QEMU did not open %s in %d ms", name, timeout_ms);
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
    json_t *g = json_loads(greeting, 0, NULL);
    bool ok = g && json_object_get(g, "QMP");
    json_decref(g);
    free(greeting);
    if (!ok) {
        qmp_close(q);
        return terr_set(err, "qmp: unexpected greeting from QEMU");
    }
    if (qmp_call(q, "qmp_capabilities", NULL,
                 (int)(deadline - mono_ms() > 0 ? deadline - mono_ms() : 1), NULL, err) < 0) {
        qmp_close(q);
        return -1;
    }
    *out = q;
    return 0;
}

/* The request line for cmd with args (a JSON object, stolen; NULL: none),
 * newline-terminated and malloc'd, or NULL with err set. */
static char *request_line(const char *cmd, json_t *args, terr *err)
{
    json_t *req = json_pack("{s:s}", "execute", cmd);
    if (!req || (args && json_object_set_new(req, "arguments", args) != 0)) {
        if (!req) json_decref(args);
        json_decref(req);
        terr_set(err, "qmp %s: cannot encode the command", cmd);
        return NULL;
    }
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    size_t n = text ? strlen(text) : 0;
    char *line = text ? realloc(text, n + 2) : NULL;
    if (!line) {
        free(text);
        terr_set(err, "qmp: out of memory");
        return NULL;
    }
    memcpy(line + n, "\n", 2);
    return line;
}

static int send_request(qmp *q, const char *cmd, json_t *args, terr *err)
{
    char *msg = request_line(cmd, args, err);
    if (!msg) return -1;
    int r = fd_send_all(q->fd, msg, strlen(msg)) == 0
                ? 0
                : terr_set(err, "qmp: connection closed (write: %s)", strerror(errno));
    free(msg);
    return r;
}

int qmp_call(qmp *q, const char *cmd, const char *args_json, int timeout_ms, char **reply,
             terr *err)
{
    if (!q) return terr_set(err, "qmp %s: not connected", cmd);
    json_t *args = NULL;
    if (args_json) {
        args = json_loads(args_json, 0, NULL);
        if (!json_is_object(args)) {
            json_decref(args);
            return terr_set(err, "qmp %s: arguments are not a JSON object", cmd);
        }
    }
    if (send_request(q, cmd, args, err) < 0) return terr_wrap(err, "%s", cmd);
    return read_answer(q, cmd, mono_ms() + timeout_ms, reply, err);
}

int qmp_getfd(qmp *q, const char *fdname, int fd, int timeout_ms, terr *err)
{
    if (!q) return terr_set(err, "qmp getfd: not connected");
    char *msg = request_line("getfd", json_pack("{s:s}", "fdname", fdname), err);
    if (!msg) return -1;
    size_t n = strlen(msg);
    struct iovec iov = {msg, n};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t w;
    do w = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    int e = errno;
    free(msg);
    if (w < 0) return terr_set(err, "qmp getfd: connection closed (%s)", strerror(e));
    /* QMP lines are tiny: a short write here would be a broken socket. */
    if ((size_t)w != n) return terr_set(err, "qmp getfd: short write");
    return read_answer(q, "getfd", mono_ms() + timeout_ms, NULL, err);
}

int qmp_send(qmp *q, const char *cmd, terr *err)
{
    if (!q) return terr_set(err, "qmp %s: not connected", cmd);
    return send_request(q, cmd, NULL, err);
}

void qmp_close(qmp *q)
{
    if (!q) return;
    if (q->fd >= 0) close(q->fd);
    free(q->buf);
    free(q);
}
