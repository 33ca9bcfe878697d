#include "api_sandboxes.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_validate.h"
#include "http_server.h"
#include "ids.h"
#include "json_util.h"
#include "log.h"
#include "mono_time.h"
#include "reconciler.h"

#define BIT(s) SB_STATUS_BIT(s)

/* ------------------------------------------------------------ helpers */

static void reply_row(api_request *r, int status, const sandbox_row *row)
{
    terr err;
    json_t *j = sandbox_row_to_json(row, &err);
    if (!j) {
        api_reply_internal(r, &err);
        return;
    }
    http_reply_json(r->req, status, j);
}

/* After a conditional update lost a race, answer with the row as it is now. */
static void reply_conflict_now(api_request *r, const char *what)
{
    sandbox_row now;
    if (api_load_sandbox(r, &now) != 0) return;
    http_reply_error(r->req, 409, "invalid_state", "%s (status: %s)", what, sb_status_name(now.status));
}

/* Asks the agent what it holds about r->id and moves the row from `from`
 * accordingly. Returns the status the row ends in, or `from` when the agent
 * could not be asked or reports a transition still in progress. */
static sb_status settle_from_agent(api_request *r, rpc_client *c, sb_status from,
                                        sandbox_row *out)
{
    Torpor__Hostagent__V1__ListSandboxesResponse *resp;
    terr err;
    grpc_status_code st = agent_list(c, NULL, 0, &resp, &err);
    if (st != GRPC_STATUS_OK) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=settle_list_failed sandbox_id=%s error=\"%s\"", r->id, log_quote(err.msg, q, sizeof q));
        return from;
    }
    bool auto_paused;
    agent_view view = agent_view_of(resp, r->id, &auto_paused);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    sb_status to = reconciler_decide(from, view, auto_paused, true);
    if (to == from) return from;
    unsigned flags = to == SB_RUNNING ? DB_SET_ACTIVE | (from != SB_PAUSING ? DB_SET_STARTED : 0) : 0;
    bool changed;
    if (db_sandbox_transition(r->db, r->id, BIT(from), to, flags, NULL, out, &changed, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=settle_write_failed sandbox_id=%s error=\"%s\"", r->id, log_quote(err.msg, q, sizeof q));
        return from;
    }
    log_info("event=sandbox_settled sandbox_id=%s from=%s to=%s", r->id, sb_status_name(from),
             sb_status_name(to));
    return changed ? to : from;
}

/* ------------------------------------------------------------ create */

bool api_create_outcome_unknown(grpc_status_code st, const char *message)
{
    if (st != GRPC_STATUS_UNAVAILABLE && st != GRPC_STATUS_DEADLINE_EXCEEDED) return false;
    /* A call that never reached the agent created nothing. */
    return !agent_is_connect_failure(st, message);
}

/* Destroys a VM the create just made whose row is no longer pending. */
static void destroy_unowned(rpc_client *c, const char *id, const char *row_status)
{
    terr err;
    grpc_status_code st = agent_destroy(c, id, &err);
    if (st == GRPC_STATUS_OK || st == GRPC_STATUS_NOT_FOUND) {
        log_info("event=sandbox_create_orphan_destroyed sandbox_id=%s row_status=%s", id, row_status);
        return;
    }
    /* The reconciler's orphan sweep retries it. */
    char q[LOG_QUOTE_MAX];
    log_warn("event=sandbox_create_orphan_destroy_failed sandbox_id=%s row_status=%s grpc_status=%d error=\"%s\"",
             id, row_status, (int)st, log_quote(err.msg, q, sizeof q));
}

