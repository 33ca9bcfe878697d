/* guest_exec: run one EXEC request inside the guest.
 *
 * Contract: guest_exec_run forks a child in its own session/process group,
 * feeds it req->stdin_data, collects stdout and stderr (binary-safe, each
 * capped at GP_EXEC_OUTPUT_CAP: past the cap it keeps draining and sets the
 * stream's truncated flag) and waits for it. With no args the command runs as
 * `/bin/sh -c cmd`; with args cmd is executed directly (PATH lookup in the
 * merged environment). env entries ("K=V") override the guest's environment.
 * A positive timeout_sec kills the whole process group at the deadline and
 * reports exit_code -1 + timed_out. When the child exits normally its
 * background children are left running; the call returns once the child has
 * exited and its pipes are closed (or GUEST_EXEC_DRAIN_MS after the exit, for
 * background children that keep them open: a detached thread then reads and
 * discards what they write until they close the pipes, so `nohup cmd &`
 * without redirection keeps running instead of dying of EPIPE).
 * Returns 0 with *res filled (res->out/err malloc'd; free with
 * gp_exec_result_free), or -1 with err set when the command could not be
 * started at all (pipe/fork failure). A missing program is not an error:
 * it yields exit code 127 and a message on stderr, like a shell.
 * Thread-safe: one call per thread, many at once. */
#ifndef TORPOR_GUEST_EXEC_H
#define TORPOR_GUEST_EXEC_H

#include "guest_protocol.h"

#define GUEST_EXEC_DRAIN_MS 100

int guest_exec_run(const gp_exec_req *req, gp_exec_result *res, terr *err);

#endif
