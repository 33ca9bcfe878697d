/* reconciler: brings each host's rows in the DB in line with its agent.
 *
 * Contract: a background thread that, every interval, for each host in the
 * hosts table and only while holding that host's PostgreSQL advisory lock
 * (so one replica reconciles a host at a time):
 *   1. calls ListSandboxes, acknowledging the auto-pause notices recorded
 *      (committed) by the previous pass;
 *   2. in ONE transaction, applies reconciler_decide to the host's rows in
 *      pending/running/pausing/resuming;
 *   3. only after COMMIT, queues for acknowledgement the auto-paused ids whose
 *      rows are settled (paused, stopped, error, gone, or running on the
 *      agent), and sends that ack right away with a second ListSandboxes.
 * An unreachable agent or a failed DB write changes and acknowledges nothing;
 * unacknowledged ids are simply reported again by the agent next time.
 * reconciler_stop wakes the thread, waits for the pass in progress, joins. */
#ifndef TORPOR_CP_RECONCILER_H
#define TORPOR_CP_RECONCILER_H

#include <stdbool.h>

#include "agent_client.h"
#include "sandbox_model.h"
#include "terr.h"

/* Status a DB row should get given what its agent reports; returns db when
 * nothing should change. past_grace: the row has sat in a transitional state
 * (pending, pausing, resuming) longer than the grace period. */
sb_status reconciler_decide(sb_status db, agent_view view, bool auto_paused, bool past_grace);

typedef struct reconciler reconciler;

typedef struct reconciler_config {
    const char *database_url;
    agent_pool *agents;
    double interval_sec;
    double grace_sec;
} reconciler_config;

int reconciler_start(const reconciler_config *cfg, reconciler **out, terr *err);
void reconciler_stop(reconciler *r);

/* One pass over every host, synchronously (used by the thread; exposed for
 * tools and tests). */
int reconciler_run_once(reconciler *r, terr *err);

#endif
