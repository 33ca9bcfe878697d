/* torpor-guest: serves the host's requests inside the VM (see guest/README.md).
 *
 * One reader (the main thread) reads frames from the virtio-serial port named
 * "torpor"; every request but PING and SYNC (answered inline: they do no
 * I/O) runs on its own detached thread, so a slow EXEC
 * never holds up a PING or a file read. Answers are written whole under one
 * mutex. The host side goes away on every pause/resume (the new QEMU's
 * socket starts unconnected): the guest then waits for the next connection
 * and drops answers to the old one's requests (ids are per connection). The
 * channel is non-blocking so that an answer for a host that went away is
 * dropped instead of waiting for the next host. A broken or invalid frame
 * makes it reopen the port, which discards whatever was buffered.
 * Idle cost is zero: the guest blocks in poll() or sigtimedwait() (a 60 s
 * safety net only while no host is connected) and runs no periodic work.
 *
 * Usage: torpor-guest [--port NAME] [--fd N]
 *   --port NAME  virtio-serial port name (default "torpor")
 *   --fd N       serve an already-open descriptor instead (tests on the host);
 *                exits 0 when the peer closes it. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <malloc.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "guest_exec.h"
#include "guest_files.h"
#include "guest_protocol.h"
#include "guest_sync.h"
#include "log.h"

#define GUEST_MAX_INFLIGHT 64
#define GUEST_THREAD_STACK (512 * 1024)
/* Safety net only: the kernel signals (SIGIO) when the host connects. */
#define GUEST_HOST_WAIT_SEC 60
/* Once a frame has started, the rest must arrive within this time. */
#define GUEST_FRAME_TIMEOUT_MS 30000

typedef struct guest_conn {
    pthread_mutex_t mu; /* guards fd and gen; held for each whole frame write */
    int fd;             /* -1 while no port is open */
    uint64_t gen;       /* bumped on every (re)connect and disconnect */
    atomic_int inflight;
} guest_conn;

typedef struct guest_task {
    guest_conn *c;
    uint64_t gen;
    gp_header h;
    uint8_t *payload;
} guest_task;

static void guest_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void guest_log(const char *fmt, ...)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "torpor-guest: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    ssize_t w = write(2, line, len); /* one write per line */
    (void)w;
}

/* One answer: its payload as iov pieces and what owns their memory. Bulk
 * answers (EXEC_RESULT, READ_RESULT) go out zero-copy from the result
 * buffers, so 16 MiB of output costs 16 MiB, not 32, in a small guest. */
typedef struct guest_answer {
    uint8_t type;
    gp_buf buf;          /* small answers, encoded */
    gp_exec_result exec; /* EXEC_RESULT buffers */
    gp_read_result read; /* READ_RESULT buffers */
    gp_iov_scratch scratch;
    struct iovec iov[GP_IOV_MAX];
    int n;
    size_t total;
} guest_answer;

static void answer_from_buf(guest_answer *a, uint8_t type)
{
    a->type = type;
    a->iov[0] = (struct iovec){.iov_base = a->buf.data, .iov_len = a->buf.len};
    a->n = a->buf.len ? 1 : 0;
    a->total = a->buf.len;
}

static void answer_free(guest_answer *a)
{
    gp_buf_free(&a->buf);
    gp_exec_result_free(&a->exec);
    gp_read_result_free(&a->read);
}

/* Writes one whole frame on the non-blocking channel; gp_write_framev
 * gives up when the host side goes away (POLLHUP): a blocking write to a
 * virtio port whose host is disconnected would wait for the next
 * connection, holding the write mutex, and the answer belongs to the old
 * connection anyway. */
static int write_frame(int fd, const guest_answer *a, uint32_t id, terr *err)
{
    return gp_write_framev(fd, a->type, id, a->iov, a->n, err);
}

