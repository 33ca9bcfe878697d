/* agent_identity: the agent's persistent random id.
 *
 * Contract: agent_identity_load reads <state_dir>/agent/agent_id, or, when
 * the file does not exist, creates it (temp file + fsync + rename + fsync of
 * the directory, so a crash leaves either no file or a whole one) with a new
 * id "ag-" + 16 lowercase hex digits (common/ids.h). The file holds the id
 * and an optional trailing newline; anything else (empty, wrong length or
 * characters, unreadable) is an error naming the path, never silently
 * replaced: a new id would make the control plane stop reconciling the host.
 * The same state dir therefore always yields the same id, and a new empty
 * state dir a new one; ListSandboxesResponse.agent_id reports it so that the
 * control plane can tell which agent answers at a host's address. */
#ifndef TORPOR_AGENT_IDENTITY_H
#define TORPOR_AGENT_IDENTITY_H

#include <stdbool.h>

#include "terr.h"

#define AGENT_ID_PREFIX "ag-"
#define AGENT_ID_HEX 16
#define AGENT_ID_LEN (sizeof AGENT_ID_PREFIX - 1 + AGENT_ID_HEX) /* without the NUL */

/* True when s is exactly "ag-" followed by 16 lowercase hex digits. */
bool agent_identity_valid(const char *s);

/* Fills out (AGENT_ID_LEN + 1 bytes) with the id, creating it on first use;
 * *created tells which (may be NULL). */
int agent_identity_load(const char *state_dir, char out[AGENT_ID_LEN + 1], bool *created,
                        terr *err);

#endif
