/* http_server: libevent evhttp on N worker threads sharing one listening socket.
 *
 * Contract: each worker thread owns an event_base, an evhttp and a "worker"
 * object made by cfg->worker_init (the control plane puts a PostgreSQL
 * connection there), and handles each request synchronously on that thread;
 * a slow request (a pause, a first create) holds up only its own thread.
 * All threads accept on one socket bound once, so port 0 works and
 * http_server_port tells the port. Bodies over max_body get libevent's own
 * 413 before the handler runs; smaller per-route limits are the handler's.
 * Every HTTP method reaches the handler (so it can answer 405 itself).
 * http_server_stop stops accepting, lets each thread finish its current
 * request, joins the threads and frees everything. The reply helpers send
 * exactly one response and may be called only from the handler's thread. */
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

#endif
