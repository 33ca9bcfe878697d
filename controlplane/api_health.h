/* api_health: GET /healthz, the liveness answer {"status":"ok"}.
 *
 * Contract: needs no key and touches neither the database nor an agent. */
#ifndef TORPOR_CP_API_HEALTH_H
#define TORPOR_CP_API_HEALTH_H

#include "api_request.h"

void api_healthz(api_request *r);

#endif
