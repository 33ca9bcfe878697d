#include "template_ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_templates.h"
#include "db_templates.h"
#include "ids.h"
#include "log.h"
#include "template_copy.h"

static void outcome(top_result *res, top_outcome o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void outcome(top_result *res, top_outcome o, const char *fmt, ...)
{
    res->outcome = o;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->err.msg, sizeof res->err.msg, fmt, ap);
    va_end(ap);
}

static void internal(top_result *res, const terr *err)
{
    if (err != &res->err) res->err = *err;
    res->outcome = TOP_INTERNAL;
}

/* The client of host_id, or TOP_UNREACHABLE/TOP_INTERNAL set in res. */
static rpc_client *client_of(const sbop_ctx *c, const char *host_id, top_result *res)
{
    db_host host;
    bool found;
    terr err;
    if (db_host_get(c->db, host_id, &host, &found, &err) != 0) {
        internal(res, &err);
        return NULL;
    }
    if (!found) {
        outcome(res, TOP_UNREACHABLE, "the template's host %s is not registered", host_id);
        return NULL;
    }
    rpc_client *client = NULL;
    if (agent_pool_get(c->agents, &host, &client, &err) != 0) {
        outcome(res, TOP_UNREACHABLE, "agent of host %s: %s", host_id, err.msg);
        return NULL;
    }
    return client;
}

/* Settles a building row from its build host's answer (nothing when the
 * host cannot be asked: the next read tries again). */
static void refresh(const sbop_ctx *c, template_row *row)
{
    if (row->status != TPL_BUILDING) return;
    if (!row->host_id[0]) {
        /* Its build host was removed (hosts remove): the build is gone. */
        bool changed;
        terr err;
        const char *msg = "the build host was removed";
        if (db_template_settle(c->db, row->id, "", TPL_ERROR, "", 0, msg, &changed, &err) == 0) {
            row->status = TPL_ERROR;
            snprintf(row->error, sizeof row->error, "%s", msg);
        }
        return;
    }
    top_result tmp = {0};
    rpc_client *client = client_of(c, row->host_id, &tmp);
    if (!client) return;
    Torpor__Hostagent__V1__GetTemplateResponse *resp = NULL;
    terr err;
    grpc_status_code st = agent_get_template(client, row->id, 0, &resp, &err);
    tpl_agent_answer a = st == GRPC_STATUS_OK          ? TPL_AGENT_STATUS
                         : st == GRPC_STATUS_NOT_FOUND ? TPL_AGENT_NOT_FOUND
                                                       : TPL_AGENT_NO_ANSWER;
    const Torpor__Hostagent__V1__TemplateInfo *ti = resp ? resp->template_ : NULL;
    tpl_status next;
    if (template_next_status(row->status, a, ti ? ti->status : NULL, &next)) {
        const char *error = next != TPL_ERROR          ? ""
                            : a == TPL_AGENT_NOT_FOUND ? "the build host no longer knows the build"
                            : ti && ti->error[0]       ? ti->error
                                                       : "build failed";
        bool changed;
        if (db_template_settle(c->db, row->id, row->host_id, next, ti ? ti->digest : "",
                               ti && next == TPL_READY ? ti->size_bytes : 0, error, &changed,
                               &err) != 0) {
            char q[LOG_QUOTE_MAX];
            log_error("event=template_settle_failed template_id=%s error=\"%s\"", row->id,
                      log_quote(err.msg, q, sizeof q));
        } else if (changed) {
            char q[LOG_QUOTE_MAX];
            log_info("event=template_settled template_id=%s status=%s digest=%.16s error=\"%s\"",
                     row->id, tpl_status_name(next), ti ? ti->digest : "",
                     log_quote(error, q, sizeof q));
            row->status = next;
            if (ti && next == TPL_READY) {
                snprintf(row->digest, sizeof row->digest, "%s", ti->digest);
                row->size_bytes = ti->size_bytes;
            }
            snprintf(row->error, sizeof row->error, "%s", error);
        }
    }
    if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
}

