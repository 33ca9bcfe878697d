#include "cp_metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "metrics.h"

static metric *requests, *request_seconds, *db_errors, *reconcile_seconds, *sandboxes;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    metrics_registry *r = metrics_default();
    const char *http_labels[] = {"method", "route", "status"};
    requests =
        metrics_counter(r, "torpor_cp_http_requests_total",
                        "REST requests answered, by route pattern and status.", 3, http_labels);
    request_seconds = metrics_histogram(
        r, "torpor_cp_http_request_duration_seconds",
        "Time from a complete request to its answer, by route pattern and status.", 3, http_labels,
        metrics_buckets_seconds, metrics_buckets_seconds_n);
    db_errors = metrics_counter(r, "torpor_cp_db_errors_total",
                                "Failed PostgreSQL statements and connection attempts.", 0, NULL);
    reconcile_seconds = metrics_histogram(
        r, "torpor_cp_reconcile_duration_seconds", "Duration of one host's reconcile pass.", 2,
        (const char *[]){"host", "result"}, metrics_buckets_seconds, metrics_buckets_seconds_n);
    sandboxes =
        metrics_gauge(r, "torpor_cp_sandboxes", "Sandboxes in the database, by host and state.", 2,
                      (const char *[]){"host", "state"});
    metrics_add(db_errors, NULL, 0);
}

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; m && i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0) return known[i];
    return "other";
}

void cp_metrics_http_request(const char *method, const char *route_pattern, int status,
                             double seconds)
{
    pthread_once(&once, init);
    char st[16];
    snprintf(st, sizeof st, "%d", status);
    const char *labels[] = {method_label(method), route_pattern ? route_pattern : "unmatched", st};
    metrics_add(requests, labels, 1);
    metrics_observe(request_seconds, labels, seconds);
}

void cp_metrics_reconcile(const char *host_id, int ok, double seconds)
{
    pthread_once(&once, init);
    metrics_observe(reconcile_seconds, (const char *[]){host_id, ok ? "ok" : "failed"}, seconds);
}

typedef struct watch {
    const char *database_url;
    db_conn *db;             /* the collector's own; collectors run one at a time */
    uint64_t db_errors_seen; /* db_error_count() already added to db_errors */
} watch;

static void collect_sandboxes(watch *w)
{
    terr err;
    char q[LOG_QUOTE_MAX];
    metrics_clear(sandboxes);
    if (!w->db) {
        if (db_open(w->database_url, &w->db, &err) != 0 ||
            db_exec_simple(w->db, "SET statement_timeout = 2000", &err) != 0) {
            if (w->db) db_close(w->db);
            w->db = NULL; /* db.c counted the error */
            log_warn("event=metrics_collect_failed error=\"%s\"", log_quote(err.msg, q, sizeof q));
            return;
        }
    }
    db_sandbox_count *rows = NULL;
    size_t n = 0;
    if (db_sandbox_counts(w->db, CP_METRICS_MAX_ROWS, &rows, &n, &err) != 0) {
        log_warn("event=metrics_collect_failed error=\"%s\"", log_quote(err.msg, q, sizeof q));
        return;
    }
    for (size_t i = 0; i < n; i++)
        metrics_set(sandboxes, (const char *[]){rows[i].host_id, rows[i].status},
                    (double)rows[i].count);
    free(rows);
}

static void collect(void *ctx, metrics_registry *r)
{
    (void)r;
    watch *w = ctx;
    collect_sandboxes(w); /* first: its own failures count too */
    uint64_t n = db_error_count();
    metrics_add(db_errors, NULL, (double)(n - w->db_errors_seen));
    w->db_errors_seen = n;
}

int cp_metrics_watch(const char *database_url, terr *err)
{
    pthread_once(&once, init);
    watch *w = calloc(1, sizeof *w); /* lives as long as the process */
    if (!w) return terr_set(err, "metrics: out of memory");
    w->database_url = database_url;
    if (metrics_add_collector(metrics_default(), collect, w, err) != 0) {
        free(w);
        return -1;
    }
    return 0;
}
