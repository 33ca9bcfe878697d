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

/* One parsed request on its way loop -> worker -> loop. */
typedef struct http_job {
    struct evhttp_request *req;
    int status;   /* recorded by a reply helper; 0 = not replied */
    struct http_job *next;
} http_job;

/* A reply handed to libevent and not yet written, so that a stop waits
 * for it. Loop thread only. */
typedef struct http_wire {
    http_server *server;
    struct evhttp_connection *evcon;
    struct http_wire *next;
} http_wire;

typedef struct http_worker {
    http_server *server;
    void *worker;
    pthread_t thread;
    bool started;
} http_worker;

struct http_server {
    http_server_config cfg;
    int port;
    /* Owned by the loop thread (the other threads touch them only before it
     * starts or after it has been joined). */
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *done_ev;  /* workers -> loop: replies ready */
    struct event *stop_ev;  /* stop -> loop: stop accepting / drain */
    http_wire *wire;        /* replies handed to libevent, not yet written */
    bool draining;          /* exit once wire is empty */
    pthread_t loop_thread;
    bool loop_started;
    /* Guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;    /* a job was queued, or stopping */
    http_job *todo, *todo_tail;
    size_t n_todo;          /* length of todo, bounded by HTTP_MAX_QUEUED */
    http_job *done;
    bool stopping;
    bool workers_done;
    /* Fixed after start. */
    http_worker *workers;
    int n_workers;
};

/* Requests waiting for a worker beyond this are refused with 503 at once:
 * under overload a client learns it now instead of timing out, and memory
 * stays bounded. */
#define HTTP_MAX_QUEUED 4096

/* The request the calling worker thread is running, so that the reply
 * helpers (whose API takes only the request) find its job. Per thread, set
 * and cleared by worker_main around the handler call. */
static _Thread_local http_job *http_current_job;

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

static void wire_check_drained(http_server *s)
{
    if (s->draining && !s->wire) event_base_loopexit(s->base, NULL);
}

/* The reply was written: libevent calls this just before freeing req. */
static void on_reply_written(struct evhttp_request *req, void *arg)
{
    http_wire *w = arg;
    http_server *s = w->server;
    for (http_wire **p = &s->wire; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    free(w);
    wire_check_drained(s);
}

/* A connection is freed. If its reply was still on the wire (the write
 * failed: the client reset the connection), libevent frees the request
 * without on_reply_written, so forget it here. */
static void on_connection_closed(struct evhttp_connection *evcon, void *arg)
{
    http_server *s = arg;
    for (http_wire **p = &s->wire; *p;) {
        http_wire *w = *p;
        if (w->evcon == evcon) {
            *p = w->next;
            free(w);
        } else {
            p = &w->next;
        }
    }
    wire_check_drained(s);
}

/* Loop thread: hands a reply to libevent, tracking it until it is written. */
static void send_on_loop(http_server *s, struct evhttp_request *req, int status, struct evbuffer *body)
{
    /* No connection: the client went away while the handler ran and libevent
     * detached the request; send_reply then just frees it. */
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    http_wire *w = evcon ? malloc(sizeof *w) : NULL;
    if (w) { /* untracked on OOM: a stop then just does not wait for it */
        *w = (http_wire){.server = s, .evcon = evcon, .next = s->wire};
        s->wire = w;
        evhttp_request_set_on_complete_cb(req, on_reply_written, w);
        evhttp_connection_set_closecb(evcon, on_connection_closed, s);
    }
    evhttp_send_reply(req, status, http_reason(status), body);
}

/* Loop thread: an immediate JSON error, for requests no worker will see. */
static void reply_now(http_server *s, struct evhttp_request *req, int status, const char *code, const char *msg)
{
    char text[256];
    int n = snprintf(text, sizeof text, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, msg);
    struct evbuffer *buf = evbuffer_new();
    if (buf) evbuffer_add(buf, text, (size_t)n);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    send_on_loop(s, req, status, buf);
    if (buf) evbuffer_free(buf);
}

/* Loop thread: a parsed request. Queue it for a worker. */
static void on_request(struct evhttp_request *req, void *arg)
{
    http_server *s = arg;
    http_job *job = calloc(1, sizeof *job);
    if (!job) {
        reply_now(s, req, 503, "unavailable", "out of memory");
        return;
    }
    job->req = req;
    pthread_mutex_lock(&s->mu);
    /* Workers exit only once stopping is set and the queue is empty, both
     * checked under mu, so a job queued before stopping is always run. */
    bool stopping = s->stopping;
    bool full = s->n_todo >= HTTP_MAX_QUEUED;
    if (!stopping && !full) {
        if (s->todo_tail) s->todo_tail->next = job;
        else s->todo = job;
        s->todo_tail = job;
        s->n_todo++;
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->mu);
    if (stopping || full) {
        free(job);
        /* stopping: a keep-alive connection sending after stop began. */
        reply_now(s, req, 503, "unavailable",
                  stopping ? "server is shutting down" : "server is busy; retry later");
    }
}

/* Loop thread: send the replies the workers have finished. */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
    http_server *s = arg;
    pthread_mutex_lock(&s->mu);
    http_job *list = s->done;
    s->done = NULL;
    pthread_mutex_unlock(&s->mu);
    while (list) {
        http_job *job = list;
        list = job->next;
        /* The body is already in the request's output buffer. */
        send_on_loop(s, job->req, job->status, NULL);
        free(job);
    }
}

