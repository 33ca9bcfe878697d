/* Unit tests for controlplane/http_server: one loop thread + worker pool,
 * a slow request holding up only its own worker (also for connections
 * arriving together with it and for keep-alive connections), a client that
 * disconnects during a slow handler, the reply helpers, the body limit and
 * a clean stop. No database: the worker objects are dummies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http_server.h"

/* Shared with the handler: /slow parks until the test releases it. */
typedef struct app {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int slow_parked;
    bool release;
    int workers_made;
    int slow_done;        /* slow handlers that have replied and returned */
    int slow_status_seen; /* http_reply_status right after the slow reply */
    bool slow_is_long;    /* on_headers marks /slow long-running */
    int streamed_bytes;   /* body bytes count_body saw */
    int vetted;           /* vet calls */
    int vetted_handled;   /* handler calls for /vetted */
    int data_freed;       /* request data freed (http_request_set_data) */
    int long_threads;     /* http_server_config.n_long_threads */
    /* /paced: a consumer with a bounded buffer (guarded by mu). */
    size_t paced_buffered, paced_max, paced_total;
    int paced_pauses;
    http_request *paced_waiting; /* paused, to be resumed when there is room */
    bool paced_stop;
    /* /drip: a reply whose bytes come from another thread (guarded by mu). */
    int drip_avail, drip_taken, drip_calls, drip_pauses, drip_done;
    bool drip_paused;
    http_request *drip_req; /* until the reply's done */
} app;

#define PACED_CAP (256 * 1024)

/* Request data of /data*: remembers its app so the free fn can count. */
typedef struct req_data {
    app *ap;
    int value;
} req_data;

static void req_data_free(void *p)
{
    req_data *d = p;
    pthread_mutex_lock(&d->ap->mu);
    d->ap->data_freed++;
    pthread_cond_broadcast(&d->ap->cond);
    pthread_mutex_unlock(&d->ap->mu);
    free(d);
}

static void *worker_init(void *a, int index, terr *err)
{
    app *ap = a;
    pthread_mutex_lock(&ap->mu);
    ap->workers_made++;
    pthread_mutex_unlock(&ap->mu);
    int *w = malloc(sizeof *w);
    *w = index;
    return w;
}

/* The upgraded socket: says hello, repeats what the client sent after the
 * request, and hands the socket back. */
static void on_upgraded(void *cls, int fd, const char *extra, size_t extra_len, http_upgraded *h)
{
    char msg[128];
    int n = snprintf(msg, sizeof msg, "hello [%.*s]\n", (int)extra_len, extra);
    if (write(fd, msg, (size_t)n) != n) abort();
    http_upgraded_close(h);
}

/* A streamed response: "0\n1\n...9\n" in ten pieces of unknown total size. */
static ssize_t count_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
    if (pos >= 20) return HTTP_STREAM_END;
    buf[0] = (char)('0' + pos / 2);
    buf[1] = '\n';
    return 2;
}

/* /drip's reader: the bytes the producer made available ("a", "b", "c"),
 * a pause when there is none yet. */
static ssize_t drip_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    app *ap = cls;
    pthread_mutex_lock(&ap->mu);
    ap->drip_calls++;
    ssize_t r;
    if (ap->drip_taken < ap->drip_avail) {
        buf[0] = (char)('a' + ap->drip_taken++);
        r = 1;
    } else if (ap->drip_taken >= 3) {
        r = HTTP_STREAM_END;
    } else {
        ap->drip_pauses++;
        ap->drip_paused = true;
        r = HTTP_STREAM_PAUSE;
    }
    pthread_mutex_unlock(&ap->mu);
    return r;
}

static void drip_done(void *cls)
{
    app *ap = cls;
    pthread_mutex_lock(&ap->mu);
    ap->drip_req = NULL;
    ap->drip_done++;
    pthread_cond_broadcast(&ap->cond);
    pthread_mutex_unlock(&ap->mu);
}

/* The producer: a byte every 200 ms, resuming the paused reply. */
static void *drip_producer(void *arg)
{
    app *ap = arg;
    for (int i = 0; i < 3; i++) {
        usleep(200 * 1000);
        pthread_mutex_lock(&ap->mu);
        ap->drip_avail++;
        if (ap->drip_paused && ap->drip_req) {
            ap->drip_paused = false;
            http_reply_stream_resume(ap->drip_req);
        }
        pthread_mutex_unlock(&ap->mu);
    }
    return NULL;
}

static int add_param(void *cls, const char *key, const char *value)
{
    char *got = cls;
    size_t n = strlen(got);
    snprintf(got + n, 256 - n, "[%s=%s]", key, value);
    return 0;
}

static int count_body(void *cls, http_request *req, const char *data, size_t len)
{
    app *ap = cls;
    ap->streamed_bytes += (int)len; /* I/O thread only */
    return 0;
}

/* /paced's body: into a bounded buffer; full -> pause. */
static int paced_body(void *cls, http_request *req, const char *data, size_t len)
{
    app *ap = cls;
    pthread_mutex_lock(&ap->mu);
    int rc = 0;
    if (ap->paced_buffered + len > PACED_CAP) {
        ap->paced_pauses++;
        ap->paced_waiting = req;
        rc = HTTP_BODY_PAUSE;
    } else {
        ap->paced_buffered += len;
        ap->paced_total += len;
        if (ap->paced_buffered > ap->paced_max) ap->paced_max = ap->paced_buffered;
    }
    pthread_mutex_unlock(&ap->mu);
    return rc;
}

/* The slow consumer: drains 16 KiB per millisecond, resumes a paused body
 * once a whole piece (128 KiB) fits again. */
