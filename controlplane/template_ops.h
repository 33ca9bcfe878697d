/* template_ops: custom templates in the control plane (docs/templates.md),
 * apart from HTTP, like sandbox_ops for sandboxes.
 *
 * Contract: a template row (db_templates.h) is created "building" on one
 * host (the least loaded ready one, db_host_pick) and the host's agent is asked to build it
 * (BuildTemplate, asynchronous). Its status follows the agent's answer
 * (template_next_status) whenever it is read while building: GET, list, the
 * log, and the resolve of a sandbox create. So no reconciler pass is needed:
 * a build nobody looks at is settled on its next read. The image name on the
 * agent is the row's id ("tpl-" + 16 hex), never the user's name, so two
 * teams' templates never collide on a host. `debian` and `minimal` are
 * built in: public, listed when the host has them, never built, never
 * deleted (DELETE is 403). Once ready, the image is copied to the other
 * hosts (template_copy.h); DELETE removes it from every host that has it. DELETE is 409 while a sandbox of the team that
 * is not stopped/error uses the template, or while it builds.
 * Each call sets res->outcome; res->err.msg is the message for the client. */
#ifndef TORPOR_CP_TEMPLATE_OPS_H
#define TORPOR_CP_TEMPLATE_OPS_H

#include <stddef.h>

#include "sandbox_ops.h"
#include "template_model.h"

typedef enum top_outcome {
    TOP_OK = 0,
    TOP_NOT_FOUND,    /* 404 not_found */
    TOP_INVALID,      /* 400 invalid_request (e.g. the agent refused a package) */
    TOP_EXISTS,       /* 409 already_exists: the team has a template of that name */
    TOP_IN_USE,       /* 409 template_in_use */
    TOP_NOT_READY,    /* 409 template_not_ready: building (or failed) */
    TOP_FORBIDDEN,    /* 403 forbidden: a built-in template */
    TOP_AGENT_FAILED, /* agent_status_to_http(res->grpc) */
    TOP_UNREACHABLE,  /* 502 agent_error */
    TOP_INTERNAL,     /* 500 */
} top_outcome;

typedef struct top_result {
    top_outcome outcome;
    template_row row;
    grpc_status_code grpc;
    terr err;
} top_result;

void template_ops_create(const sbop_ctx *c, const template_create_req *req, top_result *res);
void template_ops_get(const sbop_ctx *c, const char *name, top_result *res);
/* The team's templates, then the built-in ones its first host has. */
int template_ops_list(const sbop_ctx *c, template_row **out, size_t *n, terr *err);
/* The build log's last AGENT_TEMPLATE_LOG_TAIL bytes (*log malloc'd). */
void template_ops_log(const sbop_ctx *c, const char *name, char **log, size_t *len,
                      top_result *res);
void template_ops_delete(const sbop_ctx *c, const char *name, top_result *res);

/* For a sandbox create of template name: *image is what the agent is asked
 * for and, for a custom template, *digest its content digest (else ""):
 * the create is then placed only on hosts that hold the image with exactly
 * that digest (db_host_pick_template). When none of them takes sandboxes
 * now (draining, unreachable, or no copy yet), one copy is made first
 * (template_copy_run_once for this template; synchronous, bounded by the
 * copy's deadlines); if that cannot be done: TOP_NOT_READY. A name the team
 * has no template of is passed on as it is (the agent's images: `minimal`,
 * `debian`; an unknown one is the agent's 400), except names starting with
 * "tpl-" (400: never another team's image). Building or failed:
 * TOP_NOT_READY. */
void template_ops_resolve(const sbop_ctx *c, const char *name, char image[64], char digest[65],
                          top_result *res);

#endif
