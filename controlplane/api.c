#include "api.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_files.h"
#include "api_sandboxes.h"
#include "auth.h"
#include "http_server.h"
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
    log_error("event=request_failed route=%d sandbox_id=%s error=\"%s\"", (int)r->route, r->id, err->msg);
    http_reply_error(r->req, 500, "internal_error", "%s", err->msg);
}

static api_method method_of(struct evhttp_request *req)
{
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: return API_GET;
    case EVHTTP_REQ_POST: return API_POST;
    case EVHTTP_REQ_DELETE: return API_DELETE;
    default: return API_OTHER;
    }
}

static void dispatch(api_request *r, api_method m)
{
    switch (r->route) {
    case API_ROUTE_SANDBOXES:
        if (m == API_GET) api_sandboxes_list(r);
        else api_sandboxes_create(r);
        break;
    case API_ROUTE_SANDBOX:
        if (m == API_GET) api_sandboxes_get(r);
        else api_sandboxes_delete(r);
        break;
    case API_ROUTE_PAUSE: api_sandboxes_pause(r); break;
    case API_ROUTE_RESUME: api_sandboxes_resume(r); break;
    case API_ROUTE_PING: api_sandboxes_ping(r); break;
    case API_ROUTE_TIMEOUT: api_sandboxes_timeout(r); break;
    case API_ROUTE_EXEC: api_sandboxes_exec(r); break;
    case API_ROUTE_FILES_WRITE: api_files_write(r); break;
    case API_ROUTE_FILES_READ: api_files_read(r); break;
    default: http_reply_error(r->req, 404, "not_found", "no such route"); break;
    }
}

static const char *method_name(struct evhttp_request *req)
{
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PATCH: return "PATCH";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    default: return "OTHER";
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void handle(api_request *r, struct evhttp_request *req);

void api_handle(void *app, void *worker, struct evhttp_request *req)
{
    api_worker *w = worker;
    api_request r = {.req = req, .ctx = app, .db = w->db};
    int64_t t0 = now_ms();
    handle(&r, req); /* sends exactly one reply */
    /* The reply is sent once this returns; its status is recorded here.
     * Reads that succeed are debug-level: clients poll them. */
    int status = http_reply_status(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : "";
    enum log_level lvl = (status < 300 && evhttp_request_get_command(req) == EVHTTP_REQ_GET) ? LOG_DEBUG : LOG_INFO;
    log_write(lvl, "event=http_request method=%s path=%s status=%d duration_ms=%lld sandbox_id=%s",
              method_name(req), path ? path : "", status, (long long)(now_ms() - t0), r.id);
}

static void handle(api_request *r, struct evhttp_request *req)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    r->route = api_route_match(path, r->id);
    if (r->route == API_ROUTE_NONE) {
        http_reply_error(req, 404, "not_found", "no such route");
        return;
    }
    api_method m = method_of(req);
    if (!(api_route_methods(r->route) & m)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", api_route_allow_header(r->route));
        http_reply_error(req, 405, "method_not_allowed", "method not allowed on this route (allowed: %s)",
                         api_route_allow_header(r->route));
        return;
    }
    if (r->route == API_ROUTE_HEALTHZ) {
        http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }

    const char *key = evhttp_find_header(evhttp_request_get_input_headers(req), "X-API-Key");
    if (!key || !*key) {
        http_reply_error(req, 401, "unauthorized", "X-API-Key header required");
        return;
    }
    bool ok;
    terr err;
    if (auth_check(r->db, key, r->team_id, &ok, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    if (!ok) {
        http_reply_error(req, 401, "unauthorized", "invalid API key");
        return;
    }

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    r->body_len = evbuffer_get_length(in);
    size_t limit = r->route == API_ROUTE_FILES_WRITE ? API_FILES_BODY_LIMIT : API_BODY_LIMIT;
    if (r->body_len > limit) {
        http_reply_error(req, 413, "too_large", "request body of %zu bytes is over the %zu-byte limit",
                         r->body_len, limit);
        return;
    }
    r->body = r->body_len ? (const char *)evbuffer_pullup(in, -1) : "";
    dispatch(r, m);
}