static void *paced_consumer(void *arg)
{
    app *ap = arg;
    for (;;) {
        pthread_mutex_lock(&ap->mu);
        if (ap->paced_stop) {
            pthread_mutex_unlock(&ap->mu);
            return NULL;
        }
        size_t take = ap->paced_buffered < 16384 ? ap->paced_buffered : 16384;
        ap->paced_buffered -= take;
        http_request *resume = NULL;
        if (ap->paced_waiting && ap->paced_buffered + 128 * 1024 <= PACED_CAP) {
            resume = ap->paced_waiting;
            ap->paced_waiting = NULL;
        }
        pthread_mutex_unlock(&ap->mu);
        if (resume) http_request_resume_body(resume);
        usleep(1000);
    }
}

/* The header hook: /limited takes 10 bytes at most, /upload is streamed,
 * /refused is answered before its body, /long is long-running. */
static void on_headers(void *a, http_request *req)
{
    app *ap = a;
    const char *path = http_request_path(req);
    if (strcmp(path, "/limited") == 0) http_request_set_body_limit(req, 10);
    else if (strcmp(path, "/upload") == 0) http_request_stream_body(req, count_body, ap);
    else if (strcmp(path, "/paced") == 0) http_request_stream_body(req, paced_body, ap);
    else if (strcmp(path, "/refused") == 0) http_reply_error(req, 401, "unauthorized", "no key");
    else if (strcmp(path, "/slow") == 0 && ap->slow_is_long) http_request_set_long_running(req);
    else if (strcmp(path, "/vetted") == 0) http_request_vet_first(req);
    else if (strcmp(path, "/vetlong") == 0) {
        http_request_set_long_running(req);
        http_request_vet_first_long(req);
    } else if (strncmp(path, "/data", 5) == 0) {
        req_data *d = malloc(sizeof *d);
        *d = (req_data){.ap = ap, .value = 42};
        http_request_set_data(req, d, req_data_free);
        if (strcmp(path, "/data-refused") == 0)
            http_reply_error(req, 401, "unauthorized", "no key");
    }
}

/* The worker-side check before the body: X-Key must be "good". */
static void vet(void *a, void *worker, http_request *req)
{
    app *ap = a;
    pthread_mutex_lock(&ap->mu);
    ap->vetted++;
    if (strcmp(http_request_path(req), "/vetlong") == 0) { /* a slow vet: parks */
        ap->slow_parked++;
        pthread_cond_broadcast(&ap->cond);
        while (!ap->release) pthread_cond_wait(&ap->cond, &ap->mu);
        pthread_mutex_unlock(&ap->mu);
        return;
    }
    pthread_mutex_unlock(&ap->mu);
    const char *key = http_request_header(req, "X-Key");
    if (!key || strcmp(key, "good") != 0) http_reply_error(req, 401, "unauthorized", "bad key");
}

static void handler(void *a, void *worker, http_request *req)
{
    app *ap = a;
    const char *uri = http_request_uri(req);
    if (strcmp(uri, "/slow") == 0) {
        pthread_mutex_lock(&ap->mu);
        ap->slow_parked++;
        pthread_cond_broadcast(&ap->cond);
        while (!ap->release) pthread_cond_wait(&ap->cond, &ap->mu);
        pthread_mutex_unlock(&ap->mu);
        http_reply_json(req, 200, json_pack("{s:s}", "slow", "done"));
        /* The request stays readable after the reply, until we return. */
        pthread_mutex_lock(&ap->mu);
        ap->slow_status_seen = http_reply_status(req);
        ap->slow_done++;
        pthread_cond_broadcast(&ap->cond);
        pthread_mutex_unlock(&ap->mu);
    } else if (strcmp(uri, "/err") == 0) {
        http_reply_error(req, 409, "invalid_state", "sandbox is not running (status: %s)",
                         "paused");
    } else if (strcmp(uri, "/noreply") == 0) {
        /* Forgets to reply: the server must answer 500 itself. */
    } else if (strcmp(uri, "/twice") == 0) {
        http_add_header(req, "Allow", "GET");
        http_reply_empty(req, 204);
        http_reply_error(req, 500, "x", "second reply is ignored");
    } else if (strcmp(uri, "/vetted") == 0) {
        size_t len;
        http_request_body(req, &len);
        pthread_mutex_lock(&ap->mu);
        ap->vetted_handled++;
        pthread_mutex_unlock(&ap->mu);
        http_reply_json(req, 200, json_pack("{s:i}", "buffered", (int)len));
    } else if (strcmp(uri, "/data") == 0) {
        req_data *d = http_request_data(req);
        http_reply_json(req, 200, json_pack("{s:i}", "data", d ? d->value : -1));
    } else if (strcmp(uri, "/upgrade") == 0) {
        http_reply_upgrade(req, "echo", on_upgraded, NULL);
    } else if (strcmp(uri, "/stream") == 0) {
        http_reply_stream(req, 200, "text/plain", -1, count_stream, NULL, NULL);
    } else if (strcmp(uri, "/drip") == 0) {
        pthread_mutex_lock(&ap->mu);
        ap->drip_req = req;
        pthread_mutex_unlock(&ap->mu);
        http_reply_stream(req, 200, "text/plain", -1, drip_read, ap, drip_done);
    } else if (strcmp(uri, "/paced") == 0) {
        pthread_mutex_lock(&ap->mu);
        json_t *j = json_pack("{s:I, s:I, s:i}", "paced", (json_int_t)ap->paced_total, "max",
                              (json_int_t)ap->paced_max, "pauses", ap->paced_pauses);
        pthread_mutex_unlock(&ap->mu);
        http_reply_json(req, 200, j);
    } else if (strcmp(uri, "/upload") == 0) {
        size_t len;
        http_request_body(req, &len);
        http_reply_json(
            req, 200,
            json_pack("{s:i, s:i}", "streamed", ap->streamed_bytes, "buffered", (int)len));
    } else if (strncmp(uri, "/query?", 7) == 0) {
        char got[256] = "";
        if (http_query_each(http_request_query(req), add_param, got) != 0)
            http_reply_error(req, 400, "bad", "bad");
        else http_reply_bytes(req, 200, "text/plain", got, strlen(got));
    } else if (strcmp(uri, "/bytes") == 0) {
        http_reply_bytes(req, 200, "application/octet-stream", "a\0b", 3);
    } else {
        http_reply_json(req, 200, json_pack("{s:i}", "worker", *(int *)worker));
    }
}

