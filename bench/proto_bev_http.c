/* proto_bev_http: the second candidate for the control plane's HTTP layer,
 * as a measurable prototype: libevent bufferevents + Debian's http_parser,
 * doing the same work as torpor-cp on two routes, with torpor-cp's threading
 * (controlplane/http_server.c + api.c): one I/O thread running the event
 * loop (accept, parse, decide after the headers, write answers) and a pool
 * of --threads worker threads, each with its own PostgreSQL connection; a
 * request needing the database is queued to a worker while its connection
 * stops reading, and the worker's answer is handed back to the I/O thread
 * (event_active), which writes it and reads the next request.
 *
 *   GET /healthz             answered on the I/O thread right after parsing,
 *                            as torpor-cp does since /healthz left the
 *                            workers: {"status":"ok"} built with jansson.
 *   GET /v1/sandboxes/{id}   X-API-Key checked after the headers (missing:
 *                            401 on the I/O thread); on a worker the key is
 *                            checked with torpor-cp's auth_check_role
 *                            (SHA-256, the same auth_cache policy and TTL,
 *                            its prepared lookup query and once-a-minute
 *                            last_used_at touch), the row read with
 *                            db_sandbox_get, the answer built with
 *                            sandbox_row_to_json + json_dumps(JSON_COMPACT).
 * Routes are found in torpor-cp's own route table (api_route_find); a row the
 * prototype does not serve answers 404, a wrong method 405. Every answer is
 * counted in cp_metrics and passed to log_write at torpor-cp's levels (its
 * log_request), so the work around the handler is the same too. A body
 * announced over 1 MiB gets 413 right after the headers. Keep-alive follows
 * http_should_keep_alive; one request at a time per connection.
 *
 * Not part of the product: it links torpor_cp_core so that the only thing
 * differing from torpor-cp on these routes is the HTTP layer, and exists so
 * that bench/bench_http.py can put figures on "libmicrohttpd vs. bufferevent
 * + http_parser" (docs/benchmarks.md). What a full layer would still need on
 * top: chunked responses, upgrade hand-off, streamed bodies with
 * back-pressure, timeouts, a connection cap, a clean stop - libmicrohttpd
 * has them.
 *
 *   proto_bev_http [--threads N] [--database-url URL] [--key-cache-ms N]
 *   (prints "port=N" once listening on 127.0.0.1; without --database-url
 *   only /healthz is served, the other route answering 503) */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <http_parser.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_health.h"
#include "api_routes.h"
#include "api_sandboxes.h"
#include "auth.h"
#include "auth_cache.h"
#include "cp_metrics.h"
#include "db.h"
#include "log.h"
#include "mono_time.h"
#include "sandbox_model.h"

#define BODY_LIMIT (1024 * 1024)

typedef struct conn conn;

typedef struct job {
    conn *c;
    const api_route *route;
    char id[SANDBOX_ID_MAX];
    char key[128];
    int status;
    char *body; /* malloc'd answer */
    int64_t ms;
    struct job *next;
} job;

struct conn {
    struct bufferevent *bev;
    http_parser parser;
    char url[256];
    size_t url_len;
    char hname[32]; /* the header field being read */
    size_t hname_len;
    bool in_value;  /* the last header callback was a value */
    bool key_value; /* that value is X-API-Key's */
    char key[128];
    size_t key_len;
    bool keep_alive;
    bool busy; /* a worker holds its request */
    bool closing;
};

static struct event_base *base;
static struct event *done_ev;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static job *todo, *todo_tail, *done;
static const char *database_url;
static auth_cache *keys;

static void conn_free(conn *c)
{
    bufferevent_free(c->bev);
    free(c);
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    default: return "Service Unavailable";
    }
}

