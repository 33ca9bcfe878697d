/* lifecycle: what each sandbox operation means, on top of the sandbox table,
 * the runtime driver, the journal and the clock. RPC handlers and the reaper
 * call this; it knows nothing of gRPC.
 *
 * States: creating (internal) -> running <-> pausing -> paused -> resuming ->
 * running (or back to paused when the driver kept the snapshot, or gone when
 * it lost it); destroying (internal) -> gone. Creating/destroying sandboxes
 * are not listed and answer FAILED_PRECONDITION to state-dependent calls.
 *
 * Rules (docs/lifecycle.md has the full story):
 * - create/pause/resume/destroy hold the sandbox's lifecycle lock for the
 *   whole driver call; destroy waits for it, the others too (then re-check).
 * - ping/set_timeout/exec/read/write never take the lifecycle lock: they act
 *   on the state as it is (a pausing sandbox answers FAILED_PRECONDITION at
 *   once, so a slow pause never blocks a ping).
 * - Activity (last_active = now): ping, exec start and end, read/write file,
 *   set_timeout on a running sandbox. An exec or file op in flight
 *   (active_execs > 0) also keeps the reaper away. List and reaper work do
 *   not count.
 * - The reaper side (autopause.h: collect/claim/run) is split so that the
 *   claim (re-check under the table lock + move to pausing) is atomic
 *   against ping/exec.
 *
 * Return codes are agent_code; on anything but AGENT_OK err holds the
 * reason. */
#ifndef TORPOR_AGENT_LIFECYCLE_H
#define TORPOR_AGENT_LIFECYCLE_H

#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "journal.h"
#include "net_policy.h"
#include "runtime.h"
#include "sandbox_table.h"
#include "terr.h"

typedef enum {
    AGENT_OK = 0,
    AGENT_NOT_FOUND,
    AGENT_FAILED_PRECONDITION,
    AGENT_INVALID_ARGUMENT,
    AGENT_ALREADY_EXISTS,
    AGENT_INTERNAL,
    AGENT_RESOURCE_EXHAUSTED, /* admission control: no room on this host (admission.h) */
    AGENT_UNAVAILABLE,        /* the sandbox is recovering (re-attached after a restart): retry */
} agent_code;

/* Numeric limits and the id/template name rules: torpor_limits.h (shared
 * with the control plane). */

/* A snapshot of one record, safe to use after the table lock is gone. */
typedef struct lifecycle_info {
    runtime_spec spec;
    sandbox_status status;
    int64_t last_active_ms;
} lifecycle_info;

typedef struct lifecycle_config {
    runtime_driver *driver;   /* borrowed */
    journal *journal;         /* borrowed */
    const agent_clock *clock; /* borrowed */
    /* Re-attach running VMs on a background thread: open returns once every
     * sandbox is known (paused ones as paused, live ones as "recovering",
     * answering UNAVAILABLE until re-attached). false = all before open
     * returns. Only for drivers that announce (runtime_recover_fn). */
    bool async_recover;
    /* Host limits for create and resume; NULL = none (copied). */
    const struct admission_config *admission;
    struct agent_net *net; /* borrowed; NULL = sandboxes get no network (net.h) */
} lifecycle_config;

typedef struct lifecycle lifecycle;

/* Builds the table from driver->ops->recover(): paused-on-disk sandboxes
 * become paused, re-attached VMs running with last_active = now. A recovered
 * spec that create would refuse (vcpus, memory_mb, timeout_sec, template
 * out of range: corrupt metadata) is destroyed through the driver and
 * logged. Journal notices whose sandbox is not paused in the rebuilt table
 * are dropped (acked). */
int lifecycle_open(const lifecycle_config *cfg, lifecycle **out, terr *err);
/* Forgets the table (drops vm references; VMs keep running). Call only when
 * no operation or pool job is running any more. */
void lifecycle_close(lifecycle *lc);

/* spec->created_at_unix == 0 means now. */
/* Resume: a driver failure that kept the snapshot leaves the sandbox paused
 * (INTERNAL, retryable); RUNTIME_SNAPSHOT_LOST destroys it and removes the
 * record (INTERNAL "resume failed and the snapshot was lost; sandbox
 * destroyed"). */
agent_code lifecycle_create(lifecycle *lc, const runtime_spec *spec, lifecycle_info *out,
                            terr *err);
/* create with the sandbox's egress policy (NULL = the default policy); the
 * policy is ignored when the agent runs without network. */
agent_code lifecycle_create_net(lifecycle *lc, const runtime_spec *spec, const net_policy *policy,
                                lifecycle_info *out, terr *err);
/* Replaces the egress policy of a running, pausing, paused or resuming
 * sandbox (FAILED_PRECONDITION otherwise, and when the agent has no network). */
agent_code lifecycle_set_network(lifecycle *lc, const char *id, const net_policy *policy,
                                 lifecycle_info *out, terr *err);
agent_code lifecycle_destroy(lifecycle *lc, const char *id, terr *err);
agent_code lifecycle_pause(lifecycle *lc, const char *id, lifecycle_info *out, terr *err);
agent_code lifecycle_resume(lifecycle *lc, const char *id, int timeout_sec, lifecycle_info *out,
                            terr *err);
/* resume that first applies and stores the sandbox's egress policy (the
 * control plane's; NULL = the stored one): a sandbox moved here from another
 * host has none stored yet. Ignored when the agent runs without network. */
agent_code lifecycle_resume_net(lifecycle *lc, const char *id, int timeout_sec,
                                const net_policy *policy, lifecycle_info *out, terr *err);
agent_code lifecycle_ping(lifecycle *lc, const char *id, int64_t *last_active_ms, terr *err);
agent_code lifecycle_set_timeout(lifecycle *lc, const char *id, int timeout_sec,
                                 lifecycle_info *out, terr *err);
agent_code lifecycle_get(lifecycle *lc, const char *id, lifecycle_info *out, terr *err);
/* Every sandbox that is running, pausing, paused or resuming; *out malloc'd. */
int lifecycle_list(lifecycle *lc, lifecycle_info **out, size_t *n, terr *err);

/* A paused sandbox whose snapshot directory was just put in place from
 * another host (sandbox_transfer.h): a paused record for spec (checked like
 * a create's). AGENT_OK also when the id is already held paused (a repeated
 * commit); ALREADY_EXISTS when held in another state. */
agent_code lifecycle_adopt_paused(lifecycle *lc, const runtime_spec *spec, terr *err);

/* req->timeout_sec: 0 = TORPOR_EXEC_TIMEOUT_DEFAULT_SEC, max
 * TORPOR_EXEC_TIMEOUT_MAX_SEC. */
agent_code lifecycle_exec(lifecycle *lc, const char *id, const runtime_exec_request *req,
                          runtime_exec_result *res, terr *err);
/* A chunked file request to the guest (runtime_ops.guest_call) as an
 * activity of a running sandbox, like exec/read/write. */
agent_code lifecycle_guest_call(lifecycle *lc, const char *id, const char *what, uint8_t req_type,
                                const void *payload, size_t len, uint8_t resp_type, int timeout_ms,
                                uint8_t **resp, size_t *resp_len, terr *err);
agent_code lifecycle_read_file(lifecycle *lc, const char *id, const char *path, uint8_t **data,
                               size_t *len, terr *err);
agent_code lifecycle_write_file(lifecycle *lc, const char *id, const char *path,
                                const uint8_t *data, size_t len, unsigned mode, terr *err);

/* The reaper's side (claim, re-check, auto-pause, journal append, dead-VM
 * destroy) lives in autopause.h and vm_death.h, on the same table. */

#endif