/* Minimal HTTP/1.0 client: sends one request, returns the whole answer
 * (malloc'd), or NULL on a socket error / 10 s timeout. */
static char *http_get(int port, const char *method, const char *path, const char *body,
                      size_t body_len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    char head[256];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.0\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
                     method, path, body_len);
    if (write(fd, head, (size_t)n) != n) abort();
    size_t off = 0;
    while (off < body_len) {
        ssize_t w = write(fd, body + off, body_len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    for (;;) {
        if (cap - len < 1024) out = realloc(out, cap *= 2);
        ssize_t r = read(fd, out + len, cap - len - 1);
        if (r < 0) {
            free(out);
            close(fd);
            return NULL;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    out[len] = '\0';
    close(fd);
    return out;
}

typedef struct slow_call {
    int port;
    char *answer;
} slow_call;

static void *slow_thread(void *arg)
{
    slow_call *c = arg;
    c->answer = http_get(c->port, "GET", "/slow", "", 0);
    return NULL;
}

static http_server *start_with(app *ap, int threads, bool hook)
{
    pthread_mutex_init(&ap->mu, NULL);
    pthread_cond_init(&ap->cond, NULL);
    http_server_config cfg = {.listen_addr = "127.0.0.1:0",
                              .n_threads = threads,
                              .n_long_threads = ap->long_threads,
                              .max_body = 4096,
                              .app = ap,
                              .worker_init = worker_init,
                              .worker_free = free,
                              .handler = handler,
                              .on_headers = hook ? on_headers : NULL,
                              .vet = hook ? vet : NULL};
    http_server *s;
    terr err;
    if (http_server_start(&cfg, &s, &err) != 0) fail_msg("start: %s", err.msg);
    assert_true(http_server_port(s) > 0);
    return s;
}

static http_server *start(app *ap, int threads)
{
    memset(ap, 0, sizeof *ap);
    return start_with(ap, threads, false);
}

static void test_slow_request_blocks_only_its_thread(void **state)
{
    app ap;
    http_server *s = start(&ap, 3);
    assert_int_equal(ap.workers_made, 3);
    slow_call c = {.port = http_server_port(s)};
    pthread_t t;
    pthread_create(&t, NULL, slow_thread, &c);
    /* Wait (bounded) until the slow request is parked in its handler. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&ap.mu);
    while (ap.slow_parked == 0)
        if (pthread_cond_timedwait(&ap.cond, &ap.mu, &deadline) != 0) break;
    int parked = ap.slow_parked;
    pthread_mutex_unlock(&ap.mu);
    assert_int_equal(parked, 1);

    /* While it is parked, other requests are answered by the other threads. */
    for (int i = 0; i < 20; i++) {
        char *a = http_get(http_server_port(s), "GET", "/fast", "", 0);
        assert_non_null(a);
        assert_non_null(strstr(a, "200 OK"));
        assert_non_null(strstr(a, "Content-Type: application/json"));
        assert_non_null(strstr(a, "{\"worker\":"));
        free(a);
    }
    pthread_mutex_lock(&ap.mu);
    ap.release = true;
    pthread_cond_broadcast(&ap.cond);
    pthread_mutex_unlock(&ap.mu);
    pthread_join(t, NULL);
    assert_non_null(c.answer);
    assert_non_null(strstr(c.answer, "{\"slow\":\"done\"}"));
    free(c.answer);
    http_server_stop(s);
}

static void test_reply_helpers_and_body_limit(void **state)
{
    app ap;
    http_server *s = start(&ap, 1);
    int port = http_server_port(s);
    char *a = http_get(port, "GET", "/err", "", 0);
    assert_non_null(a);
    assert_non_null(strstr(a, " 409 Conflict\r\n"));
    assert_non_null(strstr(
        a,
        "{\"error\":{\"code\":\"invalid_state\",\"message\":\"sandbox is not running (status: paused)\"}}"));
    free(a);

    a = http_get(port, "GET", "/bytes", "", 0);
    assert_non_null(strstr(a, "Content-Type: application/octet-stream"));
    char *body = strstr(a, "\r\n\r\n");
    assert_non_null(body);
    assert_memory_equal(body + 4, "a\0b", 3); /* binary-safe, NUL included */
    free(a);

    /* Unusual methods still reach the handler (so routes can answer 405). */
    a = http_get(port, "PATCH", "/x", "", 0);
    assert_non_null(strstr(a, "200 OK"));
    free(a);

    /* Over max_body: 413, the handler never runs. */
    char *big = malloc(8192);
    memset(big, 'x', 8192);
    a = http_get(port, "POST", "/x", big, 8192);
    assert_non_null(a);
    assert_non_null(strstr(a, " 413 "));
    free(a);
    free(big);
    http_server_stop(s);
}

/* Connects to the server on loopback, with a 10 s receive timeout so a
 * wrong server fails the test instead of hanging it. */
static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void send_all(int fd, const char *text)
{
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
}

/* Reads one HTTP response with a Content-Length body from a keep-alive
 * connection; returns it (malloc'd) or NULL on error / timeout. */
static char *read_response(int fd)
{
    size_t cap = 8192, len = 0;
    char *out = malloc(cap);
    for (;;) {
        out[len] = '\0';
        char *end = strstr(out, "\r\n\r\n");
        if (end) {
            const char *cl = strstr(out, "Content-Length: ");
            size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
            if (len >= (size_t)(end + 4 - out) + body) return out;
        }
        if (len + 1 >= cap) break;
        ssize_t r = read(fd, out + len, cap - len - 1);
        if (r <= 0) break;
        len += (size_t)r;
    }
    free(out);
    return NULL;
}

/* Reads until EOF (HTTP/1.0 reply). */
static char *read_to_eof(int fd)
{
    size_t cap = 8192, len = 0;
    char *out = malloc(cap);
    for (;;) {
        ssize_t r = read(fd, out + len, cap - len - 1);
        if (r < 0) {
            free(out);
            return NULL;
        }
        if (r == 0 || len + (size_t)r + 1 >= cap) break;
        len += (size_t)r;
    }
    out[len] = '\0';
    return out;
}

/* Waits (bounded, 10 s) until *counter reaches want; returns its value. */
static int wait_count(app *ap, int *counter, int want)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&ap->mu);
    while (*counter < want)
        if (pthread_cond_timedwait(&ap->cond, &ap->mu, &deadline) != 0) break;
    int got = *counter;
    pthread_mutex_unlock(&ap->mu);
    return got;
}

/* Polls (bounded, 10 s) until *flag is set under ap->mu; returns it. */
static bool wait_flag(app *ap, bool *flag)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pthread_mutex_lock(&ap->mu);
        bool v = *flag;
        pthread_mutex_unlock(&ap->mu);
        if (v) return true;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 10) return false;
        usleep(5 * 1000);
    }
}

