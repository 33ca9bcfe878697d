/* Unit tests for controlplane/proxy_stream: a real http_server whose route
 * streams through proxy_stream to a scripted fake guest on the other end of
 * a socket pair (the tunnel). The request body's framing on the way in, the
 * answer's decoding on the way out, interim answers, an answer cut short,
 * and an answer that is not HTTP. */
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
#include <time.h>
#include <unistd.h>

#include "http_server.h"
#include "proxy_stream.h"

/* The fake guest: reads the request (head and body, to the end its framing
 * says, or to the first idle second), then writes answer and closes. */
typedef struct guest {
    int fd;
    const char *answer;
    size_t answer_len; /* 0: strlen(answer) */
    int delay_ms;      /* wait this long before answering */
    int drip_ms;       /* > 0: write the answer a byte at a time, this far apart */
    char got[65536];   /* what it read */
    size_t got_len;
    pthread_t th;
} guest;

static guest *current; /* the test's guest, for the route */
static int idle_ms;    /* the proxy's no-progress deadline for the next stream (0: default) */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void *guest_main(void *arg)
{
    guest *g = arg;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(g->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        ssize_t n = read(g->fd, g->got + g->got_len, sizeof g->got - 1 - g->got_len);
        if (n <= 0) break;
        g->got_len += (size_t)n;
        g->got[g->got_len] = '\0';
        char *body = strstr(g->got, "\r\n\r\n");
        if (!body) continue;
        body += 4;
        if (strstr(g->got, "Transfer-Encoding: chunked") && strstr(body, "0\r\n\r\n")) break;
        const char *cl = strstr(g->got, "Content-Length: ");
        size_t have = g->got_len - (size_t)(body - g->got);
        if (cl && have >= strtoul(cl + 16, NULL, 10)) break;
        if (!cl && !strstr(g->got, "Transfer-Encoding")) break;
    }
    size_t len = g->answer_len ? g->answer_len : strlen(g->answer);
    if (g->delay_ms) sleep_ms(g->delay_ms);
    if (g->drip_ms) {
        for (size_t i = 0; i < len; i++) {
            if (send(g->fd, g->answer + i, 1, MSG_NOSIGNAL) != 1) break;
            sleep_ms(g->drip_ms);
        }
    } else if (send(g->fd, g->answer, len, MSG_NOSIGNAL) != (ssize_t)len && !g->delay_ms) {
        abort(); /* (after a delay the proxy may have given up on it: that is the test) */
    }
    close(g->fd);
    return NULL;
}

static void guest_start(guest *g, const char *answer)
{
    memset(g, 0, sizeof *g);
    g->answer = answer;
    current = g;
    idle_ms = 0;
}

/* Opens the stream: the tunnel is one end of a socket pair, the guest the
 * other. */
static void open_stream(http_request *req)
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) abort();
    current->fd = sp[1];
    pthread_create(&current->th, NULL, guest_main, current);
    const char *cl = http_request_header(req, "Content-Length");
    bool chunked = http_request_header(req, "Transfer-Encoding") != NULL;
    bool body = chunked || (cl && atoi(cl) > 0);
    const char *head = chunked ? "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                       : body  ? NULL
                               : "GET / HTTP/1.1\r\n\r\n";
    char buf[128];
    if (!head) {
        snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nContent-Length: %s\r\n\r\n", cl);
        head = buf;
    }
    if (write(sp[0], head, strlen(head)) != (ssize_t)strlen(head)) abort();
    if (!proxy_stream_start(req, sp[0], body, chunked, !strcmp(http_request_method(req), "HEAD"),
                            idle_ms))
        http_reply_error(req, 500, "internal_error", "no stream");
}

static void on_headers(void *app, http_request *req)
{
    (void)app;
    http_request_set_long_running(req);
    http_request_stream_body(req, proxy_stream_body, NULL);
    if (http_request_header(req, "Content-Length") || http_request_header(req, "Transfer-Encoding"))
        http_request_vet_first(req); /* opened before the body, as api_proxy does */
}

static void vet(void *app, void *worker, http_request *req)
{
    (void)app;
    (void)worker;
    open_stream(req);
}

static void handler(void *app, void *worker, http_request *req)
{
    (void)app;
    (void)worker;
    if (!strcmp(http_request_path(req), "/pre")) {
        /* the head and the body's first bytes were read already (as from an
         * Upgrade the guest refused); the guest sends the rest */
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) abort();
        current->fd = sp[1];
        pthread_create(&current->th, NULL, guest_main, current);
        static const char pre[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
        proxy_stream *p = proxy_stream_start_read(req, sp[0], pre, sizeof pre - 1, false, idle_ms);
        if (!p) http_reply_error(req, 500, "internal_error", "no stream");
        else proxy_stream_answer(p, req);
        return;
    }
    if (!http_request_data(req)) open_stream(req);
    if (http_reply_status(req)) return;
    proxy_stream_answer(http_request_data(req), req);
}

