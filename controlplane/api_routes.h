/* api_routes: the one table of REST routes, and the matcher over it.
 *
 * Contract: each route is one row of api_route_table (api_routes.c), like a
 * tmux cmd_entry: its method (NULL = any), its path pattern, its handler,
 * how its body is taken (buffered JSON up to body_limit, or streamed), how
 * it authenticates, and where it runs: on a worker, on a long-running worker
 * (a create, pause, resume, exec or file transfer: it may hold a worker for
 * up to a minute or two, so it never gets the last free worker), or right
 * on the I/O thread after the headers (liveness: never behind a busy worker
 * pool; no auth, no body, and the handler must not block). Adding a route =
 * one row + its handler.
 *
 * Patterns: literal segments, "{id}" for one sandbox id segment (which must
 * satisfy api_validate_sandbox_id, otherwise the path matches no route), and
 * a final "*" that matches the rest of the path (at least one character,
 * e.g. for proxied paths). Paths are matched raw (not percent-decoded).
 * api_route_find is pure: a path no row matches is 404; a path some row
 * matches but not with this method is 405, with the Allow value listing the
 * methods of the rows that match the path, in table order. */
#ifndef TORPOR_CP_API_ROUTES_H
#define TORPOR_CP_API_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include "api_request.h"
#include "sandbox_model.h"

#define API_BODY_LIMIT (1024 * 1024)

typedef enum api_auth {
    API_AUTH_NONE = 0,
    API_AUTH_KEY,           /* X-API-Key of a team (401 otherwise) */
    API_AUTH_ADMIN,         /* X-API-Key whose role is admin (401 / 403 forbidden) */
    API_AUTH_SANDBOX_TOKEN, /* the team's X-API-Key, or the {id} sandbox's access
                               token (X-Access-Token or ?token=): the port proxy */
} api_auth;

typedef enum api_run {
    API_RUN_WORKER = 0, /* the worker pool */
    API_RUN_LONG,       /* the long-running pool (http_request_set_long_running) */
    API_RUN_IO_THREAD,  /* the I/O thread, at once: auth must be API_AUTH_NONE */
} api_run;

typedef struct api_route {
    const char *method;  /* "GET", ... or NULL for any */
    const char *pattern; /* "/v1/sandboxes/{id}/pause" */
    void (*handler)(api_request *r);
    /* The body: buffered (for the handler's JSON) up to body_limit bytes
     * (413 above), or, when stream is set, handed to stream piece by piece
     * on the I/O thread (cls: the api_ctx; see http_request_stream_body). */
    size_t body_limit;
    http_body_fn stream;
    api_auth auth;
    api_run run;
} api_route;

extern const api_route api_route_table[];
extern const size_t api_route_count;

typedef struct api_match {
    int status;              /* 0 = matched, 404 or 405 */
    char id[SANDBOX_ID_MAX]; /* the {id} segment, "" if none */
    const char *rest;        /* what "*" matched (into path), NULL if none */
    char allow[64];          /* for 405: "GET, DELETE" */
} api_match;

/* The row of table[0..n) for method and path, or NULL with m->status set. */
const api_route *api_route_find(const api_route *table, size_t n, const char *method,
                                const char *path, api_match *m);

#endif
