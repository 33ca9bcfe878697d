/* touch_gate: which pings of a replica write last_active_at.
 *
 * Contract: the agent's inactivity timer is the truth; the row's
 * last_active_at only shows it over REST and may lag it by at most
 * TOUCH_LAG_MAX_MS. touch_gate_due says whether a ping (or any other
 * activity) at now_ms should send the UPDATE: not when this replica sent
 * one for the same sandbox less than TOUCH_GATE_MS ago. The UPDATE itself
 * writes only when the stored time is older than DB_TOUCH_COALESCE (also
 * TOUCH_GATE_MS, so concurrent replicas add no writes): while a sandbox is
 * pinged continuously, the row is rewritten at least every 2 × TOUCH_GATE_MS
 * = TOUCH_LAG_MAX_MS and at most twice a second per replica. Capacity is
 * fixed (TOUCH_GATE_SLOTS, a slot chosen by a hash of the id); a collision
 * replaces the older entry, costing at most one more UPDATE (never a skipped
 * one that was due). Thread-safe. Times are the caller's (mono_ms), so tests
 * control them. */
#ifndef TORPOR_CP_TOUCH_GATE_H
#define TORPOR_CP_TOUCH_GATE_H

#include <stdbool.h>
#include <stdint.h>

#include "terr.h"

#define TOUCH_GATE_MS 500
#define TOUCH_LAG_MAX_MS (2 * TOUCH_GATE_MS)
#define TOUCH_GATE_SLOTS 4096

typedef struct touch_gate touch_gate;

int touch_gate_new(touch_gate **out, terr *err);
void touch_gate_free(touch_gate *g);
/* True when id's UPDATE should be sent now; it then counts as sent at
 * now_ms. NULL gate: always true. */
bool touch_gate_due(touch_gate *g, const char *id, int64_t now_ms);
/* The UPDATE claimed by touch_gate_due failed: the next activity sends it. */
void touch_gate_forget(touch_gate *g, const char *id);

#endif
