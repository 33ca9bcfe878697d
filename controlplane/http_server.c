#include "http_server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

typedef struct http_worker {
    http_server *server;
    int index;
    struct event_base *base;
    struct evhttp *http;
    void *worker;
    pthread_t thread;
    bool started;
} http_worker;

struct http_server {
    http_server_config cfg;
    int fd;
    int port;
    http_worker *workers;
    int n_workers;
};

static int split_host_port(const char *addr, char *host, size_t host_size, char *port, size_t port_size,
                           terr *err)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':') return terr_set(err, "bad listen address \"%s\" (want [v6]:port)", addr);
        snprintf(host, host_size, "%.*s", (int)(close - addr - 1), addr + 1);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) return terr_set(err, "bad listen address \"%s\" (want host:port)", addr);
        snprintf(host, host_size, "%.*s", (int)(colon - addr), addr);
    }
    snprintf(port, port_size, "%s", colon + 1);
    if (!*port) return terr_set(err, "bad listen address \"%s\" (no port)", addr);
    return 0;
}

static int bind_listen(const char *addr, int *out_fd, int *out_port, terr *err)
{
    char host[256], port[32];
    if (split_host_port(addr, host, sizeof host, port, sizeof port, err) != 0) return -1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc != 0) return terr_set(err, "resolve %s: %s", addr, gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return terr_set(err, "socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        freeaddrinfo(res);
        close(fd);
        return terr_set(err, "listen on %s: %s", addr, strerror(e));
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *out_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *out_fd = fd;
    return 0;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    http_worker *w = arg;
    w->server->cfg.handler(w->server->cfg.app, w->worker, req);
}

static void *worker_main(void *arg)
{
    http_worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

static int worker_setup(http_server *s, http_worker *w, terr *err)
{
    w->server = s;
    w->base = event_base_new();
    if (!w->base) return terr_set(err, "event_base_new failed");
    w->http = evhttp_new(w->base);
    if (!w->http) return terr_set(err, "evhttp_new failed");
    evhttp_set_max_body_size(w->http, (ev_ssize_t)s->cfg.max_body);
    evhttp_set_max_headers_size(w->http, 64 * 1024);
    evhttp_set_timeout(w->http, 120);
    /* Every method reaches the handler, which answers 405 in JSON itself. */
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                            EVHTTP_REQ_PATCH);
    evhttp_set_gencb(w->http, on_request, w);
    /* Not LEV_OPT_CLOSE_ON_FREE: the fd is shared by all workers. */
    struct evconnlistener *l = evconnlistener_new(w->base, NULL, NULL, LEV_OPT_CLOSE_ON_EXEC, 0, s->fd);
    if (!l) return terr_set(err, "evconnlistener_new failed");
    if (!evhttp_bind_listener(w->http, l)) {
        evconnlistener_free(l);
        return terr_set(err, "evhttp_bind_listener failed");
    }
    w->worker = s->cfg.worker_init(s->cfg.app, w->index, err);
    if (!w->worker) return terr_wrap(err, "http worker %d", w->index);
    return 0;
}

int http_server_start(const http_server_config *cfg, http_server **out, terr *err)
{
    *out = NULL;
    if (cfg->n_threads < 1 || cfg->n_threads > 1024)
        return terr_set(err, "http threads must be 1..1024 (got %d)", cfg->n_threads);
    if (evthread_use_pthreads() != 0) return terr_set(err, "evthread_use_pthreads failed");
    http_server *s = calloc(1, sizeof *s);
    if (!s) return terr_set(err, "out of memory");
    s->cfg = *cfg;
    s->fd = -1;
    if (bind_listen(cfg->listen_addr, &s->fd, &s->port, err) != 0) {
        free(s);
        return -1;
    }
    s->workers = calloc((size_t)cfg->n_threads, sizeof *s->workers);
    if (!s->workers) {
        close(s->fd);
        free(s);
        return terr_set(err, "out of memory");
    }
    s->n_workers = cfg->n_threads;
    for (int i = 0; i < s->n_workers; i++) {
        http_worker *w = &s->workers[i];
        w->index = i;
        if (worker_setup(s, w, err) != 0) goto fail;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            terr_set(err, "pthread_create failed");
            goto fail;
        }
        w->started = true;
    }
    *out = s;
    return 0;
fail:
    http_server_stop(s);
    return -1;
}

int http_server_port(const http_server *s) { return s->port; }

void http_server_stop(http_server *s)
{
    if (!s) return;
    for (int i = 0; i < s->n_workers; i++)
        /* loopexit, not loopbreak: it is queued as an event, so it also works
         * when the thread has not entered its loop yet. */
        if (s->workers[i].started) event_base_loopexit(s->workers[i].base, NULL);
    for (int i = 0; i < s->n_workers; i++) {
        http_worker *w = &s->workers[i];
        if (w->started) pthread_join(w->thread, NULL);
        if (w->http) evhttp_free(w->http);
        if (w->worker && s->cfg.worker_free) s->cfg.worker_free(w->worker);
        if (w->base) event_base_free(w->base);
    }
    if (s->fd >= 0) close(s->fd);
    free(s->workers);
    free(s);
}

const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

void http_reply_bytes(struct evhttp_request *req, int status, const char *content_type,
                      const void *data, size_t len)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf && len) evbuffer_add(buf, data, len);
    if (content_type)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
    evhttp_send_reply(req, status, http_reason(status), buf);
    if (buf) evbuffer_free(buf);
}

void http_reply_json(struct evhttp_request *req, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";
        http_reply_bytes(req, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    http_reply_bytes(req, status, "application/json", text, strlen(text));
    free(text);
}

void http_reply_error(struct evhttp_request *req, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_reply_json(req, status, json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

void http_reply_empty(struct evhttp_request *req, int status)
{
    evhttp_send_reply(req, status, http_reason(status), NULL);
}