/* torpor-cp's http_reply_json: the text of body (NULL: out of memory). */
static char *json_text(json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

static char *error_text(const char *code, const char *msg)
{
    return json_text(json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

/* torpor-cp's log_request: the metrics and the log line of one answer. */
static void account(const char *method, const api_route *route, const char *path, int status,
                    int64_t ms, const char *sandbox_id)
{
    cp_metrics_http_request(method, route ? route->pattern : NULL, status, (double)ms / 1000.0);
    enum log_level lvl = (status < 300 && strcmp(method, "GET") == 0) ? LOG_DEBUG : LOG_INFO;
    char q[LOG_QUOTE_MAX], qm[64];
    log_write(lvl,
              "event=http_request method=\"%s\" path=\"%s\" status=%d duration_ms=%lld "
              "sandbox_id=%s",
              log_quote(method, qm, sizeof qm), log_quote(path, q, sizeof q), status,
              (long long)ms, sandbox_id);
}

static void send_reply(conn *c, int status, char *body)
{
    static const char oom[] =
        "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";
    if (!body) status = 500;
    const char *text = body ? body : oom;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(
        out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
        status, reason_of(status), strlen(text), c->keep_alive ? "" : "Connection: close\r\n");
    evbuffer_add(out, text, strlen(text));
    free(body);
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

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->in_value) {
        c->in_value = false;
        c->hname_len = 0;
    }
    size_t n = len < sizeof c->hname - 1 - c->hname_len ? len : sizeof c->hname - 1 - c->hname_len;
    memcpy(c->hname + c->hname_len, at, n);
    c->hname_len += n;
    c->hname[c->hname_len] = '\0';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (!c->in_value) {
        c->in_value = true;
        c->key_value = strcasecmp(c->hname, "X-API-Key") == 0;
        if (c->key_value) c->key_len = 0;
    }
    if (!c->key_value) return 0;
    size_t n = len < sizeof c->key - 1 - c->key_len ? len : sizeof c->key - 1 - c->key_len;
    memcpy(c->key + c->key_len, at, n);
    c->key_len += n;
    c->key[c->key_len] = '\0';
    return 0;
}

/* The decision after the headers, before the body. */
static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    c->keep_alive = http_should_keep_alive(p);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > BODY_LIMIT) {
        c->keep_alive = false;
        send_reply(c, 413, error_text("too_large", "body over the limit"));
        c->closing = true;
        return -1; /* stop parsing: the body is never read */
    }
    return 0;
}

static void queue_job(job *j)
{
    pthread_mutex_lock(&mu);
    if (todo_tail) todo_tail->next = j;
    else todo = j;
    todo_tail = j;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&mu);
}

/* The request is complete: answer it here or hand it to a worker. */
static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    int64_t t0 = mono_ms();
    const char *method = http_method_str((enum http_method)p->method);
    char *q = strchr(c->url, '?');
    if (q) *q = '\0';
    api_match m;
    const api_route *route =
        api_route_find(api_route_table, api_route_count, method, c->url, &m);
    int status = 0;
    char *body = NULL;
    if (!route) {
        status = m.status == 405 ? 405 : 404;
        body = status == 405 ? error_text("method_not_allowed", "method not allowed on this route")
                             : error_text("not_found", "no such route");
    } else if (route->handler == api_healthz) {
        status = 200;
        body = json_text(json_pack("{s:s}", "status", "ok"));
    } else if (route->handler != api_sandboxes_get) {
        status = 404;
        body = error_text("not_found", "route not in the prototype");
    } else if (c->key_len == 0) {
        status = 401;
        body = error_text("unauthorized", "X-API-Key header required");
    }
    if (status) {
        account(method, route, c->url, status, mono_ms() - t0, "");
        send_reply(c, status, body);
        if (!c->keep_alive) c->closing = true;
        c->url_len = 0;
        c->url[0] = '\0';
        c->key_len = 0;
        c->key[0] = '\0';
        return 0;
    }
    job *j = calloc(1, sizeof *j);
    j->c = c;
    j->route = route;
    memcpy(j->id, m.id, sizeof j->id);
    memcpy(j->key, c->key, sizeof j->key);
    c->busy = true;
    bufferevent_disable(c->bev, EV_READ);
    queue_job(j);
    http_parser_pause(p, 1); /* one request at a time */
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
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
    (void)bev;
    conn *c = arg;
    if (c->closing) conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    conn *c = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (c->busy) c->closing = true; /* freed when its job comes back */
        else conn_free(c);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
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
    (void)fd;
    (void)what;
    (void)arg;
    pthread_mutex_lock(&mu);
    job *list = done;
    done = NULL;
    pthread_mutex_unlock(&mu);
    while (list) {
        job *j = list;
        list = j->next;
        conn *c = j->c;
        c->busy = false;
        account("GET", j->route, c->url, j->status, j->ms, j->id);
        if (c->closing) {
            free(j->body);
            conn_free(c);
        } else {
            send_reply(c, j->status, j->body);
            if (!c->keep_alive) {
                c->closing = true;
            } else {
                c->url_len = 0;
                c->url[0] = '\0';
                c->key_len = 0;
                c->key[0] = '\0';
                http_parser_pause(&c->parser, 0);
                bufferevent_enable(c->bev, EV_READ);
                on_read(c->bev, c); /* a pipelined request may already be there */
            }
        }
        free(j);
    }
}