/* Polls (bounded, 10 s) until *p is non-NULL under ap->mu. */
static bool wait_set(app *ap, http_request **p)
{
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pthread_mutex_lock(&ap->mu);
        bool v = *p != NULL;
        pthread_mutex_unlock(&ap->mu);
        if (v) return true;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 10) return false;
        usleep(5 * 1000);
    }
}

static void open_gate(app *ap)
{
    pthread_mutex_lock(&ap->mu);
    ap->release = true;
    pthread_cond_broadcast(&ap->cond);
    pthread_mutex_unlock(&ap->mu);
}

/* The head-of-line case the benchmark found: quick requests arriving at the
 * same instant as a slow one (new connections) and on a keep-alive
 * connection opened before must all be answered while the slow handler is
 * still blocked on its gate. */
static void test_quick_requests_not_held_by_slow_one(void **state)
{
    app ap;
    http_server *s = start(&ap, 2);
    int port = http_server_port(s);
    enum { N = 6 };

    int ka = connect_to(port);
    send_all(ka, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    char *a = read_response(ka);
    assert_non_null(a);
    assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
    free(a);

    /* Connect everything first, then send the slow request and the quick
     * ones back to back, so they reach the server together. */
    int slow = connect_to(port);
    int quick[N];
    for (int i = 0; i < N; i++) quick[i] = connect_to(port);
    send_all(slow, "GET /slow HTTP/1.0\r\nHost: x\r\n\r\n");
    for (int i = 0; i < N; i++) send_all(quick[i], "GET /fast HTTP/1.0\r\nHost: x\r\n\r\n");
    send_all(ka, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(wait_count(&ap, &ap.slow_parked, 1), 1);

    for (int i = 0; i < N; i++) {
        a = read_to_eof(quick[i]);
        assert_non_null(a);
        assert_non_null(strstr(a, "HTTP/1.0 200 OK"));
        assert_non_null(strstr(a, "{\"worker\":"));
        free(a);
        close(quick[i]);
    }
    for (int round = 0; round < 3; round++) { /* keep-alive stays usable */
        if (round > 0) send_all(ka, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
        a = read_response(ka);
        assert_non_null(a);
        assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
        assert_non_null(strstr(a, "{\"worker\":"));
        free(a);
    }

    /* All of the above happened with the gate still closed: the slow
     * handler has not replied and its client has received nothing. */
    pthread_mutex_lock(&ap.mu);
    assert_int_equal(ap.slow_done, 0);
    pthread_mutex_unlock(&ap.mu);
    char c;
    assert_int_equal(recv(slow, &c, 1, MSG_DONTWAIT), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);

    open_gate(&ap);
    a = read_to_eof(slow);
    assert_non_null(a);
    assert_non_null(strstr(a, "HTTP/1.0 200 OK"));
    assert_non_null(strstr(a, "{\"slow\":\"done\"}"));
    free(a);
    assert_int_equal(ap.slow_status_seen, 200);
    close(slow);
    close(ka);
    http_server_stop(s);
}

/* A reply decided after the headers (here a 401) to a request without a
 * body keeps the connection: the next requests are served on it, early
 * replies and worker replies alike. */
static void test_early_reply_keeps_the_connection_open(void **state)
{
    (void)state;
    app ap;
    memset(&ap, 0, sizeof ap);
    http_server *s = start_with(&ap, 2, true);
    int fd = connect_to(http_server_port(s));
    for (int i = 0; i < 3; i++) {
        send_all(fd, "GET /refused HTTP/1.1\r\nHost: x\r\n\r\n");
        char *a = read_response(fd);
        assert_non_null(a);
        if (!strstr(a, "HTTP/1.1 401") || strstr(a, "Connection: close")) fail_msg("answer: %s", a);
        free(a);
    }
    send_all(fd, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    char *a = read_response(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
    free(a);
    close(fd);
    http_server_stop(s);
}

/* The client goes away (connection reset) while its handler is blocked;
 * the late reply must be dropped cleanly (run under valgrind/ASan) and the
 * server keeps serving. */
static void test_client_disconnects_during_slow_handler(void **state)
{
    app ap;
    http_server *s = start(&ap, 1);
    int port = http_server_port(s);
    for (int round = 0; round < 2; round++) {
        pthread_mutex_lock(&ap.mu);
        ap.release = false;
        pthread_mutex_unlock(&ap.mu);
        int fd = connect_to(port);
        send_all(fd, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(wait_count(&ap, &ap.slow_parked, round + 1), round + 1);
        if (round == 0) {
            /* RST: the server's write of the reply fails. */
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        } else {
            shutdown(fd, SHUT_RDWR); /* orderly FIN */
        }
        close(fd);
        open_gate(&ap);
        assert_int_equal(wait_count(&ap, &ap.slow_done, round + 1), round + 1);
        /* The only worker is free again and the server answers. */
        char *a = http_get(port, "GET", "/fast", "", 0);
        assert_non_null(a);
        assert_non_null(strstr(a, "200 OK"));
        free(a);
    }
    http_server_stop(s);
}

/* A stop while a request is running waits for it and still replies. */
typedef struct stop_call {
    http_server *s;
} stop_call;

static void *stop_thread(void *arg)
{
    http_server_stop(((stop_call *)arg)->s);
    return NULL;
}

/* True once nothing accepts on the port (the listener is closed). */
static bool port_closed(int port)
{
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool closed = connect(probe, (struct sockaddr *)&sa, sizeof sa) != 0;
    close(probe);
    return closed;
}

/* A stop while a request is running: accepting stops at once, a keep-alive
 * connection gets 503 for a new request, and the running one is finished
 * and replied before the stop returns. */
static void test_stop_finishes_running_request(void **state)
{
    app ap;
    http_server *s = start(&ap, 1);
    int port = http_server_port(s);
    int ka = connect_to(port);
    send_all(ka, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    char *a = read_response(ka);
    assert_non_null(a);
    free(a);
    int fd = connect_to(port);
    send_all(fd, "GET /slow HTTP/1.0\r\nHost: x\r\n\r\n");
    assert_int_equal(wait_count(&ap, &ap.slow_parked, 1), 1);
    stop_call sc = {.s = s};
    pthread_t t;
    pthread_create(&t, NULL, stop_thread, &sc);

    /* Poll (bounded) until the listener is gone: the stop has begun. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool closed = false;
    for (;;) {
        if ((closed = port_closed(port))) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 10) break;
        usleep(1000);
    }
    assert_true(closed);
    send_all(ka, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    a = read_response(ka);
    assert_non_null(a);
    assert_non_null(strstr(a, " 503 Service Unavailable\r\n"));
    assert_non_null(strstr(a, "server is shutting down"));
    free(a);

    /* The stop is still waiting for the slow request. */
    pthread_mutex_lock(&ap.mu);
    assert_int_equal(ap.slow_done, 0);
    pthread_mutex_unlock(&ap.mu);
    open_gate(&ap);
    a = read_to_eof(fd);
    assert_non_null(a);
    if (!strstr(a, "{\"slow\":\"done\"}")) fail_msg("reply during stop: [%s]", a);
    free(a);
    close(fd);
    pthread_join(t, NULL);
    close(ka);
}

static void test_missing_and_double_reply(void **state)
{
    app ap;
    http_server *s = start(&ap, 1);
    int port = http_server_port(s);
    char *a = http_get(port, "GET", "/noreply", "", 0);
    assert_non_null(a);
    assert_non_null(strstr(a, " 500 Internal Server Error\r\n"));
    assert_non_null(strstr(a, "handler sent no reply"));
    free(a);
    a = http_get(port, "GET", "/twice", "", 0);
    assert_non_null(a);
    assert_non_null(strstr(a, " 204 No Content\r\n"));
    assert_non_null(strstr(a, "Allow: GET\r\n")); /* header added before the reply */
    assert_null(strstr(a, "second reply"));
    free(a);
    http_server_stop(s);
}

static void test_bad_listen_address(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    const char *bad[] = {"nonsense", "127.0.0.1", "[::1", "256.1.1.1:80"};
    for (size_t i = 0; i < 4; i++) {
        http_server_config cfg = {.listen_addr = bad[i],
                                  .n_threads = 1,
                                  .max_body = 1,
                                  .app = &ap,
                                  .worker_init = worker_init,
                                  .worker_free = free,
                                  .handler = handler};
        http_server *s = (http_server *)1;
        terr err = {{0}};
        assert_int_equal(http_server_start(&cfg, &s, &err), -1);
        assert_null(s);
        assert_true(strlen(err.msg) > 0);
    }
    http_server_config cfg = {.listen_addr = "127.0.0.1:0",
                              .n_threads = 0,
                              .max_body = 1,
                              .app = &ap,
                              .worker_init = worker_init,
                              .worker_free = free,
                              .handler = handler};
    http_server *s;
    assert_int_equal(http_server_start(&cfg, &s, NULL), -1);
}

/* The decision after the headers: a Content-Length far over the route's
 * limit, or over it with "Expect: 100-continue", is answered 413 at once,
 * before any body byte is sent; a refusal by the header hook likewise. A
 * small excess sent unasked is drained and then refused. The handler never
 * runs. */
static void test_over_limit_refused_before_the_body(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    http_server *s = start_with(&ap, 1, true);
    int port = http_server_port(s);
    int fd = connect_to(port);
    send_all(fd, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n");
    char *a = read_response(fd);
    if (!a) fail_msg("no answer to a huge Content-Length without a body");
    assert_non_null(strstr(a, " 413 "));
    assert_non_null(strstr(a, "\"code\":\"too_large\""));
    free(a);
    close(fd);

    fd = connect_to(port);
    send_all(
        fd,
        "POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    a = read_response(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, " 413 "));
    assert_null(strstr(a, "100 Continue"));
    free(a);
    close(fd);

    a = http_get(port, "POST", "/limited", "0123456789a", 11);
    assert_non_null(a);
    assert_non_null(strstr(a, " 413 "));
    assert_non_null(strstr(a, "request body of 11 bytes is over the 10-byte limit"));
    free(a);

    fd = connect_to(port);
    send_all(fd, "POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
    a = read_response(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, " 401 Unauthorized\r\n"));
    free(a);
    close(fd);

    /* At the limit is fine; a chunked body that outgrows it is 413 too. */
    a = http_get(port, "POST", "/limited", "0123456789", 10);
    assert_non_null(strstr(a, "200 OK"));
    free(a);
    fd = connect_to(port);
    send_all(fd, "POST /limited HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n");
    a = read_response(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, " 413 "));
    free(a);
    close(fd);
    http_server_stop(s);
}

/* A streamed request body reaches the hook's callback piece by piece (the
 * handler sees no buffered body); a streamed response of unknown size goes
 * out chunked on HTTP/1.1. */
static void test_streamed_body_and_response(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    http_server *s = start_with(&ap, 1, true);
    int port = http_server_port(s);
    char *big = malloc(100000);
    memset(big, 'y', 100000);
    char *a = http_get(port, "POST", "/upload", big, 100000);
    free(big);
    assert_non_null(a);
    assert_non_null(strstr(a, "{\"streamed\":100000,\"buffered\":0}"));
    free(a);

    int fd = connect_to(port);
    send_all(fd, "GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    a = read_to_eof(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(a, "Transfer-Encoding: chunked"));
    char *body = strstr(a, "\r\n\r\n");
    assert_non_null(body);
    /* The ten pieces, in order, whatever the chunk sizes. */
    const char *p = body;
    for (int i = 0; i < 10; i++) {
        char want[3] = {(char)('0' + i), '\n', 0};
        p = strstr(p, want);
        if (!p) fail_msg("piece %d missing in [%s]", i, body);
        p += 2;
    }
    free(a);
    close(fd);

    /* HTTP/1.0: no chunked encoding, the end is the connection's close. */
    a = http_get(port, "GET", "/stream", "", 0);
    assert_non_null(strstr(a, "HTTP/1.0 200 OK"));
    assert_null(strstr(a, "chunked"));
    assert_non_null(strstr(a, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n"));
    free(a);
    http_server_stop(s);
}

/* Request data set on the I/O thread reaches the handler and is freed
 * exactly once when the request ends, also when it was refused before any
 * handler ran. */
static void test_request_data_freed_once(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    http_server *s = start_with(&ap, 1, true);
    int port = http_server_port(s);
    char *a = http_get(port, "GET", "/data", "", 0);
    assert_non_null(a);
    assert_non_null(strstr(a, "{\"data\":42}"));
    free(a);
    assert_int_equal(wait_count(&ap, &ap.data_freed, 1), 1);
    a = http_get(port, "GET", "/data-refused", "", 0);
    assert_non_null(a);
    assert_non_null(strstr(a, " 401 "));
    free(a);
    assert_int_equal(wait_count(&ap, &ap.data_freed, 2), 2);
    http_server_stop(s);
    assert_int_equal(ap.data_freed, 2);
}

/* Long-running requests never take the last worker: with two workers and
 * two slow long-running requests, one waits and a quick request is still
 * answered at once. */
static void test_long_running_leave_a_worker_for_quick_ones(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    ap.slow_is_long = true;
    http_server *s = start_with(&ap, 2, true);
    int port = http_server_port(s);
    slow_call c1 = {.port = port}, c2 = {.port = port};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, slow_thread, &c1);
    pthread_create(&t2, NULL, slow_thread, &c2);
    assert_int_equal(wait_count(&ap, &ap.slow_parked, 1), 1);
    usleep(200 * 1000);
    pthread_mutex_lock(&ap.mu);
    int parked = ap.slow_parked;
    pthread_mutex_unlock(&ap.mu);
    assert_int_equal(parked, 1); /* the second waits: one worker stays free */
    char *a = http_get(port, "GET", "/fast", "", 0);
    assert_non_null(a);
    assert_non_null(strstr(a, "200 OK"));
    free(a);
    open_gate(&ap);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_non_null(strstr(c1.answer, "{\"slow\":\"done\"}"));
    assert_non_null(strstr(c2.answer, "{\"slow\":\"done\"}"));
    free(c1.answer);
    free(c2.answer);
    http_server_stop(s);
}

/* With a long-call pool, long requests fill only its workers: two of them
 * run at once on a pool of two while the one quick worker still answers,
 * and a third long one waits for the pool, not for the quick worker. */
/* A long vet (http_request_vet_first_long) runs on the long-call pool: while
 * one parks, the only quick worker still serves a quick request; once it
 * returns, the request's body is read and its handler runs. */
static void test_long_vet_leaves_quick_workers_alone(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    ap.long_threads = 1;
    http_server *s = start_with(&ap, 1, true);
    int port = http_server_port(s);
    int fd = connect_to(port);
    send_all(fd, "POST /vetlong HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 "Content-Length: 5\r\n\r\nhello");
    assert_int_equal(wait_count(&ap, &ap.slow_parked, 1), 1);
    char *a = http_get(port, "GET", "/fast", "", 0);
    assert_non_null(a);
    assert_non_null(strstr(a, "200 OK"));
    free(a);
    open_gate(&ap);
    char *b = read_to_eof(fd);
    close(fd);
    assert_non_null(b);
    if (!strstr(b, "200 OK")) fail_msg("answer: %s", b);
    free(b);
    http_server_stop(s);
}

static void test_long_pool_leaves_quick_workers_alone(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    ap.slow_is_long = true;
    ap.long_threads = 2;
    http_server *s = start_with(&ap, 1, true);
    int port = http_server_port(s);
    slow_call c[3] = {{.port = port}, {.port = port}, {.port = port}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, slow_thread, &c[i]);
    assert_int_equal(wait_count(&ap, &ap.slow_parked, 2), 2);
    usleep(200 * 1000);
    pthread_mutex_lock(&ap.mu);
    int parked = ap.slow_parked;
    pthread_mutex_unlock(&ap.mu);
    assert_int_equal(parked, 2); /* the third waits for the pool */
    char *a = http_get(port, "GET", "/fast", "", 0);
    assert_non_null(a);
    assert_non_null(strstr(a, "200 OK"));
    free(a);
    open_gate(&ap);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_non_null(strstr(c[i].answer, "{\"slow\":\"done\"}"));
        free(c[i].answer);
    }
    http_server_stop(s);
}

/* A body a little over its limit that arrives in pieces (the first ones
 * under the limit) is drained and answered 413; a chunked body that goes on
 * far past the limit is cut off (connection closed), not read forever. */
static void test_over_limit_in_pieces_and_endless_chunked(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    http_server *s = start_with(&ap, 1, true);
    int port = http_server_port(s);
    int fd = connect_to(port);
    send_all(fd, "POST /limited HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n");
    for (int i = 0; i < 6; i++) { /* 5 bytes at a time: the first under the limit */
        usleep(50 * 1000);
        send_all(fd, "01234");
    }
    char *a = read_response(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, "413"));
    free(a);
    close(fd);

    fd = connect_to(port);
    send_all(fd, "POST /limited HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    static char chunk[65536 + 16];
    int n = snprintf(chunk, sizeof chunk, "10000\r\n");
    memset(chunk + n, 'x', 65536);
    memcpy(chunk + n + 65536, "\r\n", 2);
    size_t chunk_len = (size_t)n + 65536 + 2;
    size_t sent = 0;
    bool cut = false;
    while (sent < (size_t)64 * 1024 * 1024) { /* far past the limit + 4 MiB */
        ssize_t w = send(fd, chunk, chunk_len, MSG_NOSIGNAL);
        if (w < 0) {
            cut = true;
            break;
        }
        sent += (size_t)w;
    }
    assert_true(cut);
    assert_true(sent < (size_t)16 * 1024 * 1024); /* cut near 4 MiB (+ socket buffers) */
    close(fd);
    http_server_stop(s);
}

typedef struct paced_call {
    int port;
    size_t len;
    char *answer;
} paced_call;

static void *paced_thread(void *arg)
{
    paced_call *c = arg;
    char *body = malloc(c->len);
    memset(body, 'p', c->len);
    c->answer = http_get(c->port, "POST", "/paced", body, c->len);
    free(body);
    return NULL;
}

/* Back-pressure: a fast client streaming 8 MiB to a consumer that keeps at
 * most 256 KiB is paused and resumed (reading stops while the consumer is
 * full) and every byte arrives once; a stop while a body is paused ends
 * that connection instead of hanging (or libmicrohttpd panicking). */
static void test_streamed_body_pauses_for_a_slow_consumer(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    http_server *s = start_with(&ap, 1, true);
    pthread_t consumer;
    pthread_create(&consumer, NULL, paced_consumer, &ap);
    paced_call c = {.port = http_server_port(s), .len = 8u * 1024 * 1024};
    pthread_t client;
    pthread_create(&client, NULL, paced_thread, &c);
    pthread_join(client, NULL);
    pthread_mutex_lock(&ap.mu);
    ap.paced_stop = true;
    pthread_mutex_unlock(&ap.mu);
    pthread_join(consumer, NULL);
    assert_non_null(c.answer);
    char want[64];
    snprintf(want, sizeof want, "\"paced\":%zu", c.len);
    if (!strstr(c.answer, want)) fail_msg("answer: %s", c.answer);
    assert_true(ap.paced_pauses > 0);
    assert_true(ap.paced_max <= PACED_CAP);
    free(c.answer);

    /* Paused, never resumed: the stop still returns. */
    ap.paced_total = ap.paced_buffered = 0;
    ap.paced_waiting = NULL;
    int fd = connect_to(http_server_port(s));
    send_all(fd, "POST /paced HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n");
    static char chunk[65536];
    memset(chunk, 'q', sizeof chunk);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 64; i++)
        if (send(fd, chunk, sizeof chunk, MSG_NOSIGNAL) <= 0) break; /* blocks once paused */
    /* A send can also give up (2 s without progress) while the server,
     * starved, has not yet read up to the pause: wait for it. */
    assert_true(wait_set(&ap, &ap.paced_waiting));
    http_server_stop(s);
    close(fd);
}

/* A streamed reply whose producer is another thread: the reader pauses
 * when it has nothing (the connection suspended: no busy loop of calls),
 * each resume sends what came, the end closes the chunked body; a reply
 * paused and never resumed does not hold up the stop. */
static void test_streamed_reply_pauses_until_resumed(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    http_server *s = start_with(&ap, 2, true);
    pthread_t producer;
    pthread_create(&producer, NULL, drip_producer, &ap);
    int fd = connect_to(http_server_port(s));
    send_all(fd, "GET /drip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    char *got = read_to_eof(fd);
    close(fd);
    pthread_join(producer, NULL);
    assert_non_null(got);
    if (!strstr(got, "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n")) fail_msg("answer: %s", got);
    free(got);
    pthread_mutex_lock(&ap.mu);
    int calls = ap.drip_calls, pauses = ap.drip_pauses;
    pthread_mutex_unlock(&ap.mu);
    assert_true(pauses >= 1);
    if (calls > 3 + 1 + 2 * 3) fail_msg("reader called %d times for 3 bytes (busy loop)", calls);
    assert_int_equal(wait_count(&ap, &ap.drip_done, 1), 1);

    /* Paused, never resumed: the stop ends it. */
    ap.drip_avail = ap.drip_taken = 0;
    ap.drip_paused = false;
    fd = connect_to(http_server_port(s));
    send_all(fd, "GET /drip HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(wait_flag(&ap, &ap.drip_paused)); /* the reader found nothing */
    http_server_stop(s);
    assert_int_equal(ap.drip_done, 2);
    close(fd);
}

/* Slow-loris: a client that sends its headers a byte a second is closed
 * once HTTP_HEADERS_TIMEOUT_MS have passed since it connected, although it
 * is never idle; meanwhile the server answers others. */
static void test_slow_headers_are_cut_off(void **state)
{
    app ap;
    http_server *s = start(&ap, 1);
    int port = http_server_port(s);
    int fd = connect_to(port);
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    send_all(fd, "GET /fast HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool closed = false;
    for (int i = 0; i < 30 && !closed; i++) {
        if (i == 3) { /* others are served meanwhile */
            char *a = http_get(port, "GET", "/fast", "", 0);
            assert_non_null(a);
            assert_non_null(strstr(a, "200 OK"));
            free(a);
        }
        if (send(fd, "a", 1, MSG_NOSIGNAL) != 1) closed = true;
        char buf[256];
        ssize_t n = read(fd, buf, sizeof buf); /* waits up to 1 s */
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) closed = true;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(closed);
    assert_true(secs >= HTTP_HEADERS_TIMEOUT_MS / 1000.0 - 1.0);
    assert_true(secs <= HTTP_HEADERS_TIMEOUT_MS / 1000.0 + 5.0);
    close(fd);
    http_server_stop(s);
}

/* A request marked for vetting is checked on a worker before its body is
 * read: refused at once when nothing or a lot is announced or the client
 * waits for 100 Continue, after draining a small body otherwise; accepted,
 * its body is read and its handler runs. */
static void test_vet_before_the_body(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    http_server *s = start_with(&ap, 2, true);
    int port = http_server_port(s);

    int fd = connect_to(port);
    send_all(fd,
             "POST /vetted HTTP/1.1\r\nHost: x\r\nX-Key: bad\r\nContent-Length: 100000000\r\n\r\n");
    char *a = read_response(fd);
    if (!a) fail_msg("no answer to a refused request announcing 100 MB");
    assert_non_null(strstr(a, " 401 Unauthorized\r\n"));
    free(a);
    close(fd);

    fd = connect_to(port);
    send_all(
        fd,
        "POST /vetted HTTP/1.1\r\nHost: x\r\nX-Key: bad\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    a = read_response(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, " 401 Unauthorized\r\n"));
    assert_null(strstr(a, "100 Continue"));
    free(a);
    close(fd);

    a = http_get(port, "POST", "/vetted", "12345", 5); /* no key, a small body sent unasked */
    assert_non_null(a);
    assert_non_null(strstr(a, " 401 Unauthorized\r\n"));
    free(a);

    fd = connect_to(port);
    send_all(fd,
             "POST /vetted HTTP/1.1\r\nHost: x\r\nX-Key: good\r\nContent-Length: 5\r\n\r\nabcde");
    a = read_response(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, "{\"buffered\":5}"));
    free(a);
    /* Keep-alive goes on: a bodiless vetted request on the same connection. */
    send_all(fd, "GET /vetted HTTP/1.1\r\nHost: x\r\nX-Key: good\r\n\r\n");
    a = read_response(fd);
    assert_non_null(a);
    assert_non_null(strstr(a, "{\"buffered\":0}"));
    free(a);
    close(fd);

    pthread_mutex_lock(&ap.mu);
    assert_int_equal(ap.vetted, 5);
    assert_int_equal(ap.vetted_handled, 2);
    pthread_mutex_unlock(&ap.mu);
    http_server_stop(s);
}

/* Connection: Upgrade: 101 with the protocol, then the socket belongs to
 * the route, which gets the bytes sent right after the request too. */
static void test_upgrade_hands_over_the_socket(void **state)
{
    app ap;
    http_server *s = start(&ap, 1);
    int fd = connect_to(http_server_port(s));
    send_all(
        fd,
        "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly");
    char *a = read_to_eof(fd);
    assert_non_null(a);
    if (!strstr(a, "HTTP/1.1 101 Switching Protocols\r\n")) fail_msg("answer: [%s]", a);
    assert_non_null(strstr(a, "Upgrade: echo\r\n"));
    assert_non_null(strstr(a, "\r\n\r\nhello ["));
    free(a);
    close(fd);
    /* The server goes on serving. */
    a = http_get(http_server_port(s), "GET", "/fast", "", 0);
    assert_non_null(strstr(a, "200 OK"));
    free(a);
    http_server_stop(s);
}

/* Query strings: pieces in order, percent-decoded, '+' a space; a piece
 * without '=' is malformed. */
static void test_query_parsing(void **state)
{
    app ap;
    http_server *s = start(&ap, 1);
    int port = http_server_port(s);
    char *a = http_get(port, "GET", "/query?status=running%2Cpaused&&a+b=c+d", "", 0);
    assert_non_null(strstr(a, "[status=running,paused][a b=c d]"));
    free(a);
    a = http_get(port, "GET", "/query?status", "", 0);
    assert_non_null(strstr(a, " 400 "));
    free(a);
    http_server_stop(s);
}

int main(void)
{
    /* As in torpor-cp: a reply written to a reset connection is an error,
     * not a kill. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_request_blocks_only_its_thread),
        cmocka_unit_test(test_reply_helpers_and_body_limit),
        cmocka_unit_test(test_quick_requests_not_held_by_slow_one),
        cmocka_unit_test(test_early_reply_keeps_the_connection_open),
        cmocka_unit_test(test_client_disconnects_during_slow_handler),
        cmocka_unit_test(test_stop_finishes_running_request),
        cmocka_unit_test(test_missing_and_double_reply),
        cmocka_unit_test(test_bad_listen_address),
        cmocka_unit_test(test_over_limit_refused_before_the_body),
        cmocka_unit_test(test_streamed_body_and_response),
        cmocka_unit_test(test_request_data_freed_once),
        cmocka_unit_test(test_long_running_leave_a_worker_for_quick_ones),
        cmocka_unit_test(test_query_parsing),
        cmocka_unit_test(test_upgrade_hands_over_the_socket),
        cmocka_unit_test(test_vet_before_the_body),
        cmocka_unit_test(test_long_pool_leaves_quick_workers_alone),
        cmocka_unit_test(test_long_vet_leaves_quick_workers_alone),
        cmocka_unit_test(test_slow_headers_are_cut_off),
        cmocka_unit_test(test_over_limit_in_pieces_and_endless_chunked),
        cmocka_unit_test(test_streamed_body_pauses_for_a_slow_consumer),
        cmocka_unit_test(test_streamed_reply_pauses_until_resumed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
