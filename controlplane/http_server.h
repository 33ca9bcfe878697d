/* http_server: one libevent evhttp loop thread + a pool of N worker threads.
 *
 * Contract: one event-loop thread owns the evhttp (it accepts, parses and
 * sends); every parsed request is queued to a pool of cfg->n_threads worker
 * threads, each owning a "worker" object made by cfg->worker_init (the
 * control plane puts a PostgreSQL connection there). A worker runs the
 * handler synchronously, so a slow request (a pause, a first create) holds
 * up only that worker; no connection, new or keep-alive, is pinned to a
 * busy thread. The handler may read the request (URI, headers, input
 * buffer) and add output headers; the reply helpers record the response,
 * which the loop thread sends once the handler has returned (so the handler
 * may still read the request after replying). A handler that returns
 * without replying gets a 500. A client that disconnects while its handler
 * runs is harmless: the reply is then dropped. The listening socket is
 * bound once, so port 0 works and http_server_port tells the port. Bodies
 * over max_body get libevent's own 413 before the handler runs; smaller
 * per-route limits are the handler's. Every HTTP method reaches the handler
 * (so it can answer 405 itself). http_server_stop stops accepting, lets
 * queued and running requests finish and be replied, joins the threads and
 * frees everything. The reply helpers send exactly one response (a second
 * call is logged and ignored) and may be called only from the handler's
 * thread, during the handler. The process should ignore SIGPIPE, as
 * torpor-cp does: a reply to a reset connection is then a failed write. */
#ifndef TORPOR_CP_HTTP_SERVER_H
#define TORPOR_CP_HTTP_SERVER_H

#include <event2/http.h>
#include <jansson.h>
#include <stddef.h>

#include "terr.h"

typedef struct http_server http_server;

typedef struct http_server_config {
    const char *listen_addr; /* "127.0.0.1:8080", "[::1]:0" */
    int n_threads;           /* >= 1 */
    size_t max_body;         /* largest body libevent reads at all */
    void *app;
    /* Called once per worker thread before serving; NULL result = failure. */
    void *(*worker_init)(void *app, int index, terr *err);
    void (*worker_free)(void *worker);
    void (*handler)(void *app, void *worker, struct evhttp_request *req);
} http_server_config;

int http_server_start(const http_server_config *cfg, http_server **out, terr *err);
int http_server_port(const http_server *s);
void http_server_stop(http_server *s);

/* Sends body (reference stolen) as application/json. */
void http_reply_json(struct evhttp_request *req, int status, json_t *body);
/* Sends {"error":{"code","message"}}. */
void http_reply_error(struct evhttp_request *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_reply_empty(struct evhttp_request *req, int status);
void http_reply_bytes(struct evhttp_request *req, int status, const char *content_type,
                      const void *data, size_t len);
const char *http_reason(int status);
/* The status recorded by a reply helper for req during its handler (on the
 * handler's thread), 0 if none yet. evhttp_request_get_response_code is 0
 * there: libevent only sets it when the loop thread sends the reply. */
int http_reply_status(struct evhttp_request *req);

#endif
