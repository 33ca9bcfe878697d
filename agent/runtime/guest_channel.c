/* guest_channel: host side of the torpor-guest protocol (see guest_channel.h). */
#include "guest_channel.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "guest_protocol.h"
#include "log.h"
#include "mono_time.h"

#define READ_CHUNK (256 * 1024)
#define HANDSHAKE_RETRY_MS 250
/* Answer caps: what one answer may make the agent hold (the reader's buffer
 * plus the waiter's copy), by request type. A guest that announces more
 * breaks its channel before a byte of the payload is buffered. */
#define ANSWER_SMALL_MAX (64u * 1024)
#define ANSWER_EXEC_MAX (2u * GP_EXEC_OUTPUT_CAP + ANSWER_SMALL_MAX)
#define ANSWER_READ_MAX (GP_FILE_MAX + ANSWER_SMALL_MAX)
#define ANSWER_CHUNK_MAX (GP_CHUNK_MAX + ANSWER_SMALL_MAX)
/* A listing: per entry a name (<= NAME_MAX) and its fixed fields. */
#define ANSWER_LIST_MAX ((uint32_t)GP_LIST_MAX_ENTRIES * (NAME_MAX + 64u) + ANSWER_SMALL_MAX)
/* After a large frame the reader's buffer shrinks back to this. */
#define READ_BUF_KEEP (4 * READ_CHUNK)

static uint32_t answer_cap(uint8_t request_type)
{
    switch (request_type) {
    case GP_EXEC: return ANSWER_EXEC_MAX;
    case GP_READ_FILE: return ANSWER_READ_MAX;
    case GP_READ_CHUNK: return ANSWER_CHUNK_MAX;
    case GP_LIST_DIR: return ANSWER_LIST_MAX;
    default: return ANSWER_SMALL_MAX;
    }
}

typedef struct waiter {
    uint32_t id;
    bool done;
    uint32_t max_len; /* the largest answer payload this call accepts */
    uint8_t type;
    uint8_t *payload;
    size_t len;
    struct waiter *next;
} waiter;

struct guest_channel {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool writing; /* one frame writer at a time (a lock with a deadline) */
    int fd;
    atomic_int refs;
    pthread_t reader;
    bool reader_started;
    bool closed; /* no new calls; waiters fail */
    bool synced; /* handshake PONG seen: framing is strict from now on */
    char reason[256];
    uint32_t next_id;
    waiter *waiters;
    char sandbox_id[64];
};

static void deadline_ts(struct timespec *ts, long long deadline_mono_ms)
{
    ts->tv_sec = deadline_mono_ms / 1000;
    ts->tv_nsec = (deadline_mono_ms % 1000) * 1000000;
}

/* Marks the channel broken/closed (caller holds mu). */
static void fail_locked(guest_channel *ch, const char *reason)
{
    if (!ch->closed) {
        ch->closed = true;
        snprintf(ch->reason, sizeof ch->reason, "%.255s", reason);
        shutdown(ch->fd, SHUT_RDWR); /* wakes the reader */
    }
    pthread_cond_broadcast(&ch->cv);
}

static waiter *find_waiter(guest_channel *ch, uint32_t id)
{
    for (waiter *w = ch->waiters; w; w = w->next)
        if (w->id == id) return w;
    return NULL;
}

static void remove_waiter(guest_channel *ch, waiter *w)
{
    for (waiter **pp = &ch->waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            return;
        }
}

/* Hands one complete frame to its waiter. Returns false if nobody waits. */
static bool deliver(guest_channel *ch, const gp_header *h, const uint8_t *payload)
{
    waiter *w = find_waiter(ch, h->request_id);
    if (!w || w->done) return false;
    uint8_t *copy = NULL;
    if (h->payload_len) {
        copy = malloc(h->payload_len);
        if (!copy) return false;
        memcpy(copy, payload, h->payload_len);
    }
    w->payload = copy;
    w->len = h->payload_len;
    w->type = h->type;
    w->done = true;
    pthread_cond_broadcast(&ch->cv);
    return true;
}

