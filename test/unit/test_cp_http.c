/* Unit tests for controlplane/http_server: worker threads sharing one socket,
 * a slow request holding up only its own thread, the reply helpers, the body
 * limit and a clean stop. No database: the worker objects are dummies. */
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
} app;

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

static void handler(void *a, void *worker, struct evhttp_request *req)
{
    app *ap = a;
    const char *uri = evhttp_request_get_uri(req);
    if (strcmp(uri, "/slow") == 0) {
        pthread_mutex_lock(&ap->mu);
        ap->slow_parked++;
        pthread_cond_broadcast(&ap->cond);
        while (!ap->release) pthread_cond_wait(&ap->cond, &ap->mu);
        pthread_mutex_unlock(&ap->mu);
        http_reply_json(req, 200, json_pack("{s:s}", "slow", "done"));
    } else if (strcmp(uri, "/err") == 0) {
        http_reply_error(req, 409, "invalid_state", "sandbox is not running (status: %s)", "paused");
    } else if (strcmp(uri, "/bytes") == 0) {
        http_reply_bytes(req, 200, "application/octet-stream", "a\0b", 3);
    } else {
        http_reply_json(req, 200, json_pack("{s:i}", "worker", *(int *)worker));
    }
}

/* Minimal HTTP/1.0 client: sends one request, returns the whole answer
 * (malloc'd), or NULL on a socket error / 10 s timeout. */
static char *http_get(int port, const char *method, const char *path, const char *body, size_t body_len)
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
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.0\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", method, path,
                     body_len);
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

static http_server *start(app *ap, int threads)
{
    memset(ap, 0, sizeof *ap);
    pthread_mutex_init(&ap->mu, NULL);
    pthread_cond_init(&ap->cond, NULL);
    http_server_config cfg = {.listen_addr = "127.0.0.1:0", .n_threads = threads, .max_body = 4096, .app = ap,
                              .worker_init = worker_init, .worker_free = free, .handler = handler};
    http_server *s;
    terr err;
    if (http_server_start(&cfg, &s, &err) != 0) fail_msg("start: %s", err.msg);
    assert_true(http_server_port(s) > 0);
    return s;
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
    assert_non_null(
        strstr(a, "{\"error\":{\"code\":\"invalid_state\",\"message\":\"sandbox is not running (status: paused)\"}}"));
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

    /* Over max_body: libevent's own 413, the handler never runs. */
    char *big = malloc(8192);
    memset(big, 'x', 8192);
    a = http_get(port, "POST", "/x", big, 8192);
    assert_non_null(a);
    assert_non_null(strstr(a, " 413 "));
    free(a);
    free(big);
    http_server_stop(s);
}

static void test_bad_listen_address(void **state)
{
    app ap;
    memset(&ap, 0, sizeof ap);
    const char *bad[] = {"nonsense", "127.0.0.1", "[::1", "256.1.1.1:80"};
    for (size_t i = 0; i < 4; i++) {
        http_server_config cfg = {.listen_addr = bad[i], .n_threads = 1, .max_body = 1, .app = &ap,
                                  .worker_init = worker_init, .worker_free = free, .handler = handler};
        http_server *s = (http_server *)1;
        terr err = {{0}};
        assert_int_equal(http_server_start(&cfg, &s, &err), -1);
        assert_null(s);
        assert_true(strlen(err.msg) > 0);
    }
    http_server_config cfg = {.listen_addr = "127.0.0.1:0", .n_threads = 0, .max_body = 1, .app = &ap,
                              .worker_init = worker_init, .worker_free = free, .handler = handler};
    http_server *s;
    assert_int_equal(http_server_start(&cfg, &s, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_request_blocks_only_its_thread),
        cmocka_unit_test(test_reply_helpers_and_body_limit),
        cmocka_unit_test(test_bad_listen_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
