#include "api_sandboxes.h"

#include <stdlib.h>
#include <string.h>

#include "api_templates.h"
#include "api_validate.h"
#include "ids.h"
#include "json_util.h"
#include "mono_time.h"

/* ------------------------------------------------------------ create */

void api_sandboxes_create(api_request *r)
{
    json_t *body = api_body_json(r, true);
    if (!body) return;
    api_create_req cr;
    terr err;
    int rc = api_validate_create(body, &cr, &err);
    if (rc != 0) {
        json_decref(body);
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return;
    }
    char *env_json = cr.env ? json_dumps(cr.env, JSON_COMPACT) : NULL;
    json_decref(body);
    if (cr.env && !env_json) {
        terr_set(&err, "out of memory encoding env");
        api_reply_internal(r, &err);
        return;
    }
    sandbox_row spec = {.vcpus = cr.vcpus,
                        .memory_mb = cr.memory_mb,
                        .timeout_sec = cr.timeout_sec,
                        .disk_mb = cr.disk_mb,
                        .env_json = env_json};
    snprintf(spec.template_name, sizeof spec.template_name, "%s", cr.template_name);
    spec.auto_resume = cr.auto_resume;
    snprintf(spec.network, sizeof spec.network, "%s", cr.network);
    /* The access token: shown once, here; only its hash is stored. */
    char token[64];
    memcpy(token, "tpa_", 4);
    if (ids_random_hex(token + 4, 16, &err) != 0 ||
        ids_sha256_hex(token, strlen(token), spec.access_token_hash) != 0) {
        free(env_json);
        api_reply_internal(r, &err);
        return;
    }
    sbop_ctx c = api_ops_ctx(r);
    /* A team's own template: its image and digest (placed only where a
     * host holds exactly that image). */
    char image[64], digest[65];
    top_result tres;
    template_ops_resolve(&c, spec.template_name, image, digest, &tres);
    if (tres.outcome != TOP_OK) {
        free(env_json);
        api_reply_template_outcome(r, "create", &tres, 201);
        return;
    }
    sbop_result res;
    sandbox_ops_create_on(&c, &spec, image, digest, &res);
    free(env_json);
    snprintf(r->id, sizeof r->id, "%s", res.row.id);
    if (res.outcome == SBOP_OK) {
        json_t *j = sandbox_row_to_json(&res.row, &err);
        if (!j || json_object_set_new(j, "access_token", json_string(token)) != 0) {
            json_decref(j);
            api_reply_internal(r, &err);
            return;
        }
        http_reply_json(r->req, 201, j);
        return;
    }
    api_reply_outcome(r, "create", &res, 201);
}

/* ------------------------------------------------------------ read */

typedef struct list_query {
    unsigned *mask;
    terr *err;
    bool seen_error; /* err holds the reason */
} list_query;

static int list_param(void *cls, const char *key, const char *value)
{
    list_query *q = cls;
    int rc = strcmp(key, "status") == 0
                 ? sb_status_parse_filter(value, q->mask, q->err)
                 : terr_set(q->err, "unknown query parameter \"%.64s\"", key);
    if (rc != 0) q->seen_error = true;
    return rc;
}

