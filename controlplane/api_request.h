/* api_request: one REST request as the route handlers see it, and the
 * request helpers every handler file shares (the JSON body, loading the
 * sandbox of the path, the REST answer to a sandbox_ops outcome or to a
 * failed agent call).
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
#include "sandbox_ops.h"
#include "terr.h"

struct reconciler;
struct team_limit;
struct auth_cache;
struct touch_gate;
struct ping_route;

typedef struct api_ctx {
    const cp_config *cfg;
    agent_pool *agents;
    struct reconciler *rec;        /* host reachability for /readyz; may be NULL */
    struct team_limit *long_calls; /* per-team cap on long calls; NULL = none */
    struct auth_cache *keys;       /* recently verified API keys; NULL = none */
    struct touch_gate *touches;    /* last_active_at writes of this replica; NULL = all */
    struct ping_route *routes;     /* hosts recent pings reached; NULL = none */
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
    bool admin;              /* the key's role is admin */
    char id[SANDBOX_ID_MAX]; /* sandbox id from the path, "" if none */
    const char *body;        /* raw body (not NUL-terminated), body_len bytes */
    size_t body_len;
} api_request;

void *api_worker_init(void *app, int index, terr *err);
void api_worker_free(void *worker);

/* Parses the body as a JSON object (empty allowed when empty_ok); replies
 * 400 and returns NULL on bad input. */
json_t *api_body_json(api_request *r, bool empty_ok);
/* Retry-After (seconds) of a 503 for an unreachable database. */
#define API_DB_RETRY_AFTER "2"
/* Logs the cause and replies 503 unavailable when the database could not be
 * reached (db_unavailable), else 500 internal_error; the message is a plain
 * sentence, never the cause's text (libpq's, an OS error). */
void api_reply_internal(api_request *r, const terr *err);
/* Loads the team's sandbox r->id; replies 404/500 and returns -1 otherwise. */
int api_load_sandbox(api_request *r, sandbox_row *row);
/* Replies with the REST mapping of a failed agent call and logs it. */
void api_reply_agent_error(api_request *r, const char *op, grpc_status_code code, const terr *err);
/* The ops context of r (its DB connection, the agents, its team). */
sbop_ctx api_ops_ctx(const api_request *r);
/* Answers a sandbox_ops outcome through the one outcome -> status table:
 * SBOP_OK -> ok_status with the row (201/200) or empty (204); not found
 * 404, conflict 409 invalid_state, agent failures by agent_status_to_http
 * (logged with op), agent unreachable 502, host unreachable 503
 * host_unreachable, no capacity 503 no_capacity with Retry-After, internal 500. */
void api_reply_outcome(api_request *r, const char *op, const sbop_result *res, int ok_status);

#endif