/* Writes one answer unless the connection it belongs to is gone. */
static void send_answer(guest_conn *c, uint64_t gen, uint32_t id, const guest_answer *a)
{
    terr err;
    if (a->total > GP_MAX_PAYLOAD) {
        /* The encoders refuse this already; never put it on the wire. */
        guest_log("event=answer_failed type=%s request_id=%u error=\"answer of %zu bytes "
                  "exceeds the frame limit\"",
                  gp_type_name(a->type), id, a->total);
        return;
    }
    char q[LOG_QUOTE_MAX];
    pthread_mutex_lock(&c->mu);
    if (c->fd >= 0 && c->gen == gen && write_frame(c->fd, a, id, &err) < 0)
        guest_log("event=answer_failed type=%s request_id=%u error=\"%s\"", gp_type_name(a->type),
                  id, log_quote(err.msg, q, sizeof q));
    pthread_mutex_unlock(&c->mu);
}

static void send_error(guest_conn *c, uint64_t gen, uint32_t id, const char *msg)
{
    guest_answer a = {0};
    gp_error e = {.message = msg};
    terr err;
    if (gp_encode_error(&a.buf, &e, &err) == 0) {
        answer_from_buf(&a, GP_ERROR);
        send_answer(c, gen, id, &a);
    }
    answer_free(&a);
}

/* The decoded request holds its own copy: free the raw one before running,
 * so a big WRITE_FILE or stdin costs its size twice only for a moment (a
 * 128 MiB guest has ~56 MiB available). */
static void drop_payload(guest_task *t)
{
    free(t->payload);
    t->payload = NULL;
}

/* Each handler decodes, runs and fills the answer; 0, or -1 with err set
 * (answered as ERROR). */
static int handle_ping(guest_task *t, guest_answer *a, terr *err)
{
    if (gp_decode_empty(t->payload, t->h.payload_len, err) < 0) return -1;
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    gp_pong p = {.uptime_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec};
    if (gp_encode_pong(&a->buf, &p, err) < 0) return -1;
    answer_from_buf(a, GP_PONG);
    return 0;
}

static int handle_exec(guest_task *t, guest_answer *a, terr *err)
{
    gp_exec_req req;
    if (gp_decode_exec(t->payload, t->h.payload_len, &req, err) < 0) return -1;
    drop_payload(t);
    int rc = guest_exec_run(&req, &a->exec, err);
    gp_exec_req_free(&req);
    if (rc < 0) return -1;
    a->n = gp_exec_result_iov(&a->exec, &a->scratch, a->iov, &a->total, err);
    a->type = GP_EXEC_RESULT;
    return a->n < 0 ? -1 : 0;
}

static int handle_read(guest_task *t, guest_answer *a, terr *err)
{
    gp_read_file_req req;
    if (gp_decode_read_file(t->payload, t->h.payload_len, &req, err) < 0) return -1;
    drop_payload(t);
    int rc = guest_files_read(&req, &a->read, err);
    gp_read_file_req_free(&req);
    if (rc < 0) return -1;
    a->n = gp_read_result_iov(&a->read, &a->scratch, a->iov, &a->total, err);
    a->type = GP_READ_RESULT;
    return a->n < 0 ? -1 : 0;
}

static int handle_write(guest_task *t, guest_answer *a, terr *err)
{
    gp_write_file_req req;
    if (gp_decode_write_file(t->payload, t->h.payload_len, &req, err) < 0) return -1;
    drop_payload(t);
    gp_status_result res;
    int rc = guest_files_write(&req, &res, err);
    gp_write_file_req_free(&req);
    if (rc < 0) return -1;
    rc = gp_encode_status_result(&a->buf, &res, err);
    gp_status_result_free(&res);
    if (rc < 0) return -1;
    answer_from_buf(a, GP_WRITE_RESULT);
    return 0;
}

static int handle_sync(guest_task *t, guest_answer *a, terr *err)
{
    gp_sync_req req;
    if (gp_decode_sync(t->payload, t->h.payload_len, &req, err) < 0) return -1;
    drop_payload(t);
    gp_status_result res;
    int rc = guest_sync_apply(&req, &res, err);
    gp_sync_req_free(&req);
    if (rc < 0) return -1;
    rc = gp_encode_status_result(&a->buf, &res, err);
    gp_status_result_free(&res);
    if (rc < 0) return -1;
    answer_from_buf(a, GP_SYNC_RESULT);
    return 0;
}

