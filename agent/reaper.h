/* reaper: the clock and the workers of the TTL reaper of torpor-agent. What
 * a tick decides and does to a sandbox lives in autopause.c (idle ->
 * paused) and vm_death.c (VM died -> destroyed); this file keeps time,
 * dispatches claimed sandboxes to the pause pool and drains it on stop.
 *
 * Contract: every interval, one tick (reaper_tick):
 *   1. scan for running sandboxes idle for >= timeout_sec (timeout_sec > 0,
 *      no exec/file op in flight);
 *   2. for each, claim it (autopause_claim: try-lock + re-check
 *      + move to pausing, atomically against ping/exec) and hand it to the
 *      bounded pause pool; a sandbox whose lifecycle lock is busy is left
 *      for the next tick, so the tick never blocks;
 *   3. notice running sandboxes whose VM died and destroy them on the pool
 *      (the claim requires the sandbox to still hold the VM found dead).
 * A claimed sandbox stays claimed until its job ends, so it is never queued
 * or paused twice. reaper_stop never cancels a job: it stops ticking, then
 * waits for queued and running pauses to finish (bounded by a timeout). */
#ifndef TORPOR_AGENT_REAPER_H
#define TORPOR_AGENT_REAPER_H

#include "lifecycle.h"
#include "terr.h"

/* Test seam: runs on the ticking thread between the scan and the claim of
 * each expired sandbox (lets a test land a ping exactly there). */
typedef void (*reaper_hook_fn)(void *ctx, const char *sandbox_id);

typedef struct reaper_config {
    lifecycle *lc;     /* borrowed */
    int interval_ms;   /* > 0; the default is 2000 */
    int pause_workers; /* >= 1; the default is 2 */
    reaper_hook_fn before_claim;
    /* Same seam between the dead-VM scan and its claim. */
    reaper_hook_fn before_claim_dead;
    void *hook_ctx;
} reaper_config;

typedef struct reaper reaper;

/* Creates the reaper and its pause pool; does not start ticking. */
int reaper_new(const reaper_config *cfg, reaper **out, terr *err);
/* Starts the background thread that calls reaper_tick every interval. */
int reaper_start(reaper *r, terr *err);
/* One scan, on the calling thread. Jobs run on the pool. */
void reaper_tick(reaper *r);
/* Jobs queued or running. */
int reaper_pending(reaper *r);
/* Stops the ticking thread (no new claims); queued and running jobs go on.
 * Idempotent. Shutdown calls it before it stops the RPC server. */
void reaper_halt(reaper *r);
/* Stops the thread (if still started), lets every queued and running job finish
 * within drain_timeout_ms, frees. Returns -1 with err set on timeout (the
 * remaining jobs keep running detached; exit the process). */
int reaper_stop(reaper *r, int drain_timeout_ms, terr *err);

#endif
