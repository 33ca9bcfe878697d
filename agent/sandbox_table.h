/* sandbox_table: the agent's in-memory set of sandboxes, id -> record.
 *
 * Contract: one mutex (the table lock) guards the set and every mutable
 * field of every record. It is held only for short bookkeeping, never across
 * a driver call, so Ping/List never wait behind a slow pause.
 *
 * The per-sandbox *lifecycle lock* serialises create/pause/resume/destroy of
 * one sandbox. It is a busy flag + condition variable on the table lock
 * rather than a pthread mutex because the reaper takes it on its own thread
 * and a pause worker releases it on another. Taking it and checking the
 * status happen in one table-lock critical section, which is what makes the
 * reaper's "re-check then claim" atomic with respect to Ping.
 *
 * Records are reference-counted (under the table lock) so a caller that
 * waits for a lifecycle lock keeps valid memory even if the sandbox is
 * destroyed meanwhile; such a caller sees in_table == false and answers
 * NOT_FOUND. The record owns one reference of its runtime_vm (vm is NULL
 * while paused). */
#ifndef TORPOR_AGENT_SANDBOX_TABLE_H
#define TORPOR_AGENT_SANDBOX_TABLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime.h"
#include "terr.h"

typedef enum {
    SANDBOX_CREATING = 0, /* internal: driver create in progress */
    SANDBOX_RUNNING,
    SANDBOX_PAUSING,
    SANDBOX_PAUSED,
    SANDBOX_RESUMING,
    SANDBOX_DESTROYING, /* internal: driver destroy in progress */
    SANDBOX_RECOVERING, /* a live VM the restarted agent is still re-attaching */
} sandbox_status;

/* "running", "pausing", "paused", "resuming", "creating", "destroying",
 * "recovering". */
const char *sandbox_status_name(sandbox_status s);

typedef struct sandbox {
    char id[RUNTIME_ID_MAX]; /* immutable */
    /* All below: guarded by the table lock. */
    runtime_spec spec; /* spec.timeout_sec is the live TTL */
    sandbox_status status;
    int64_t last_active_ms;    /* agent_clock ms */
    int active_execs;          /* exec/file ops in flight: never auto-paused */
    int pause_failures;        /* auto-pauses failed in a row (VM alive) */
    int64_t pause_retry_at_ms; /* agent_clock ms: no auto-pause before */
    runtime_vm *vm;            /* NULL while paused */
    bool lifecycle_busy;
    bool in_table;
    int refs;
    pthread_cond_t lifecycle_cv;
} sandbox;

typedef struct sandbox_table sandbox_table;

int sandbox_table_new(sandbox_table **out, terr *err);
/* Drops every record and its vm reference (VMs keep running). */
void sandbox_table_free(sandbox_table *t);

void sandbox_table_lock(sandbox_table *t);
void sandbox_table_unlock(sandbox_table *t);

/* --- with the table lock held --- */
sandbox *sandbox_table_find_locked(sandbox_table *t, const char *id);
/* Creates a record for spec->sandbox_id with the given status, in the table,
 * one reference owned by the caller. NULL with err set when the id is
 * already held ("already exists") or memory runs out. */
sandbox *sandbox_table_insert_locked(sandbox_table *t, const runtime_spec *spec,
                                     sandbox_status status, terr *err);
void sandbox_table_remove_locked(sandbox_table *t, sandbox *sb);
size_t sandbox_table_count_locked(const sandbox_table *t);
sandbox *sandbox_table_at_locked(const sandbox_table *t, size_t i);
void sandbox_ref_locked(sandbox *sb);
/* Drops a reference; frees the record (and its vm ref) at zero. */
void sandbox_unref_locked(sandbox_table *t, sandbox *sb);

/* Lifecycle lock, with the table lock held. acquire waits (releasing the
 * table lock meanwhile); the caller must re-check sb->in_table after it. */
void sandbox_lifecycle_acquire_locked(sandbox_table *t, sandbox *sb);
bool sandbox_lifecycle_try_locked(sandbox *sb);
void sandbox_lifecycle_release_locked(sandbox *sb);

/* --- no lock needed --- */
/* Takes the table lock: find + ref. NULL when unknown. */
sandbox *sandbox_table_get(sandbox_table *t, const char *id);

#endif
