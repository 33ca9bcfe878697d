/* host_probe: the short health call that tells a live agent from a dead or
 * frozen one, and its record in the hosts table. Used by the reconciler (every
 * replica, every pass, each host) and before a create or a move is sent to a
 * host.
 *
 * Contract: host_probe gets the host's client from agents and asks
 * GetHostInfo with AGENT_DEADLINE_PROBE_MS (a frozen agent keeps its TCP
 * connection open, so only this deadline tells it from a slow one). Answered:
 * db_host_record_answer (last_seen, capacity, ready unless draining), *client
 * set, 0. Not answered: db_host_record_failure with fresh_sec (a failure
 * counts only when no replica heard the host within fresh_sec), -1 with err
 * saying why. A change of the host's status is logged (event=host_status); a
 * failed DB write is logged and does not change the return value. */
#ifndef TORPOR_CP_HOST_PROBE_H
#define TORPOR_CP_HOST_PROBE_H

#include "agent_client.h"
#include "db.h"
#include "terr.h"

int host_probe(db_conn *db, agent_pool *agents, const db_host *host, double fresh_sec,
               rpc_client **client, terr *err);

#endif
