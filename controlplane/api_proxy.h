/* api_proxy: ANY /v1/sandboxes/{id}/ports/{port}/{path...} — HTTP/1.1 to a
 * port in the sandbox (docs/network.md, "Inbound").
 *
 * Contract: auth is the team's API key or the sandbox's access token
 * (X-Access-Token or ?token=), which grants this route only. The sandbox is
 * woken when created with auto_resume (sandbox_ops_open_awake). The request
 * goes control plane -> agent tunnel (one-time token from OpenPort) ->
 * guest 10.0.0.2:port as "Connection: close", with hop-by-hop headers and
 * the credentials removed. Nothing listening: 502 port_closed; a guest
 * answer that is not HTTP/1.x: 502 bad_gateway. Each request is activity
 * (agent and DB).
 *
 * Plain HTTP streams both ways (proxy_stream.h): a request with a body is
 * opened before the body is read (the route's vet step, api_proxy_open_early,
 * on a long-call worker), so the body goes to the guest as it arrives; the
 * handler then answers with the guest's status, headers and streamed body. Memory per request is fixed, whatever the sizes.
 *
 * An Upgrade request (WebSocket) keeps its Connection/Upgrade headers; when
 * the guest answers 101, its headers go back with our 101 and a relay thread
 * copies bytes both ways until both directions closed (the agent's tunnel
 * counts that traffic as activity); a non-101 answer to it is streamed back
 * as a plain answer is. */
#ifndef TORPOR_CP_API_PROXY_H
#define TORPOR_CP_API_PROXY_H

#include "api_request.h"
#include "proxy_stream.h"

/* Worker, handler: the request (opened already when it has a body). */
void api_proxy(api_request *r);
/* True when the request must be opened before its body is read. */
bool api_proxy_opens_early(http_request *req);
/* Worker, vet step (auth done): opens the tunnel and starts the relay, or
 * replies (404, 409, 502 port_closed, ...). */
void api_proxy_open_early(api_request *r);
/* I/O thread: the route's streamed-body fn (http_body_fn). */
#define api_proxy_body proxy_stream_body

#endif
