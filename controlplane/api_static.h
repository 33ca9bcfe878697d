/* api_static: the answers torpor-cp serves from files embedded at build
 * time (embedded.h): GET /v1/openapi.json (docs/openapi.yaml as JSON), GET /
 * (the dashboard page) and GET /ui/<file> (its script and style sheet).
 *
 * Contract: none needs a key or touches the database or an agent. Every
 * answer carries X-Content-Type-Options: nosniff and the dashboard's
 * Content-Security-Policy (API_STATIC_CSP: scripts, styles and fetches from
 * this origin only, no inline script or style, no framing); the page itself
 * is Cache-Control: no-store, the assets and the spec no-cache. A /ui/ name
 * that is not an embedded asset (index.html included: the page lives at /)
 * is 404 not_found. */
#ifndef TORPOR_CP_API_STATIC_H
#define TORPOR_CP_API_STATIC_H

#include "api_request.h"

#define API_STATIC_CSP                                                                              \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

void api_openapi_json(api_request *r);
void api_dashboard_index(api_request *r);
void api_dashboard_asset(api_request *r);

#endif
