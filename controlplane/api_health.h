/* api_health: GET /healthz (liveness) and GET /readyz (readiness).
 *
 * Contract: /healthz needs no key, touches neither the database nor an
 * agent, and is answered on the HTTP I/O thread (api.c), so it answers even
 * while every worker is busy: {"status":"ok"}. /readyz needs no key; its
 * status depends on the database only (200 when a query on this worker's
 * connection succeeds, else 503 unavailable), so a dead agent host never
 * takes a replica out of a load balancer; its 200 body lists every host of
 * the hosts table with what this replica's reconciler last saw of its agent:
 * {"status":"ready","database":"ok","hosts":[{"id","address",
 * "reachable": true|false|null, "checked_seconds_ago": n|null}]} (null: not
 * reconciled by this replica yet). */
#ifndef TORPOR_CP_API_HEALTH_H
#define TORPOR_CP_API_HEALTH_H

#include "api_request.h"

void api_healthz(api_request *r);
void api_readyz(api_request *r);

#endif
