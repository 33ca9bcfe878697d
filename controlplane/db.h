/* db: the control plane's PostgreSQL connection and every query it runs.
 *
 * Contract: one db_conn per thread (libpq connections are not shared). Each
 * call first re-establishes a broken connection (PQreset), and a plain read
 * whose connection broke under it is retried once, so a restarted
 * PostgreSQL costs at most the writes in flight, not the process. Every function
 * returns 0 or -1 with a message; "not found" is reported through a bool,
 * never as an error. Statements run in autocommit unless the caller opened a
 * transaction with db_begin. All SQL of the control plane lives behind this
 * header and db_templates.h (apart from migration files, run by migrate.c):
 * db.c (connection, reconnect, running a statement, transactions, advisory
 * locks, clock), db_keys.c (teams, API keys, quotas), db_hosts.c (hosts,
 * scheduler pick), db_sandboxes.c (sandbox rows, transitions, pass rows,
 * counts); what those files share is in the private db_internal.h. */
#ifndef TORPOR_CP_DB_H
#define TORPOR_CP_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox_model.h"
#include "terr.h"

typedef struct db_conn db_conn;

int db_open(const char *conninfo, db_conn **out, terr *err);
void db_close(db_conn *db);
/* The raw connection, for migrate.c (which runs whole SQL files). */
PGconn *db_pg(db_conn *db);
/* Reconnects when the connection is broken. */
int db_ensure(db_conn *db, terr *err);
/* True when the last call failed because PostgreSQL could not be reached
 * (down, restarting, connection lost), not because of the statement: the
 * REST layer answers 503 then. A read (SELECT) outside a transaction whose
 * connection broke is retried once on a fresh connection before failing. */
bool db_unavailable(const db_conn *db);
/* Failed statements and connection attempts (db_open, reconnects) of this
 * process so far, on every connection; thread-safe. cp_metrics exports it. */
uint64_t db_error_count(void);
/* SELECT 1 (readiness). */
int db_ping(db_conn *db, terr *err);
/* The database server's clock, microseconds since the epoch. */
int db_clock_us(db_conn *db, int64_t *out, terr *err);
/* Runs one statement without parameters or results (BEGIN, COMMIT, DDL...). */
int db_exec_simple(db_conn *db, const char *sql, terr *err);

int db_begin(db_conn *db, terr *err);
int db_commit(db_conn *db, terr *err);
void db_rollback(db_conn *db);

/* Session-level advisory locks keyed by text (hashed by PostgreSQL). */
int db_try_advisory_lock(db_conn *db, const char *key, bool *acquired, terr *err);
int db_advisory_lock(db_conn *db, const char *key, terr *err);
int db_advisory_unlock(db_conn *db, const char *key, terr *err);

/* ---- teams and API keys */
int db_team_ensure(db_conn *db, const char *name, char team_id[64], terr *err);
int db_api_key_insert(db_conn *db, const char *team_id, const char *key_hash,
                      const char *key_prefix, terr *err);
/* The team of a key that is not revoked; key_id gets the key's id and
 * *stale whether its last_used_at is unset or older than a minute. */
int db_api_key_team(db_conn *db, const char *key_hash, char team_id[64], char key_id[64],
                    bool *stale, bool *found, terr *err);
/* The same, plus *admin: whether the key's role is admin. */
int db_api_key_team_role(db_conn *db, const char *key_hash, char team_id[64], char key_id[64],
                         bool *stale, bool *admin, bool *found, terr *err);
/* Inserts a key with role admin (true) or member. */
int db_api_key_insert_role(db_conn *db, const char *team_id, const char *key_hash,
                           const char *key_prefix, bool admin, terr *err);
/* last_used_at = now() unless it was set less than a minute ago (so
 * concurrent requests and replicas write it at most about once a minute). */
int db_api_key_touch(db_conn *db, const char *key_id, terr *err);

typedef struct db_api_key {
    char id[64];
    char prefix[32];
    char created_at[40]; /* ISO 8601 UTC, "" if none */
    char last_used_at[40];
    char revoked_at[40];
} db_api_key;

