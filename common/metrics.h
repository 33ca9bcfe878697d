/* metrics: a small Prometheus metrics registry and its text exposition.
 *
 * Contract: a registry holds metric families (counter, gauge, histogram),
 * each with a fixed, ordered list of label names and, per set of label
 * values, one series. Registering is idempotent: asking for a family whose
 * name already exists returns that family when its type, label names (and
 * buckets) are the same, NULL otherwise (a programming error, logged). Every
 * update function accepts a NULL family and does nothing, so a failed
 * registration never crashes a caller. Label values are given as an array
 * of exactly as many strings as the family has label names (NULL counts as
 * ""); a family holds at most METRICS_MAX_SERIES series, updates for further
 * label sets are dropped (and counted in torpor_metrics_series_dropped_total).
 * All functions are thread-safe (one mutex per family, one for the
 * registry); a value is a double.
 *
 * Histograms have fixed upper bounds given at registration (strictly
 * increasing, finite); "+Inf" is implicit. They render cumulative
 * name_bucket{...,le="B"}, name_sum and name_count series.
 *
 * metrics_render runs the registry's collectors (functions that set gauges
 * from live state at scrape time, e.g. sandboxes by state) one scrape at a
 * time, then writes every family in registration order, series in creation
 * order, in the text format 0.0.4: "# HELP" (backslash and newline escaped),
 * "# TYPE", then "name{label="value"} number" with label values escaped
 * (backslash, double quote, newline). Counter names should end in _total.
 *
 * metrics_default() is the process-wide registry the services use. */
#ifndef TORPOR_METRICS_H
#define TORPOR_METRICS_H

#include <stddef.h>

#include "terr.h"

#define METRICS_MAX_LABELS 4
#define METRICS_MAX_BUCKETS 24
#define METRICS_MAX_SERIES 2000

typedef struct metrics_registry metrics_registry;
typedef struct metric metric;

/* Seconds buckets for operations from milliseconds to minutes. */
extern const double metrics_buckets_seconds[];
extern const size_t metrics_buckets_seconds_n;

int metrics_registry_new(metrics_registry **out, terr *err);
void metrics_registry_free(metrics_registry *r); /* NULL-safe */
metrics_registry *metrics_default(void);

metric *metrics_counter(metrics_registry *r, const char *name, const char *help, size_t n_labels,
                        const char *const *label_names);
metric *metrics_gauge(metrics_registry *r, const char *name, const char *help, size_t n_labels,
                      const char *const *label_names);
metric *metrics_histogram(metrics_registry *r, const char *name, const char *help, size_t n_labels,
                          const char *const *label_names, const double *buckets, size_t n_buckets);

/* Counter: += v (v >= 0; negative values are ignored). */
void metrics_add(metric *m, const char *const *label_values, double v);
/* Gauge: = v. */
void metrics_set(metric *m, const char *const *label_values, double v);
/* Histogram: one observation. */
void metrics_observe(metric *m, const char *const *label_values, double v);
/* Gauge: drops every series (a collector that rebuilds a family from
 * live state, where label sets come and go, clears it first). */
void metrics_clear(metric *m);

/* Runs before every render, one render at a time (so collectors need no
 * lock of their own among themselves). */
typedef void (*metrics_collect_fn)(void *ctx, metrics_registry *r);
int metrics_add_collector(metrics_registry *r, metrics_collect_fn fn, void *ctx, terr *err);

/* The whole registry as text; *out is malloc'd and NUL-terminated. */
int metrics_render(metrics_registry *r, char **out, size_t *len, terr *err);

#endif
