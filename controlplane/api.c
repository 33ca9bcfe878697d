#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_routes.h"
#include "auth.h"
#include "ids.h"
#include "log.h"
#include "mono_time.h"

static void log_request(http_request *req, int status, int64_t duration_ms, const char *sandbox_id)
{
    /* Reads that succeed are debug-level: clients poll them. */
    const char *method = http_request_method(req);
    enum log_level lvl = (status < 300 && strcmp(method, "GET") == 0) ? LOG_DEBUG : LOG_INFO;
    char q[LOG_QUOTE_MAX];
    log_write(lvl, "event=http_request method=%s path=\"%s\" status=%d duration_ms=%lld sandbox_id=%s", method,
              log_quote(http_request_path(req), q, sizeof q), status, (long long)duration_ms, sandbox_id);
}

static int token_param(void *cls, const char *key, const char *value)
{
    char **out = cls;
    if (!strcmp(key, "token") && !*out) *out = strdup(value);
    return 0;
}

/* The access token of the request: X-Access-Token, else ?token=. */
static bool api_access_token(const http_request *req, char *buf, size_t n)
{
    const char *h = http_request_header(req, "X-Access-Token");
    if (h && *h) {
        snprintf(buf, n, "%s", h);
        return true;
    }
    char *q = NULL;
    http_query_each(http_request_query(req), token_param, &q);
    if (!q) return false;
    snprintf(buf, n, "%s", q);
    free(q);
    return buf[0] != '\0';
}

static void decide(void *app, http_request *req)
{
    api_match m;
    const api_route *route =
        api_route_find(api_route_table, api_route_count, http_request_method(req), http_request_path(req), &m);
    if (!route) {
        if (m.status == 405) {
            http_add_header(req, "Allow", m.allow);
            http_reply_error(req, 405, "method_not_allowed", "method not allowed on this route (allowed: %s)",
                             m.allow);
        } else {
            http_reply_error(req, 404, "not_found", "no such route");
        }
        return;
    }
    if (route->auth == API_AUTH_KEY) {
        const char *key = http_request_header(req, "X-API-Key");
        if (!key || !*key) {
            http_reply_error(req, 401, "unauthorized", "X-API-Key header required");
            return;
        }
    } else if (route->auth == API_AUTH_SANDBOX_TOKEN) {
        const char *key = http_request_header(req, "X-API-Key");
        char token[128];
        if ((!key || !*key) && !api_access_token(req, token, sizeof token)) {
            http_reply_error(req, 401, "unauthorized", "X-API-Key, X-Access-Token or ?token= required");
            return;
        }
    }
    if (route->stream) http_request_stream_body(req, route->stream, app);
    else http_request_set_body_limit(req, route->body_limit);
    /* Bodies larger than the common limit (files/write's 64 MiB, streams)
     * are read only for a known key: the key is checked on a worker first. */
    if (route->auth == API_AUTH_KEY && (route->stream || route->body_limit > API_BODY_LIMIT))
        http_request_vet_first(req);
    if (route->long_running) http_request_set_long_running(req);
    http_request_set_user(req, (void *)route);
}

void api_on_headers(void *app, http_request *req)
{
    decide(app, req);
    int status = http_reply_status(req);
    if (status != 0) log_request(req, status, 0, "");
}

void api_vet(void *app, void *worker, http_request *req)
{
    api_worker *w = worker;
    api_request r = {.req = req, .ctx = app, .db = w->db, .route = http_request_user(req)};
    bool ok;
    terr err;
    if (auth_check(r.db, http_request_header(req, "X-API-Key"), r.team_id, &ok, &err) != 0) api_reply_internal(&r, &err);
    else if (!ok) http_reply_error(req, 401, "unauthorized", "invalid API key");
    int status = http_reply_status(req);
    if (status != 0) log_request(req, status, 0, "");
}

static void handle(api_request *r)
{
    const api_route *route = r->route;
    if (route->auth == API_AUTH_KEY) {
        bool ok;
        terr err;
        if (auth_check(r->db, http_request_header(r->req, "X-API-Key"), r->team_id, &ok, &err) != 0) {
            api_reply_internal(r, &err);
            return;
        }
        if (!ok) {
            http_reply_error(r->req, 401, "unauthorized", "invalid API key");
            return;
        }
    }
    if (route->auth == API_AUTH_SANDBOX_TOKEN) {
        const char *key = http_request_header(r->req, "X-API-Key");
        bool ok = false;
        terr err;
        int rc;
        if (key && *key) {
            rc = auth_check(r->db, key, r->team_id, &ok, &err);
        } else {
            char token[128], hash[65];
            rc = 0;
            if (api_access_token(r->req, token, sizeof token) && ids_sha256_hex(token, strlen(token), hash) == 0)
                rc = db_sandbox_token_team(r->db, r->id, hash, r->team_id, &ok, &err);
        }
        if (rc != 0) {
            api_reply_internal(r, &err);
            return;
        }
        if (!ok) {
            http_reply_error(r->req, 401, "unauthorized", "invalid API key or access token");
            return;
        }
    }
    r->body = http_request_body(r->req, &r->body_len);
    route->handler(r);
}

void api_handle(void *app, void *worker, http_request *req)
{
    api_worker *w = worker;
    api_request r = {.req = req, .ctx = app, .db = w->db, .route = http_request_user(req)};
    int64_t t0 = mono_ms();
    api_match m;
    if (api_route_find(r.route, 1, http_request_method(req), http_request_path(req), &m) == r.route)
        memcpy(r.id, m.id, sizeof r.id);
    handle(&r); /* sends exactly one reply */
    log_request(req, http_reply_status(req), mono_ms() - t0, r.id);
}