/* The keys of the team named team_name, oldest first; *out malloc'd;
 * *team_found false when there is no such team. */
int db_api_key_list(db_conn *db, const char *team_name, db_api_key **out, size_t *n,
                    bool *team_found, terr *err);
/* Revokes the one unrevoked key whose id is key_id (when non-NULL) or whose
 * stored prefix is prefix. *matched = how many unrevoked keys matched (only
 * exactly 1 is revoked, and out gets it). */
int db_api_key_revoke(db_conn *db, const char *key_id, const char *prefix, db_api_key *out,
                      int *matched, terr *err);

/* ---- hosts */
typedef struct db_sandbox_count {
    char host_id[64];
    char status[16];
    long long count;
} db_sandbox_count;

/* Rows per (host, status) for every registered host and every status (0
 * included), at most max_rows; *out malloc'd (metrics). */
int db_sandbox_counts(db_conn *db, size_t max_rows, db_sandbox_count **out, size_t *n, terr *err);

/* Consecutive failed probes after which a host reads unreachable. */
#define DB_HOST_UNREACHABLE_FAILURES 2

typedef struct db_host {
    char id[64];
    char address[256];
    char agent_id[64]; /* identity of the agent recorded for it; "" = none yet */
    /* "ready", "unreachable" or "draining" as stored; status is what it
     * reads as: "unreachable" once failures >= DB_HOST_UNREACHABLE_FAILURES
     * (also for a draining host), else state. */
    char state[16];
    char status[16];
    double last_seen_age_sec; /* now() - last_seen on the DB clock; -1 = never */
    int failures;             /* consecutive failed probes */
    long long max_memory_mb;  /* operator cap; -1 = none (the agent's RAM) */
    long long memory_total_mb, memory_reserved_mb, disk_free_mb; /* as last reported */
    long long memory_capacity_mb; /* the agent's admission limit as reported; 0 = unknown/none */
    int vcpus;
    long long sandboxes;      /* rows not stopped/error */
    long long memory_used_mb; /* memory_mb of its rows pending/running/pausing/resuming */
} db_host;

/* What one GetHostInfo answer reported. */
typedef struct db_host_info {
    long long memory_total_mb, memory_reserved_mb, disk_free_mb;
    long long memory_capacity_mb; /* 0 = no limit reported */
    int vcpus;
    const char *const *templates;
    size_t n_templates;
} db_host_info;

int db_host_upsert(db_conn *db, const char *id, const char *address, terr *err);
/* One host; its sandboxes and memory_used_mb are not counted (0). */
int db_host_get(db_conn *db, const char *id, db_host *out, bool *found, terr *err);
/* All hosts with their counts, ordered by id; *out is malloc'd. */
int db_host_list(db_conn *db, db_host **out, size_t *n, terr *err);
/* Records agent_id as the host's agent identity when none is recorded yet
 * (agent_id "" records nothing) and returns, in recorded, the identity
 * recorded now; *found false when there is no such host. */
int db_host_claim_identity(db_conn *db, const char *id, const char *agent_id, char recorded[64],
                           bool *found, terr *err);
/* Clears the host's recorded identity (an operator replaced its agent on
 * purpose); the reconciler records the next one it sees. */
int db_host_reset_identity(db_conn *db, const char *id, bool *found, terr *err);
/* Free disk a host must keep beyond a new sandbox's RAM file (what its
 * pause writes) to be chosen. */
#define DB_HOST_DISK_MARGIN_MB 512

/* The scheduler: among hosts that read ready (not draining, not
 * unreachable) and are not in skip, whose memory cap (max_memory_mb, else the
 * agent's reported admission limit memory_capacity_mb, else the
 * reported RAM; unknown = no limit) minus memory_used_mb holds memory_mb,
 * whose reported free disk holds memory_mb + DB_HOST_DISK_MARGIN_MB (0 =
 * not reported, allowed) and
 * whose reported templates include template_name (none reported = unknown,
 * allowed; template_name NULL = any), the one with the fewest sandboxes not stopped/error (ties: by
 * id). *found false when there is none. */