/* Consumes as many whole frames from buf as possible; returns the number of
 * bytes consumed, or -1 with *why set when the stream is broken. A frame
 * nobody waits for is dropped as it streams in: *skip is set to the part of
 * it not yet in buf, which the reader discards without buffering. */
static long parse_frames(guest_channel *ch, const uint8_t *buf, size_t len, size_t *skip, char *why,
                         size_t why_n)
{
    size_t off = 0;
    static const uint8_t magic[4] = {'T', 'P', 'G', '1'};
    for (;;) {
        pthread_mutex_lock(&ch->mu);
        bool synced = ch->synced;
        pthread_mutex_unlock(&ch->mu);
        if (!synced) {
            /* Resync: skip to the next magic; keep a possible partial one. */
            const uint8_t *m = len - off >= 4 ? memmem(buf + off, len - off, magic, 4) : NULL;
            if (!m) {
                size_t keep = len - off < 3 ? len - off : 3;
                return (long)(len - keep);
            }
            off = (size_t)(m - buf);
        }
        if (len - off < GP_HEADER_SIZE) return (long)off;
        gp_header h;
        terr e;
        if (gp_header_decode(buf + off, &h, &e) < 0) {
            if (synced) {
                snprintf(why, why_n, "bad frame from guest: %.200s", e.msg);
                return -1;
            }
            off++;
            continue;
        }
        pthread_mutex_lock(&ch->mu);
        waiter *w = find_waiter(ch, h.request_id);
        bool waited = w && !w->done;
        uint32_t cap = waited ? w->max_len : 0;
        pthread_mutex_unlock(&ch->mu);
        if (!synced && !(waited && h.type == GP_PONG && h.payload_len == 8)) {
            /* Only a PONG to one of our handshake PINGs ends the resync. */
            off++;
            continue;
        }
        if (waited && h.payload_len > cap) {
            snprintf(
                why, why_n,
                "guest channel broken: the guest sent a %u-byte %s answer, more than the %u bytes allowed",
                h.payload_len, gp_type_name(h.type), cap);
            return -1;
        }
        size_t frame = GP_HEADER_SIZE + (size_t)h.payload_len;
        if (!waited) {
            log_debug("event=guest_frame_dropped sandbox_id=%s type=%s request_id=%u len=%u",
                      ch->sandbox_id, gp_type_name(h.type), h.request_id, h.payload_len);
            if (len - off < frame) {
                *skip = frame - (len - off);
                return (long)len;
            }
            off += frame;
            continue;
        }
        if (len - off < frame) return (long)off;
        pthread_mutex_lock(&ch->mu);
        bool got = deliver(ch, &h, buf + off + GP_HEADER_SIZE);
        if (got && !ch->synced) ch->synced = true;
        pthread_mutex_unlock(&ch->mu);
        if (!got)
            log_debug("event=guest_frame_dropped sandbox_id=%s type=%s request_id=%u",
                      ch->sandbox_id, gp_type_name(h.type), h.request_id);
        off += frame;
    }
}

/* Largest buffer a stream needs: one maximal frame plus one read chunk. */
#define READ_BUF_LIMIT ((size_t)GP_MAX_PAYLOAD + GP_HEADER_SIZE + READ_CHUNK)

static void *reader_main(void *arg)
{
    guest_channel *ch = arg;
    size_t cap = READ_CHUNK, len = 0, skip = 0;
    uint8_t *buf = malloc(cap);
    char why[300] = "guest channel: out of memory";
    if (buf) {
        for (;;) {
            if (cap - len < READ_CHUNK / 4) {
                /* Partial frames only get this big if the frame is (and the
                 * frame was checked against its call's answer cap). */
                size_t ncap = cap * 2 > READ_BUF_LIMIT ? READ_BUF_LIMIT : cap * 2;
                uint8_t *nb = ncap > cap ? realloc(buf, ncap) : NULL;
                if (!nb) {
                    snprintf(why, sizeof why, "guest channel: frame too large or out of memory");
                    break;
                }
                buf = nb;
                cap = ncap;
            }
            ssize_t n = read(ch->fd, buf + len, cap - len);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                snprintf(why, sizeof why, "guest channel closed%s%s", n < 0 ? ": " : "",
                         n < 0 ? strerror(errno) : "");
                break;
            }
            len += (size_t)n;
            if (skip) { /* the rest of a frame nobody waits for */
                size_t d = skip < len ? skip : len;
                memmove(buf, buf + d, len - d);
                len -= d;
                skip -= d;
                if (!len) continue;
            }
            long used = parse_frames(ch, buf, len, &skip, why, sizeof why);
            if (used < 0) break;
            memmove(buf, buf + used, len - (size_t)used);
            len -= (size_t)used;
            if (cap > READ_BUF_KEEP && len < READ_CHUNK) {
                /* Give back what a large frame made us hold. */
                uint8_t *nb = realloc(buf, READ_CHUNK);
                if (nb) {
                    buf = nb;
                    cap = READ_CHUNK;
                }
            }
        }
    }
    free(buf);
    pthread_mutex_lock(&ch->mu);
    fail_locked(ch, why);
    pthread_mutex_unlock(&ch->mu);
    return NULL;
}