/* Runs one of the chunked-file requests: decode, run, encode into a->buf. */
static int handle_write_chunk(guest_task *t, guest_answer *a, terr *err)
{
    gp_write_chunk_req req;
    if (gp_decode_write_chunk(t->payload, t->h.payload_len, &req, err) < 0) return -1;
    drop_payload(t);
    gp_chunk_result res;
    int rc = guest_files_write_chunk(&req, &res, err);
    gp_write_chunk_req_free(&req);
    if (rc < 0) return -1;
    rc = gp_encode_chunk_result(&a->buf, &res, err);
    gp_chunk_result_free(&res);
    if (rc < 0) return -1;
    answer_from_buf(a, GP_CHUNK_RESULT);
    return 0;
}

static int handle_read_chunk(guest_task *t, guest_answer *a, terr *err)
{
    gp_read_chunk_req req;
    if (gp_decode_read_chunk(t->payload, t->h.payload_len, &req, err) < 0) return -1;
    drop_payload(t);
    gp_read_chunk_result res;
    int rc = guest_files_read_chunk(&req, &res, err);
    gp_read_chunk_req_free(&req);
    if (rc < 0) return -1;
    rc = gp_encode_read_chunk_result(&a->buf, &res, err);
    gp_read_chunk_result_free(&res);
    if (rc < 0) return -1;
    answer_from_buf(a, GP_READ_CHUNK_RESULT);
    return 0;
}

static int handle_list_dir(guest_task *t, guest_answer *a, terr *err)
{
    gp_list_dir_req req;
    if (gp_decode_list_dir(t->payload, t->h.payload_len, &req, err) < 0) return -1;
    drop_payload(t);
    gp_list_result res;
    int rc = guest_files_list(&req, &res, err);
    gp_list_dir_req_free(&req);
    if (rc < 0) return -1;
    rc = gp_encode_list_result(&a->buf, &res, err);
    gp_list_result_free(&res);
    if (rc < 0) return -1;
    answer_from_buf(a, GP_LIST_RESULT);
    return 0;
}

static void *task_main(void *arg)
{
    guest_task *t = arg;
    guest_answer a = {0};
    terr err = {.msg = ""};
    int rc;
    switch (t->h.type) {
    case GP_PING: rc = handle_ping(t, &a, &err); break;
    case GP_EXEC: rc = handle_exec(t, &a, &err); break;
    case GP_READ_FILE: rc = handle_read(t, &a, &err); break;
    case GP_WRITE_FILE: rc = handle_write(t, &a, &err); break;
    case GP_SYNC: rc = handle_sync(t, &a, &err); break;
    case GP_WRITE_CHUNK: rc = handle_write_chunk(t, &a, &err); break;
    case GP_READ_CHUNK: rc = handle_read_chunk(t, &a, &err); break;
    case GP_LIST_DIR: rc = handle_list_dir(t, &a, &err); break;
    default: rc = terr_set(&err, "frame type %s is not a request", gp_type_name(t->h.type)); break;
    }
    if (rc < 0) send_error(t->c, t->gen, t->h.request_id, err.msg);
    else send_answer(t->c, t->gen, t->h.request_id, &a);
    answer_free(&a);
    atomic_fetch_sub(&t->c->inflight, 1);
    free(t->payload);
    free(t);
    return NULL;
}

/* Hands one request to a new detached thread (takes payload). */
static void dispatch(guest_conn *c, uint64_t gen, const gp_header *h, uint8_t *payload)
{
    if (atomic_fetch_add(&c->inflight, 1) >= GUEST_MAX_INFLIGHT) {
        atomic_fetch_sub(&c->inflight, 1);
        free(payload);
        send_error(c, gen, h->request_id, "guest busy: too many requests in flight");
        return;
    }
    guest_task *t = malloc(sizeof *t);
    pthread_attr_t attr;
    pthread_t th;
    int rc = ENOMEM;
    if (t) {
        *t = (guest_task){.c = c, .gen = gen, .h = *h, .payload = payload};
        /* PING and SYNC do no I/O but their answer (which waits only for
         * the write turn, like any answer): answered on the reader thread,
         * without a thread start (the first guest code to run after a
         * resume, under TCG with an empty translation cache). SYNC is
         * thereby also done before any request after it is even read. */
        if (h->type == GP_PING || h->type == GP_SYNC) {
            task_main(t);
            return;
        }
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, GUEST_THREAD_STACK);
        rc = pthread_create(&th, &attr, task_main, t);
        pthread_attr_destroy(&attr);
        if (rc == 0) return;
    }
    atomic_fetch_sub(&c->inflight, 1);
    free(t);
    free(payload);
    char msg[128];
    snprintf(msg, sizeof msg, "guest cannot start a request thread: %s", strerror(rc));
    send_error(c, gen, h->request_id, msg);
}

