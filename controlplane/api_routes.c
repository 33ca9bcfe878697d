#include "api_routes.h"

#include <stdio.h>
#include <string.h>

#include "api_files.h"
#include "api_files_stream.h"
#include "api_health.h"
#include "api_hosts.h"
#include "api_network.h"
#include "api_proxy.h"
#include "api_sandboxes.h"
#include "api_static.h"
#include "api_templates.h"
#include "api_validate.h"

/* clang-format off */
const api_route api_route_table[] = {
    /* method   pattern                            handler                body limit            stream  auth           runs on */
    {"GET",    "/healthz",                         api_healthz,           API_BODY_LIMIT,       NULL,   API_AUTH_NONE, API_RUN_IO_THREAD},
    {"GET",    "/readyz",                          api_readyz,            API_BODY_LIMIT,       NULL,   API_AUTH_NONE, API_RUN_WORKER},
    {"GET",    "/v1/sandboxes",                    api_sandboxes_list,    API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"POST",   "/v1/sandboxes",                    api_sandboxes_create,  API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_LONG},
    {"GET",    "/v1/sandboxes/{id}",               api_sandboxes_get,     API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"DELETE", "/v1/sandboxes/{id}",               api_sandboxes_delete,  API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_LONG},
    {"POST",   "/v1/sandboxes/{id}/pause",         api_sandboxes_pause,   API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_LONG},
    {"POST",   "/v1/sandboxes/{id}/resume",        api_sandboxes_resume,  API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_LONG},
    {"POST",   "/v1/sandboxes/{id}/ping",          api_sandboxes_ping,    API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"POST",   "/v1/sandboxes/{id}/timeout",       api_sandboxes_timeout, API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"PUT",    "/v1/sandboxes/{id}/network",       api_network_put,       API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"POST",   "/v1/sandboxes/{id}/exec",          api_sandboxes_exec,    API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_LONG},
    {"POST",   "/v1/sandboxes/{id}/files/write",   api_files_write,       API_FILES_BODY_LIMIT, api_files_write_body, API_AUTH_KEY, API_RUN_LONG},
    {"POST",   "/v1/sandboxes/{id}/files/read",    api_files_read,        API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_LONG},
    {"PUT",    "/v1/sandboxes/{id}/files/content", api_files_put_content, 0,                    api_files_put_body, API_AUTH_KEY, API_RUN_LONG},
    {"GET",    "/v1/sandboxes/{id}/files/content", api_files_get_content, API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_LONG},
    {"GET",    "/v1/sandboxes/{id}/files",         api_files_list,        API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_LONG},
    {"GET",    "/v1/templates",                    api_templates_list,    API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"POST",   "/v1/templates",                    api_templates_create,  API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"GET",    "/v1/templates/{id}",               api_templates_get,     API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"DELETE", "/v1/templates/{id}",               api_templates_delete,  API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"GET",    "/v1/templates/{id}/log",           api_templates_log,     API_BODY_LIMIT,       NULL,   API_AUTH_KEY,  API_RUN_WORKER},
    {"POST",   "/v1/sandboxes/{id}/move",          api_sandboxes_move,    API_BODY_LIMIT,       NULL,   API_AUTH_ADMIN, API_RUN_LONG},
    {"GET",    "/v1/hosts",                        api_hosts_list,        API_BODY_LIMIT,       NULL,   API_AUTH_ADMIN, API_RUN_WORKER},
    {NULL,     "/v1/sandboxes/{id}/ports/*",       api_proxy,             0,                    api_proxy_body, API_AUTH_SANDBOX_TOKEN, API_RUN_LONG},
    {"GET",    "/v1/openapi.json",                 api_openapi_json,      API_BODY_LIMIT,       NULL,   API_AUTH_NONE, API_RUN_WORKER},
    {"GET",    "/",                                api_dashboard_index,   API_BODY_LIMIT,       NULL,   API_AUTH_NONE, API_RUN_WORKER},
    {"GET",    "/ui/*",                            api_dashboard_asset,   API_BODY_LIMIT,       NULL,   API_AUTH_NONE, API_RUN_WORKER},
};
/* clang-format on */
const size_t api_route_count = sizeof api_route_table / sizeof api_route_table[0];

/* True when path matches pattern; fills id and rest. */
static bool path_matches(const char *pattern, const char *path, char id[SANDBOX_ID_MAX],
                         const char **rest)
{
    const char *p = pattern, *s = path;
    id[0] = '\0';
    *rest = NULL;
    while (*p) {
        if (p[0] == '*' && p[1] == '\0') {
            if (!*s) return false;
            *rest = s;
            return true;
        }
        if (strncmp(p, "{id}", 4) == 0) {
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);
            if (!api_validate_sandbox_id(s, n)) return false;
            memcpy(id, s, n);
            id[n] = '\0';
            p += 4;
            s += n;
            continue;
        }
        if (*p != *s) return false;
        p++;
        s++;
    }
    return *s == '\0';
}

const api_route *api_route_find(const api_route *table, size_t n, const char *method,
                                const char *path, api_match *m)
{
    memset(m, 0, sizeof *m);
    m->status = 404;
    if (!path) return NULL;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        char id[SANDBOX_ID_MAX];
        const char *rest;
        if (!path_matches(table[i].pattern, path, id, &rest)) continue;
        if (!table[i].method || (method && strcmp(method, table[i].method) == 0)) {
            memcpy(m->id, id, sizeof id);
            m->rest = rest;
            m->status = 0;
            return &table[i];
        }
        m->status = 405;
        if (used < sizeof m->allow)
            used += (size_t)snprintf(m->allow + used, sizeof m->allow - used, "%s%s",
                                     used ? ", " : "", table[i].method);
    }
    return NULL;
}