void api_sandboxes_create(api_request *r)
{
    json_t *body = api_body_json(r, true);
    if (!body) return;
    api_create_req cr;
    terr err;
    int rc = api_validate_create(body, &cr, &err);
    json_decref(body);
    if (rc != 0) {
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return;
    }

    db_host host;
    bool found;
    if (db_host_least_loaded(r->db, &host, &found, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    if (!found) {
        terr_set(&err, "no agent host is registered");
        api_reply_internal(r, &err);
        return;
    }

    sandbox_row row = {0};
    char hex[17];
    if (ids_random_hex(hex, 8, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    snprintf(row.id, sizeof row.id, "sb-%s", hex);
    snprintf(row.team_id, sizeof row.team_id, "%s", r->team_id);
    snprintf(row.host_id, sizeof row.host_id, "%s", host.id);
    snprintf(row.template_name, sizeof row.template_name, "%s", cr.template_name);
    row.vcpus = cr.vcpus;
    row.memory_mb = cr.memory_mb;
    row.timeout_sec = cr.timeout_sec;
    snprintf(r->id, sizeof r->id, "%s", row.id);
    if (db_sandbox_insert(r->db, &row, &row, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    log_info("event=sandbox_create_start sandbox_id=%s host_id=%s template=%s vcpus=%d memory_mb=%d "
             "timeout_sec=%d",
             row.id, host.id, row.template_name, row.vcpus, row.memory_mb, row.timeout_sec);

    rpc_client *c;
    grpc_status_code st;
    ProtobufCMessage *resp = NULL;
    int64_t t0 = mono_ms();
    bool sent = false; /* the create may have reached the agent */
    if (agent_pool_get(r->ctx->agents, &host, &c, &err) != 0) {
        st = GRPC_STATUS_UNAVAILABLE;
    } else {
        sent = true;
        Torpor__Hostagent__V1__CreateSandboxRequest req = TORPOR__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__INIT;
        req.sandbox_id = row.id;
        req.template_ = row.template_name;
        req.vcpus = row.vcpus;
        req.memory_mb = row.memory_mb;
        req.timeout_sec = row.timeout_sec;
        st = agent_call(c, RPC_CREATE_SANDBOX, &req.base,
                        &torpor__hostagent__v1__create_sandbox_response__descriptor, &resp,
                        AGENT_DEADLINE_CREATE_MS, &err);
    }
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);

    bool changed;
    terr dberr;
    if (st == GRPC_STATUS_INVALID_ARGUMENT) {
        /* Bad input (e.g. an unknown template) changes nothing: the agent
         * created nothing, so the row goes too. */
        if (db_sandbox_delete_pending(r->db, row.id, &dberr) != 0)
            log_error("event=sandbox_delete_failed sandbox_id=%s error=\"%s\"", row.id, dberr.msg);
        api_reply_agent_error(r, "create", st, &err);
        return;
    }
    if (st != GRPC_STATUS_OK) {
        if (sent && api_create_outcome_unknown(st, err.msg)) {
            /* The request may have reached the agent, which may still create
             * the VM: the row stays pending and the reconciler's pending rule
             * settles it (running if the agent holds it, error otherwise;
             * a VM that lands after that is destroyed as an orphan). */
            int http;
            const char *ecode;
            agent_status_to_http(st, &http, &ecode);
            char q[LOG_QUOTE_MAX];
            log_warn("event=sandbox_create_unknown sandbox_id=%s grpc_status=%d http_status=%d error=\"%s\"",
                     row.id, (int)st, http, log_quote(err.msg, q, sizeof q));
            /* The client must learn the id: the sandbox may yet exist. */
            http_reply_error(r->req, http, ecode,
                             "agent did not answer in time (%s); sandbox %s is pending and will be resolved "
                             "by the reconciler (running if the agent created it, error otherwise)",
                             err.msg, row.id);
            return;
        } else if (db_sandbox_transition(r->db, row.id, BIT(SB_PENDING), SB_ERROR, 0, err.msg, NULL, &changed,
                                         &dberr) != 0) {
            log_error("event=sandbox_mark_error_failed sandbox_id=%s error=\"%s\"", row.id, dberr.msg);
        }
        api_reply_agent_error(r, "create", st, &err);
        return;
    }
    if (db_sandbox_transition(r->db, row.id, BIT(SB_PENDING), SB_RUNNING,
                              DB_SET_STARTED | DB_SET_ACTIVE, NULL, &row, &changed, &dberr) != 0) {
        /* The VM exists but its row could not be written: the reconciler's
         * pending rule will find it running on the agent. */
        api_reply_internal(r, &dberr);
        return;
    }
    if (!changed) {
        /* The row left pending meanwhile (a DELETE that reached the agent
         * before this create did, or the reconciler gave up on it): the VM
         * just created belongs to nobody unless the row went running. */
        bool found;
        if (db_sandbox_get(r->db, NULL, row.id, &row, &found, &dberr) != 0) {
            api_reply_internal(r, &dberr);
            return;
        }
        if (found && row.status != SB_STOPPED && row.status != SB_ERROR) {
            reply_row(r, 201, &row); /* e.g. the reconciler found it running */
            return;
        }
        destroy_unowned(c, row.id, found ? sb_status_name(row.status) : "missing");
        http_reply_error(r->req, 409, "invalid_state", "sandbox %s was deleted while it was being created (status: %s)",
                         r->id, found ? sb_status_name(row.status) : "gone");
        return;
    }
    log_info("event=sandbox_created sandbox_id=%s duration_ms=%lld", row.id, (long long)(mono_ms() - t0));
    reply_row(r, 201, &row);
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
    int rc = strcmp(key, "status") == 0 ? sb_status_parse_filter(value, q->mask, q->err)
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
    reply_row(r, 200, &row);
}

/* ------------------------------------------------------------ delete */

void api_sandboxes_delete(api_request *r)
{
    sandbox_row row;
    if (api_load_sandbox(r, &row) != 0) return;
    if (row.status == SB_STOPPED) { /* idempotent: already gone */
        http_reply_empty(r->req, 204);
        return;
    }
    rpc_client *c;
    if (api_agent_for(r, row.host_id, &c) != 0) return;
    terr err;
    grpc_status_code st = agent_destroy(c, row.id, &err);
    if (st != GRPC_STATUS_OK && st != GRPC_STATUS_NOT_FOUND) {
        api_reply_agent_error(r, "destroy", st, &err);
        return;
    }
    bool changed;
    unsigned from = ~BIT(SB_STOPPED) & ((1u << SB_STATUS_COUNT) - 1);
    if (db_sandbox_transition(r->db, row.id, from, SB_STOPPED, 0, NULL, NULL, &changed, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    log_info("event=sandbox_destroyed sandbox_id=%s agent_not_found=%d", row.id, st == GRPC_STATUS_NOT_FOUND);
    http_reply_empty(r->req, 204);
}

/* ------------------------------------------------------------ pause / resume */

void api_sandboxes_pause(api_request *r)
{
    sandbox_row row;
    if (api_load_sandbox(r, &row) != 0) return;
    if (api_require_running(r, &row) != 0) return;
    rpc_client *c;
    if (api_agent_for(r, row.host_id, &c) != 0) return;
    bool changed;
    terr err;
    /* pausing before the RPC, so the reconciler never takes the VM's
     * disappearance for a crash. */
    if (db_sandbox_transition(r->db, row.id, BIT(SB_RUNNING), SB_PAUSING, 0, NULL, &row,
                              &changed, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    if (!changed) {
        reply_conflict_now(r, "sandbox is not running");
        return;
    }
    Torpor__Hostagent__V1__PauseSandboxRequest req = TORPOR__HOSTAGENT__V1__PAUSE_SANDBOX_REQUEST__INIT;
    req.sandbox_id = row.id;
    ProtobufCMessage *resp = NULL;
    int64_t t0 = mono_ms();
    grpc_status_code st = agent_call(c, RPC_PAUSE_SANDBOX, &req.base,
                                     &torpor__hostagent__v1__pause_sandbox_response__descriptor, &resp,
                                     AGENT_DEADLINE_PAUSE_MS, &err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (st == GRPC_STATUS_OK) {
        terr dberr;
        if (db_sandbox_transition(r->db, row.id, BIT(SB_PAUSING), SB_PAUSED, 0, NULL, &row,
                                  &changed, &dberr) != 0) {
            api_reply_internal(r, &dberr);
            return;
        }
        if (!changed) {
            reply_conflict_now(r, "sandbox changed state during the pause");
            return;
        }
        log_info("event=sandbox_paused sandbox_id=%s duration_ms=%lld", row.id, (long long)(mono_ms() - t0));
        reply_row(r, 200, &row);
        return;
    }
    /* The pause failed: find out where the sandbox really is. */
    sb_status now = settle_from_agent(r, c, SB_PAUSING, &row);
    if (now == SB_PAUSING && st == GRPC_STATUS_NOT_FOUND) {
        bool ch;
        terr dberr;
        if (db_sandbox_transition(r->db, row.id, BIT(SB_PAUSING), SB_STOPPED, 0, NULL, NULL, &ch,
                                  &dberr) != 0)
            log_error("event=mark_stopped_failed sandbox_id=%s error=\"%s\"", row.id, dberr.msg);
    }
    if (now == SB_PAUSED) { /* e.g. the reaper paused it first: the caller's wish holds */
        reply_row(r, 200, &row);
        return;
    }
    api_reply_agent_error(r, "pause", st, &err);
}

void api_sandboxes_resume(api_request *r)
{
    sandbox_row row;
    if (api_load_sandbox(r, &row) != 0) return;
    if (row.status != SB_PAUSED) {
        http_reply_error(r->req, 409, "invalid_state", "sandbox is not paused (status: %s)",
                         sb_status_name(row.status));
        return;
    }
    rpc_client *c;
    if (api_agent_for(r, row.host_id, &c) != 0) return;
    bool changed;
    terr err;
    if (db_sandbox_transition(r->db, row.id, BIT(SB_PAUSED), SB_RESUMING, 0, NULL, &row,
                              &changed, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    if (!changed) {
        reply_conflict_now(r, "sandbox is not paused");
        return;
    }
    Torpor__Hostagent__V1__ResumeSandboxRequest req = TORPOR__HOSTAGENT__V1__RESUME_SANDBOX_REQUEST__INIT;
    req.sandbox_id = row.id;
    req.timeout_sec = row.timeout_sec; /* the TTL survives pause/resume */
    ProtobufCMessage *resp = NULL;
    int64_t t0 = mono_ms();
    grpc_status_code st = agent_call(c, RPC_RESUME_SANDBOX, &req.base,
                                     &torpor__hostagent__v1__resume_sandbox_response__descriptor, &resp,
                                     AGENT_DEADLINE_RESUME_MS, &err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    terr dberr;
    if (st == GRPC_STATUS_OK) {
        if (db_sandbox_transition(r->db, row.id, BIT(SB_RESUMING), SB_RUNNING,
                                  DB_SET_STARTED | DB_SET_ACTIVE, NULL, &row, &changed, &dberr) != 0) {
            api_reply_internal(r, &dberr);
            return;
        }
        if (!changed) {
            reply_conflict_now(r, "sandbox changed state during the resume");
            return;
        }
        log_info("event=sandbox_resumed sandbox_id=%s timeout_sec=%d duration_ms=%lld", row.id, row.timeout_sec,
                 (long long)(mono_ms() - t0));
        reply_row(r, 200, &row);
        return;
    }
    /* The resume failed: what the agent now holds decides the row. The
     * agent keeps a snapshot it did not consume (paused), may have resumed
     * after all (running: the caller's wish holds, 200), or lost the
     * snapshot and destroyed the sandbox (absent: stopped). A row must never
     * stay paused when the agent no longer holds the sandbox, since nothing
     * could ever resume it. When the agent cannot be asked, the row stays
     * resuming and the reconciler settles it after the grace period. */
    sb_status now = settle_from_agent(r, c, SB_RESUMING, &row);
    if (now == SB_RUNNING) {
        log_info("event=sandbox_resumed sandbox_id=%s timeout_sec=%d duration_ms=%lld after_error=1", row.id,
                 row.timeout_sec, (long long)(mono_ms() - t0));
        reply_row(r, 200, &row);
        return;
    }
    if (now == SB_RESUMING && st == GRPC_STATUS_NOT_FOUND) { /* the agent said so itself */
        bool ch;
        if (db_sandbox_transition(r->db, row.id, BIT(SB_RESUMING), SB_STOPPED, 0, NULL, NULL, &ch, &dberr) != 0)
            log_error("event=mark_stopped_failed sandbox_id=%s error=\"%s\"", row.id, dberr.msg);
    }
    api_reply_agent_error(r, "resume", st, &err);
}

/* ------------------------------------------------------------ ping / timeout */

void api_sandboxes_ping(api_request *r)
{
    sandbox_row row;
    if (api_load_sandbox(r, &row) != 0) return;
    if (api_require_running(r, &row) != 0) return;
    rpc_client *c;
    if (api_agent_for(r, row.host_id, &c) != 0) return;
    Torpor__Hostagent__V1__PingSandboxRequest req = TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    req.sandbox_id = row.id;
    ProtobufCMessage *resp = NULL;
    terr err;
    grpc_status_code st = agent_call(c, RPC_PING_SANDBOX, &req.base,
                                     &torpor__hostagent__v1__ping_sandbox_response__descriptor, &resp,
                                     AGENT_DEADLINE_SHORT_MS, &err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (st != GRPC_STATUS_OK) { /* the DB stays as it was */
        api_reply_agent_error(r, "ping", st, &err);
        return;
    }
    api_touch(r);
    http_reply_empty(r->req, 204);
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
    sandbox_row row;
    if (api_load_sandbox(r, &row) != 0) return;
    if (row.status != SB_RUNNING && row.status != SB_PAUSED) {
        http_reply_error(r->req, 409, "invalid_state", "sandbox is not running or paused (status: %s)",
                         sb_status_name(row.status));
        return;
    }
    if (row.status == SB_RUNNING) {
        /* A paused sandbox gets the DB's value with its next resume. */
        rpc_client *c;
        if (api_agent_for(r, row.host_id, &c) != 0) return;
        Torpor__Hostagent__V1__SetSandboxTimeoutRequest req =
            TORPOR__HOSTAGENT__V1__SET_SANDBOX_TIMEOUT_REQUEST__INIT;
        req.sandbox_id = row.id;
        req.timeout_sec = timeout_sec;
        ProtobufCMessage *resp = NULL;
        grpc_status_code st = agent_call(c, RPC_SET_TIMEOUT, &req.base,
                                         &torpor__hostagent__v1__set_sandbox_timeout_response__descriptor,
                                         &resp, AGENT_DEADLINE_SHORT_MS, &err);
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
        if (st != GRPC_STATUS_OK) {
            api_reply_agent_error(r, "set_timeout", st, &err);
            return;
        }
    }
    bool changed;
    if (db_sandbox_set_timeout(r->db, row.id, BIT(SB_RUNNING) | BIT(SB_PAUSED), timeout_sec, &row,
                               &changed, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    if (!changed) {
        reply_conflict_now(r, "sandbox changed state while setting its timeout");
        return;
    }
    log_info("event=sandbox_timeout_set sandbox_id=%s timeout_sec=%d", row.id, timeout_sec);
    reply_row(r, 200, &row);
}

/* ------------------------------------------------------------ exec */

static json_t *exec_json(const char *id, const char *cmd, const Torpor__Hostagent__V1__ExecResponse *x,
                         int64_t duration_ms)
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
    return json_pack("{s:s, s:s, s:o, s:o, s:i, s:I, s:b, s:s, s:b, s:b}", "sandbox_id", id, "cmd", cmd,
                     "stdout", out, "stderr", err, "exit_code", x->exit_code, "duration_ms",
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
    sandbox_row row;
    rpc_client *c;
    if (api_load_sandbox(r, &row) != 0 || api_require_running(r, &row) != 0 ||
        api_agent_for(r, row.host_id, &c) != 0)
        goto out;

    Torpor__Hostagent__V1__ExecRequest req = TORPOR__HOSTAGENT__V1__EXEC_REQUEST__INIT;
    req.sandbox_id = row.id;
    req.cmd = (char *)er.cmd;
    req.args = (char **)er.args;
    req.n_args = er.n_args;
    req.env = er.env;
    req.n_env = er.n_env;
    req.cwd = er.cwd ? (char *)er.cwd : "";
    req.timeout_sec = er.timeout_sec;
    ProtobufCMessage *resp = NULL;
    int64_t t0 = mono_ms();
    grpc_status_code st = agent_call(c, RPC_EXEC, &req.base, &torpor__hostagent__v1__exec_response__descriptor,
                                     &resp, er.timeout_sec * 1000 + AGENT_EXEC_SLACK_MS, &err);
    int64_t duration = mono_ms() - t0;
    if (st != GRPC_STATUS_OK) {
        api_reply_agent_error(r, "exec", st, &err);
        goto out;
    }
    api_touch(r);
    json_t *j = exec_json(row.id, er.cmd, (Torpor__Hostagent__V1__ExecResponse *)resp, duration);
    protobuf_c_message_free_unpacked(resp, NULL);
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
