/* proxy_host: host-based routing of the port proxy (--proxy-domain), the way
 * E2B exposes ports: a request whose Host is {port}-{id}.DOMAIN goes to that
 * port of that sandbox exactly as /v1/sandboxes/{id}/ports/{port}{path} would
 * (same auth: the API key or the sandbox's access token).
 *
 * Contract: pure functions, no allocation.
 *  - proxy_host_domain_valid: DOMAIN is 1..200 chars of [a-z0-9.-], with no
 *    empty label and no leading or trailing '.' or '-'.
 *  - proxy_host_path: for a Host header value (any case; a ":port" suffix is
 *    ignored) under domain, writes "/v1/sandboxes/{id}/ports/{port}{path}"
 *    (path "" counts as "/") into out and returns 1; returns 0 when host is
 *    not a name under domain (the request is routed as usual), -1 when it is
 *    under domain but not {port}-{id} with port 1..65535 and a valid sandbox
 *    id, or out is too small (the caller answers 404). */
#ifndef TORPOR_CP_PROXY_HOST_H
#define TORPOR_CP_PROXY_HOST_H

#include <stdbool.h>
#include <stddef.h>

bool proxy_host_domain_valid(const char *domain);
int proxy_host_path(const char *host, const char *domain, const char *path, char *out,
                    size_t out_size);

#endif
