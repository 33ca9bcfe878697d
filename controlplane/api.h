/* api: the REST front controller of torpor-cp.
 *
 * Contract: api_handle is the http_server handler. For every request it
 * matches the route (unknown -> 404, wrong method -> 405), checks X-API-Key on
 * /v1 routes (401), enforces the per-route body limit (413: 1 MiB, 64 MiB for
 * files/write), then calls one route handler, which sends exactly one reply.
 * Errors are {"error":{"code","message"}} (see docs/api.md). An api_worker
 * (one per HTTP thread) owns that thread's PostgreSQL connection. */
#ifndef TORPOR_CP_API_H
#define TORPOR_CP_API_H

#include <event2/http.h>
#include <jansson.h>
#include <stddef.h>

#include "agent_client.h"
#include "api_routes.h"
#include "cp_config.h"
#include "db.h"
#include "terr.h"

#define API_BODY_LIMIT (1024 * 1024)
#define API_FILES_BODY_LIMIT (64 * 1024 * 1024)

typedef struct api_ctx {
    const cp_config *cfg;
    agent_pool *agents;
} api_ctx;

typedef struct api_worker {
    db_conn *db;
} api_worker;

void *api_worker_init(void *app, int index, terr *err);
void api_worker_free(void *worker);
void api_handle(void *app, void *worker, struct evhttp_request *req);

/* One request, as the route handlers see it. */
typedef struct api_request {
    struct evhttp_request *req;
    api_ctx *ctx;
    db_conn *db;
    api_route route;
    char team_id[64];
    char id[SANDBOX_ID_MAX]; /* sandbox id from the path, "" if none */
    const char *body;        /* raw body (not NUL-terminated), body_len bytes */
    size_t body_len;
} api_request;

/* Parses the body as a JSON object (empty allowed when empty_ok); replies
 * 400 and returns NULL on bad input. */
json_t *api_body_json(api_request *r, bool empty_ok);
/* Replies 500 internal_error, logging the cause. */
void api_reply_internal(api_request *r, const terr *err);

#endif
