/* api_routes: maps a request path and method to a REST route.
 *
 * Contract: pure. Paths are matched raw (not percent-decoded); a sandbox id
 * segment must satisfy api_validate_sandbox_id, otherwise the path matches no
 * route (404). A known path with a method it does not serve is 405. */
#ifndef TORPOR_CP_API_ROUTES_H
#define TORPOR_CP_API_ROUTES_H

#include <stdbool.h>

#include "sandbox_model.h"

typedef enum api_route {
    API_ROUTE_NONE = 0,
    API_ROUTE_HEALTHZ,
    API_ROUTE_SANDBOXES,   /* /v1/sandboxes: GET list, POST create */
    API_ROUTE_SANDBOX,     /* /v1/sandboxes/{id}: GET, DELETE */
    API_ROUTE_PAUSE,
    API_ROUTE_RESUME,
    API_ROUTE_PING,
    API_ROUTE_TIMEOUT,
    API_ROUTE_EXEC,
    API_ROUTE_FILES_WRITE,
    API_ROUTE_FILES_READ,
} api_route;

typedef enum api_method {
    API_GET = 1,
    API_POST = 2,
    API_DELETE = 4,
    API_OTHER = 8,
} api_method;

/* Returns the route (API_ROUTE_NONE if none) and copies the id segment into
 * id (empty for routes without one). */
api_route api_route_match(const char *path, char id[SANDBOX_ID_MAX]);
/* Bit mask of api_method values the route serves. */
unsigned api_route_methods(api_route r);
/* "GET, DELETE" for the Allow header. */
const char *api_route_allow_header(api_route r);

#endif
