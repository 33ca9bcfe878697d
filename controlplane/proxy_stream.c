/* proxy_stream: plain HTTP through the port proxy, streamed both ways (see proxy_stream.h). */
#include "proxy_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "mono_time.h"

/* The answer headers not passed on: hop-by-hop ones, and the framing and
 * type the reply sets itself. */
static bool skip_response_header(const char *n)
{
    static const char *const skip[] = {"connection",     "keep-alive",   "transfer-encoding",
                                       "content-length", "content-type", "date",
                                       "trailer",        "upgrade",      NULL};
    for (int i = 0; skip[i]; i++)
        if (!strcasecmp(n, skip[i])) return true;
    return false;
}

/* A byte ring of PROXY_RING bytes. One side fills the free space, the other
 * drains the used part; head and len change under the stream's lock only. */
typedef struct ring {
    char *p;
    size_t head, len;
} ring;

static size_t ring_room(const ring *g) { return PROXY_RING - g->len; }

static void ring_put(ring *g, const void *data, size_t n) /* n <= ring_room */
{
    const char *d = data;
    while (n) {
        size_t tail = (g->head + g->len) % PROXY_RING;
        size_t k = PROXY_RING - tail < n ? PROXY_RING - tail : n;
        memcpy(g->p + tail, d, k);
        g->len += k;
        d += k;
        n -= k;
    }
}

/* The used bytes from head that are contiguous. */
static size_t ring_peek(const ring *g, const char **d)
{
    *d = g->p + g->head;
    size_t k = PROXY_RING - g->head;
    return k < g->len ? k : g->len;
}

static void ring_drop(ring *g, size_t n)
{
    g->head = (g->head + n) % PROXY_RING;
    g->len -= n;
}

enum framing { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };
enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

/* One proxied request: the tunnel, a relay thread that moves the bytes,
 * and the two fixed rings between it and the I/O thread (the request body
 * on its way to the guest, the guest's answer body on its way out). Freed
 * when its last holder (request, relay, reply) lets go. */
struct proxy_stream {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* head_state left 0 */
    int refs;
    int tfd;           /* the tunnel (non-blocking once the relay runs) */
    int idle_ms;       /* no byte either way for this long ends the request */
    int wake;          /* eventfd: the relay's poll wakes on it */
    http_request *req; /* NULL once the request is freed */
    bool relay_done;
    /* client -> guest */
    ring up;
    size_t up_need;  /* room the paused body fn waits for */
    bool up_chunked; /* the client's body has no length: sent chunked */
    bool up_paused, up_dead;
    /* guest -> client */
    char *head; /* the answer's status line and headers, as read */
    size_t head_len;
    int head_state; /* 0 reading, 1 parsed, -1 failed (fail) */
    const char *fail;
    bool no_body; /* the request was HEAD */
    int status;
    enum framing framing;
    int64_t content_length; /* -1 unknown */
    uint64_t left;          /* BODY_LENGTH / a chunk: bytes still to come */
    enum chunk_state cst;
    char cline[64];
    size_t cline_len;
    ring down;
    bool down_eof, down_err, down_paused;
};

static void proxy_stream_unref(proxy_stream *p)
{
    pthread_mutex_lock(&p->mu);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (!last) return;
    if (p->tfd >= 0) close(p->tfd);
    if (p->wake >= 0) close(p->wake);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    free(p->up.p);
    free(p->down.p);
    free(p->head);
    free(p);
}

static void proxy_stream_wake(proxy_stream *p)
{
    uint64_t one = 1;
    if (write(p->wake, &one, sizeof one) < 0) { /* full counter: a wake is pending anyway */
    }
}

/* Request data free: the request is gone (answered, refused or the client
 * left); the relay stops and never touches it again. */
static void proxy_stream_request_gone(void *cls)
{
    proxy_stream *p = cls;
    pthread_mutex_lock(&p->mu);
    p->req = NULL;
    pthread_mutex_unlock(&p->mu);
    proxy_stream_wake(p);
    proxy_stream_unref(p);
}

