#include "api_request.h"

#include <stdlib.h>
#include <string.h>

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
    char q[LOG_QUOTE_MAX], qp[LOG_QUOTE_MAX];
    bool db_down = r->db && db_unavailable(r->db);
    log_error("event=request_failed path=\"%s\" sandbox_id=%s db_unavailable=%d error=\"%s\"",
              log_quote(http_request_path(r->req), qp, sizeof qp), r->id, db_down,
              log_quote(err->msg, q, sizeof q));
    /* The cause is in the log; the client gets a plain sentence, never the
     * database's own text. */
    if (db_down) {
        http_add_header(r->req, "Retry-After", API_DB_RETRY_AFTER);
        http_reply_error(r->req, 503, "unavailable", "the database is unavailable; retry later");
        return;
    }
    http_reply_error(r->req, 500, "internal_error", "internal error (logged by the control plane)");
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

void api_reply_agent_error(api_request *r, const char *op, grpc_status_code code, const terr *err)
{
    int http;
    const char *ecode;
    agent_status_to_http(code, &http, &ecode);
    if (code == GRPC_STATUS_UNAVAILABLE && strstr(err->msg, AGENT_RECOVERING_MARK)) {
        /* The agent restarted and is still re-attaching this sandbox. */
        http = 503;
        ecode = "unavailable";
    }
    if (http == 503) http_add_header(r->req, "Retry-After", "5");
    char q[LOG_QUOTE_MAX];
    log_warn(
        "event=agent_call_failed op=%s sandbox_id=%s grpc_status=%d http_status=%d error=\"%s\"",
        op, r->id, (int)code, http, log_quote(err->msg, q, sizeof q));
    http_reply_error(r->req, http, ecode, "%s", err->msg);
}

sbop_ctx api_ops_ctx(const api_request *r)
{
    return (sbop_ctx){.db = r->db,
                      .agents = r->ctx->agents,
                      .team_id = r->team_id,
                      .host_fresh_sec = r->ctx->cfg ? r->ctx->cfg->reconcile_interval_sec : 0,
                      .touches = r->ctx->touches,
                      .routes = r->ctx->routes};
}

static const struct {
    sbop_outcome outcome;
    int status; /* 0: agent_status_to_http (AGENT_FAILED and INTERNAL are
                   answered by the logging helpers above them) */
    const char *code;
} outcome_http[] = {
    {SBOP_NOT_FOUND, 404, "not_found"},
    {SBOP_CONFLICT, 409, "invalid_state"},
    {SBOP_AGENT_UNREACHABLE, 502, "agent_error"},
    {SBOP_QUOTA_EXCEEDED, 429, "quota_exceeded"},
    {SBOP_HOST_UNREACHABLE, 503, "host_unreachable"},
    {SBOP_NO_CAPACITY, 503, "no_capacity"},
    {SBOP_CREATE_UNKNOWN, 0, NULL},
};

void api_reply_outcome(api_request *r, const char *op, const sbop_result *res, int ok_status)
{
    if (res->outcome == SBOP_OK) {
        if (ok_status == 204) {
            http_reply_empty(r->req, 204);
            return;
        }
        terr err;
        json_t *j = sandbox_row_to_json(&res->row, &err);
        if (!j) api_reply_internal(r, &err);
        else http_reply_json(r->req, ok_status, j);
        return;
    }
    if (res->outcome == SBOP_AGENT_FAILED) {
        api_reply_agent_error(r, op, res->grpc, &res->err);
        return;
    }
    if (res->outcome == SBOP_INTERNAL) {
        api_reply_internal(r, &res->err);
        return;
    }
    for (size_t i = 0; i < sizeof outcome_http / sizeof outcome_http[0]; i++) {
        if (outcome_http[i].outcome != res->outcome) continue;
        int status = outcome_http[i].status;
        const char *code = outcome_http[i].code;
        if (status == 0) agent_status_to_http(res->grpc, &status, &code);
        if (res->outcome == SBOP_NO_CAPACITY) http_add_header(r->req, "Retry-After", "5");
        if (res->outcome == SBOP_HOST_UNREACHABLE || res->outcome == SBOP_NO_CAPACITY) {
            char q[LOG_QUOTE_MAX];
            log_warn("event=request_refused op=%s sandbox_id=%s code=%s error=\"%s\"", op, r->id,
                     code, log_quote(res->err.msg, q, sizeof q));
        }
        http_reply_error(r->req, status, code, "%s", res->err.msg);
        return;
    }
    terr err;
    terr_set(&err, "unknown sandbox_ops outcome %d", (int)res->outcome);
    api_reply_internal(r, &err);
}
