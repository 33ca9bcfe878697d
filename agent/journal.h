/* journal: durable auto-pause notices (<state_dir>/agent/auto_paused.journal).
 *
 * Contract: the reaper appends "P <id>\n" after each successful auto-pause;
 * the control plane's acknowledgement (ListSandboxesRequest.ack_...) appends
 * "A <id>\n". Every append is fsync'd before the call returns, so a notice
 * that was reported as recorded survives a crash or SIGKILL of the agent.
 * Opening replays the file into the set of unacknowledged ids. A torn last
 * line (crash mid-append) and malformed lines are ignored; a torn tail is
 * cut off (by compaction) so the next append starts on a clean line; so is
 * the tail of a failed append (truncated at once, or, if even that fails,
 * the file is rewritten from memory before the next append). When
 * the file holds many more records than pending ids it is compacted: the
 * pending set is written to a temp file, fsync'd, renamed over the journal
 * and the directory fsync'd, so a crash at any point leaves either the old
 * or the new file. Thread-safe. */
#ifndef TORPOR_AGENT_JOURNAL_H
#define TORPOR_AGENT_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "terr.h"

typedef struct journal journal;

/* Opens (creating the file and its parent directory if needed) and replays. */
int journal_open(const char *path, journal **out, terr *err);
void journal_close(journal *j); /* NULL-safe */

/* Records that id was auto-paused (no-op if already pending). */
int journal_append_paused(journal *j, const char *id, terr *err);
/* Drops the given ids (unknown ids are ignored). */
int journal_ack(journal *j, const char *const *ids, size_t n, terr *err);
bool journal_is_pending(journal *j, const char *id);

/* A malloc'd copy of the pending ids in append order; free with
 * journal_ids_free. */
int journal_pending(journal *j, char ***ids, size_t *n, terr *err);
void journal_ids_free(char **ids, size_t n);

/* Number of records in the file (for tests of compaction). */
size_t journal_record_count(journal *j);

#endif
