/* api_sandboxes: the /v1/sandboxes route handlers (lifecycle and exec).
 *
 * Contract: each handler sends exactly one reply for r. Lifecycle changes are
 * compare-and-set updates in the DB (pending -> running | error, running ->
 * pausing -> paused, paused -> resuming -> running, any -> stopped), so two
 * concurrent requests or the reconciler never both win. A failed agent call
 * leaves the row in the state the agent reports (or, when the agent cannot be
 * asked, in pausing/resuming for the reconciler to resolve) and answers with
 * agent_status_to_http's mapping; a failed resume never leaves a row paused
 * that the agent no longer holds (it becomes stopped), and one the agent
 * reports running is answered 200. A create whose outcome is unknown
 * (api_create_outcome_unknown) leaves its row pending for the reconciler; a
 * create whose row stopped meanwhile destroys the VM it made and answers 409.
 */
#ifndef TORPOR_CP_API_SANDBOXES_H
#define TORPOR_CP_API_SANDBOXES_H

#include "api_request.h"

void api_sandboxes_create(api_request *r);
void api_sandboxes_list(api_request *r);
void api_sandboxes_get(api_request *r);
void api_sandboxes_delete(api_request *r);
void api_sandboxes_pause(api_request *r);
void api_sandboxes_resume(api_request *r);
void api_sandboxes_ping(api_request *r);
void api_sandboxes_timeout(api_request *r);
void api_sandboxes_exec(api_request *r);

/* True when a failed CreateSandbox call may still have created the VM
 * (UNAVAILABLE or DEADLINE_EXCEEDED after the request may have been sent):
 * its row then stays pending for the reconciler instead of going to error. */
bool api_create_outcome_unknown(grpc_status_code st, const char *message);
#endif