void template_ops_create(const sbop_ctx *c, const template_create_req *req, top_result *res)
{
    memset(res, 0, sizeof *res);
    terr err;
    db_host host;
    bool found;
    /* A ready host (not draining or unreachable), the least loaded. */
    if (db_host_pick(c->db, 0, NULL, NULL, 0, &host, &found, &err) != 0) {
        internal(res, &err);
        return;
    }
    if (!found) {
        /* None registered, or every one draining, unreachable or full. */
        res->grpc = GRPC_STATUS_RESOURCE_EXHAUSTED; /* REST 503 no_capacity */
        outcome(res, TOP_AGENT_FAILED, "no ready agent host to build the template on; retry later");
        return;
    }
    template_row *row = &res->row;
    char hex[17];
    if (ids_random_hex(hex, 8, &err) != 0) {
        internal(res, &err);
        return;
    }
    snprintf(row->id, sizeof row->id, TEMPLATE_IMAGE_PREFIX "%s", hex);
    snprintf(row->team_id, sizeof row->team_id, "%s", c->team_id);
    snprintf(row->name, sizeof row->name, "%s", req->name);
    snprintf(row->base, sizeof row->base, "%s", req->base);
    snprintf(row->packages, sizeof row->packages, "%s", req->packages);
    snprintf(row->host_id, sizeof row->host_id, "%s", host.id);
    row->has_setup = req->setup != NULL;
    bool dup;
    if (db_template_insert(c->db, row, req->setup, &dup, &err) != 0) {
        internal(res, &err);
        return;
    }
    if (dup) {
        outcome(res, TOP_EXISTS, "template %s already exists", req->name);
        return;
    }
    char qp[LOG_QUOTE_MAX];
    log_info(
        "event=template_build_start template_id=%s name=%s host_id=%s packages=\"%s\" setup=%s",
        row->id, row->name, host.id, log_quote(row->packages, qp, sizeof qp),
        row->has_setup ? "yes" : "no");
    rpc_client *client = NULL;
    grpc_status_code st = GRPC_STATUS_UNAVAILABLE;
    if (agent_pool_get(c->agents, &host, &client, &err) == 0)
        st = agent_build_template(client, row->id, req->base, req->packages_v, req->n_packages,
                                  req->setup, &err);
    if (st != GRPC_STATUS_OK) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=template_build_refused template_id=%s grpc_status=%d error=\"%s\"", row->id,
                 (int)st, log_quote(err.msg, q, sizeof q));
        terr derr;
        if (st == GRPC_STATUS_INVALID_ARGUMENT || st == GRPC_STATUS_FAILED_PRECONDITION ||
            st == GRPC_STATUS_ALREADY_EXISTS || st == GRPC_STATUS_UNIMPLEMENTED) {
            /* The agent started nothing: the template never existed. */
            if (db_template_delete(c->db, row->id, &derr) != 0)
                log_error("event=template_delete_failed template_id=%s error=\"%s\"", row->id,
                          log_quote(derr.msg, q, sizeof q));
            if (st == GRPC_STATUS_INVALID_ARGUMENT) {
                outcome(res, TOP_INVALID, "%s", err.msg);
            } else {
                res->grpc = st;
                outcome(res, TOP_AGENT_FAILED, "%s", err.msg);
            }
            return;
        }
        /* The build may or may not have started: the row records the
         * failure; DELETE removes it (and whatever the agent made). */
        bool changed;
        char msg[sizeof err.msg + 32];
        snprintf(msg, sizeof msg, "build not started: %s", err.msg);
        if (db_template_settle(c->db, row->id, row->host_id, TPL_ERROR, "", 0, msg, &changed,
                               &derr) != 0)
            log_error("event=template_settle_failed template_id=%s error=\"%s\"", row->id,
                      log_quote(derr.msg, q, sizeof q));
        res->grpc = st;
        outcome(res, TOP_AGENT_FAILED, "%s", err.msg);
        return;
    }
    bool f;
    if (db_template_get(c->db, c->team_id, req->name, row, &f, &err) != 0 || !f) {
        if (f) internal(res, &err);
        else outcome(res, TOP_NOT_FOUND, "template %s was deleted meanwhile", req->name);
        return;
    }
    res->outcome = TOP_OK;
}

/* A built-in template as the first host's agent reports it; found false
 * when the host does not have it (or cannot be asked). */
