/* autopause: where a sandbox idle past its timeout gets paused.
 *
 * The reaper (reaper.c) keeps time and runs the three steps below for each
 * tick; everything they decide happens here, against the lifecycle's table:
 *   1. autopause_collect: ids of running sandboxes idle for >= timeout_sec
 *      (timeout_sec > 0, no exec/file op in flight, lifecycle lock free);
 *      a snapshot, nothing is claimed yet.
 *   2. autopause_claim: under the table lock, re-checks that the sandbox is
 *      still running, idle, expired and not busy (a ping or exec that landed
 *      since the scan wins), takes its lifecycle lock (try, never waits) and
 *      moves it to pausing. Atomic against ping/exec: they take the same
 *      table lock and refuse a pausing sandbox.
 *   3. autopause_run: for a claimed sandbox, exactly once: driver pause;
 *      success -> journal append (fsync) -> paused, so that once a List can
 *      show it paused the control plane's notice is durable; failure with
 *      the VM still alive (QMP timeout, ENOSPC, EMFILE) -> back to running,
 *      event auto_pause_failed logged, no new attempt before
 *      autopause_backoff_ms(failures in a row) has passed; failure with the
 *      VM gone -> destroy (the design's fallback). Logs the outcome with
 *      sandbox_id; releases the lifecycle lock. */
#ifndef TORPOR_AGENT_AUTOPAUSE_H
#define TORPOR_AGENT_AUTOPAUSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lifecycle.h"
#include "terr.h"

#define AUTOPAUSE_RETRY_FIRST_MS 5000
#define AUTOPAUSE_RETRY_MAX_MS (5 * 60 * 1000)

/* Wait before the next auto-pause attempt after `failures` (>= 1) failed
 * ones in a row: 5 s, doubling, at most 5 min. */
int64_t autopause_backoff_ms(int failures);

/* Free *ids with journal_ids_free. */
int autopause_collect(lifecycle *lc, char ***ids, size_t *n, terr *err);
/* True = claimed: the caller must then call autopause_run exactly once. */
bool autopause_claim(lifecycle *lc, const char *id);
void autopause_run(lifecycle *lc, const char *id);

#endif