int db_host_pick(db_conn *db, int memory_mb, const char *template_name, const char *const *skip,
                 size_t n_skip, db_host *out, bool *found, terr *err);
/* The same among hosts that hold custom template tpl_id (its image name)
 * with exactly digest: their template_hosts row is ready with that digest
 * (copies included, docs/templates.md "Copies"). The agent-reported
 * template names are not consulted. */
int db_host_pick_template(db_conn *db, int memory_mb, const char *tpl_id, const char *digest,
                          const char *const *skip, size_t n_skip, db_host *out, bool *found,
                          terr *err);
/* An answer from the host's agent: last_seen = now(), failures = 0, the
 * info (NULL keeps the old), state ready unless draining. old_status and
 * new_status (16 bytes each) get the status before and after. */
int db_host_record_answer(db_conn *db, const char *id, const db_host_info *info, char *old_status,
                          char *new_status, terr *err);
/* A failed probe: failures + 1 (unreachable from DB_HOST_UNREACHABLE_FAILURES
 * on), unless some replica heard the agent within the last fresh_sec
 * seconds (last_seen): with several control planes, one that cannot reach
 * a host (its own network or TLS settings) must not mark it unreachable for
 * the others while they still talk to it. fresh_sec 0: every failure counts.
 * old_status/new_status as above. */
int db_host_record_failure(db_conn *db, const char *id, double fresh_sec, char *old_status,
                           char *new_status, terr *err);
/* Sets state (drain: "draining"; undrain: "ready", only from draining).
 * *found false when no such host (or, for ready, it was not draining). */
int db_host_set_state(db_conn *db, const char *id, const char *state, bool *found, terr *err);
/* Sets (memory_mb >= 0) or clears (-1) the host's memory cap. */
int db_host_set_max_memory(db_conn *db, const char *id, long long memory_mb, bool *found,
                           terr *err);

/* ---- sandboxes */
/* Inserts a pending row from in (id, team_id, host_id, template, sizes,
 * timeout) and returns the stored row. */
int db_sandbox_insert(db_conn *db, const sandbox_row *in, sandbox_row *out, terr *err);
/* The create-time env of sandbox id as JSON object text (malloc'd, "{}"
 * when none). */
int db_sandbox_env(db_conn *db, const char *id, char **env_json, terr *err);
/* The same, atomically with the team's quota (teams.max_sandboxes,
 * max_memory_mb over its sandboxes not stopped/error; a per-team advisory
 * lock serialises concurrent creates of one team). Over quota: returns 0,
 * *over = true, msg says which limit, nothing inserted. */
int db_sandbox_insert_within_quota(db_conn *db, const sandbox_row *in, sandbox_row *out, bool *over,
                                   char *msg, size_t msg_size, terr *err);

/* ---- teams */
/* Sets the quota of the team named name; -1 = unlimited. *found = false
 * when no such team. */
int db_team_set_quota(db_conn *db, const char *name, long long max_sandboxes,
                      long long max_memory_mb, bool *found, terr *err);
/* team_id NULL = any team (reconciler). */
int db_sandbox_get(db_conn *db, const char *team_id, const char *id, sandbox_row *out, bool *found,
                   terr *err);
/* db_sandbox_get and its host (as db_host_get) in one query. */
int db_sandbox_get_with_host(db_conn *db, const char *team_id, const char *id, sandbox_row *out,
                             db_host *host, bool *found, terr *err);
/* The team's rows whose status is in mask, newest first; *out malloc'd. */
int db_sandbox_list(db_conn *db, const char *team_id, unsigned status_mask, sandbox_row **out,
                    size_t *n, terr *err);

#define DB_SET_STARTED 1u /* started_at = now() */
#define DB_SET_ACTIVE 2u  /* last_active_at = now() */

/* Conditional status change: only when the current status is in from_mask
 * (the compare-and-set that keeps concurrent requests and the reconciler
 * apart). *changed tells whether it happened; *out (if non-NULL and changed)
 * gets the new row. error_message NULL keeps the old one. */