/* Loop thread: stop accepting; once the workers are joined, drain. */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    http_server *s = arg;
    if (s->bound) {
        evhttp_del_accept_socket(s->http, s->bound); /* closes the socket */
        s->bound = NULL;
    }
    pthread_mutex_lock(&s->mu);
    bool workers_done = s->workers_done;
    pthread_mutex_unlock(&s->mu);
    if (!workers_done) return;
    on_done(-1, 0, s);
    s->draining = true;
    if (!s->wire) {
        event_base_loopexit(s->base, NULL);
    } else {
        /* A client that stops reading must not hold up the stop forever. */
        struct timeval grace = {.tv_sec = 5};
        event_base_loopexit(s->base, &grace);
    }
}

static void *loop_main(void *arg)
{
    http_server *s = arg;
    /* Once the listener is gone and every connection waits for a worker,
     * no event is pending; plain dispatch would return then and strand the
     * replies still to come. Only on_stop's loopexit ends this loop. */
    event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void *worker_main(void *arg)
{
    http_worker *w = arg;
    http_server *s = w->server;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->todo && !s->stopping) pthread_cond_wait(&s->cond, &s->mu);
        http_job *job = s->todo;
        if (job) {
            s->todo = job->next;
            if (!s->todo) s->todo_tail = NULL;
            s->n_todo--;
            job->next = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        if (!job) break; /* stopping and nothing left */

        http_current_job = job;
        s->cfg.handler(s->cfg.app, w->worker, job->req);
        http_current_job = NULL;
        if (job->status == 0) {
            log_write(LOG_ERROR, "event=http_no_reply uri=%s", evhttp_request_get_uri(job->req));
            static const char msg[] = "{\"error\":{\"code\":\"internal_error\",\"message\":\"handler sent no reply\"}}";
            evhttp_add_header(evhttp_request_get_output_headers(job->req), "Content-Type", "application/json");
            evbuffer_add(evhttp_request_get_output_buffer(job->req), msg, sizeof msg - 1);
            job->status = 500;
        }

        pthread_mutex_lock(&s->mu);
        job->next = s->done;
        s->done = job;
        pthread_mutex_unlock(&s->mu);
        event_active(s->done_ev, EV_READ, 0);
    }
    return NULL;
}

static int loop_setup(http_server *s, int fd, terr *err)
{
    s->base = event_base_new();
    if (!s->base) {
        close(fd);
        return terr_set(err, "event_base_new failed");
    }
    struct evconnlistener *l =
        evconnlistener_new(s->base, NULL, NULL, LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_CLOSE_ON_FREE, 0, fd);
    if (!l) {
        close(fd);
        return terr_set(err, "evconnlistener_new failed");
    }
    s->http = evhttp_new(s->base);
    if (!s->http) {
        evconnlistener_free(l);
        return terr_set(err, "evhttp_new failed");
    }
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->cfg.max_body);
    evhttp_set_max_headers_size(s->http, 64 * 1024);
    evhttp_set_timeout(s->http, 120);
    /* Every method reaches the handler, which answers 405 in JSON itself. */
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                            EVHTTP_REQ_PATCH);
    evhttp_set_gencb(s->http, on_request, s);
    s->bound = evhttp_bind_listener(s->http, l);
    if (!s->bound) {
        evconnlistener_free(l);
        return terr_set(err, "evhttp_bind_listener failed");
    }
    s->done_ev = event_new(s->base, -1, 0, on_done, s);
    s->stop_ev = event_new(s->base, -1, 0, on_stop, s);
    if (!s->done_ev || !s->stop_ev) return terr_set(err, "event_new failed");
    return 0;
}

