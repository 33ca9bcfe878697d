#include "reaper.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent_metrics.h"
#include "autopause.h"
#include "log.h"
#include "mono_time.h"
#include "pause_pool.h"
#include "vm_death.h"

struct reaper {
    reaper_config cfg;
    pause_pool *pool;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* wakes the thread on stop */
    bool stop;
    bool started;
    pthread_t thread;
};

typedef struct reaper_job {
    lifecycle *lc;
    bool destroy_dead; /* else auto-pause */
    char id[RUNTIME_ID_MAX];
} reaper_job;

static void run_job(void *arg)
{
    reaper_job *job = arg;
    if (job->destroy_dead) vm_death_destroy_claimed(job->lc, job->id);
    else autopause_run(job->lc, job->id);
    free(job);
}

int reaper_new(const reaper_config *cfg, reaper **out, terr *err)
{
    if (!cfg->lc) return terr_set(err, "reaper: lifecycle is required");
    if (cfg->interval_ms <= 0) return terr_set(err, "reaper: interval must be > 0 ms");
    reaper *r = calloc(1, sizeof *r);
    if (!r) return terr_set(err, "reaper: out of memory");
    r->cfg = *cfg;
    if (pause_pool_new(cfg->pause_workers, &r->pool, err) != 0) {
        free(r);
        return -1;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &attr);
    pthread_condattr_destroy(&attr);
    *out = r;
    return 0;
}

/* Claims id with claim() and queues its job; a failed submit (shutdown)
 * cannot happen while the reaper runs, but if it does the claim must not
 * leak: run the job inline so the lifecycle lock is released. */
static void dispatch(reaper *r, const char *id, bool destroy_dead, const runtime_vm *dead_vm)
{
    reaper_job *job = calloc(1, sizeof *job);
    if (!job) {
        log_error("event=reaper_oom sandbox_id=%s", id);
        return;
    }
    job->lc = r->cfg.lc;
    job->destroy_dead = destroy_dead;
    snprintf(job->id, sizeof job->id, "%s", id);
    bool claimed =
        destroy_dead ? vm_death_claim(r->cfg.lc, id, dead_vm) : autopause_claim(r->cfg.lc, id);
    if (!claimed) {
        log_debug("event=reaper_skip sandbox_id=%s reason=%s", id,
                  destroy_dead ? "busy_or_gone" : "active_again_or_busy");
        free(job);
        return;
    }
    log_info("event=%s sandbox_id=%s", destroy_dead ? "vm_died" : "auto_pause_start", id);
    terr err;
    if (pause_pool_submit(r->pool, run_job, job, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=reaper_submit_failed sandbox_id=%s error=\"%s\" action=run_inline", id,
                 log_quote(err.msg, q, sizeof q));
        run_job(job);
    }
}

void reaper_tick(reaper *r)
{
    terr err;
    char **ids = NULL;
    size_t n = 0;
    if (autopause_collect(r->cfg.lc, &ids, &n, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=reaper_scan_failed error=\"%s\"", log_quote(err.msg, q, sizeof q));
    } else {
        for (size_t i = 0; i < n; i++) {
            if (r->cfg.before_claim) r->cfg.before_claim(r->cfg.hook_ctx, ids[i]);
            dispatch(r, ids[i], false, NULL);
        }
        journal_ids_free(ids, n);
    }
    vm_death *dead = NULL;
    if (vm_death_collect(r->cfg.lc, &dead, &n, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=reaper_scan_failed error=\"%s\"", log_quote(err.msg, q, sizeof q));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (r->cfg.before_claim_dead) r->cfg.before_claim_dead(r->cfg.hook_ctx, dead[i].id);
        dispatch(r, dead[i].id, true, dead[i].vm);
    }
    vm_death_free(dead, n);
}

static void *reaper_main(void *arg)
{
    reaper *r = arg;
    int64_t next = mono_ms();
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        next += r->cfg.interval_ms;
        struct timespec until = mono_deadline(next - mono_ms());
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) != ETIMEDOUT) {}
        if (r->stop) break;
        pthread_mutex_unlock(&r->mu);
        agent_metrics_reaper_tick((double)(mono_ms() - next) / 1000.0);
        reaper_tick(r);
        pthread_mutex_lock(&r->mu);
        /* After a long tick, do not fire a burst of catch-up ticks. */
        int64_t now = mono_ms();
        if (now > next) next = now;
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int reaper_start(reaper *r, terr *err)
{
    if (r->started) return terr_set(err, "reaper: already started");
    int rc = pthread_create(&r->thread, NULL, reaper_main, r);
    if (rc != 0) return terr_set(err, "reaper: pthread_create: %s", strerror(rc));
    r->started = true;
    log_info("event=reaper_started interval_ms=%d pause_workers=%d", r->cfg.interval_ms,
             r->cfg.pause_workers);
    return 0;
}

int reaper_pending(reaper *r) { return pause_pool_pending(r->pool); }

void reaper_halt(reaper *r)
{
    if (!r->started) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    r->started = false;
}

int reaper_stop(reaper *r, int drain_timeout_ms, terr *err)
{
    reaper_halt(r);
    int pending = pause_pool_pending(r->pool);
    if (pending > 0)
        log_info("event=reaper_draining jobs=%d timeout_ms=%d", pending, drain_timeout_ms);
    int rc = pause_pool_shutdown(r->pool, drain_timeout_ms, err);
    if (rc != 0) return -1; /* jobs still reference the lifecycle: leak r too */
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return 0;
}