static void reply_done(void *cls) { proxy_stream_unref(cls); }

/* Under mu: the paused reader may go on. */
static void down_resume(proxy_stream *p)
{
    if (p->down_paused && p->req) {
        p->down_paused = false;
        http_reply_stream_resume(p->req);
    }
}

static void up_resume(proxy_stream *p)
{
    if (p->up_paused && p->req &&
        (p->up_dead || p->relay_done || ring_room(&p->up) >= p->up_need)) {
        p->up_paused = false;
        http_request_resume_body(p->req);
    }
}

static void head_failed(proxy_stream *p, const char *msg)
{
    if (p->head_state != 0) return;
    p->head_state = -1;
    p->fail = msg;
    pthread_cond_broadcast(&p->cond);
}

/* Under mu: answer body bytes after the head, decoded, into the down ring
 * (which has room for n: decoding never grows them). */
static void body_feed(proxy_stream *p, const char *d, size_t n)
{
    if (p->framing == BODY_NONE || p->down_eof || p->down_err) return;
    if (p->framing == BODY_CLOSE) {
        ring_put(&p->down, d, n);
        return;
    }
    if (p->framing == BODY_LENGTH) {
        size_t k = n < p->left ? n : (size_t)p->left;
        ring_put(&p->down, d, k);
        p->left -= k;
        if (p->left == 0) p->down_eof = true;
        return;
    }
    while (n && !p->down_err && p->cst != CH_DONE) {
        if (p->cst == CH_DATA) {
            size_t k = n < p->left ? n : (size_t)p->left;
            ring_put(&p->down, d, k);
            d += k;
            n -= k;
            p->left -= k;
            if (p->left == 0) p->cst = CH_DATA_END;
            continue;
        }
        /* a line: the size line, the CRLF after data, or a trailer line */
        char c = *d++;
        n--;
        if (c != '\n') {
            if (p->cline_len < sizeof p->cline - 1) p->cline[p->cline_len++] = c;
            continue;
        }
        p->cline[p->cline_len] = '\0';
        if (p->cline_len && p->cline[p->cline_len - 1] == '\r') p->cline[--p->cline_len] = '\0';
        size_t len = p->cline_len;
        p->cline_len = 0;
        if (p->cst == CH_DATA_END) {
            if (len) p->down_err = true;
            p->cst = CH_SIZE;
        } else if (p->cst == CH_SIZE) {
            char *end;
            errno = 0;
            unsigned long long sz = strtoull(p->cline, &end, 16);
            if (end == p->cline || errno || (*end && *end != ';' && *end != ' ')) {
                p->down_err = true;
            } else if (sz == 0) {
                p->cst = CH_TRAILER;
            } else {
                p->left = sz;
                p->cst = CH_DATA;
            }
        } else if (p->cst == CH_TRAILER && len == 0) {
            p->cst = CH_DONE;
            p->down_eof = true;
        }
    }
}

/* Under mu: the head is complete at end (the "\r\n\r\n"): its status and
 * how its body is framed. */
static void head_parse(proxy_stream *p, char *end)
{
    int status = 0;
    if (sscanf(p->head, "HTTP/1.%*d %d", &status) != 1 || status < 100 || status > 599) {
        head_failed(p, "the sandbox's answer on that port is not HTTP/1.x");
        return;
    }
    p->status = status;
    p->framing = BODY_CLOSE;
    p->content_length = -1;
    for (char *line = strstr(p->head, "\r\n"); line && line < end; line = strstr(line, "\r\n")) {
        line += 2;
        char *eol = strstr(line, "\r\n");
        size_t n = eol ? (size_t)(eol - line) : 0;
        if (n > 15 && !strncasecmp(line, "content-length:", 15)) {
            p->content_length = (int64_t)strtoll(line + 15, NULL, 10);
            if (p->framing != BODY_CHUNKED && p->content_length >= 0) p->framing = BODY_LENGTH;
        } else if (n > 18 && !strncasecmp(line, "transfer-encoding:", 18) &&
                   memmem(line, n, "chunked", 7)) {
            p->framing = BODY_CHUNKED;
            p->content_length = -1;
        }
    }
    if (p->no_body || status == 204 || status == 304) p->framing = BODY_NONE;
    if (p->framing == BODY_LENGTH) p->left = (uint64_t)p->content_length;
    if (p->framing == BODY_NONE || (p->framing == BODY_LENGTH && p->left == 0)) p->down_eof = true;
    p->head_state = 1;
    pthread_cond_broadcast(&p->cond);
}