/* Takes the write turn, waiting at most until deadline (mono ms). */
static int write_begin(guest_channel *ch, long long deadline, terr *err)
{
    struct timespec ts;
    deadline_ts(&ts, deadline);
    pthread_mutex_lock(&ch->mu);
    while (ch->writing && !ch->closed)
        if (pthread_cond_timedwait(&ch->cv, &ch->mu, &ts) == ETIMEDOUT) break;
    int rc = 0;
    if (ch->closed) rc = terr_set(err, "%s", ch->reason);
    else if (ch->writing)
        rc = terr_set(err,
                      "guest channel busy: an earlier request is still being sent to a guest that "
                      "does not read");
    else ch->writing = true;
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

static void write_end(guest_channel *ch)
{
    pthread_mutex_lock(&ch->mu);
    ch->writing = false;
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
}

/* Sends iov whole before deadline: MSG_DONTWAIT + poll, so a guest that
 * stops reading never blocks us past it (the reader is not affected: the
 * socket itself stays blocking). *sent counts the bytes that went out. */
static int send_all(guest_channel *ch, struct iovec *iov, int iovcnt, long long deadline,
                    size_t *sent, terr *err)
{
    *sent = 0;
    while (iovcnt > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(ch->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return terr_set(err, "write to the guest: %s", strerror(errno));
            long long left = deadline - mono_ms();
            if (left <= 0) return terr_set(err, "the guest did not take the request in time");
            struct pollfd pf = {.fd = ch->fd, .events = POLLOUT};
            if (poll(&pf, 1, left > 1000 ? 1000 : (int)left) < 0 && errno != EINTR)
                return terr_set(err, "write to the guest: poll: %s", strerror(errno));
            continue;
        }
        *sent += (size_t)n;
        size_t left = (size_t)n;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* One frame, before deadline. A frame cut short (deadline, error) leaves the
 * guest's stream unparseable: the channel is broken from then on, and every
 * waiting and later call fails at once with why. */
static int send_frame(guest_channel *ch, uint8_t type, uint32_t id, const void *payload, size_t len,
                      long long deadline, terr *err)
{
    if (len > GP_MAX_PAYLOAD) return terr_set(err, "request of %zu bytes is too large", len);
    if (write_begin(ch, deadline, err) < 0) return -1;
    uint8_t hdr[GP_HEADER_SIZE];
    gp_header_encode(hdr, type, id, (uint32_t)len);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)payload, len}};
    size_t sent = 0;
    int rc = send_all(ch, iov, len ? 2 : 1, deadline, &sent, err);
    if (rc < 0 && sent > 0) {
        char why[300];
        snprintf(why, sizeof why,
                 "guest channel broken: %s request cut off after %zu of %zu bytes (%.120s)",
                 gp_type_name(type), sent, sizeof hdr + len, err ? err->msg : "write failed");
        pthread_mutex_lock(&ch->mu);
        fail_locked(ch, why);
        pthread_mutex_unlock(&ch->mu);
        char q[LOG_QUOTE_MAX];
        log_warn("event=guest_channel_broken sandbox_id=%s reason=\"%s\"", ch->sandbox_id,
                 log_quote(why, q, sizeof q));
        terr_set(err, "%s", why);
    }
    write_end(ch);
    return rc < 0 ? terr_wrap(err, "guest channel") : 0;
}