static void *worker_init(void *app, int index, terr *err)
{
    (void)app;
    (void)index;
    (void)err;
    return malloc(1);
}

static http_server *start(void)
{
    http_server_config cfg = {.listen_addr = "127.0.0.1:0",
                              .n_threads = 2,
                              .n_long_threads = 2,
                              .max_body = 4096,
                              .worker_init = worker_init,
                              .worker_free = free,
                              .handler = handler,
                              .on_headers = on_headers,
                              .vet = vet};
    http_server *s;
    terr err;
    if (http_server_start(&cfg, &s, &err) != 0) fail_msg("start: %s", err.msg);
    return s;
}

/* Sends req (text, then body), reads the whole answer (the server closes:
 * HTTP/1.0 or Connection: close). */
static char *call(http_server *s, const char *req, size_t *len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)http_server_port(s))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) abort();
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    for (;;) {
        ssize_t r = read(fd, out + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    out[n] = '\0';
    close(fd);
    *len = n;
    return out;
}

static void test_chunked_body_goes_chunked_and_chunked_answer_is_decoded(void **state)
{
    (void)state;
    http_server *s = start();
    guest g;
    guest_start(&g, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Guest: yes\r\n"
                    "Content-Type: text/x-test\r\n\r\n"
                    "5\r\nabcde\r\n3;ext=1\r\nfgh\r\n0\r\nTrailer-Thing: x\r\n\r\n");
    size_t len;
    char *a = call(s,
                   "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                   &len);
    pthread_join(g.th, NULL);
    if (!strstr(a, " 200 ") || !strstr(a, "X-Guest: yes") || !strstr(a, "text/x-test"))
        fail_msg("answer: %s", a);
    char *body = strstr(a, "\r\n\r\n");
    assert_non_null(body);
    assert_string_equal(body + 4, "abcdefgh");
    /* the guest got the body re-chunked, whole */
    char *gb = strstr(g.got, "\r\n\r\n") + 4, plain[64] = "";
    while (*gb) {
        unsigned long n = strtoul(gb, &gb, 16);
        gb = strstr(gb, "\r\n") + 2;
        if (!n) break;
        strncat(plain, gb, n);
        gb += n + 2;
    }
    assert_string_equal(plain, "hello world");
    free(a);
    http_server_stop(s);
}

static void test_content_length_body_and_answer_pass_through(void **state)
{
    (void)state;
    http_server *s = start();
    guest g;
    guest_start(&g, "HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nDONE");
    size_t len;
    char *a =
        call(s, "PUT /x HTTP/1.1\r\nConnection: close\r\nContent-Length: 7\r\n\r\npayload", &len);
    pthread_join(g.th, NULL);
    if (!strstr(a, "HTTP/1.1 201") || !strstr(a, "Content-Length: 4\r\n") ||
        strcmp(strstr(a, "\r\n\r\n") + 4, "DONE"))
        fail_msg("answer: %s", a);
    assert_non_null(strstr(g.got, "Content-Length: 7\r\n\r\npayload"));
    free(a);
    http_server_stop(s);
}

static void test_interim_answer_is_skipped(void **state)
{
    (void)state;
    http_server *s = start();
    guest g;
    guest_start(
        &g, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok");
    size_t len;
    char *a = call(s, "GET /x HTTP/1.0\r\n\r\n", &len);
    pthread_join(g.th, NULL);
    if (!strstr(a, " 202 ") || strcmp(strstr(a, "\r\n\r\n") + 4, "ok")) fail_msg("answer: %s", a);
    free(a);
    http_server_stop(s);
}

static void test_answer_cut_short_is_cut_short_for_the_client(void **state)
{
    (void)state;
    http_server *s = start();
    guest g;
    guest_start(&g, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
    size_t len;
    char *a = call(s, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n", &len);
    pthread_join(g.th, NULL);
    /* the client was promised 100 bytes and sees the connection end early */
    if (!strstr(a, "Content-Length: 100")) fail_msg("answer: %s", a);
    assert_true(strlen(strstr(a, "\r\n\r\n") + 4) < 100);
    free(a);
    http_server_stop(s);
}

static void test_answer_that_is_not_http_is_502(void **state)
{
    (void)state;
    http_server *s = start();
    guest g;
    guest_start(&g, "SSH-2.0-OpenSSH\r\n\r\n");
    size_t len;
    char *a = call(s, "GET /x HTTP/1.0\r\n\r\n", &len);
    pthread_join(g.th, NULL);
    if (!strstr(a, " 502 ") || !strstr(a, "bad_gateway")) fail_msg("answer: %s", a);
    free(a);
    /* and a guest that closes without answering */
    guest_start(&g, "");
    a = call(s, "GET /x HTTP/1.0\r\n\r\n", &len);
    pthread_join(g.th, NULL);
    if (!strstr(a, " 502 ")) fail_msg("answer: %s", a);
    free(a);
    http_server_stop(s);
}

static void test_answer_partly_read_already_goes_on_from_the_tunnel(void **state)
{
    (void)state;
    http_server *s = start();
    guest g;
    guest_start(&g, "cde");
    size_t len;
    char *a = call(s, "GET /pre HTTP/1.0\r\n\r\n", &len);
    pthread_join(g.th, NULL);
    if (!strstr(a, " 200 ") || strcmp(strstr(a, "\r\n\r\n") + 4, "abcde"))
        fail_msg("answer: %s", a);
    free(a);
    http_server_stop(s);
}

/* A guest that reads the request and says nothing for longer than the idle
 * timeout: the client gets 502 when the timeout passes, not the answer the
 * guest sends later. */
static void test_silent_guest_is_502_after_the_idle_timeout(void **state)
{
    (void)state;
    http_server *s = start();
    guest g;
    guest_start(&g, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate");
    g.delay_ms = 4000;
    idle_ms = 500;
    size_t len;
    char *a = call(s, "GET /x HTTP/1.0\r\n\r\n", &len);
    if (!strstr(a, " 502 ") || !strstr(a, "did not answer in time")) fail_msg("answer: %s", a);
    free(a);
    pthread_join(g.th, NULL);
    http_server_stop(s);
}

/* The deadline is on progress, not on the whole answer: a guest that sends
 * its answer a byte every 50 ms (2.4 s in all) with a 500 ms idle timeout is
 * passed through whole. */
static void test_answer_that_keeps_moving_outlives_the_idle_timeout(void **state)
{
    (void)state;
    http_server *s = start();
    guest g;
    guest_start(&g, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789");
    g.drip_ms = 50;
    idle_ms = 500;
    size_t len;
    char *a = call(s, "GET /x HTTP/1.0\r\n\r\n", &len);
    pthread_join(g.th, NULL);
    if (!strstr(a, " 200 ") || strcmp(strstr(a, "\r\n\r\n") + 4, "0123456789"))
        fail_msg("answer: %s", a);
    free(a);
    http_server_stop(s);
}

/* 8 MiB down through the fixed rings, to a client that reads slowly at
 * first: everything arrives, in order. */
static void test_large_answer_arrives_whole(void **state)
{
    (void)state;
    http_server *s = start();
    size_t body = 8u << 20;
    char *ans = malloc(body + 128);
    int h = snprintf(ans, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", body);
    for (size_t i = 0; i < body; i++) ans[h + i] = (char)('a' + i % 23);
    guest g;
    guest_start(&g, ans);
    g.answer_len = (size_t)h + body;
    size_t len;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)http_server_port(s))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char *req = "GET /big HTTP/1.0\r\n\r\n";
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) abort();
    usleep(500 * 1000); /* the rings fill and the relay waits */
    char *out = malloc(body + 4096);
    len = 0;
    for (;;) {
        ssize_t r = read(fd, out + len, body + 4096 - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    pthread_join(g.th, NULL);
    char *b = memmem(out, len, "\r\n\r\n", 4);
    assert_non_null(b);
    b += 4;
    assert_int_equal((size_t)(out + len - b), body);
    assert_memory_equal(b, ans + h, body);
    free(out);
    free(ans);
    http_server_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_body_goes_chunked_and_chunked_answer_is_decoded),
        cmocka_unit_test(test_content_length_body_and_answer_pass_through),
        cmocka_unit_test(test_interim_answer_is_skipped),
        cmocka_unit_test(test_answer_cut_short_is_cut_short_for_the_client),
        cmocka_unit_test(test_answer_that_is_not_http_is_502),
        cmocka_unit_test(test_answer_partly_read_already_goes_on_from_the_tunnel),
        cmocka_unit_test(test_large_answer_arrives_whole),
        cmocka_unit_test(test_silent_guest_is_502_after_the_idle_timeout),
        cmocka_unit_test(test_answer_that_keeps_moving_outlives_the_idle_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
