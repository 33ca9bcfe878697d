/* proto_bev_http: the second candidate for the control plane's HTTP layer,
 * as a measurable prototype: libevent bufferevents + Debian's http_parser,
 * with the same threading as controlplane/http_server.c (one I/O thread, a
 * pool of worker threads, a request handed to a worker and its answer
 * handed back). It serves GET /healthz ({"status":"ok"}, built on a worker
 * like torpor-cp's) and answers 413 right after the headers when
 * Content-Length is over 1 MiB; anything else is 404. Keep-alive follows
 * http_should_keep_alive; one request at a time per connection (reading
 * pauses while a worker holds it).
 *
 * Not part of the product: it exists so that bench/bench_http.py can put
 * figures on "libmicrohttpd vs. bufferevent + http_parser" for the same
 * work (docs/benchmarks.md). What a full layer would still need on top:
 * chunked responses, upgrade hand-off, streamed bodies with back-pressure,
 * timeouts, a clean stop - libmicrohttpd has them.
 *
 *   proto_bev_http [--threads N]   (prints "port=N" once listening on 127.0.0.1) */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <http_parser.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_LIMIT (1024 * 1024)

typedef struct conn conn;

typedef struct job {
    conn *c;
    bool healthz;
    int status;
    char body[128];
    struct job *next;
} job;

struct conn {
    struct bufferevent *bev;
    http_parser parser;
    char url[256];
    size_t url_len;
    bool keep_alive;
    bool busy; /* a worker holds its request */
    bool closing;
};

static struct event_base *base;
static struct event *done_ev;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static job *todo, *todo_tail, *done;

static void conn_free(conn *c)
{
    bufferevent_free(c->bev);
    free(c);
}

static void send_reply(conn *c, int status, const char *body)
{
    const char *reason = status == 200 ? "OK" : status == 413 ? "Payload Too Large" : "Not Found";
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(
        out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
        status, reason, strlen(body), c->keep_alive ? "" : "Connection: close\r\n", body);
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    size_t n = len < sizeof c->url - 1 - c->url_len ? len : sizeof c->url - 1 - c->url_len;
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = '\0';
    return 0;
}

/* The decision after the headers, before the body. */
static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    c->keep_alive = http_should_keep_alive(p);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > BODY_LIMIT) {
        c->keep_alive = false;
        send_reply(c, 413,
                   "{\"error\":{\"code\":\"too_large\",\"message\":\"body over the limit\"}}");
        c->closing = true;
        return -1; /* stop parsing: the body is never read */
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    job *j = calloc(1, sizeof *j);
    j->c = c;
    j->healthz = p->method == HTTP_GET && strcmp(c->url, "/healthz") == 0;
    c->busy = true;
    bufferevent_disable(c->bev, EV_READ);
    pthread_mutex_lock(&mu);
    if (todo_tail) todo_tail->next = j;
    else todo = j;
    todo_tail = j;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&mu);
    http_parser_pause(p, 1); /* one request at a time */
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

static void on_read(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (!c->busy && !c->closing && evbuffer_get_length(in) > 0) {
        size_t len = evbuffer_get_length(in);
        const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
        size_t used = http_parser_execute(&c->parser, &settings, data, len);
        if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED) {
            evbuffer_drain(in, used);
            return;
        }
        if (used != len || c->closing) {
            c->closing = true;
            evbuffer_drain(in, len);
            if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) conn_free(c);
            return;
        }
        evbuffer_drain(in, used);
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (c->closing) conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (c->busy) c->closing = true; /* freed when its job comes back */
        else conn_free(c);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    conn *c = calloc(1, sizeof *c);
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* I/O thread: answers the jobs the workers finished. */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
    pthread_mutex_lock(&mu);
    job *list = done;
    done = NULL;
    pthread_mutex_unlock(&mu);
    while (list) {
        job *j = list;
        list = j->next;
        conn *c = j->c;
        c->busy = false;
        if (c->closing) {
            conn_free(c);
        } else {
            send_reply(c, j->status, j->body);
            if (!c->keep_alive) {
                c->closing = true;
            } else {
                c->url_len = 0;
                c->url[0] = '\0';
                http_parser_pause(&c->parser, 0);
                bufferevent_enable(c->bev, EV_READ);
                on_read(c->bev, c); /* a pipelined request may already be there */
            }
        }
        free(j);
    }
}

static void *worker_main(void *arg)
{
    for (;;) {
        pthread_mutex_lock(&mu);
        while (!todo) pthread_cond_wait(&cond, &mu);
        job *j = todo;
        todo = j->next;
        if (!todo) todo_tail = NULL;
        pthread_mutex_unlock(&mu);
        j->next = NULL;
        if (j->healthz) {
            j->status = 200;
            snprintf(j->body, sizeof j->body, "{\"status\":\"ok\"}");
        } else {
            j->status = 404;
            snprintf(j->body, sizeof j->body,
                     "{\"error\":{\"code\":\"not_found\",\"message\":\"no such route\"}}");
        }
        pthread_mutex_lock(&mu);
        j->next = done;
        done = j;
        pthread_mutex_unlock(&mu);
        event_active(done_ev, EV_READ, 0);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = 8;
    if (argc == 3 && strcmp(argv[1], "--threads") == 0) threads = atoi(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    base = event_base_new();
    done_ev = event_new(base, -1, 0, on_done, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct evconnlistener *l =
        evconnlistener_new_bind(base, on_accept, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE,
                                1024, (struct sockaddr *)&sa, sizeof sa);
    if (!l) {
        perror("listen");
        return 1;
    }
    struct sockaddr_in got;
    socklen_t len = sizeof got;
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&got, &len);
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker_main, NULL);
    }
    printf("port=%d\n", ntohs(got.sin_port));
    fflush(stdout);
    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
    return 0;
}