static uint32_t take_id(guest_channel *ch)
{
    uint32_t id = ch->next_id++;
    if (id == 0) id = ch->next_id++;
    return id;
}

/* Registers a waiter and sends the request; the caller holds no lock. */
static int start_call(guest_channel *ch, waiter *w, uint8_t type, const void *payload, size_t len,
                      long long deadline, terr *err)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_lock(&ch->mu);
    if (ch->closed) {
        int r = terr_set(err, "%s", ch->reason);
        pthread_mutex_unlock(&ch->mu);
        return r;
    }
    w->id = take_id(ch);
    w->max_len = answer_cap(type);
    w->next = ch->waiters;
    ch->waiters = w;
    pthread_mutex_unlock(&ch->mu);
    if (send_frame(ch, type, w->id, payload, len, deadline, err) < 0) {
        pthread_mutex_lock(&ch->mu);
        remove_waiter(ch, w);
        if (ch->closed) terr_set(err, "%s", ch->reason);
        pthread_mutex_unlock(&ch->mu);
        return -1;
    }
    return 0;
}

int guest_channel_call(guest_channel *ch, uint8_t type, const void *payload, size_t len,
                       uint8_t expect_type, int timeout_ms, uint8_t **resp, size_t *resp_len,
                       terr *err)
{
    *resp = NULL;
    *resp_len = 0;
    waiter w;
    long long deadline = mono_ms() + timeout_ms;
    if (start_call(ch, &w, type, payload, len, deadline, err) < 0) return -1;
    struct timespec ts;
    deadline_ts(&ts, deadline);
    pthread_mutex_lock(&ch->mu);
    while (!w.done && !ch->closed) {
        if (pthread_cond_timedwait(&ch->cv, &ch->mu, &ts) == ETIMEDOUT) break;
    }
    remove_waiter(ch, &w);
    int rc = 0;
    if (!w.done) {
        rc = ch->closed ? terr_set(err, "%s", ch->reason)
                        : terr_set(err, "guest did not answer %s within %d ms", gp_type_name(type),
                                   timeout_ms);
    }
    pthread_mutex_unlock(&ch->mu);
    if (rc < 0) return -1;
    if (w.type == GP_ERROR) {
        gp_error ge;
        if (gp_decode_error(w.payload, w.len, &ge, err) < 0) {
            free(w.payload);
            return terr_wrap(err, "guest ERROR answer");
        }
        terr_set(err, "guest: %s", ge.message);
        gp_error_free(&ge);
        free(w.payload);
        return -1;
    }
    if (w.type != expect_type) {
        free(w.payload);
        return terr_set(err, "guest answered %s with %s", gp_type_name(type), gp_type_name(w.type));
    }
    *resp = w.payload;
    *resp_len = w.len;
    return 0;
}

