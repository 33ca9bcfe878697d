/* pause_pool: a bounded pool of worker threads for reaper work (auto-pauses
 * and destroys of dead VMs).
 *
 * Contract: at most `workers` jobs run at once; further jobs wait in a FIFO
 * queue, so one slow pause never delays the others beyond the pool's width.
 * The pool does not de-duplicate: the reaper only submits a sandbox it has
 * claimed (status pausing + lifecycle lock), which cannot be claimed twice.
 * Jobs are never cancelled: shutdown stops new submissions and waits for
 * queued and running jobs to finish, up to a deadline. */
#ifndef TORPOR_AGENT_PAUSE_POOL_H
#define TORPOR_AGENT_PAUSE_POOL_H

#include "terr.h"

typedef struct pause_pool pause_pool;
typedef void (*pause_pool_fn)(void *arg);

int pause_pool_new(int workers, pause_pool **out, terr *err);
/* Queues fn(arg). Fails (the job is not run) after shutdown began. */
int pause_pool_submit(pause_pool *p, pause_pool_fn fn, void *arg, terr *err);
/* Jobs queued or running right now. */
int pause_pool_pending(pause_pool *p);
/* Stops submissions, waits up to timeout_ms for every job to finish, joins
 * the workers and frees the pool: returns 0. On timeout returns -1 with err
 * set and leaves the pool allocated (its workers are still running jobs and
 * are detached); the caller is expected to exit the process. */
int pause_pool_shutdown(pause_pool *p, int timeout_ms, terr *err);

#endif
