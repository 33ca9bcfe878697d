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
 * (sandbox_ops_create_outcome_unknown: it timed out) leaves its row error at
 * once; a VM the agent makes anyway is an orphan its host's reconciler
 * destroys (SBOP_CREATE_UNKNOWN); a create whose row stopped meanwhile
 * destroys the VM it made and is SBOP_CONFLICT. res->row is the row as the
 * operation leaves it when SBOP_OK (and its id from the start for a
 * create); res->err.msg is the message for the client otherwise. A sandbox
 * whose host reads unreachable is SBOP_HOST_UNREACHABLE at once, its row
 * unchanged. Every
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
    SBOP_NOT_FOUND,    /* no such sandbox for the team */
    SBOP_CONFLICT,     /* the row is, or went meanwhile, in a state the operation cannot take */
    SBOP_AGENT_FAILED, /* the agent call failed with res->grpc */
    SBOP_AGENT_UNREACHABLE, /* no client for the sandbox's host */
    SBOP_CREATE_UNKNOWN, /* the create timed out (res->grpc); its row is error, any VM destroyed */
    SBOP_INTERNAL,       /* database or host registry failure */
    SBOP_QUOTA_EXCEEDED, /* create: the team's quota would be exceeded (REST 429 quota_exceeded) */
    SBOP_HOST_UNREACHABLE, /* the sandbox's host reads unreachable: not asked at all */
    SBOP_NO_CAPACITY,      /* create: no ready host with room answered the probe */
} sbop_outcome;

struct touch_gate;
struct ping_route;

typedef struct sbop_ctx {
    db_conn *db;
    agent_pool *agents;
    const char *team_id;
    /* A failed create-time probe counts against a host only when no replica
     * heard it within this many seconds (db_host_record_failure); the
     * reconcile interval, since every replica probes each host that often. */
    double host_fresh_sec;
    struct touch_gate *touches; /* last_active_at writes of this replica; NULL = every one */
    struct ping_route *routes;  /* hosts recent pings reached; NULL = every ping reads the row */
} sbop_ctx;

typedef struct sbop_result {
    sbop_outcome outcome;
    sandbox_row row;
    grpc_status_code grpc; /* SBOP_AGENT_FAILED, SBOP_CREATE_UNKNOWN */
    terr err;
} sbop_result;

/* spec: template_name, vcpus, memory_mb, timeout_sec, disk_mb, env,
 * auto_resume, network (canonical JSON). The host: db_host_pick
 * (ready, room for memory_mb, template, fewest sandboxes), and only once it
 * answered a GetHostInfo probe (AGENT_DEADLINE_PROBE_MS) just before: a host
 * that does not is recorded as failing and the next one is tried, so no
 * create is sent to a dead or frozen agent, and one create goes to one
 * host at a time. The row is inserted per attempt within the team's quota
 * (db_sandbox_insert_within_quota; beyond it SBOP_QUOTA_EXCEEDED, no row).
 * An agent that answers RESOURCE_EXHAUSTED (admission control) created
 * nothing; its row goes and the next host is tried. None left:
 * SBOP_NO_CAPACITY, or SBOP_AGENT_FAILED with RESOURCE_EXHAUSTED when some
 * agent answered full (both REST 503 no_capacity). An unknown outcome
 * (timeout): the row is error, SBOP_CREATE_UNKNOWN. */
void sandbox_ops_create(const sbop_ctx *c, const sandbox_row *spec, sbop_result *res);
/* The same with the image the agent is asked for (NULL = spec's
 * template_name; a custom template's image, template_ops_resolve) and, for
 * a custom template, its digest: then only hosts holding that image with
 * exactly that digest are picked (db_host_pick_template), tried in turn
 * like above. The row keeps spec's template_name. */
void sandbox_ops_create_on(const sbop_ctx *c, const sandbox_row *spec, const char *image,
                           const char *tpl_digest, sbop_result *res);
void sandbox_ops_delete(const sbop_ctx *c, const char *id, sbop_result *res);
void sandbox_ops_pause(const sbop_ctx *c, const char *id, sbop_result *res);
void sandbox_ops_resume(const sbop_ctx *c, const char *id, sbop_result *res);
/* Ping: the row and its host (or, within PING_ROUTE_TTL_MS of an answered
 * ping, the host that answered: c->routes, ping_route.h), the agent's
 * PingSandbox, then sandbox_ops_touch. */
void sandbox_ops_ping(const sbop_ctx *c, const char *id, sbop_result *res);
void sandbox_ops_set_timeout(const sbop_ctx *c, const char *id, int timeout_sec, sbop_result *res);
/* The team's running sandbox id and its host's agent client, for calls
 * that need a running VM and change no state (exec, files). */
void sandbox_ops_open_running(const sbop_ctx *c, const char *id, rpc_client **client,
                              sbop_result *res);
/* open_running, except that a sandbox created with auto_resume is woken:
 * paused -> resumed here (one caller wins the compare-and-set, the others
 * wait), pausing/resuming -> waited for (bounded, then SBOP_CONFLICT); a
 * running row at or near its expiry is first checked with its agent, whose
 * reaper may have paused it before the reconciler told the row. For exec,
 * files and the port proxy. */
void sandbox_ops_open_awake(const sbop_ctx *c, const char *id, rpc_client **client,
                            sbop_result *res);
/* Replaces the network policy (canonical JSON) of a running or paused
 * sandbox: the row, then the agent; SBOP_CONFLICT in any other state. */
void sandbox_ops_set_network(const sbop_ctx *c, const char *id, const char *network,
                             sbop_result *res);
/* Records activity on id (last_active_at), through c->touches (at most one
 * UPDATE per TOUCH_GATE_MS per sandbox); a failure is logged only. */
void sandbox_ops_touch(const sbop_ctx *c, const char *id);

/* host_probe (host_probe.h) with the context's freshness, a failure logged
 * (event=host_probe_failed): asks GetHostInfo with AGENT_DEADLINE_PROBE_MS, records
 * the answer (or the failure) in the hosts table; 0 when it answered, with
 * *client its agent client. */
int sandbox_ops_probe_host(const sbop_ctx *c, const db_host *host, rpc_client **client, terr *err);

/* Moves a paused sandbox (any team's when c->team_id is NULL) to the host
 * target_id (NULL: db_host_pick without its current host): paused ->
 * moving (other operations 409), the files streamed chunk by chunk from the
 * source agent to the target's, committed there (size + sha256 verified,
 * base image checked), host_id switched and status paused again in one
 * statement, then destroyed on the source. A failure before the switch
 * aborts the import and puts the row back to paused on the source; a copy
 * the target committed anyway belongs to no row of its host and is
 * destroyed by its reconciler. Outcomes: NOT_FOUND (sandbox or target host),
 * CONFLICT (not paused, target = source or not ready), HOST_UNREACHABLE,
 * NO_CAPACITY, AGENT_FAILED. */
void sandbox_ops_move(const sbop_ctx *c, const char *id, const char *target_id, sbop_result *res);

/* True when a failed CreateSandbox call may still have created the VM
 * (UNAVAILABLE or DEADLINE_EXCEEDED after the request may have been sent):
 * its row goes to error with a message saying so, and the reconciler
 * destroys the VM if it lands. */
bool sandbox_ops_create_outcome_unknown(grpc_status_code st, const char *message);

#endif
