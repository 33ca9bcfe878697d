/* agent_metrics: what torpor-agent exposes at GET /metrics (metrics.h,
 * process-wide registry metrics_default()).
 *
 * Contract: the record functions are cheap (one family mutex), thread-safe
 * and never fail (a failed registration drops the observation). Families:
 *   torpor_agent_operation_duration_seconds{operation,result}  histogram of
 *       create/destroy/pause/resume/exec RPCs and of auto_pause, result =
 *       ok | not_found | failed_precondition | invalid_argument |
 *       already_exists | internal
 *   torpor_agent_auto_pauses_total{result}      paused | failed (a live VM
 *       keeps running and is retried with back-off; a VM already gone is
 *       destroyed)
 *   torpor_agent_reaper_ticks_total, torpor_agent_reaper_lag_seconds (how
 *       late the last tick started against its schedule)
 * and, set at scrape time by the collector agent_metrics_watch installs:
 *   torpor_agent_sandboxes{state}       running | pausing | paused | resuming
 *   torpor_agent_pause_queue_depth      reaper jobs queued or running
 *   torpor_agent_journal_backlog        auto-pause notices not yet acknowledged
 * All ranges in seconds. */
#ifndef TORPOR_AGENT_METRICS_H
#define TORPOR_AGENT_METRICS_H

#include <stdbool.h>

#include "journal.h"
#include "lifecycle.h"
#include "reaper.h"
#include "terr.h"

void agent_metrics_operation(const char *operation, agent_code result, double seconds);
void agent_metrics_auto_pause(bool paused, double seconds);
void agent_metrics_reaper_tick(double lag_seconds);

/* Installs the scrape-time collector (lc, jnl, rp borrowed: stop the
 * metrics listener before they go away). */
int agent_metrics_watch(lifecycle *lc, journal *jnl, reaper *rp, terr *err);

#endif