int db_sandbox_transition(db_conn *db, const char *id, unsigned from_mask, sb_status to,
                          unsigned flags, const char *error_message, sandbox_row *out,
                          bool *changed, terr *err);
/* Removes a row that never existed for the user (a create the agent refused
 * as invalid input), only while it is still pending. */
int db_sandbox_delete_pending(db_conn *db, const char *id, terr *err);
/* last_active_at = now() when running, unless it was set less than
 * DB_TOUCH_COALESCE ago: busy sandboxes cost no write (and no commit) per
 * ping, also with several replicas; the agent's timer is the truth, and
 * touch_gate.h has the bound on the lag of last_active_at over REST.
 * *changed: whether it was written. */
#define DB_TOUCH_COALESCE "0.5 seconds" /* TOUCH_GATE_MS */
int db_sandbox_touch(db_conn *db, const char *id, bool *changed, terr *err);
/* timeout_sec = t when the status is in from_mask. */
int db_sandbox_set_timeout(db_conn *db, const char *id, unsigned from_mask, int timeout_sec,
                           sandbox_row *out, bool *changed, terr *err);
/* The team of sandbox id when token_hash is its access token's hash. */
int db_sandbox_token_team(db_conn *db, const char *id, const char *token_hash, char team_id[64],
                          bool *found, terr *err);
/* network (canonical JSON) when the status is in from_mask. */
int db_sandbox_set_network(db_conn *db, const char *id, unsigned from_mask, const char *network,
                           sandbox_row *out, bool *changed, terr *err);

/* Rows of host_id (any team) whose status is in mask, oldest first; *out malloc'd. */
int db_sandbox_list_host(db_conn *db, const char *host_id, unsigned status_mask, sandbox_row **out,
                         size_t *n, terr *err);
/* Removes host id and its stopped/error rows, only when no other row names
 * it: *live gets how many do (then nothing is removed); *found false when
 * there is no such host. */
int db_host_remove(db_conn *db, const char *id, long long *live, bool *found, terr *err);

/* The move's switch: host_id = to_host and status paused, only while the
 * row is moving on from_host (one statement). */
int db_sandbox_move_switch(db_conn *db, const char *id, const char *from_host, const char *to_host,
                           sandbox_row *out, bool *changed, terr *err);
/* For ids the agent of host_id holds that have no row on host_id: whether
 * each has a row on ANOTHER host, not moving, whose host has a different
 * recorded agent identity than host_id's (foreign[i]), and that row's age. */
int db_sandbox_foreign(db_conn *db, const char *host_id, const char *const *ids, size_t n,
                       bool *foreign, double *age_sec, terr *err);

/* What the reconciler reads of each row of a host: no more, since a pass
 * reads every row of a host (a full sandbox_row is 12 KB). */
typedef struct db_pass_row {
    char id[SANDBOX_ID_MAX];
    sb_status status;
    int64_t last_updated_us; /* on the database's clock */
    double age_sec;          /* now() - last_updated */
} db_pass_row;

/* Reconciler: rows of host whose status is in mask, as they are (no lock:
 * a change is written with db_sandbox_transition_unchanged, which holds
 * only if the row is still the one read); *out malloc'd. */
int db_sandbox_rows_for_host(db_conn *db, const char *host_id, unsigned status_mask,
                             db_pass_row **out, size_t *n, terr *err);
/* db_sandbox_transition for the reconciler: only while the row's status is
 * in from_mask AND its last_updated is still last_updated_us (no request,
 * replica or touch wrote it since it was read). */
int db_sandbox_transition_unchanged(db_conn *db, const char *id, unsigned from_mask,
                                    int64_t last_updated_us, sb_status to, unsigned flags,
                                    const char *error_message, bool *changed, terr *err);
/* Status of each id (-1 when there is no such row, or, with host_id
 * non-NULL, when the row belongs to another host); statuses has n slots.
 * age_sec (NULL or n slots) gets now() - last_updated (0 for no row). */
int db_sandbox_statuses(db_conn *db, const char *host_id, const char *const *ids, size_t n,
                        int *statuses, double *age_sec, terr *err);

#endif
