/* reconciler: brings each host's rows in the DB in line with its agent.
 *
 * Contract: a background thread that, every interval, for each host in the
 * hosts table and only while holding that host's PostgreSQL advisory lock
 * (so one replica reconciles a host at a time):
 *   0. probes the agent with GetHostInfo (deadline AGENT_DEADLINE_PROBE_MS)
 *      and records the answer in the hosts table (last_seen, capacity,
 *      state ready unless draining) or the failure (failures + 1; from
 *      DB_HOST_UNREACHABLE_FAILURES consecutive ones on the host reads
 *      unreachable); a failed probe ends the host's pass;
 *   1. calls ListSandboxes, acknowledging the auto-pause notices recorded
 *      (committed) by the previous pass, and checks the agent's identity
 *      (ListSandboxesResponse.agent_id) against hosts.agent_id: the first
 *      one seen is recorded; a different one is logged (error,
 *      event=agent_identity_mismatch, every pass) and NOTHING is changed,
 *      acknowledged or destroyed for the host until the address points at
 *      its agent again or `torpor-cp hosts reset-identity` clears the record;
 *   2. in ONE transaction, applies reconciler_decide to the host's rows in
 *      pending/running/pausing/paused/resuming, and finds the agent's
 *      orphans (sandboxes whose row ON THIS HOST is stopped or error; a
 *      sandbox without such a row belongs to someone else and is never
 *      touched; one whose row names another host with another agent and
 *      is not moving is a leftover of a move, and is destroyed on the
 *      second pass that sees it, or once its row is older than the grace);
 *   3. only after COMMIT, acknowledges the auto-paused ids whose rows are
 *      settled (paused, stopped, error, gone, or running on the agent) with
 *      a second ListSandboxes, then destroys the orphans (DestroySandbox,
 *      logged event=orphan_destroyed).
 * A paused row whose sandbox the agent no longer holds becomes stopped
 * (nothing could ever resume it) only when two consecutive successful
 * passes agree (the host's "suspects"), so one odd answer changes nothing.
 * An agent sandbox under a stopped/error row of the host is destroyed once
 * that row is older than the grace period, or on the second pass.
 * An unreachable agent or a failed DB write changes, acknowledges and
 * destroys nothing; unacknowledged ids are simply reported again next time.
 * The grace period (--transition-grace) must exceed the longest agent call
 * deadline (AGENT_DEADLINE_TRANSITION_MAX_MS) plus a margin, so the reconciler never
 * settles a pausing/resuming row while a request thread still waits for
 * the agent; cp_config defaults it to RECONCILER_GRACE_DEFAULT_SEC.
 * A row counts as newer than the agent's answer when its last_updated is
 * at or after the database's clock read just before ListSandboxes is sent
 * (one clock: the database's). Rows are read without row locks; a change
 * is written only if the row's status and last_updated are still the ones
 * read (a request, a touch or another replica that wrote it meanwhile wins,
 * and the next pass decides on the new row).
 * reconciler_stop wakes the thread, waits for the pass in progress, joins. */
#ifndef TORPOR_CP_RECONCILER_H
#define TORPOR_CP_RECONCILER_H

#include <stdbool.h>

#include "agent_client.h"
#include "sandbox_model.h"
#include "terr.h"

/* Status a DB row should get given what its agent reports; returns db when
 * nothing should change. past_grace: the row has sat in a transitional state
 * (pending, pausing, resuming) longer than the grace period; for a paused
 * row: the agent's previous answer did not hold it either. */
sb_status reconciler_decide(sb_status db, agent_view view, bool auto_paused, bool past_grace);

/* For a sandbox the agent holds: row_status is its row's status on the
 * host being reconciled, -1 when it has none there. True when it must be
 * destroyed: only a stopped/error row, seen on the last pass too or older
 * than grace_sec. No row is never an orphan (it is someone else's). */
bool reconciler_is_orphan(int row_status, double row_age_sec, double grace_sec,
                          bool seen_last_pass);

/* A moving row not refreshed for this long lost its mover (sandbox_move.c
 * refreshes it while the files stream): it becomes paused again on its
 * host when the host still holds the sandbox paused. */
#define MOVE_STALE_SEC (AGENT_DEADLINE_TRANSFER_MS / 1000.0 + 30.0)

/* Largest agent call deadline plus a margin (see the contract above). */
#define RECONCILER_GRACE_DEFAULT_SEC (AGENT_DEADLINE_TRANSITION_MAX_MS / 1000 + 60)
/* The smallest grace cp_config accepts: the longest deadline plus a margin
 * for the DB writes around the call. */
#define RECONCILER_GRACE_MIN_SEC (AGENT_DEADLINE_TRANSITION_MAX_MS / 1000 + 5)

typedef struct reconciler reconciler;

typedef struct reconciler_config {
    const char *database_url;
    agent_pool *agents;
    double interval_sec;
    double grace_sec;
} reconciler_config;

int reconciler_start(const reconciler_config *cfg, reconciler **out, terr *err);
/* What this replica's reconciler last saw of host_id's agent: 1 it
 * answered ListSandboxes, 0 it did not, -1 not reconciled here yet (another
 * replica holds the host's lock, or the first pass has not run); *age_sec
 * is how long ago. Thread-safe; r may be NULL (-1). */
int reconciler_host_reach(reconciler *r, const char *host_id, double *age_sec);

void reconciler_stop(reconciler *r);

/* One pass over every host, synchronously (used by the thread; exposed for
 * tools and tests). */
int reconciler_run_once(reconciler *r, terr *err);

#endif
