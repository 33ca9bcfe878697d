/* http_server: libmicrohttpd for the wire, a pool of N worker threads for
 * the handlers.
 *
 * Contract: one libmicrohttpd I/O thread (epoll) accepts, parses and sends;
 * it never blocks on a handler. Once a request's headers are in, before any
 * body byte is read, cfg->on_headers runs on the I/O thread (optional; it
 * must not block): it decides the route, may answer at once with a reply
 * helper (the body is then never read and the connection closes if a body
 * was announced), sets the body limit (http_request_set_body_limit, default
 * cfg->max_body), or makes the body streamed (http_request_stream_body),
 * marks the request long-running and attaches route data
 * (http_request_set_user). A Content-Length over the limit is decided at
 * that point: the body is never stored and the handler never runs. The 413
 * goes out at once when the client waits for "100 Continue" or announced
 * more than 4 MiB over the limit (the connection then closes); a smaller
 * excess is first read and discarded, because closing a connection with
 * unread bytes resets it before a client that sends its body unasked (most
 * do) can read the answer. A chunked body that grows over the limit is
 * dropped as it arrives and answered 413 at its end. A complete request
 * is then queued for a worker and its connection suspended, so a slow
 * handler holds up only its worker and never another connection, new or
 * keep-alive. Each worker owns an object made by cfg->worker_init (the
 * control plane puts a PostgreSQL connection there). Long-running requests
 * (http_request_set_long_running) go to the n_long_threads workers of their
 * own pool when there are any (the n_threads others then serve only quick
 * requests and vet jobs), else they use at most n_threads - 1 workers when
 * n_threads > 1; either way a quick request always finds a worker. At most
 * HTTP_MAX_QUEUED requests wait; more get 503 at once.
 *
 * Connections: at most max_connections are open (more wait in the listen
 * backlog). Slow clients are closed: a request's headers must be complete
 * within HTTP_HEADERS_TIMEOUT_MS of its connection's start (or, on a
 * keep-alive connection, of the previous reply plus the idle time), a body
 * must arrive at HTTP_BODY_MIN_BYTES per HTTP_BODY_WINDOW_MS at least, and
 * a connection idle (no byte either way) for HTTP_IDLE_TIMEOUT_SEC is
 * closed. These deadlines do not run while a worker holds the request.
 *
 * The handler may read the request (method, path, query, headers, body) and
 * add response headers; a reply helper records the response, which the I/O
 * thread sends once the handler has returned (so the handler may still read
 * the request after replying). A handler that returns without replying gets
 * a 500. A client that disconnects while its handler runs is harmless: the
 * reply is then dropped. The reply helpers record exactly one response (a
 * second call is logged and ignored) and may be called only on the
 * request's own thread during on_headers or the handler. Responses may be
 * streamed (http_reply_stream: chunked when the size is unknown). HTTP/1.0
 * requests are answered as HTTP/1.0; keep-alive and chunked request bodies
 * are libmicrohttpd's. `Connection: Upgrade` is served by http_reply_upgrade
 * (the hook for the WebSocket and port-proxy routes to come).
 *
 * The listening socket is bound once, so port 0 works and
 * http_server_port tells the port. http_server_stop stops accepting at
 * once, answers new requests on open connections 503, lets queued and
 * running requests finish and be sent (waiting at most 5 s for slow
 * readers), joins the threads and frees everything. The process should
 * ignore SIGPIPE, as torpor-cp does. */
#ifndef TORPOR_CP_HTTP_SERVER_H
#define TORPOR_CP_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "terr.h"

#define HTTP_MAX_CONNECTIONS_DEFAULT 1024u
#define HTTP_HEADERS_TIMEOUT_MS 10000
#define HTTP_BODY_WINDOW_MS 10000
#define HTTP_BODY_MIN_BYTES (16 * 1024) /* per window: 1.6 KB/s */
#define HTTP_IDLE_TIMEOUT_SEC 60u

typedef struct http_server http_server;
typedef struct http_request http_request;

typedef struct http_server_config {
    const char *listen_addr; /* "127.0.0.1:8080", "[::1]:0" */
    int n_threads;           /* >= 1 */
    /* Workers that serve only long-running requests (0: none; long ones
     * then share the n_threads workers, at most n_threads - 1 at a time). */
    int n_long_threads;
    unsigned max_connections; /* open connections; 0 = HTTP_MAX_CONNECTIONS_DEFAULT */
    size_t max_body;          /* default body limit of a request */
    void *app;
    /* Called once per worker thread before serving; NULL result = failure. */
    void *(*worker_init)(void *app, int index, terr *err);
    void (*worker_free)(void *worker);
    /* I/O thread, after the headers, before the body; may be NULL. */
    void (*on_headers)(void *app, http_request *req);
    /* Worker thread, once the body is in. */
    void (*handler)(void *app, void *worker, http_request *req);
    /* Worker thread, after the headers and before the body, for requests
     * on_headers marked with http_request_vet_first (e.g. a key check
     * against the database before a large upload is read); a reply here
     * refuses the request (the body is then never stored; sent at once when
     * no body or more than 4 MiB is announced or the client waits for
     * "100 Continue", else after draining it). May be NULL. */
    void (*vet)(void *app, void *worker, http_request *req);
    /* I/O thread, once per request whose on_headers ran, when it is over
     * (answered, refused, or the client left), just before it is freed; to
     * release what on_headers, vet or the handler took for it. May be NULL. */
    void (*on_done)(void *app, http_request *req);
} http_server_config;

int http_server_start(const http_server_config *cfg, http_server **out, terr *err);
int http_server_port(const http_server *s);
void http_server_stop(http_server *s);