/* torpor-cp's api_sandboxes_get after its authenticate(): the same calls. */
static void sandbox_get(db_conn *db, job *j)
{
    char team_id[64];
    bool ok, admin, found;
    terr err;
    sandbox_row row;
    if (!db) {
        j->status = 503;
        j->body = error_text("unavailable", "no database (--database-url)");
    } else if (auth_check_role(db, keys, j->key, team_id, &ok, &admin, &err) != 0) {
        j->status = 500;
        j->body = error_text("internal_error", "internal error (logged by the control plane)");
    } else if (!ok) {
        j->status = 401;
        j->body = error_text("unauthorized", "invalid API key");
    } else if (db_sandbox_get(db, team_id, j->id, &row, &found, &err) != 0) {
        j->status = 500;
        j->body = error_text("internal_error", "internal error (logged by the control plane)");
    } else if (!found) {
        char msg[128];
        snprintf(msg, sizeof msg, "sandbox %s not found", j->id);
        j->status = 404;
        j->body = error_text("not_found", msg);
    } else {
        json_t *o = sandbox_row_to_json(&row, &err);
        j->status = o ? 200 : 500;
        j->body = o ? json_text(o)
                    : error_text("internal_error", "internal error (logged by the control plane)");
    }
}

static void *worker_main(void *arg)
{
    (void)arg;
    db_conn *db = NULL;
    terr err;
    if (database_url && db_open(database_url, &db, &err) != 0) {
        fprintf(stderr, "proto_bev_http: %s\n", err.msg);
        exit(1);
    }
    for (;;) {
        pthread_mutex_lock(&mu);
        while (!todo) pthread_cond_wait(&cond, &mu);
        job *j = todo;
        todo = j->next;
        if (!todo) todo_tail = NULL;
        pthread_mutex_unlock(&mu);
        j->next = NULL;
        int64_t t0 = mono_ms();
        sandbox_get(db, j);
        j->ms = mono_ms() - t0;
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
    int threads = 8, cache_ms = AUTH_CACHE_DEFAULT_MS;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--database-url") == 0) database_url = argv[i + 1];
        else if (strcmp(argv[i], "--key-cache-ms") == 0) cache_ms = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: proto_bev_http [--threads N] [--database-url URL] "
                            "[--key-cache-ms N]\n");
            return 2;
        }
    }
    terr err;
    if (auth_cache_new(cache_ms, &keys, &err) != 0) {
        fprintf(stderr, "proto_bev_http: %s\n", err.msg);
        return 2;
    }
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
