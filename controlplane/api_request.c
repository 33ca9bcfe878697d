#include "api_request.h"

#include <stdlib.h>

#include "json_util.h"
#include "log.h"

void *api_worker_init(void *app, int index, terr *err)
{
    api_ctx *ctx = app;
    api_worker *w = calloc(1, sizeof *w);
    if (!w) {
        terr_set(err, "out of memory");
        return NULL;
    }
    if (db_open(ctx->cfg->database_url, &w->db, err) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

void api_worker_free(void *worker)
{
    api_worker *w = worker;
    if (!w) return;
    db_close(w->db);
    free(w);
}

json_t *api_body_json(api_request *r, bool empty_ok)
{
    json_t *body;
    terr err;
    if (json_util_parse_object(r->body, r->body_len, empty_ok, &body, &err) != 0) {
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return NULL;
    }
    return body;
}

void api_reply_internal(api_request *r, const terr *err)
{
    char q[LOG_QUOTE_MAX];
    log_error("event=request_failed path=%s sandbox_id=%s error=\"%s\"", http_request_path(r->req), r->id,
              log_quote(err->msg, q, sizeof q));
    http_reply_error(r->req, 500, "internal_error", "%s", err->msg);
}

int api_load_sandbox(api_request *r, sandbox_row *row)
{
    bool found;
    terr err;
    if (db_sandbox_get(r->db, r->team_id, r->id, row, &found, &err) != 0) {
        api_reply_internal(r, &err);
        return -1;
    }
    if (!found) {
        http_reply_error(r->req, 404, "not_found", "sandbox %s not found", r->id);
        return -1;
    }
    return 0;
}

int api_require_running(api_request *r, const sandbox_row *row)
{
    if (row->status == SB_RUNNING) return 0;
    http_reply_error(r->req, 409, "invalid_state", "sandbox is not running (status: %s)",
                     sb_status_name(row->status));
    return -1;
}

int api_agent_for(api_request *r, const char *host_id, rpc_client **c)
{
    db_host host;
    bool found;
    terr err;
    if (db_host_get(r->db, host_id, &host, &found, &err) != 0) {
        api_reply_internal(r, &err);
        return -1;
    }
    if (!found) {
        terr_set(&err, "host %s of sandbox %s is not registered", host_id, r->id);
        api_reply_internal(r, &err);
        return -1;
    }
    if (agent_pool_get(r->ctx->agents, &host, c, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=agent_connect_failed host_id=%s sandbox_id=%s error=\"%s\"", host_id, r->id,
                  log_quote(err.msg, q, sizeof q));
        http_reply_error(r->req, 502, "agent_error", "%s", err.msg);
        return -1;
    }
    return 0;
}

void api_reply_agent_error(api_request *r, const char *op, grpc_status_code code, const terr *err)
{
    int http;
    const char *ecode;
    agent_status_to_http(code, &http, &ecode);
    char q[LOG_QUOTE_MAX];
    log_warn("event=agent_call_failed op=%s sandbox_id=%s grpc_status=%d http_status=%d error=\"%s\"", op,
             r->id, (int)code, http, log_quote(err->msg, q, sizeof q));
    http_reply_error(r->req, http, ecode, "%s", err->msg);
}

void api_touch(api_request *r)
{
    bool changed;
    terr err;
    /* The agent already counted the activity; a failed DB write only delays
     * last_active_at in the REST view, so it is logged, not answered. */
    if (db_sandbox_touch(r->db, r->id, &changed, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=touch_failed sandbox_id=%s error=\"%s\"", r->id, log_quote(err.msg, q, sizeof q));
    }
}