static int builtin_row(const sbop_ctx *c, const char *name, template_row *out, bool *found,
                       terr *err)
{
    *found = false;
    db_host host;
    bool hf;
    if (db_host_pick(c->db, 0, name, NULL, 0, &host, &hf, err) != 0) return -1;
    if (!hf) return 0;
    rpc_client *client = NULL;
    if (agent_pool_get(c->agents, &host, &client, err) != 0) return 0;
    Torpor__Hostagent__V1__GetTemplateResponse *resp = NULL;
    terr e;
    if (agent_get_template(client, name, 0, &resp, &e) != GRPC_STATUS_OK || !resp ||
        !resp->template_) {
        if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
        return 0;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    snprintf(out->base, sizeof out->base, "%s", name);
    out->status = TPL_READY;
    snprintf(out->digest, sizeof out->digest, "%s", resp->template_->digest);
    out->size_bytes = resp->template_->size_bytes;
    out->created_at_us = resp->template_->created_at_unix * 1000000;
    snprintf(out->host_id, sizeof out->host_id, "%s", host.id);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    *found = true;
    return 0;
}

void template_ops_get(const sbop_ctx *c, const char *name, top_result *res)
{
    memset(res, 0, sizeof *res);
    terr err;
    bool found;
    if (template_is_builtin(name)) {
        if (builtin_row(c, name, &res->row, &found, &err) != 0) internal(res, &err);
        else if (!found)
            outcome(res, TOP_NOT_FOUND, "template %s is not installed on any host", name);
        else res->outcome = TOP_OK;
        return;
    }
    if (db_template_get(c->db, c->team_id, name, &res->row, &found, &err) != 0) {
        internal(res, &err);
        return;
    }
    if (!found) {
        outcome(res, TOP_NOT_FOUND, "no template %s", name);
        return;
    }
    refresh(c, &res->row);
    res->outcome = TOP_OK;
}

int template_ops_list(const sbop_ctx *c, template_row **out, size_t *n, terr *err)
{
    template_row *v = NULL;
    size_t len = 0;
    if (db_template_list(c->db, c->team_id, &v, &len, err) != 0) return -1;
    template_row *nv = realloc(v, (len + 2) * sizeof *v);
    if (!nv) {
        free(v);
        return terr_set(err, "out of memory");
    }
    v = nv;
    for (size_t i = 0; i < len; i++) refresh(c, &v[i]);
    static const char *const builtin[] = {"debian", "minimal"};
    for (size_t i = 0; i < 2; i++) {
        bool found;
        if (builtin_row(c, builtin[i], &v[len], &found, err) != 0) {
            free(v);
            return -1;
        }
        if (found) len++;
    }
    *out = v;
    *n = len;
    return 0;
}

void template_ops_log(const sbop_ctx *c, const char *name, char **log, size_t *len, top_result *res)
{
    *log = NULL;
    *len = 0;
    template_ops_get(c, name, res);
    if (res->outcome != TOP_OK) return;
    if (!res->row.team_id[0]) {
        outcome(res, TOP_NOT_FOUND, "built-in template %s has no build log", name);
        return;
    }
    rpc_client *client = client_of(c, res->row.host_id, res);
    if (!client) return;
    Torpor__Hostagent__V1__GetTemplateResponse *resp = NULL;
    terr err;
    grpc_status_code st =
        agent_get_template(client, res->row.id, AGENT_TEMPLATE_LOG_TAIL, &resp, &err);
    if (st == GRPC_STATUS_NOT_FOUND) {
        /* Nothing left on the host (e.g. the build never started): the row's error is the log. */
        size_t n = strlen(res->row.error);
        *log = malloc(n + 2);
        if (*log) *len = (size_t)snprintf(*log, n + 2, "%s%s", res->row.error, n ? "\n" : "");
        return;
    }
    if (st != GRPC_STATUS_OK) {
        res->grpc = st;
        outcome(res, TOP_AGENT_FAILED, "%s", err.msg);
        return;
    }
    *log = malloc(resp->log.len + 1);
    if (!*log) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        terr_set(&err, "out of memory");
        internal(res, &err);
        return;
    }
    memcpy(*log, resp->log.data, resp->log.len);
    *len = resp->log.len;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

void template_ops_delete(const sbop_ctx *c, const char *name, top_result *res)
{
    memset(res, 0, sizeof *res);
    if (template_is_builtin(name)) {
        outcome(res, TOP_FORBIDDEN, "template %s is built in and cannot be deleted", name);
        return;
    }
    template_ops_get(c, name, res);
    if (res->outcome != TOP_OK) return;
    if (res->row.status == TPL_BUILDING) {
        outcome(res, TOP_NOT_READY, "template %s is still building", name);
        return;
    }
    long in_use;
    terr err;
    if (db_template_sandboxes(c->db, c->team_id, name, &in_use, &err) != 0) {
        internal(res, &err);
        return;
    }
    if (in_use > 0) {
        outcome(res, TOP_IN_USE, "template %s is used by %ld sandbox(es); destroy them first", name,
                in_use);
        return;
    }
    if (res->row.host_id[0]) { /* "": the build host was removed (hosts remove) */
        rpc_client *client = client_of(c, res->row.host_id, res);
        if (!client) return;
        grpc_status_code st = agent_delete_template(client, res->row.id, &err);
        if (st != GRPC_STATUS_OK && st != GRPC_STATUS_NOT_FOUND) {
            res->grpc = st;
            outcome(res, TOP_AGENT_FAILED, "%s", err.msg);
            return;
        }
    }
    /* The copies: best effort (a host that cannot be asked keeps an image
     * no name of the control plane ever uses again: ids are never reused). */
    template_host_row *hosts = NULL;
    size_t n_hosts = 0;
    if (db_template_hosts(c->db, res->row.id, &hosts, &n_hosts, &err) == 0) {
        for (size_t i = 0; i < n_hosts; i++) {
            if (hosts[i].builder) continue;
            top_result tmp = {0};
            rpc_client *hc = client_of(c, hosts[i].host_id, &tmp);
            terr herr = tmp.err;
            grpc_status_code hs = GRPC_STATUS_UNAVAILABLE;
            if (hc) {
                agent_abort_template_image(hc, res->row.id, &herr);
                hs = agent_delete_template(hc, res->row.id, &herr);
            }
            if (hs != GRPC_STATUS_OK && hs != GRPC_STATUS_NOT_FOUND) {
                char q[LOG_QUOTE_MAX];
                log_warn("event=template_copy_delete_failed template_id=%s host_id=%s error=\"%s\"",
                         res->row.id, hosts[i].host_id, log_quote(herr.msg, q, sizeof q));
            }
        }
        free(hosts);
    }
    if (db_template_delete(c->db, res->row.id, &err) != 0) {
        internal(res, &err);
        return;
    }
    log_info("event=template_deleted template_id=%s name=%s", res->row.id, name);
    res->outcome = TOP_OK;
}

void template_ops_resolve(const sbop_ctx *c, const char *name, char image[64], char digest[65],
                          top_result *res)
{
    memset(res, 0, sizeof *res);
    digest[0] = '\0';
    snprintf(image, 64, "%s", name);
    if (template_is_builtin(name)) {
        res->outcome = TOP_OK;
        return;
    }
    terr err;
    bool found;
    if (db_template_get(c->db, c->team_id, name, &res->row, &found, &err) != 0) {
        internal(res, &err);
        return;
    }
    if (!found) {
        if (strncmp(name, TEMPLATE_IMAGE_PREFIX, strlen(TEMPLATE_IMAGE_PREFIX)) == 0)
            outcome(res, TOP_INVALID, "unknown template %s", name);
        else res->outcome = TOP_OK;
        return;
    }
    refresh(c, &res->row);
    if (res->row.status == TPL_BUILDING) {
        outcome(res, TOP_NOT_READY, "template %s is still building", name);
        return;
    }
    if (res->row.status == TPL_ERROR) {
        outcome(res, TOP_NOT_READY, "template %s failed to build: %s", name, res->row.error);
        return;
    }
    db_host host;
    if (db_host_pick_template(c->db, 0, res->row.id, res->row.digest, NULL, 0, &host, &found,
                              &err) != 0) {
        internal(res, &err);
        return;
    }
    if (!found) {
        /* No host that takes sandboxes holds the image (its hosts are
         * draining or unreachable, or the copies have not run yet): copy it
         * to one now, like the copier would. */
        int r = template_copy_run_once(c->db, c->agents, res->row.id, NULL, &err);
        if (r < 0) {
            internal(res, &err);
            return;
        }
        if (db_host_pick_template(c->db, 0, res->row.id, res->row.digest, NULL, 0, &host, &found,
                                  &err) != 0) {
            internal(res, &err);
            return;
        }
        if (!found) {
            outcome(res, TOP_NOT_READY,
                    "template %s is not ready on any host that takes sandboxes now (%s); retry "
                    "later",
                    name, r == 0 ? "a copy is under way or failed recently" : "the copy failed");
            return;
        }
    }
    snprintf(image, 64, "%s", res->row.id);
    snprintf(digest, 65, "%s", res->row.digest);
    res->outcome = TOP_OK;
}
