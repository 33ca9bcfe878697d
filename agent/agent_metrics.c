#include "agent_metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static metric *op_seconds, *auto_pauses, *ticks, *lag, *sandboxes, *queue_depth, *backlog;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    metrics_registry *r = metrics_default();
    op_seconds =
        metrics_histogram(r, "torpor_agent_operation_duration_seconds",
                          "Duration of sandbox operations on this host (RPCs and auto-pauses).", 2,
                          (const char *[]){"operation", "result"}, metrics_buckets_seconds,
                          metrics_buckets_seconds_n);
    auto_pauses = metrics_counter(r, "torpor_agent_auto_pauses_total",
                                  "Auto-pauses of idle sandboxes; a failed one leaves a live VM running (retried with back-off) and destroys only a VM that is gone.",
                                  1, (const char *[]){"result"});
    ticks =
        metrics_counter(r, "torpor_agent_reaper_ticks_total", "Ticks of the TTL reaper.", 0, NULL);
    lag = metrics_gauge(r, "torpor_agent_reaper_lag_seconds",
                        "How late the last reaper tick started against its schedule.", 0, NULL);
    sandboxes =
        metrics_gauge(r, "torpor_agent_sandboxes", "Sandboxes held by this agent, by state.", 1,
                      (const char *[]){"state"});
    queue_depth =
        metrics_gauge(r, "torpor_agent_pause_queue_depth",
                      "Reaper jobs (auto-pauses, dead-VM destroys) queued or running.", 0, NULL);
    backlog =
        metrics_gauge(r, "torpor_agent_journal_backlog",
                      "Auto-pause notices not yet acknowledged by the control plane.", 0, NULL);
    /* Series that exist from the start, so a scrape sees zeros, not gaps. */
    metrics_add(auto_pauses, (const char *[]){"paused"}, 0);
    metrics_add(auto_pauses, (const char *[]){"failed"}, 0);
    metrics_add(ticks, NULL, 0);
}

static const char *result_name(agent_code c)
{
    switch (c) {
    case AGENT_OK: return "ok";
    case AGENT_NOT_FOUND: return "not_found";
    case AGENT_FAILED_PRECONDITION: return "failed_precondition";
    case AGENT_INVALID_ARGUMENT: return "invalid_argument";
    case AGENT_ALREADY_EXISTS: return "already_exists";
    case AGENT_INTERNAL: return "internal";
    case AGENT_RESOURCE_EXHAUSTED: return "resource_exhausted";
    case AGENT_UNAVAILABLE: return "unavailable";
    }
    return "unknown";
}

void agent_metrics_operation(const char *operation, agent_code result, double seconds)
{
    pthread_once(&once, init);
    metrics_observe(op_seconds, (const char *[]){operation, result_name(result)}, seconds);
}

void agent_metrics_auto_pause(bool paused, double seconds)
{
    pthread_once(&once, init);
    metrics_add(auto_pauses, (const char *[]){paused ? "paused" : "failed"}, 1);
    agent_metrics_operation("auto_pause", paused ? AGENT_OK : AGENT_INTERNAL, seconds);
}

void agent_metrics_reaper_tick(double lag_seconds)
{
    pthread_once(&once, init);
    metrics_add(ticks, NULL, 1);
    metrics_set(lag, NULL, lag_seconds < 0 ? 0 : lag_seconds);
}

typedef struct watch {
    lifecycle *lc;
    journal *jnl;
    reaper *rp;
} watch;

static void collect(void *ctx, metrics_registry *r)
{
    watch *w = ctx;
    static const sandbox_status states[] = {SANDBOX_RUNNING, SANDBOX_PAUSING, SANDBOX_PAUSED,
                                            SANDBOX_RESUMING};
    double counts[sizeof states / sizeof states[0]] = {0};
    lifecycle_info *infos = NULL;
    size_t n = 0;
    terr err;
    if (lifecycle_list(w->lc, &infos, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            for (size_t s = 0; s < sizeof states / sizeof states[0]; s++)
                if (infos[i].status == states[s]) counts[s]++;
        free(infos);
        for (size_t s = 0; s < sizeof states / sizeof states[0]; s++)
            metrics_set(sandboxes, (const char *[]){sandbox_status_name(states[s])}, counts[s]);
    }
    if (w->rp) metrics_set(queue_depth, NULL, reaper_pending(w->rp));
    char **ids = NULL;
    if (w->jnl && journal_pending(w->jnl, &ids, &n, &err) == 0) {
        metrics_set(backlog, NULL, (double)n);
        journal_ids_free(ids, n);
    }
}

int agent_metrics_watch(lifecycle *lc, journal *jnl, reaper *rp, terr *err)
{
    pthread_once(&once, init);
    watch *w = calloc(1, sizeof *w); /* lives as long as the process */
    if (!w) return terr_set(err, "metrics: out of memory");
    *w = (watch){.lc = lc, .jnl = jnl, .rp = rp};
    if (metrics_add_collector(metrics_default(), collect, w, err) != 0) {
        free(w);
        return -1;
    }
    return 0;
}