void api_sandboxes_list(api_request *r)
{
    unsigned mask = SB_STATUS_MASK_ACTIVE;
    terr err;
    list_query q = {.mask = &mask, .err = &err};
    int rc = http_query_each(http_request_query(r->req), list_param, &q);
    if (rc != 0) {
        if (!q.seen_error) terr_set(&err, "malformed query string");
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return;
    }
    sandbox_row *rows;
    size_t n;
    if (db_sandbox_list(r->db, r->team_id, mask, &rows, &n, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *j = sandbox_row_to_json(&rows[i], &err);
        if (!j || json_array_append_new(arr, j) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(rows);
    if (!arr) {
        terr_set(&err, "building the sandbox list failed");
        api_reply_internal(r, &err);
        return;
    }
    http_reply_json(r->req, 200, arr);
}

void api_sandboxes_get(api_request *r)
{
    sandbox_row row;
    if (api_load_sandbox(r, &row) != 0) return;
    sbop_result res = {.outcome = SBOP_OK, .row = row};
    api_reply_outcome(r, "get", &res, 200);
}

/* ------------------------------------------------------------ lifecycle */

void api_sandboxes_delete(api_request *r)
{
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_delete(&c, r->id, &res);
    api_reply_outcome(r, "destroy", &res, 204);
}

void api_sandboxes_pause(api_request *r)
{
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_pause(&c, r->id, &res);
    api_reply_outcome(r, "pause", &res, 200);
}

void api_sandboxes_resume(api_request *r)
{
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_resume(&c, r->id, &res);
    api_reply_outcome(r, "resume", &res, 200);
}

void api_sandboxes_ping(api_request *r)
{
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_ping(&c, r->id, &res);
    api_reply_outcome(r, "ping", &res, 204);
}

void api_sandboxes_timeout(api_request *r)
{
    json_t *body = api_body_json(r, false);
    if (!body) return;
    int timeout_sec;
    terr err;
    int rc = api_validate_timeout(body, &timeout_sec, &err);
    json_decref(body);
    if (rc != 0) {
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return;
    }
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_set_timeout(&c, r->id, timeout_sec, &res);
    api_reply_outcome(r, "set_timeout", &res, 200);
}

/* ------------------------------------------------------------ exec */

static json_t *exec_json(const char *id, const char *cmd,
                         const Torpor__Hostagent__V1__ExecResponse *x, int64_t duration_ms)
{
    bool utf8 = json_util_is_utf8(x->stdout.data, x->stdout.len) &&
                json_util_is_utf8(x->stderr.data, x->stderr.len);
    json_t *out, *err;
    if (utf8) {
        /* protobuf-c leaves data NULL for an empty field; jansson wants a pointer. */
        out = json_stringn(x->stdout.data ? (const char *)x->stdout.data : "", x->stdout.len);
        err = json_stringn(x->stderr.data ? (const char *)x->stderr.data : "", x->stderr.len);
    } else {
        char *o = json_util_base64_encode(x->stdout.data, x->stdout.len);
        char *e = json_util_base64_encode(x->stderr.data, x->stderr.len);
        out = o ? json_string(o) : NULL;
        err = e ? json_string(e) : NULL;
        free(o);
        free(e);
    }
    if (!out || !err) {
        json_decref(out);
        json_decref(err);
        return NULL;
    }
    return json_pack("{s:s, s:s, s:o, s:o, s:i, s:I, s:b, s:s, s:b, s:b}", "sandbox_id", id, "cmd",
                     cmd, "stdout", out, "stderr", err, "exit_code", x->exit_code, "duration_ms",
                     (json_int_t)duration_ms, "timed_out", x->timed_out, "encoding",
                     utf8 ? "utf-8" : "base64", "stdout_truncated", x->stdout_truncated,
                     "stderr_truncated", x->stderr_truncated);
}

void api_sandboxes_exec(api_request *r)
{
    json_t *body = api_body_json(r, false);
    if (!body) return;
    api_exec_req er;
    terr err;
    if (api_validate_exec(body, &er, &err) != 0) {
        json_decref(body);
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return;
    }
    rpc_client *client;
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_open_awake(&c, r->id, &client, &res);
    if (res.outcome != SBOP_OK) {
        api_reply_outcome(r, "exec", &res, 200);
        goto out;
    }
    char *create_env = NULL;
    if (db_sandbox_env(r->db, r->id, &create_env, &err) != 0 ||
        api_exec_merge_env(&er, create_env, &err) != 0) {
        free(create_env);
        api_reply_internal(r, &err);
        goto out;
    }
    free(create_env);
    agent_exec_args args = {.cmd = er.cmd,
                            .args = er.args,
                            .n_args = er.n_args,
                            .env = er.env,
                            .n_env = er.n_env,
                            .cwd = er.cwd,
                            .timeout_sec = er.timeout_sec,
                            .stdin_data = er.stdin_data,
                            .stdin_len = er.stdin_len};
    Torpor__Hostagent__V1__ExecResponse *resp;
    int64_t t0 = mono_ms();
    grpc_status_code st = agent_exec(client, r->id, &args, &resp, &err);
    int64_t duration = mono_ms() - t0;
    if (st != GRPC_STATUS_OK) {
        api_reply_agent_error(r, "exec", st, &err);
        goto out;
    }
    sandbox_ops_touch(&c, r->id);
    json_t *j = exec_json(r->id, er.cmd, resp, duration);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (!j) {
        terr_set(&err, "building the exec result failed");
        api_reply_internal(r, &err);
        goto out;
    }
    http_reply_json(r->req, 200, j);
out:
    api_exec_req_free(&er);
    json_decref(body);
}