int guest_channel_sync(guest_channel *ch, int timeout_ms, terr *err)
{
    uint8_t rnd[64];
    size_t got = 0;
    while (got < sizeof rnd) {
        ssize_t n = getrandom(rnd + got, sizeof rnd - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return terr_set(err, "getrandom: %s", strerror(errno));
        }
        got += (size_t)n;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    gp_sync_req req = {.unix_time_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec,
                       .random = rnd,
                       .random_len = sizeof rnd};
    gp_buf b = {0};
    if (gp_encode_sync(&b, &req, err) < 0) {
        gp_buf_free(&b);
        return -1;
    }
    uint8_t *p;
    size_t n;
    int r = guest_channel_call(ch, GP_SYNC, b.data, b.len, GP_SYNC_RESULT, timeout_ms, &p, &n, err);
    gp_buf_free(&b);
    explicit_bzero(rnd, sizeof rnd);
    if (r < 0) return -1;
    gp_status_result st;
    r = gp_decode_status_result(p, n, &st, err);
    free(p);
    if (r < 0) return -1;
    if (st.status != 0) r = terr_set(err, "guest SYNC failed: %s", st.message);
    gp_status_result_free(&st);
    return r;
}

static bool pid_exited(int pidfd)
{
    if (pidfd < 0) return false;
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* PINGs until one is answered; the reader resyncs on that PONG. */
static int handshake(guest_channel *ch, int pidfd, long long deadline, terr *err)
{
    enum { MAX_TRIES = 256 };
    waiter ws[MAX_TRIES];
    int n = 0, rc = -1;
    for (;;) {
        if (n < MAX_TRIES) {
            if (start_call(ch, &ws[n], GP_PING, NULL, 0, deadline, err) < 0) goto out;
            n++;
        }
        long long until = mono_ms() + HANDSHAKE_RETRY_MS;
        if (until > deadline) until = deadline;
        struct timespec ts;
        deadline_ts(&ts, until);
        pthread_mutex_lock(&ch->mu);
        for (;;) {
            for (int i = 0; i < n; i++)
                if (ws[i].done) rc = 0;
            if (rc == 0 || ch->closed) break;
            if (pthread_cond_timedwait(&ch->cv, &ch->mu, &ts) == ETIMEDOUT) break;
        }
        if (rc < 0 && ch->closed) terr_set(err, "%s", ch->reason);
        bool closed = ch->closed;
        pthread_mutex_unlock(&ch->mu);
        if (rc == 0 || closed) goto out;
        if (pid_exited(pidfd)) {
            terr_set(err, "QEMU exited before torpor-guest answered");
            goto out;
        }
        if (mono_ms() >= deadline) {
            terr_set(err, "torpor-guest did not answer PING in time");
            goto out;
        }
    }
out:
    log_debug("event=guest_handshake sandbox_id=%s pings=%d ok=%d", ch->sandbox_id, n, rc == 0);
    pthread_mutex_lock(&ch->mu);
    for (int i = 0; i < n; i++) {
        remove_waiter(ch, &ws[i]);
        free(ws[i].payload);
    }
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

int guest_channel_open(int dirfd, const char *name, const char *sandbox_id, int pidfd,
                       int timeout_ms, guest_channel **out, terr *err)
{
    long long deadline = mono_ms() + timeout_ms;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int sn = snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dirfd, name);
    if (sn < 0 || (size_t)sn >= sizeof sa.sun_path)
        return terr_set(err, "guest socket name too long");
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return terr_set(err, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        return terr_set(err, "connect to the guest channel: %s", strerror(e));
    }
    guest_channel *ch = calloc(1, sizeof *ch);
    if (!ch) {
        close(fd);
        return terr_set(err, "out of memory");
    }
    pthread_mutex_init(&ch->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ch->cv, &ca);
    pthread_condattr_destroy(&ca);
    ch->fd = fd;
    atomic_init(&ch->refs, 1);
    snprintf(ch->sandbox_id, sizeof ch->sandbox_id, "%s", sandbox_id);
    if (getrandom(&ch->next_id, sizeof ch->next_id, 0) != sizeof ch->next_id)
        ch->next_id = (uint32_t)mono_ms();
    int e = pthread_create(&ch->reader, NULL, reader_main, ch);
    if (e) {
        guest_channel_unref(ch);
        return terr_set(err, "pthread_create: %s", strerror(e));
    }
    ch->reader_started = true;
    if (handshake(ch, pidfd, deadline, err) < 0) {
        guest_channel_unref(ch);
        return -1;
    }
    *out = ch;
    return 0;
}

void guest_channel_close(guest_channel *ch, const char *reason)
{
    if (!ch) return;
    pthread_mutex_lock(&ch->mu);
    fail_locked(ch, reason);
    pthread_mutex_unlock(&ch->mu);
}

void guest_channel_ref(guest_channel *ch) { atomic_fetch_add(&ch->refs, 1); }

void guest_channel_unref(guest_channel *ch)
{
    if (!ch || atomic_fetch_sub(&ch->refs, 1) != 1) return;
    guest_channel_close(ch, "guest channel released");
    if (ch->reader_started) pthread_join(ch->reader, NULL);
    close(ch->fd);
    pthread_cond_destroy(&ch->cv);
    pthread_mutex_destroy(&ch->mu);
    free(ch);
}
