#include "api_templates.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "torpor_limits.h"

static const struct {
    top_outcome outcome;
    int status; /* 0: agent_status_to_http */
    const char *code;
} outcome_http[] = {
    {TOP_NOT_FOUND, 404, "not_found"},          {TOP_INVALID, 400, "invalid_request"},
    {TOP_EXISTS, 409, "already_exists"},        {TOP_IN_USE, 409, "template_in_use"},
    {TOP_NOT_READY, 409, "template_not_ready"}, {TOP_FORBIDDEN, 403, "forbidden"},
    {TOP_UNREACHABLE, 502, "agent_error"},      {TOP_AGENT_FAILED, 0, NULL},
};

void api_reply_template_outcome(api_request *r, const char *op, const top_result *res,
                                int ok_status)
{
    if (res->outcome == TOP_OK) {
        if (ok_status == 204) {
            http_reply_empty(r->req, 204);
            return;
        }
        terr err;
        json_t *j = template_row_to_json(&res->row, &err);
        if (!j) api_reply_internal(r, &err);
        else http_reply_json(r->req, ok_status, j);
        return;
    }
    if (res->outcome == TOP_INTERNAL) {
        api_reply_internal(r, &res->err);
        return;
    }
    for (size_t i = 0; i < sizeof outcome_http / sizeof outcome_http[0]; i++) {
        if (outcome_http[i].outcome != res->outcome) continue;
        int status = outcome_http[i].status;
        const char *code = outcome_http[i].code;
        if (status == 0) {
            agent_status_to_http(res->grpc, &status, &code);
            char q[LOG_QUOTE_MAX];
            log_warn("event=agent_call_failed op=%s grpc_status=%d http_status=%d error=\"%s\"", op,
                     (int)res->grpc, status, log_quote(res->err.msg, q, sizeof q));
        }
        http_reply_error(r->req, status, code, "%s", res->err.msg);
        return;
    }
    terr err;
    terr_set(&err, "unknown template_ops outcome %d", (int)res->outcome);
    api_reply_internal(r, &err);
}

/* The template name of the path; replies 404 and returns false when it is
 * not a valid name. */
static bool path_name(api_request *r)
{
    if (limits_template_name_valid(r->id)) return true;
    http_reply_error(r->req, 404, "not_found", "no template %s", r->id);
    return false;
}

void api_templates_list(api_request *r)
{
    sbop_ctx c = api_ops_ctx(r);
    template_row *rows = NULL;
    size_t n = 0;
    terr err;
    if (template_ops_list(&c, &rows, &n, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *j = template_row_to_json(&rows[i], &err);
        if (!j || json_array_append_new(arr, j) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(rows);
    if (!arr) {
        terr_set(&err, "building the template list failed");
        api_reply_internal(r, &err);
        return;
    }
    http_reply_json(r->req, 200, arr);
}

void api_templates_get(api_request *r)
{
    if (!path_name(r)) return;
    sbop_ctx c = api_ops_ctx(r);
    top_result res;
    template_ops_get(&c, r->id, &res);
    api_reply_template_outcome(r, "template_get", &res, 200);
}

void api_templates_create(api_request *r)
{
    json_t *body = api_body_json(r, false);
    if (!body) return;
    template_create_req req;
    terr err;
    if (template_validate_create(body, &req, &err) != 0) {
        json_decref(body);
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return;
    }
    sbop_ctx c = api_ops_ctx(r);
    top_result res;
    template_ops_create(&c, &req, &res); /* req borrows from body */
    json_decref(body);
    api_reply_template_outcome(r, "template_build", &res, 202);
}

void api_templates_log(api_request *r)
{
    if (!path_name(r)) return;
    sbop_ctx c = api_ops_ctx(r);
    top_result res;
    char *log = NULL;
    size_t len = 0;
    template_ops_log(&c, r->id, &log, &len, &res);
    if (res.outcome != TOP_OK) {
        free(log);
        api_reply_template_outcome(r, "template_log", &res, 200);
        return;
    }
    http_reply_bytes(r->req, 200, "text/plain; charset=utf-8", log ? log : "", len);
    free(log);
}

void api_templates_delete(api_request *r)
{
    if (!path_name(r)) return;
    sbop_ctx c = api_ops_ctx(r);
    top_result res;
    template_ops_delete(&c, r->id, &res);
    api_reply_template_outcome(r, "template_delete", &res, 204);
}
