/* api: the REST front controller of torpor-cp.
 *
 * Contract: api_on_headers is the http_server's header hook and api_handle
 * its handler. Once the headers are in (before the body), the route is
 * looked up in api_route_table (unknown -> 404, wrong method -> 405 with
 * Allow), a route that needs an API key and has no X-API-Key header gets
 * 401, and the route's body limit applies (a larger Content-Length -> 413
 * before the body is read). On a worker, the key is checked against the
 * database (401) - before the body when one over 64 KiB is announced
 * (api_vet), after it otherwise - a long call takes a slot of its team's
 * --team-long-calls (429 when none is left; given back when the request is
 * over, api_done) - then the route's handler runs and sends exactly one
 * reply. Errors are {"error":{"code","message"}} (see docs/api.md). Every
 * request is logged once (event=http_request). */
#ifndef TORPOR_CP_API_H
#define TORPOR_CP_API_H

#include "api_request.h"
#include "http_server.h"

void api_on_headers(void *app, http_request *req);
void api_handle(void *app, void *worker, http_request *req);
/* The http_server's vet: the key check on a worker before a large body
 * (one announced over 64 KiB, or streamed) is read; a long call also takes
 * its team's slot here (429 when the team is at --team-long-calls). */
void api_vet(void *app, void *worker, http_request *req);
/* The http_server's on_done: gives back the request's team slot. */
void api_done(void *app, http_request *req);

#endif