/* Finds /dev/vportNpM whose sysfs name is `name`. Returns an open fd or -1. */
static int open_port(const char *name, terr *err)
{
    glob_t g;
    if (glob("/sys/class/virtio-ports/vport*/name", 0, NULL, &g) != 0)
        return terr_set(err, "no virtio-serial ports yet");
    int fd = -1;
    bool found = false;
    for (size_t i = 0; i < g.gl_pathc && !found; i++) {
        char buf[128] = "";
        FILE *f = fopen(g.gl_pathv[i], "re");
        if (!f) continue;
        if (!fgets(buf, sizeof buf, f)) buf[0] = '\0';
        fclose(f);
        buf[strcspn(buf, "\n")] = '\0';
        if (strcmp(buf, name) != 0) continue;
        found = true;
        /* .../virtio-ports/vport0p1/name -> /dev/vport0p1 */
        char *p = g.gl_pathv[i] + strlen("/sys/class/virtio-ports/");
        p[strcspn(p, "/")] = '\0';
        char dev[160];
        snprintf(dev, sizeof dev, "/dev/%s", p);
        fd = open(dev, O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) terr_set(err, "open %s: %s", dev, strerror(errno));
    }
    globfree(&g);
    if (!found) return terr_set(err, "no virtio-serial port named %s", name);
    return fd;
}

/* Blocks until data can be read. Returns 0 when it can, 1 when the host
 * went away after having been connected (the caller forgets that
 * connection's requests and calls again to wait for the next one), -1 on
 * error. The port is not reopened for this: a reopen discards the port's
 * buffer, and after a resume that buffer may already hold the new
 * connection's first request.
 * While the host is away the kernel reports POLLHUP (and POLLIN too: a read
 * would return 0 at once), so POLLHUP is checked first. The kernel raises
 * SIGIO (set up with O_ASYNC) when the host connects; SIGIO is blocked and
 * taken here, so waiting costs nothing. */
static int wait_host(int fd, bool is_port, bool *was_connected, const sigset_t *sigio, terr *err)
{
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            return terr_set(err, "poll: %s", strerror(errno));
        }
        if (pf.revents & (POLLERR | POLLNVAL)) return terr_set(err, "channel error");
        if (!is_port) return 0; /* a socket: EOF shows up in read() */
        if (!(pf.revents & POLLHUP)) {
            *was_connected = true;
            if (pf.revents & POLLIN) return 0;
            continue;
        }
        if (*was_connected) return 1;
        struct timespec ts = {.tv_sec = GUEST_HOST_WAIT_SEC};
        if (sigtimedwait(sigio, NULL, &ts) < 0 && errno != EAGAIN && errno != EINTR)
            return terr_set(err, "sigtimedwait: %s", strerror(errno));
    }
}

/* Reads and dispatches frames until the connection ends or breaks.
 * Returns how many requests it dispatched. */