/* Under mu: n bytes from the guest. */
static void guest_bytes(proxy_stream *p, const char *d, size_t n)
{
    if (p->head_state == 1) {
        body_feed(p, d, n);
        return;
    }
    memcpy(p->head + p->head_len, d, n); /* the relay reads at most the room left */
    p->head_len += n;
    p->head[p->head_len] = '\0';
    for (;;) {
        char *end = strstr(p->head, "\r\n\r\n");
        if (!end) {
            if (p->head_len >= PROXY_HEAD_MAX)
                head_failed(p, "the sandbox's answer headers are over 64 KiB");
            return;
        }
        int status = 0;
        size_t hlen = (size_t)(end + 4 - p->head);
        /* an interim 1xx (not 101) answer: skip it, the real one follows */
        if (sscanf(p->head, "HTTP/1.%*d %d", &status) == 1 && status >= 100 && status < 200 &&
            status != 101) {
            memmove(p->head, p->head + hlen, p->head_len - hlen + 1);
            p->head_len -= hlen;
            continue;
        }
        head_parse(p, end);
        if (p->head_state == 1 && p->head_len > hlen)
            body_feed(p, p->head + hlen, p->head_len - hlen);
        return;
    }
}

/* Under mu: the guest closed its side. */
static void guest_eof(proxy_stream *p)
{
    if (p->head_state == 0) {
        head_failed(p, "the sandbox closed the connection before answering");
        return;
    }
    if (p->framing == BODY_CLOSE) p->down_eof = true;
    else if (!p->down_eof) p->down_err = true; /* short of its length or last chunk */
}

static void *stream_main(void *arg)
{
    proxy_stream *p = arg;
    char raw[PROXY_READ];
    int64_t last = mono_ms();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->req || p->down_eof || p->down_err || p->head_state < 0) break;
        bool want_out = !p->up_dead && p->up.len > 0;
        size_t in_max = p->head_state == 0                  ? PROXY_HEAD_MAX - p->head_len
                        : ring_room(&p->down) >= PROXY_READ ? PROXY_READ
                                                            : 0;
        pthread_mutex_unlock(&p->mu);
        /* No byte moved either way for idle_ms: the guest is silent,
         * or guest and client each wait for the other (a client that sends
         * its whole body before reading, a guest that answers without
         * reading it): either way the request ends. */
        int64_t left = last + p->idle_ms - mono_ms();
        if (left <= 0) {
            pthread_mutex_lock(&p->mu);
            head_failed(p, "the sandbox did not answer in time");
            p->down_err = true;
            break;
        }
        int ms = (int)left;
        struct pollfd pf[2] = {
            {.fd = p->wake, .events = POLLIN},
            {.fd = in_max || want_out ? p->tfd : -1,
             .events = (short)((in_max ? POLLIN : 0) | (want_out ? POLLOUT : 0))}};
        int n = poll(pf, 2, ms);
        if (n < 0 && errno != EINTR) {
            pthread_mutex_lock(&p->mu);
            head_failed(p, "the connection to the sandbox failed");
            p->down_err = true;
            break;
        }
        if (n > 0 && pf[0].revents) {
            uint64_t v;
            if (read(p->wake, &v, sizeof v) > 0) last = mono_ms(); /* the client moved bytes */
        }
        if (n > 0 && want_out && (pf[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            const char *d;
            pthread_mutex_lock(&p->mu);
            size_t k = ring_peek(&p->up, &d);
            pthread_mutex_unlock(&p->mu);
            ssize_t w = send(p->tfd, d, k, MSG_NOSIGNAL | MSG_DONTWAIT);
            pthread_mutex_lock(&p->mu);
            if (w > 0) {
                ring_drop(&p->up, (size_t)w);
                last = mono_ms();
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                /* The guest takes no more of the body (it may have answered
                 * already): the rest is dropped, its answer still read. */
                p->up_dead = true;
                ring_drop(&p->up, p->up.len);
            }
            up_resume(p);
            pthread_mutex_unlock(&p->mu);
        }
        if (n > 0 && in_max && (pf[1].revents & (POLLIN | POLLERR | POLLHUP))) {
            ssize_t got = recv(p->tfd, raw, in_max, MSG_DONTWAIT);
            pthread_mutex_lock(&p->mu);
            if (got > 0) {
                last = mono_ms();
                guest_bytes(p, raw, (size_t)got);
            } else if (got == 0) {
                guest_eof(p);
            } else if (errno != EAGAIN && errno != EINTR) {
                head_failed(p, "the connection to the sandbox failed");
                p->down_err = true;
            }
            down_resume(p);
            pthread_mutex_unlock(&p->mu);
        }
        pthread_mutex_lock(&p->mu);
    }
    /* locked here */
    p->relay_done = true;
    head_failed(p, "the connection to the sandbox failed");
    down_resume(p);
    up_resume(p);
    pthread_mutex_unlock(&p->mu);
    proxy_stream_unref(p);
    return NULL;
}

