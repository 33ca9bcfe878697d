#include "api_routes.h"

#include <string.h>

#include "api_validate.h"

static const struct {
    const char *suffix;
    api_route route;
} action_routes[] = {
    {"/pause", API_ROUTE_PAUSE},         {"/resume", API_ROUTE_RESUME},
    {"/ping", API_ROUTE_PING},           {"/timeout", API_ROUTE_TIMEOUT},
    {"/exec", API_ROUTE_EXEC},           {"/files/write", API_ROUTE_FILES_WRITE},
    {"/files/read", API_ROUTE_FILES_READ},
};

api_route api_route_match(const char *path, char id[SANDBOX_ID_MAX])
{
    static const char prefix[] = "/v1/sandboxes";
    id[0] = '\0';
    if (!path) return API_ROUTE_NONE;
    if (strcmp(path, "/healthz") == 0) return API_ROUTE_HEALTHZ;
    if (strncmp(path, prefix, sizeof prefix - 1) != 0) return API_ROUTE_NONE;
    const char *p = path + sizeof prefix - 1;
    if (*p == '\0') return API_ROUTE_SANDBOXES;
    if (*p != '/') return API_ROUTE_NONE;
    p++;
    const char *end = strchr(p, '/');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (!api_validate_sandbox_id(p, n)) return API_ROUTE_NONE;
    memcpy(id, p, n);
    id[n] = '\0';
    if (!end) return API_ROUTE_SANDBOX;
    for (size_t i = 0; i < sizeof action_routes / sizeof action_routes[0]; i++)
        if (strcmp(end, action_routes[i].suffix) == 0) return action_routes[i].route;
    id[0] = '\0';
    return API_ROUTE_NONE;
}

unsigned api_route_methods(api_route r)
{
    switch (r) {
    case API_ROUTE_NONE: return 0;
    case API_ROUTE_HEALTHZ: return API_GET;
    case API_ROUTE_SANDBOXES: return API_GET | API_POST;
    case API_ROUTE_SANDBOX: return API_GET | API_DELETE;
    default: return API_POST;
    }
}

const char *api_route_allow_header(api_route r)
{
    switch (api_route_methods(r)) {
    case API_GET: return "GET";
    case API_GET | API_POST: return "GET, POST";
    case API_GET | API_DELETE: return "GET, DELETE";
    case API_POST: return "POST";
    default: return "";
    }
}