static unsigned serve(guest_conn *c, int fd, bool is_port, const sigset_t *sigio)
{
    pthread_mutex_lock(&c->mu);
    c->fd = fd;
    uint64_t gen = ++c->gen;
    pthread_mutex_unlock(&c->mu);
    unsigned served = 0;
    bool was_connected = false;
    for (;;) {
        terr err;
        int w = wait_host(fd, is_port, &was_connected, sigio, &err);
        if (w < 0) {
            char q[LOG_QUOTE_MAX];
            guest_log("event=wait_failed error=\"%s\"", log_quote(err.msg, q, sizeof q));
            break;
        }
        if (w == 1) {
            /* Answers still running belong to the old connection. */
            pthread_mutex_lock(&c->mu);
            gen = ++c->gen;
            pthread_mutex_unlock(&c->mu);
            was_connected = false;
            continue;
        }
        gp_header h = {0};
        uint8_t *payload = NULL;
        int rc = gp_read_frame_within(fd, &h, &payload, GUEST_FRAME_TIMEOUT_MS, &err);
        if (rc < 0) {
            /* A wrong frame gets an ERROR answer (with its id if the header
             * was sane); a connection that ended mid-frame gets nothing. The
             * stream is out of step either way, so start afresh. */
            if (rc == GP_FRAME_BAD) {
                send_error(c, gen, h.magic == GP_MAGIC ? h.request_id : 0, err.msg);
                char q[LOG_QUOTE_MAX];
                guest_log("event=bad_frame error=\"%s\"", log_quote(err.msg, q, sizeof q));
            }
            break;
        }
        dispatch(c, gen, &h, payload);
        served++;
    }
    pthread_mutex_lock(&c->mu);
    c->fd = -1;
    c->gen++;
    pthread_mutex_unlock(&c->mu);
    return served;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: torpor-guest [--port NAME] [--fd N]\n"
            "  --port NAME  virtio-serial port to serve (default %s)\n"
            "  --fd N       serve an open descriptor instead; exit when it closes\n",
            GP_PORT_NAME);
}

int main(int argc, char **argv)
{
    const char *port = GP_PORT_NAME;
    int serve_fd = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = argv[++i];
        } else if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 65535) {
                fprintf(stderr, "torpor-guest: bad --fd %s\n", argv[i]);
                return 2;
            }
            serve_fd = (int)v;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    /* A fixed mmap threshold: big buffers (command output, file data) are
     * always mmapped, so growing one is an mremap and freeing one returns the
     * memory at once. glibc's default raises the threshold after the first
     * big free, and then a 16 MiB buffer grows by copying on the heap. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);

    /* Broken pipes are errors to handle (a host gone mid-answer, a command
     * that closed its stdin), not a reason to die. */
    signal(SIGPIPE, SIG_IGN);
    /* SIGIO stays blocked in every thread; wait_host takes it synchronously. */
    sigset_t sigio;
    sigemptyset(&sigio);
    sigaddset(&sigio, SIGIO);
    pthread_sigmask(SIG_BLOCK, &sigio, NULL);

    guest_conn c = {.fd = -1};
    pthread_mutex_init(&c.mu, NULL);

    if (serve_fd >= 0) {
        /* Commands the guest runs must not inherit the channel. */
        if (fcntl(serve_fd, F_SETFD, FD_CLOEXEC) < 0 ||
            fcntl(serve_fd, F_SETFL, fcntl(serve_fd, F_GETFL) | O_NONBLOCK) < 0) {
            fprintf(stderr, "torpor-guest: --fd %d: %s\n", serve_fd, strerror(errno));
            return 2;
        }
        serve(&c, serve_fd, false, &sigio);
        return 0;
    }

    /* Backoff only for failures that would otherwise spin: the port not
     * there yet (it appears shortly after virtio_console loads) or a
     * connection that ends before its first request. */
    long backoff_ms = 0;
    for (;;) {
        if (backoff_ms > 0) {
            struct timespec ts = {.tv_sec = backoff_ms / 1000,
                                  .tv_nsec = (backoff_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        terr err;
        int fd = open_port(port, &err);
        if (fd < 0) {
            char q[LOG_QUOTE_MAX];
            if (backoff_ms >= 1000)
                guest_log("event=port_unavailable error=\"%s\"", log_quote(err.msg, q, sizeof q));
            backoff_ms = backoff_ms ? (backoff_ms < 1000 ? backoff_ms * 2 : 1000) : 10;
            continue;
        }
        if (fcntl(fd, F_SETOWN, getpid()) < 0 ||
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK) < 0)
            guest_log("event=port_async_failed error=\"%s\"", strerror(errno));
        unsigned served = serve(&c, fd, true, &sigio);
        /* serve() returns only on a broken stream: closing the port drops
         * whatever was left in its buffer. */
        close(fd);
        backoff_ms = served ? 0 : (backoff_ms ? (backoff_ms < 1000 ? backoff_ms * 2 : 1000) : 10);
    }
}
