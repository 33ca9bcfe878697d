#include "pause_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mono_time.h"

typedef struct pool_job {
    pause_pool_fn fn;
    void *arg;
    struct pool_job *next;
} pool_job;

struct pause_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* a job was queued, or stopping */
    pthread_cond_t idle_cv; /* a job finished; CLOCK_MONOTONIC for timed waits */
    pool_job *head, *tail;
    int queued, running;
    bool closed;   /* no more submissions */
    bool stopping; /* workers exit once the queue is empty */
    int n_threads;
    pthread_t *threads;
};

static void *worker_main(void *arg)
{
    pause_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) pthread_cond_wait(&p->work_cv, &p->mu);
        if (!p->head) break; /* stopping and nothing left */
        pool_job *job = p->head;
        p->head = job->next;
        if (!p->head) p->tail = NULL;
        p->queued--;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        job->fn(job->arg);
        free(job);
        pthread_mutex_lock(&p->mu);
        p->running--;
        pthread_cond_broadcast(&p->idle_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int pause_pool_new(int workers, pause_pool **out, terr *err)
{
    if (workers < 1 || workers > 256)
        return terr_set(err, "pause pool: workers must be 1..256, got %d", workers);
    pause_pool *p = calloc(1, sizeof *p);
    if (!p) return terr_set(err, "pause pool: out of memory");
    p->threads = calloc((size_t)workers, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return terr_set(err, "pause pool: out of memory");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    /* The shutdown deadline is a duration: a wall-clock step must not
     * shorten or stretch it. */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->idle_cv, &attr);
    pthread_condattr_destroy(&attr);
    for (int i = 0; i < workers; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc != 0) {
            terr_set(err, "pause pool: pthread_create: %s", strerror(rc));
            pause_pool_shutdown(p, 0, NULL); /* no jobs yet: joins at once */
            return -1;
        }
        p->n_threads++;
    }
    *out = p;
    return 0;
}

int pause_pool_submit(pause_pool *p, pause_pool_fn fn, void *arg, terr *err)
{
    pool_job *job = calloc(1, sizeof *job);
    if (!job) return terr_set(err, "pause pool: out of memory");
    job->fn = fn;
    job->arg = arg;
    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        free(job);
        return terr_set(err, "pause pool: shutting down");
    }
    if (p->tail) p->tail->next = job;
    else p->head = job;
    p->tail = job;
    p->queued++;
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int pause_pool_pending(pause_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->queued + p->running;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int pause_pool_shutdown(pause_pool *p, int timeout_ms, terr *err)
{
    struct timespec deadline = mono_deadline(timeout_ms);
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    bool timed_out = false;
    while ((p->queued > 0 || p->running > 0) && !timed_out)
        timed_out = pthread_cond_timedwait(&p->idle_cv, &p->mu, &deadline) == ETIMEDOUT &&
                    (p->queued > 0 || p->running > 0);
    p->stopping = true;
    pthread_cond_broadcast(&p->work_cv);
    int left = p->queued + p->running;
    pthread_mutex_unlock(&p->mu);
    if (timed_out) {
        for (int i = 0; i < p->n_threads; i++) pthread_detach(p->threads[i]);
        return terr_set(err, "pause pool: %d job(s) still running after %d ms", left, timeout_ms);
    }
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->idle_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
    return 0;
}
