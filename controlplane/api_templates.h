/* api_templates: the /v1/templates route handlers (docs/api.md, Templates).
 *
 * Contract: each handler parses its input (400), calls one template_ops
 * operation and answers its outcome through api_reply_template_outcome, one
 * reply each. Successes: list 200 (array), get 200, create 202 (status
 * "building"), log 200 text/plain, delete 204. The {id} path segment is the
 * template's name (404 when it is not a valid template name). */
#ifndef TORPOR_CP_API_TEMPLATES_H
#define TORPOR_CP_API_TEMPLATES_H

#include "api_request.h"
#include "template_ops.h"

void api_templates_list(api_request *r);
void api_templates_get(api_request *r);
void api_templates_create(api_request *r);
void api_templates_log(api_request *r);
void api_templates_delete(api_request *r);

/* The one outcome -> REST status table of template_ops (also for the
 * template check of a sandbox create). */
void api_reply_template_outcome(api_request *r, const char *op, const top_result *res,
                                int ok_status);

#endif
