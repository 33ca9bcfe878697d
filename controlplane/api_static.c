#include "api_static.h"

#include <stdio.h>
#include <string.h>

#include "embedded.h"

static void common_headers(http_request *req, const char *cache_control)
{
    http_add_header(req, "X-Content-Type-Options", "nosniff");
    http_add_header(req, "Content-Security-Policy", API_STATIC_CSP);
    http_add_header(req, "Referrer-Policy", "no-referrer");
    http_add_header(req, "Cache-Control", cache_control);
}

static void reply_file(api_request *r, const char *name, const char *cache_control)
{
    const embedded_file *f = embedded_find(name);
    common_headers(r->req, cache_control);
    if (!f) {
        http_reply_error(r->req, 404, "not_found", "no such asset");
        return;
    }
    http_reply_bytes(r->req, 200, f->content_type, f->data, f->len);
}

void api_openapi_json(api_request *r) { reply_file(r, "openapi.json", "no-cache"); }

void api_dashboard_index(api_request *r) { reply_file(r, "index.html", "no-store"); }

void api_dashboard_asset(api_request *r)
{
    static const char prefix[] = "/ui/";
    const char *path = http_request_path(r->req);
    char name[128];
    /* The route is "/ui/<rest>", so path starts with the prefix. The page is
     * embedded as "index.html", so /ui/index.html is 404 like any unknown
     * name: it lives only at "/". */
    const char *asset =
        strncmp(path, prefix, sizeof prefix - 1) == 0 ? path + sizeof prefix - 1 : "";
    int n = snprintf(name, sizeof name, "ui/%s", asset);
    if (n < 0 || (size_t)n >= sizeof name) {
        common_headers(r->req, "no-cache");
        http_reply_error(r->req, 404, "not_found", "no such asset");
        return;
    }
    reply_file(r, name, "no-cache");
}
