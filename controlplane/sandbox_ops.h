/* sandbox_ops: the sandbox state machine of the control plane, apart from
 * HTTP. Each operation compare-and-sets the row, calls the agent, and
 * settles the row from the agent's answer; it returns an outcome that the
 * REST layer maps to a status through one table (api_reply_outcome).
 *
 * Contract: lifecycle changes are compare-and-set updates in the DB
 * (pending -> running | error, running -> pausing -> paused, paused ->
 * resuming -> running, any -> stopped), so two concurrent requests or the
 * reconciler never both win. A failed agent call leaves the row in the
 * state the agent reports (or, when the agent cannot be asked, in
 * pausing/resuming for the reconciler to resolve) and is SBOP_AGENT_FAILED
 * with the gRPC status; a failed resume never leaves a row paused that the
 * agent no longer holds (it becomes stopped), and one the agent reports
 * running is SBOP_OK. A create whose outcome is unknown
 * (sandbox_ops_create_outcome_unknown) leaves its row pending for the
 * reconciler (SBOP_CREATE_UNKNOWN); a create whose row stopped meanwhile
 * destroys the VM it made and is SBOP_CONFLICT. res->row is the row as the
 * operation leaves it when SBOP_OK (and its id from the start for a
 * create); res->err.msg is the message for the client otherwise. Every
 * operation logs its own events (sandbox_paused, sandbox_settled, ...). */
#ifndef TORPOR_CP_SANDBOX_OPS_H
#define TORPOR_CP_SANDBOX_OPS_H

#include <stdbool.h>

#include "agent_client.h"
#include "db.h"
#include "sandbox_model.h"
#include "terr.h"

typedef enum sbop_outcome {
    SBOP_OK = 0,
    SBOP_NOT_FOUND,         /* no such sandbox for the team */
    SBOP_CONFLICT,          /* the row is, or went meanwhile, in a state the operation cannot take */
    SBOP_AGENT_FAILED,      /* the agent call failed with res->grpc */
    SBOP_AGENT_UNREACHABLE, /* no client for the sandbox's host */
    SBOP_CREATE_UNKNOWN,    /* the create may yet land (res->grpc); its row stays pending */
    SBOP_INTERNAL,          /* database or host registry failure */
    SBOP_QUOTA_EXCEEDED,    /* create: the team's quota would be exceeded (REST 429 quota_exceeded) */
} sbop_outcome;

typedef struct sbop_ctx {
    db_conn *db;
    agent_pool *agents;
    const char *team_id;
} sbop_ctx;

typedef struct sbop_result {
    sbop_outcome outcome;
    sandbox_row row;
    grpc_status_code grpc; /* SBOP_AGENT_FAILED, SBOP_CREATE_UNKNOWN */
    terr err;
} sbop_result;

/* spec: template_name, vcpus, memory_mb, timeout_sec, auto_resume, network (canonical JSON). */
void sandbox_ops_create(const sbop_ctx *c, const sandbox_row *spec, sbop_result *res);
/* The same with the image the agent is asked for (NULL = spec's
 * template_name; a custom template's image, template_ops_resolve) and the
 * host (NULL = the least loaded one). The row keeps spec's template_name. */
void sandbox_ops_create_on(const sbop_ctx *c, const sandbox_row *spec, const char *image, const db_host *on_host,
                           sbop_result *res);
void sandbox_ops_delete(const sbop_ctx *c, const char *id, sbop_result *res);
void sandbox_ops_pause(const sbop_ctx *c, const char *id, sbop_result *res);
void sandbox_ops_resume(const sbop_ctx *c, const char *id, sbop_result *res);
void sandbox_ops_ping(const sbop_ctx *c, const char *id, sbop_result *res);
void sandbox_ops_set_timeout(const sbop_ctx *c, const char *id, int timeout_sec, sbop_result *res);
/* The team's running sandbox id and its host's agent client, for calls
 * that need a running VM and change no state (exec, files). */
void sandbox_ops_open_running(const sbop_ctx *c, const char *id, rpc_client **client, sbop_result *res);
/* open_running, except that a sandbox created with auto_resume is woken:
 * paused -> resumed here (one caller wins the compare-and-set, the others
 * wait), pausing/resuming -> waited for (bounded, then SBOP_CONFLICT). For
 * exec, files and the port proxy. */
void sandbox_ops_open_awake(const sbop_ctx *c, const char *id, rpc_client **client, sbop_result *res);
/* Replaces the network policy (canonical JSON) of a running or paused
 * sandbox: the row, then the agent; SBOP_CONFLICT in any other state. */
void sandbox_ops_set_network(const sbop_ctx *c, const char *id, const char *network, sbop_result *res);
/* Records activity on id (last_active_at); a failure is logged only. */
void sandbox_ops_touch(const sbop_ctx *c, const char *id);

/* True when a failed CreateSandbox call may still have created the VM
 * (UNAVAILABLE or DEADLINE_EXCEEDED after the request may have been sent):
 * its row then stays pending for the reconciler instead of going to error. */
bool sandbox_ops_create_outcome_unknown(grpc_status_code st, const char *message);

#endif