/* I/O thread: a piece of the client's body into the up ring, or a pause
 * until the relay has made room. */
int proxy_stream_body(void *cls, http_request *req, const char *data, size_t len)
{
    (void)cls;
    proxy_stream *p = http_request_data(req);
    if (!p) return 0; /* no tunnel (an Upgrade request's body): dropped */
    pthread_mutex_lock(&p->mu);
    if (p->up_dead || p->relay_done || !p->up.p) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    size_t need = len + (p->up_chunked ? 20 + 2 : 0) + 5; /* 5: room for the last chunk */
    if (ring_room(&p->up) < need) {
        p->up_paused = true;
        p->up_need = need;
        pthread_mutex_unlock(&p->mu);
        return HTTP_BODY_PAUSE;
    }
    if (p->up_chunked) {
        char line[24];
        int n = snprintf(line, sizeof line, "%zx\r\n", len);
        ring_put(&p->up, line, (size_t)n);
    }
    ring_put(&p->up, data, len);
    if (p->up_chunked) ring_put(&p->up, "\r\n", 2);
    pthread_mutex_unlock(&p->mu);
    proxy_stream_wake(p);
    return 0;
}

/* I/O thread: the next bytes of the guest's answer for libmicrohttpd. */
static ssize_t reply_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    proxy_stream *p = cls;
    pthread_mutex_lock(&p->mu);
    ssize_t r;
    if (p->down.len) {
        bool was_full = ring_room(&p->down) < PROXY_READ;
        size_t got = 0;
        while (got < max && p->down.len) {
            const char *d;
            size_t k = ring_peek(&p->down, &d);
            if (k > max - got) k = max - got;
            memcpy(buf + got, d, k);
            ring_drop(&p->down, k);
            got += k;
        }
        r = (ssize_t)got;
        if (was_full && ring_room(&p->down) >= PROXY_READ) proxy_stream_wake(p);
    } else if (p->down_err) {
        r = HTTP_STREAM_ERROR;
    } else if (p->down_eof) {
        r = HTTP_STREAM_END;
    } else {
        p->down_paused = true;
        r = HTTP_STREAM_PAUSE;
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* The stream, its rings and the relay; got (n bytes) were read from the
 * guest already. */
static proxy_stream *start(http_request *req, int fd, bool with_body, bool chunked_body,
                           bool head_request, const char *got, size_t n, int idle_ms)
{
    proxy_stream *p = calloc(1, sizeof *p);
    if (p) {
        p->tfd = fd;
        p->idle_ms = idle_ms > 0 ? idle_ms : PROXY_IDLE_DEFAULT_MS;
        p->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        p->up.p = with_body ? malloc(PROXY_RING) : NULL;
        p->down.p = malloc(PROXY_RING);
        p->head = malloc(PROXY_HEAD_MAX + 1);
    }
    if (!p || p->wake < 0 || (with_body && !p->up.p) || !p->down.p || !p->head) {
        if (p) {
            if (p->wake >= 0) close(p->wake);
            free(p->up.p);
            free(p->down.p);
            free(p->head);
            free(p);
        }
        close(fd);
        return NULL;
    }
    p->head[0] = '\0';
    p->up_chunked = chunked_body;
    p->no_body = head_request;
    p->req = req;
    p->refs = 2; /* the request's data, the relay */
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    /* no relay yet: nothing else sees p */
    while (n && p->head_state == 0) {
        size_t k = n < PROXY_HEAD_MAX - p->head_len ? n : PROXY_HEAD_MAX - p->head_len;
        guest_bytes(p, got, k);
        got += k;
        n -= k;
    }
    if (n && p->head_state == 1) guest_bytes(p, got, n); /* body bytes: n < PROXY_RING */
    struct timeval none = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    http_request_set_data(req, p, proxy_stream_request_gone);
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &at, stream_main, p) != 0) {
        pthread_attr_destroy(&at);
        pthread_mutex_lock(&p->mu);
        p->relay_done = true;
        p->refs--; /* no relay */
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    pthread_attr_destroy(&at);
    return p;
}

