/* api_proxy: ANY /v1/sandboxes/{id}/ports/{port}/{path...} — HTTP/1.1 to a
 * port in the sandbox (docs/network.md, "Inbound").
 *
 * Contract: auth is the team's API key or the sandbox's access token
 * (X-Access-Token or ?token=), which grants this route only. The sandbox is
 * woken when created with auto_resume (sandbox_ops_open_awake). The request
 * goes control plane -> agent tunnel (one-time token from OpenPort) ->
 * guest 10.0.0.2:port as "Connection: close", with hop-by-hop headers and
 * the credentials removed; the answer is read to its end (at most
 * PROXY_RESPONSE_MAX, within PROXY_TIMEOUT_MS) and sent back with the
 * guest's status and headers. Nothing listening: 502 port_closed; a guest
 * answer that is not HTTP: 502 bad_gateway. An Upgrade request (WebSocket)
 * keeps its Connection/Upgrade headers; when the guest answers 101, its
 * headers go back with our 101 and a relay thread copies bytes both ways
 * until both directions closed (the agent's tunnel counts that traffic as
 * activity). Each request is activity (agent and DB). Not built: streaming
 * of plain HTTP (request body and answer are buffered, 1 MiB / 16 MiB). */
#ifndef TORPOR_CP_API_PROXY_H
#define TORPOR_CP_API_PROXY_H

#include "api_request.h"

#define PROXY_RESPONSE_MAX (16 * 1024 * 1024)
#define PROXY_TIMEOUT_MS 60000

void api_proxy(api_request *r);

#endif