/* ---- the request (valid during on_headers and the handler) */
const char *http_request_method(const http_request *req); /* "GET" */
/* The raw request target ("/a/b?x=1"), and its path and query parts, not
 * percent-decoded; query is "" when there is none. */
const char *http_request_uri(const http_request *req);
const char *http_request_path(const http_request *req);
/* Routes the request as if its path were path (from on_headers, before the
 * decision: e.g. host-based routing); the query and http_request_uri are
 * unchanged. -1 when out of memory (the old path stays). */
int http_request_set_path(http_request *req, const char *path);
const char *http_request_query(const http_request *req);
const char *http_request_header(const http_request *req, const char *name); /* NULL if absent */
/* Calls fn for every request header in order; fn returns non-zero to stop. */
void http_request_headers_each(const http_request *req,
                               int (*fn)(void *cls, const char *name, const char *value),
                               void *cls);
/* The buffered body (not NUL-terminated; "" when empty). */
const char *http_request_body(const http_request *req, size_t *len);
void *http_request_user(const http_request *req);
/* Per-request data of the application (e.g. a streamed body's spool), set
 * on the I/O thread (on_headers or a body fn) or by the handler; free_fn
 * (may be NULL) runs once when the request is freed, however it ended. */
void http_request_set_data(http_request *req, void *data, void (*free_fn)(void *data));
void *http_request_data(const http_request *req);
/* Calls fn for each key=value of a query string ("a=1&b=x%20y"), both
 * percent-decoded ('+' is a space), in order; empty pieces are skipped.
 * Returns -1 for a piece without '=' or a key or value over 255 bytes, or
 * the first non-zero result of fn; 0 otherwise. */
int http_query_each(const char *query, int (*fn)(void *cls, const char *key, const char *value),
                    void *cls);

/* ---- decisions (on_headers only) */
void http_request_set_body_limit(http_request *req, size_t limit);
void http_request_set_long_running(http_request *req);
void http_request_set_user(http_request *req, void *user);
/* Runs cfg->vet on a worker before the body is read (one more worker hop);
 * a quick worker, unless _long on a long-running request: then the vet may
 * take long too (a long-call worker, counted as the handler is). */
void http_request_vet_first(http_request *req);
void http_request_vet_first_long(http_request *req);
/* The body is not buffered: each piece is handed to fn on the I/O thread as
 * it arrives (fn must not block); fn returns 0 when it took the piece, -1 to
 * refuse the rest (the connection is then closed), or HTTP_BODY_PAUSE when
 * it has no room for it now (back-pressure): it then took nothing, the
 * server stops reading that connection (the client is held back by TCP, the
 * server holds at most the one piece) and offers the same piece again once
 * the consumer calls http_request_resume_body (from any thread, once per
 * pause, while the request is alive: before its handler has returned). A
 * piece is at most the connection's buffer (128 KiB), so a consumer must
 * take one when its own buffer is empty. The body-rate deadline does not
 * run while paused. The handler runs once the body has ended. */
#define HTTP_BODY_PAUSE 1
typedef int (*http_body_fn)(void *cls, http_request *req, const char *data, size_t len);
void http_request_stream_body(http_request *req, http_body_fn fn, void *cls);
void http_request_resume_body(http_request *req);

/* ---- replies */
void http_add_header(http_request *req, const char *name, const char *value);
/* Sends body (reference stolen) as application/json. */
void http_reply_json(http_request *req, int status, json_t *body);
/* Sends {"error":{"code","message"}}. */
void http_reply_error(http_request *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_reply_empty(http_request *req, int status);
void http_reply_bytes(http_request *req, int status, const char *content_type, const void *data,
                      size_t len);
/* A streamed response: fn fills buf (up to max bytes) at offset pos and
 * returns the count, HTTP_STREAM_END at the end or HTTP_STREAM_ERROR; it
 * runs on the I/O thread and must not block. A producer that has nothing
 * yet returns HTTP_STREAM_PAUSE: the connection is then suspended (no byte
 * goes out, fn is not called again) until the producer calls
 * http_reply_stream_resume (from any thread, once per pause; the request
 * stays alive while paused, and until done(cls) runs when not); at a stop a
 * paused reply ends as an error. size < 0: unknown (chunked). done(cls) is
 * called once the response is freed (I/O thread). */
#define HTTP_STREAM_END ((ssize_t)-1)
#define HTTP_STREAM_ERROR ((ssize_t)-2)
#define HTTP_STREAM_PAUSE ((ssize_t)-3)
void http_reply_stream_resume(http_request *req);
typedef ssize_t (*http_stream_fn)(void *cls, uint64_t pos, char *buf, size_t max);
void http_reply_stream(http_request *req, int status, const char *content_type, int64_t size,
                       http_stream_fn fn, void *cls, void (*done)(void *cls));
/* Switches the connection to another protocol: 101 Switching Protocols with
 * "Upgrade: protocol" and "Connection: Upgrade". Once that is sent, fn runs
 * on the I/O thread with the raw socket and any bytes the client sent after
 * the request (extra, extra_len); it must not block: it hands the socket on
 * to whatever serves the protocol, which calls http_upgraded_close(h) when
 * done (from any thread; never close(fd) itself). */
typedef struct http_upgraded http_upgraded;
typedef void (*http_upgrade_fn)(void *cls, int fd, const char *extra, size_t extra_len,
                                http_upgraded *h);
void http_reply_upgrade(http_request *req, const char *protocol, http_upgrade_fn fn, void *cls);
void http_upgraded_close(http_upgraded *h);
const char *http_reason(int status);
/* The status recorded by a reply helper for req, 0 if none yet. */
int http_reply_status(const http_request *req);

#endif
