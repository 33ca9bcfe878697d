/* lifecycle_internal: what the files of the lifecycle module share, private
 * to them (lifecycle.c: open/close and create/pause/resume/destroy;
 * lifecycle_activity.c: ping, set_timeout, get, list, exec and file ops;
 * autopause.c: the reaper's claims, auto-pause and dead-VM destroy).
 * Nothing outside those files includes it.
 *
 * Locking words as in sandbox_table.h: "table lock" guards every record
 * field, "lifecycle lock" serialises the driver calls of one sandbox. */
#ifndef TORPOR_AGENT_LIFECYCLE_INTERNAL_H
#define TORPOR_AGENT_LIFECYCLE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "admission.h"
#include "lifecycle.h"

struct lifecycle {
    runtime_driver *driver;
    journal *journal;
    const agent_clock *clock;
    sandbox_table *table;
    admission_config admission;
    bool admission_on;
    /* Recovery (lifecycle.c): counters and the announce handshake, guarded by rec_mu. */
    pthread_mutex_t rec_mu;
    pthread_cond_t rec_cv;
    bool rec_announced, rec_done, rec_failed;
    terr rec_err;
    int n_paused, n_running, n_rejected, n_gone;
    pthread_t rec_thread;
    bool rec_thread_started;
    struct agent_net *net; /* NULL: no network */
};

static inline int64_t lifecycle_now_ms(const lifecycle *lc)
{
    return agent_clock_now_ms(lc->clock);
}

/* Copies the record's spec, status and last_active into out (NULL: no-op).
 * Table lock held. */
void lifecycle_fill_info(const sandbox *sb, lifecycle_info *out);

/* err = "sandbox <id> not found"; returns AGENT_NOT_FOUND. */
agent_code lifecycle_not_found(const char *id, terr *err);
/* err = "sandbox <id> is <st>, not <want>"; returns AGENT_FAILED_PRECONDITION. */
agent_code lifecycle_wrong_state(const char *id, sandbox_status st, const char *want, terr *err);
/* Sandbox id rule (torpor_limits.h); AGENT_INVALID_ARGUMENT with err. */
agent_code lifecycle_check_id(const char *id, terr *err);
/* 0..TORPOR_TIMEOUT_SEC_MAX; AGENT_INVALID_ARGUMENT with err. */
agent_code lifecycle_check_timeout(int timeout_sec, terr *err);

/* Checks id, takes the table lock and finds the record. On AGENT_OK the
 * caller holds the table lock and must release it; on any error it does not. */
agent_code lifecycle_find_and_lock_table(lifecycle *lc, const char *id, sandbox **out, terr *err);

/* Table lock held: ends a lifecycle operation (releases the lifecycle lock
 * and the operation's record reference). */
void lifecycle_unlock_locked(lifecycle *lc, sandbox *sb);
/* The same from outside the table lock: lock table -> unlock lifecycle ->
 * unlock table. */
void lifecycle_unlock(lifecycle *lc, sandbox *sb);

/* Lifecycle lock held, status already destroying: driver destroy + removal.
 * On failure the status goes back to prev. */
int lifecycle_destroy_held(lifecycle *lc, sandbox *sb, sandbox_status prev, terr *err);

/* The journal's notice is stale once the sandbox runs again or is gone. */
void lifecycle_drop_notice(lifecycle *lc, const char *id);
/* lifecycle_net.c: a running VM re-attached after a restart gets its
 * network namespace back (net_reattach; failures only logged). */
void lifecycle_net_reattach(lifecycle *lc, const char *id, runtime_vm *vm);

#endif
