#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_proxy.h"
#include "api_routes.h"
#include "auth.h"
#include "cp_metrics.h"
#include "ids.h"
#include "log.h"
#include "mono_time.h"
#include "proxy_host.h"
#include "team_limit.h"

/* The largest body read before the API key is known to be good. */
#define API_PREAUTH_BODY_MAX (64 * 1024)
/* Retry-After (seconds) of a 429 for a team at its long-call limit. */
#define API_TEAM_RETRY_AFTER "5"

static void log_request(http_request *req, int status, int64_t duration_ms, const char *sandbox_id)
{
    /* Reads that succeed are debug-level: clients poll them. */
    const char *method = http_request_method(req);
    const api_route *route = http_request_user(req);
    cp_metrics_http_request(method, route ? route->pattern : NULL, status,
                            (double)duration_ms / 1000.0);
    enum log_level lvl = (status < 300 && strcmp(method, "GET") == 0) ? LOG_DEBUG : LOG_INFO;
    char q[LOG_QUOTE_MAX], qm[64];
    /* The method is the client's text too (libmicrohttpd takes any token). */
    log_write(
        lvl,
        "event=http_request method=\"%s\" path=\"%s\" status=%d duration_ms=%lld sandbox_id=%s",
        log_quote(method, qm, sizeof qm), log_quote(http_request_path(req), q, sizeof q), status,
        (long long)duration_ms, sandbox_id);
}

/* True when req announces a body that may exceed API_PREAUTH_BODY_MAX
 * (chunked: unknown size) and the route would accept one that large. */
static bool big_body(http_request *req, size_t route_limit)
{
    if (route_limit <= API_PREAUTH_BODY_MAX) return false;
    if (http_request_header(req, "Transfer-Encoding")) return true;
    const char *cl = http_request_header(req, "Content-Length");
    return cl && strtoull(cl, NULL, 10) > API_PREAUTH_BODY_MAX;
}

/* True when the announced body is over the route's limit: the layer answers
 * 413 right after the vet, so the request must not take a long-call slot
 * (a burst of them would otherwise turn into 429s for the team). */