int http_server_start(const http_server_config *cfg, http_server **out, terr *err)
{
    *out = NULL;
    if (cfg->n_threads < 1 || cfg->n_threads > 1024)
        return terr_set(err, "http threads must be 1..1024 (got %d)", cfg->n_threads);
    /* Workers activate the loop's done event from their threads. */
    if (evthread_use_pthreads() != 0) return terr_set(err, "evthread_use_pthreads failed");
    http_server *s = calloc(1, sizeof *s);
    if (!s) return terr_set(err, "out of memory");
    s->cfg = *cfg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    int fd;
    if (bind_listen(cfg->listen_addr, &fd, &s->port, err) != 0) goto fail;
    if (loop_setup(s, fd, err) != 0) goto fail;
    s->workers = calloc((size_t)cfg->n_threads, sizeof *s->workers);
    if (!s->workers) {
        terr_set(err, "out of memory");
        goto fail;
    }
    s->n_workers = cfg->n_threads;
    for (int i = 0; i < s->n_workers; i++) {
        http_worker *w = &s->workers[i];
        w->server = s;
        w->worker = cfg->worker_init(cfg->app, i, err);
        if (!w->worker) {
            terr_wrap(err, "http worker %d", i);
            goto fail;
        }
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            terr_set(err, "pthread_create failed");
            goto fail;
        }
        w->started = true;
    }
    if (pthread_create(&s->loop_thread, NULL, loop_main, s) != 0) {
        terr_set(err, "pthread_create failed");
        goto fail;
    }
    s->loop_started = true;
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
    /* 1. From now on, requests on open keep-alive connections get a 503;
     *    workers finish what is queued or running, then exit; the loop keeps
     *    sending their replies meanwhile. */
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    /* 2. Stop accepting (on the loop: it owns the listener). */
    if (s->loop_started) event_active(s->stop_ev, EV_READ, 0);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
    pthread_mutex_lock(&s->mu);
    s->workers_done = true;
    pthread_mutex_unlock(&s->mu);
    /* 3. The loop sends the last replies, waits until they are written and
     *    exits. */
    if (s->loop_started) {
        event_active(s->stop_ev, EV_READ, 0);
        pthread_join(s->loop_thread, NULL);
    }
    /* No job is left: on_stop sent every finished one after the join. */
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i].worker && s->cfg.worker_free) s->cfg.worker_free(s->workers[i].worker);
    if (s->done_ev) event_free(s->done_ev);
    if (s->stop_ev) event_free(s->stop_ev);
    if (s->http) evhttp_free(s->http);
    if (s->base) event_base_free(s->base);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
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

/* Records the response on the worker; the loop sends it after the handler
 * returns. The loop does not touch the request's output headers or buffer
 * until then, so filling them here is safe. */
void http_reply_bytes(struct evhttp_request *req, int status, const char *content_type,
                      const void *data, size_t len)
{
    http_job *job = http_current_job;
    if (!job || job->req != req) {
        log_write(LOG_ERROR, "event=http_reply_misuse status=%d reason=\"not on the request's handler thread\"",
                  status);
        return;
    }
    if (job->status != 0) {
        log_write(LOG_ERROR, "event=http_reply_twice status=%d first_status=%d", status, job->status);
        return;
    }
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    if (len && evbuffer_add(out, data, len) != 0) {
        log_write(LOG_ERROR, "event=http_reply_oom status=%d bytes=%zu", status, len);
        evbuffer_drain(out, evbuffer_get_length(out));
        job->status = 500;
        return;
    }
    if (content_type)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
    job->status = status;
}

int http_reply_status(struct evhttp_request *req)
{
    http_job *job = http_current_job;
    return job && job->req == req ? job->status : 0;
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
    http_reply_bytes(req, status, NULL, NULL, 0);
}
