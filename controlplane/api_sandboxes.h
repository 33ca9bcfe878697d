/* api_sandboxes: the /v1/sandboxes route handlers (lifecycle and exec).
 *
 * Contract: each handler parses its input (400 on bad input), calls one
 * sandbox_ops operation and answers its outcome through api_reply_outcome,
 * sending exactly one reply. The state machine itself (compare-and-set,
 * agent call, settle) is sandbox_ops'. Successes: create 201 with the row,
 * get/pause/resume/timeout 200 with the row, delete/ping 204, exec 200 with
 * the command's result, list 200 with the rows (?status= filters). */
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

#endif