static bool announced_over_limit(http_request *req, const api_route *route)
{
    if (route->stream) return false;
    const char *cl = http_request_header(req, "Content-Length");
    return cl && strtoull(cl, NULL, 10) > route->body_limit;
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

/* --proxy-domain: a Host of {port}-{id}.DOMAIN is the port proxy's path
 * (proxy_host.h). False after a 404 reply. */
static bool route_by_host(const api_ctx *ctx, http_request *req)
{
    if (!ctx->cfg || !ctx->cfg->proxy_domain) return true;
    char path[4096];
    int rc = proxy_host_path(http_request_header(req, "Host"), ctx->cfg->proxy_domain,
                             http_request_path(req), path, sizeof path);
    if (rc == 0) return true;
    if (rc < 0 || http_request_set_path(req, path) != 0) {
        http_reply_error(req, 404, "not_found", "no such sandbox port: want {port}-{sandbox id}.%s",
                         ctx->cfg->proxy_domain);
        return false;
    }
    return true;
}

static void decide(void *app, http_request *req)
{
    if (!route_by_host(app, req)) return;
    api_match m;
    const api_route *route = api_route_find(api_route_table, api_route_count,
                                            http_request_method(req), http_request_path(req), &m);
    if (!route) {
        if (m.status == 405) {
            http_add_header(req, "Allow", m.allow);
            http_reply_error(req, 405, "method_not_allowed",
                             "method not allowed on this route (allowed: %s)", m.allow);
        } else {
            http_reply_error(req, 404, "not_found", "no such route");
        }
        return;
    }
    http_request_set_user(req,
                          (void *)route);  /* also names the route in metrics of early replies */
    if (route->run == API_RUN_IO_THREAD) { /* liveness: never behind a worker */
        api_request r = {.req = req, .ctx = app, .route = route};
        route->handler(&r);
        return;
    }
    if (route->auth == API_AUTH_KEY || route->auth == API_AUTH_ADMIN) {
        const char *key = http_request_header(req, "X-API-Key");
        if (!key || !*key) {
            http_reply_error(req, 401, "unauthorized", "X-API-Key header required");
            return;
        }
    } else if (route->auth == API_AUTH_SANDBOX_TOKEN) {
        const char *key = http_request_header(req, "X-API-Key");
        char token[128];
        if ((!key || !*key) && !api_access_token(req, token, sizeof token)) {
            http_reply_error(req, 401, "unauthorized",
                             "X-API-Key, X-Access-Token or ?token= required");
            return;
        }
    }
    if (route->stream) http_request_stream_body(req, route->stream, app);
    else http_request_set_body_limit(req, route->body_limit);
    /* A body over API_PREAUTH_BODY_MAX is read only for a known key: the key
     * is checked on a worker first (one more hop, for big bodies only), so
     * an unknown key cannot make the server buffer more than that per
     * connection. Streamed routes always. */
    if (route->auth == API_AUTH_KEY && (route->stream || big_body(req, route->body_limit)))
        http_request_vet_first(req);
    /* The port proxy sends a body to the guest as it arrives: the tunnel is
     * opened (auth first) before the body is read. */
    if (route->auth == API_AUTH_SANDBOX_TOKEN && route->stream && api_proxy_opens_early(req))
        http_request_vet_first_long(req); /* it may wake the sandbox: a long call */
    if (route->run == API_RUN_LONG) http_request_set_long_running(req);
}

void api_on_headers(void *app, http_request *req)
{
    decide(app, req);
    int status = http_reply_status(req);
    if (status != 0) log_request(req, status, 0, "");
}

/* One team's long calls (an hour-long exec, creates) cannot take every
 * long-call worker: beyond its share it is told to come back (429). The slot
 * is taken at the key check, before a big body is read (vet) or before the
 * handler, and given back when the request is over (api_done). DELETE is
 * exempt, so a team at its limit can still clean up. False: replied 429. */
static bool take_long_slot(api_request *r)
{
    const api_route *route = r->route;
    team_limit *tl = r->ctx->long_calls;
    if (route->run != API_RUN_LONG || !tl ||
        (route->method && strcmp(route->method, "DELETE") == 0))
        return true;
    if (team_limit_enter_as(tl, r->team_id, r->req)) return true;
    http_add_header(r->req, "Retry-After", API_TEAM_RETRY_AFTER);
    http_reply_error(
        r->req, 429, "too_many_requests",
        "this team has %d long calls (create, exec, pause, resume, files) in flight, its limit; "
        "retry later",
        r->ctx->cfg->team_long_calls);
    return false;
}

void api_done(void *app, http_request *req)
{
    api_ctx *ctx = app;
    if (ctx->long_calls) team_limit_release(ctx->long_calls, req);
}

static bool authenticate(api_request *r);

void api_vet(void *app, void *worker, http_request *req)
{
    api_worker *w = worker;
    api_request r = {.req = req, .ctx = app, .db = w->db, .route = http_request_user(req)};
    bool ok;
    terr err;
    if (r.route->auth == API_AUTH_SANDBOX_TOKEN) {
        /* the port proxy with a body: auth, then the tunnel, before the body */
        api_match m;
        if (api_route_find(r.route, 1, http_request_method(req), http_request_path(req), &m) ==
            r.route)
            memcpy(r.id, m.id, sizeof r.id);
        if (authenticate(&r) && take_long_slot(&r)) api_proxy_open_early(&r);
    } else if (auth_check(r.db, r.ctx->keys, http_request_header(req, "X-API-Key"), r.team_id, &ok,
                          &err) != 0)
        api_reply_internal(&r, &err);
    else if (!ok) http_reply_error(req, 401, "unauthorized", "invalid API key");
    else {
        if (r.route->stream) {
            /* A streamed upload (files of any size) to a sandbox that is not
             * there or not running is refused before its body is read; one
             * created with auto_resume that is paused (or on its way to or
             * from it) is let through: the handler wakes it
             * (sandbox_ops_open_awake). */
            api_match m;
            if (api_route_find(r.route, 1, http_request_method(req), http_request_path(req), &m) ==
                    r.route &&
                m.id[0]) {
                memcpy(r.id, m.id, sizeof r.id);
                sandbox_row row;
                if (api_load_sandbox(&r, &row) == 0 && row.status != SB_RUNNING &&
                    !(row.auto_resume && (row.status == SB_PAUSED || row.status == SB_PAUSING ||
                                          row.status == SB_RESUMING)))
                    http_reply_error(req, 409, "invalid_state",
                                     "sandbox is not running (status: %s)",
                                     sb_status_name(row.status));
            }
        }
        if (http_reply_status(req) == 0 && !announced_over_limit(req, r.route)) take_long_slot(&r);
    }
    int status = http_reply_status(req);
    if (status != 0) log_request(req, status, 0, r.id);
}

/* The route's auth (key, admin key, or key or access token); false: replied. */
static bool authenticate(api_request *r)
{
    const api_route *route = r->route;
    if (route->auth == API_AUTH_KEY || route->auth == API_AUTH_ADMIN) {
        bool ok;
        terr err;
        if (auth_check_role(r->db, r->ctx->keys, http_request_header(r->req, "X-API-Key"),
                            r->team_id, &ok, &r->admin, &err) != 0) {
            api_reply_internal(r, &err);
            return false;
        }
        if (!ok) {
            http_reply_error(r->req, 401, "unauthorized", "invalid API key");
            return false;
        }
        if (route->auth == API_AUTH_ADMIN && !r->admin) {
            http_reply_error(r->req, 403, "forbidden",
                             "this route needs an admin key (torpor-cp keys create --admin)");
            return false;
        }
    }
    if (route->auth == API_AUTH_SANDBOX_TOKEN) {
        const char *key = http_request_header(r->req, "X-API-Key");
        bool ok = false;
        terr err;
        int rc;
        if (key && *key) {
            rc = auth_check(r->db, r->ctx->keys, key, r->team_id, &ok, &err);
        } else {
            char token[128], hash[65];
            rc = 0;
            if (api_access_token(r->req, token, sizeof token) &&
                ids_sha256_hex(token, strlen(token), hash) == 0)
                rc = db_sandbox_token_team(r->db, r->id, hash, r->team_id, &ok, &err);
        }
        if (rc != 0) {
            api_reply_internal(r, &err);
            return false;
        }
        if (!ok) {
            http_reply_error(r->req, 401, "unauthorized", "invalid API key or access token");
            return false;
        }
    }
    return true;
}

static void handle(api_request *r)
{
    const api_route *route = r->route;
    if (!authenticate(r)) return;
    if (!take_long_slot(r)) return; /* a vetted request holds its slot already */
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
