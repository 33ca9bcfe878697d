/* api_network: the REST side of a sandbox's network (docs/network.md).
 *
 * api_network_validate checks a policy object {"egress": "allow"|"deny",
 * "allow": ["CIDR[:port]", ...], "deny": [...]} (every key optional, no
 * other key; entries as in common/net_policy.h) and writes its canonical
 * JSON (all three keys, entries in their canonical text) into buf: what the
 * row stores and the Sandbox JSON shows. PUT /v1/sandboxes/{id}/network
 * (api_network_put) replaces the policy of a running or paused sandbox: 400
 * on invalid input (nothing changes), 409 in any other state, 200 with the
 * Sandbox. */
#ifndef TORPOR_CP_API_NETWORK_H
#define TORPOR_CP_API_NETWORK_H

#include <jansson.h>
#include <stddef.h>

#include "api_request.h"
#include "net_policy.h"
#include "terr.h"

int api_network_validate(const json_t *net, net_policy *p, char *buf, size_t n, terr *err);
/* Canonical JSON text of p. */
int api_network_canonical(const net_policy *p, char *buf, size_t n, terr *err);

void api_network_put(api_request *r);

#endif
