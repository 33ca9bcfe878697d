/* api_hosts: the admin routes. GET /v1/hosts: every registered agent host
 * with its status as the reconcilers see it, its address, agent identity,
 * capacity as last reported, and its sandboxes. The JSON is the REST "Host"
 * object of docs/api.md; api_hosts_json is shared with `torpor-cp hosts
 * list --json`-style tools and tests. */
#ifndef TORPOR_CP_API_HOSTS_H
#define TORPOR_CP_API_HOSTS_H

#include <jansson.h>

#include "api_request.h"
#include "db.h"

/* New reference to the Host object of h (NULL on OOM). */
json_t *api_host_json(const db_host *h);

void api_hosts_list(api_request *r);
/* POST /v1/sandboxes/{id}/move {"host_id"?} (admin keys, any team's
 * sandbox): sandbox_ops_move; 200 with the sandbox, paused on its new host. */
void api_sandboxes_move(api_request *r);

#endif