proxy_stream *proxy_stream_start(http_request *req, int fd, bool with_body, bool chunked_body,
                                 bool head_request, int idle_ms)
{
    return start(req, fd, with_body, chunked_body, head_request, NULL, 0, idle_ms);
}

proxy_stream *proxy_stream_start_read(http_request *req, int fd, const char *got, size_t n,
                                      bool head_request, int idle_ms)
{
    if (n >= PROXY_RING) {
        close(fd);
        return NULL;
    }
    return start(req, fd, false, false, head_request, got, n, idle_ms);
}

/* Worker: the body is in (all of it gone to the ring); the guest's answer
 * head decides the reply, whose body the relay then streams. */
void proxy_stream_answer(proxy_stream *p, http_request *req)
{
    pthread_mutex_lock(&p->mu);
    if (p->up_chunked && p->up.p && !p->up_dead && !p->relay_done) ring_put(&p->up, "0\r\n\r\n", 5);
    pthread_mutex_unlock(&p->mu);
    proxy_stream_wake(p);
    pthread_mutex_lock(&p->mu);
    while (p->head_state == 0) pthread_cond_wait(&p->cond, &p->mu);
    int state = p->head_state;
    pthread_mutex_unlock(&p->mu);
    if (state < 0) {
        http_reply_error(req, 502, "bad_gateway", "%s", p->fail);
        return;
    }
    /* The head is the relay's no more: read it in place. */
    char content_type[256] = "application/octet-stream";
    char *end = strstr(p->head, "\r\n\r\n");
    *end = '\0';
    char *save = NULL;
    strtok_r(p->head, "\r\n", &save); /* status line */
    for (char *line = strtok_r(NULL, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        if (!strcasecmp(line, "content-type")) snprintf(content_type, sizeof content_type, "%s", v);
        if (!skip_response_header(line)) http_add_header(req, line, v);
    }
    if (p->framing == BODY_NONE) {
        http_reply_bytes(req, p->status, content_type, NULL, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->refs++; /* the reply's */
    pthread_mutex_unlock(&p->mu);
    http_reply_stream(req, p->status, content_type,
                      p->framing == BODY_LENGTH ? p->content_length : -1, reply_read, p,
                      reply_done);
}
