/* ping_route: where a replica last reached a sandbox with a ping.
 *
 * Contract: after a ping that read the row (team, status running) and its
 * host from the database and that the agent answered OK, the host is kept
 * for PING_ROUTE_TTL_MS under (team, sandbox id). A ping within that time
 * goes straight to that agent, skipping the row read: the agent is the
 * authority on whether it runs the sandbox (it refuses a ping for one that
 * is not running there), and any answer but OK drops the entry and the ping
 * is done again the full way (row, host status, agent), so every refusal the
 * REST API gives is the one it gave without the cache. What the cache can
 * delay, by at most PING_ROUTE_TTL_MS: noticing that the host reads
 * `unreachable` (the ping then waits for the agent's short deadline before
 * the full way answers 503; an agent that did not answer through the route
 * is not asked a second time on the full way). Fixed capacity (PING_ROUTE_SLOTS, a slot by a
 * hash of the id; a collision costs one row read). Thread-safe. Times are
 * the caller's (mono_ms), so tests control them. */
#ifndef TORPOR_CP_PING_ROUTE_H
#define TORPOR_CP_PING_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "terr.h"

#define PING_ROUTE_TTL_MS 1000
#define PING_ROUTE_SLOTS 1024

typedef struct ping_route ping_route;

int ping_route_new(ping_route **out, terr *err);
void ping_route_free(ping_route *p);
/* True (and *host filled) when id of team_id was reached through host less
 * than PING_ROUTE_TTL_MS before now_ms. NULL: false. */
bool ping_route_get(ping_route *p, const char *team_id, const char *id, int64_t now_ms,
                    db_host *host);
void ping_route_put(ping_route *p, const char *team_id, const char *id, int64_t now_ms,
                    const db_host *host);
void ping_route_forget(ping_route *p, const char *id);

#endif
