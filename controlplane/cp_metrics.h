/* cp_metrics: what torpor-cp exposes at GET /metrics (metrics.h, registry
 * metrics_default()).
 *
 * Contract: the record functions are cheap, thread-safe and never fail.
 *   torpor_cp_http_requests_total{method,route,status}            counter
 *   torpor_cp_http_request_duration_seconds{method,route,status}  histogram
 *       route = the route table's pattern ("/v1/sandboxes/{id}/pause"),
 *       never the raw path; "unmatched" for 404/405 without a route;
 *       method outside GET/HEAD/POST/PUT/PATCH/DELETE/OPTIONS = "other"
 *   torpor_cp_db_errors_total              failed PostgreSQL statements and
 *       connection attempts of this process (db_error_count, read at scrape
 *       time)
 *   torpor_cp_reconcile_duration_seconds{host,result}  histogram of one
 *       host's reconcile pass (result ok | failed)
 * and, at scrape time, from the collector cp_metrics_watch installs:
 *   torpor_cp_sandboxes{host,state}   rows per host and state, every state
 *       of every registered host (0 included). One grouped query on the
 *       collector's own connection with statement_timeout 2 s and at most
 *   CP_METRICS_MAX_ROWS rows; when it fails the family is left empty (no
 *       stale numbers) and the failure counts as a DB error. */
#ifndef TORPOR_CP_METRICS_H
#define TORPOR_CP_METRICS_H

#include "terr.h"

#define CP_METRICS_MAX_ROWS 10000

void cp_metrics_http_request(const char *method, const char *route_pattern, int status,
                             double seconds);
void cp_metrics_reconcile(const char *host_id, int ok, double seconds);

/* Installs the scrape-time collector; it connects to database_url (a
 * string that must outlive the process's metrics listener) on first use. */
int cp_metrics_watch(const char *database_url, terr *err);

#endif
