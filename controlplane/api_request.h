/* api_request: one REST request as the route handlers see it, and the
 * request helpers every handler file shares (loading the sandbox of the
 * path, the agent of its host, the REST answer to a failed agent call).
 *
 * Contract: the helpers that can fail reply themselves (404, 409, 500, 502,
 * or agent_status_to_http's mapping) and return -1; the handler then just
 * returns. An api_worker (one per HTTP thread) owns that thread's PostgreSQL
 * connection. This header sits below every handler file and the front
 * controller (api.c), so no controlplane file includes its way back up. */
#ifndef TORPOR_CP_API_REQUEST_H
#define TORPOR_CP_API_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "agent_client.h"
#include "cp_config.h"
#include "db.h"
#include "http_server.h"
#include "sandbox_model.h"
#include "terr.h"

typedef struct api_ctx {
    const cp_config *cfg;
    agent_pool *agents;
} api_ctx;

typedef struct api_worker {
    db_conn *db;
} api_worker;

struct api_route;

typedef struct api_request {
    http_request *req;
    api_ctx *ctx;
    db_conn *db;
    const struct api_route *route;
    char team_id[64];
    char id[SANDBOX_ID_MAX]; /* sandbox id from the path, "" if none */
    const char *body;        /* raw body (not NUL-terminated), body_len bytes */
    size_t body_len;
} api_request;

void *api_worker_init(void *app, int index, terr *err);
void api_worker_free(void *worker);

/* Parses the body as a JSON object (empty allowed when empty_ok); replies
 * 400 and returns NULL on bad input. */
json_t *api_body_json(api_request *r, bool empty_ok);
/* Replies 500 internal_error, logging the cause. */
void api_reply_internal(api_request *r, const terr *err);
/* Loads the team's sandbox r->id; replies 404/500 and returns -1 otherwise. */
int api_load_sandbox(api_request *r, sandbox_row *row);
/* Replies 409 unless row is running; returns -1 after replying. */
int api_require_running(api_request *r, const sandbox_row *row);
/* The agent client of the row's host; replies 500/502 and returns -1 on failure. */
int api_agent_for(api_request *r, const char *host_id, rpc_client **c);
/* Replies with the REST mapping of a failed agent call and logs it. */
void api_reply_agent_error(api_request *r, const char *op, grpc_status_code code, const terr *err);
/* Records activity on r->id (last_active_at); a failure is logged only. */
void api_touch(api_request *r);

#endif
