/* team_limit: how many long calls (create, exec, pause, resume, files)
 * each team has in flight on this replica, and the cap on it.
 *
 * Contract: team_limit_enter counts one more call for team and returns true
 * while the team is under max; at the cap it counts nothing and returns
 * false (the API answers 429 too_many_requests). Every true is balanced by
 * one team_limit_leave. Thread-safe. A team with no call in flight holds
 * no memory. The count is per replica: N replicas admit up to N x max. */
#ifndef TORPOR_CP_TEAM_LIMIT_H
#define TORPOR_CP_TEAM_LIMIT_H

#include <stdbool.h>

#include "terr.h"

typedef struct team_limit team_limit;

int team_limit_new(int max, team_limit **out, terr *err);
void team_limit_free(team_limit *t);
bool team_limit_enter(team_limit *t, const char *team);
void team_limit_leave(team_limit *t, const char *team);
/* Like team_limit_enter, with the slot recorded under holder (a unique
 * pointer, e.g. the HTTP request), so that whoever sees the holder end can
 * give it back with team_limit_release; a holder has at most one slot. */
bool team_limit_enter_as(team_limit *t, const char *team, const void *holder);
bool team_limit_holds(team_limit *t, const void *holder);
/* Gives back holder's slot; a no-op when it holds none. */
void team_limit_release(team_limit *t, const void *holder);
/* Calls in flight for team (tests, logs). */
int team_limit_count(team_limit *t, const char *team);

#endif
