#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

const double metrics_buckets_seconds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1,     2.5,  5,     10,   30,  60,   120};
const size_t metrics_buckets_seconds_n =
    sizeof metrics_buckets_seconds / sizeof metrics_buckets_seconds[0];

typedef enum { M_COUNTER, M_GAUGE, M_HISTOGRAM } metric_type;

typedef struct series {
    char *values[METRICS_MAX_LABELS];
    double value;                                    /* counter, gauge; histogram: sum */
    unsigned long long count;                        /* histogram */
    unsigned long long buckets[METRICS_MAX_BUCKETS]; /* histogram, not cumulative */
    struct series *next;
} series;

struct metric {
    metrics_registry *reg;
    metric_type type;
    char *name;
    char *help;
    size_t n_labels;
    char *labels[METRICS_MAX_LABELS];
    size_t n_buckets;
    double bounds[METRICS_MAX_BUCKETS];
    pthread_mutex_t mu;
    series *first, *last;
    size_t n_series;
    struct metric *next;
};

typedef struct collector {
    metrics_collect_fn fn;
    void *ctx;
    struct collector *next;
} collector;

struct metrics_registry {
    pthread_mutex_t mu;        /* families and collectors lists */
    pthread_mutex_t render_mu; /* one render (and its collectors) at a time */
    metric *first, *last;
    collector *collectors;
    metric *dropped; /* torpor_metrics_series_dropped_total */
};

static void family_free(metric *m)
{
    while (m->first) {
        series *s = m->first;
        m->first = s->next;
        for (size_t i = 0; i < m->n_labels; i++) free(s->values[i]);
        free(s);
    }
    for (size_t i = 0; i < m->n_labels; i++) free(m->labels[i]);
    pthread_mutex_destroy(&m->mu);
    free(m->name);
    free(m->help);
    free(m);
}

static bool name_valid(const char *s, bool label)
{
    if (!s || !*s) return false;
    for (const char *c = s; *c; c++) {
        bool alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' ||
                     (!label && *c == ':');
        if (!alpha && !(c != s && *c >= '0' && *c <= '9')) return false;
    }
    return true;
}

static bool same_shape(const metric *m, metric_type type, size_t n_labels,
                       const char *const *labels, const double *buckets, size_t n_buckets)
{
    if (m->type != type || m->n_labels != n_labels || m->n_buckets != n_buckets) return false;
    for (size_t i = 0; i < n_labels; i++)
        if (strcmp(m->labels[i], labels[i]) != 0) return false;
    for (size_t i = 0; i < n_buckets; i++)
        if (m->bounds[i] != buckets[i]) return false;
    return true;
}

static metric *family(metrics_registry *r, metric_type type, const char *name, const char *help,
                      size_t n_labels, const char *const *labels, const double *buckets,
                      size_t n_buckets)
{
    if (!r || !name_valid(name, false) || n_labels > METRICS_MAX_LABELS ||
        n_buckets > METRICS_MAX_BUCKETS) {
        log_error("event=metric_rejected name=%s reason=bad_name_or_shape",
                  name && name_valid(name, false) ? name : "?");
        return NULL;
    }
    for (size_t i = 0; i < n_labels; i++)
        if (!name_valid(labels[i], true) || strcmp(labels[i], "le") == 0) {
            log_error("event=metric_rejected name=%s reason=bad_label_name", name);
            return NULL;
        }
    for (size_t i = 0; i < n_buckets; i++)
        if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
            log_error("event=metric_rejected name=%s reason=bad_buckets", name);
            return NULL;
        }
    pthread_mutex_lock(&r->mu);
    for (metric *m = r->first; m; m = m->next) {
        if (strcmp(m->name, name) != 0) continue;
        pthread_mutex_unlock(&r->mu);
        if (same_shape(m, type, n_labels, labels, buckets, n_buckets)) return m;
        log_error("event=metric_rejected name=%s reason=registered_with_another_shape", name);
        return NULL;
    }
    metric *m = calloc(1, sizeof *m);
    bool ok = m != NULL;
    if (ok) {
        m->reg = r;
        m->type = type;
        m->name = strdup(name);
        m->help = strdup(help ? help : "");
        m->n_labels = n_labels;
        m->n_buckets = n_buckets;
        pthread_mutex_init(&m->mu, NULL);
        ok = m->name && m->help;
        for (size_t i = 0; i < n_labels; i++) ok = (m->labels[i] = strdup(labels[i])) != NULL && ok;
        for (size_t i = 0; i < n_buckets; i++) m->bounds[i] = buckets[i];
    }
    if (!ok) {
        if (m) family_free(m);
        pthread_mutex_unlock(&r->mu);
        log_error("event=metric_rejected name=%s reason=out_of_memory", name);
        return NULL;
    }
    if (r->last) r->last->next = m;
    else r->first = m;
    r->last = m;
    pthread_mutex_unlock(&r->mu);
    return m;
}

metric *metrics_counter(metrics_registry *r, const char *name, const char *help, size_t n_labels,
                        const char *const *label_names)
{
    return family(r, M_COUNTER, name, help, n_labels, label_names, NULL, 0);
}

metric *metrics_gauge(metrics_registry *r, const char *name, const char *help, size_t n_labels,
                      const char *const *label_names)
{
    return family(r, M_GAUGE, name, help, n_labels, label_names, NULL, 0);
}

metric *metrics_histogram(metrics_registry *r, const char *name, const char *help, size_t n_labels,
                          const char *const *label_names, const double *buckets, size_t n_buckets)
{
    return family(r, M_HISTOGRAM, name, help, n_labels, label_names, buckets, n_buckets);
}

int metrics_registry_new(metrics_registry **out, terr *err)
{
    metrics_registry *r = calloc(1, sizeof *r);
    if (!r) return terr_set(err, "metrics: out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->render_mu, NULL);
    r->dropped =
        metrics_counter(r, "torpor_metrics_series_dropped_total",
                        "Metric updates dropped because their family reached its series limit.", 1,
                        (const char *[]){"metric"});
    *out = r;
    return 0;
}

void metrics_registry_free(metrics_registry *r)
{
    if (!r) return;
    while (r->first) {
        metric *m = r->first;
        r->first = m->next;
        family_free(m);
    }
    while (r->collectors) {
        collector *c = r->collectors;
        r->collectors = c->next;
        free(c);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->render_mu);
    free(r);
}

static metrics_registry *default_registry;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void)
{
    terr err;
    if (metrics_registry_new(&default_registry, &err) != 0)
        log_error("event=metrics_registry_failed");
}

metrics_registry *metrics_default(void)
{
    pthread_once(&default_once, default_init);
    return default_registry;
}

/* The series for values, created if needed; call with m->mu held. NULL
 * when the family is full or memory runs out. */
static series *series_locked(metric *m, const char *const *values, bool *dropped)
{
    *dropped = false;
    for (series *s = m->first; s; s = s->next) {
        size_t i = 0;
        while (i < m->n_labels && strcmp(s->values[i], values[i] ? values[i] : "") == 0) i++;
        if (i == m->n_labels) return s;
    }
    if (m->n_series >= METRICS_MAX_SERIES) {
        *dropped = true;
        return NULL;
    }
    series *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    for (size_t i = 0; i < m->n_labels; i++) {
        s->values[i] = strdup(values[i] ? values[i] : "");
        if (!s->values[i]) {
            for (size_t j = 0; j < i; j++) free(s->values[j]);
            free(s);
            return NULL;
        }
    }
    if (m->last) m->last->next = s;
    else m->first = s;
    m->last = s;
    m->n_series++;
    return s;
}

static void update(metric *m, const char *const *values, metric_type want, double v)
{
    if (!m || m->type != want || isnan(v)) return;
    if (want == M_COUNTER && v < 0) return;
    static const char *const none[METRICS_MAX_LABELS] = {0};
    if (!values) values = none;
    bool dropped;
    pthread_mutex_lock(&m->mu);
    series *s = series_locked(m, values, &dropped);
    if (s) {
        switch (want) {
        case M_COUNTER: s->value += v; break;
        case M_GAUGE: s->value = v; break;
        case M_HISTOGRAM:
            s->value += v;
            s->count++;
            for (size_t i = 0; i < m->n_buckets; i++)
                if (v <= m->bounds[i]) {
                    s->buckets[i]++;
                    break;
                }
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (dropped && m != m->reg->dropped) metrics_add(m->reg->dropped, (const char *[]){m->name}, 1);
}

void metrics_add(metric *m, const char *const *label_values, double v)
{
    update(m, label_values, M_COUNTER, v);
}
void metrics_set(metric *m, const char *const *label_values, double v)
{
    update(m, label_values, M_GAUGE, v);
}
void metrics_observe(metric *m, const char *const *label_values, double v)
{
    update(m, label_values, M_HISTOGRAM, v);
}

void metrics_clear(metric *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    while (m->first) {
        series *s = m->first;
        m->first = s->next;
        for (size_t i = 0; i < m->n_labels; i++) free(s->values[i]);
        free(s);
    }
    m->last = NULL;
    m->n_series = 0;
    pthread_mutex_unlock(&m->mu);
}

int metrics_add_collector(metrics_registry *r, metrics_collect_fn fn, void *ctx, terr *err)
{
    if (!r) return terr_set(err, "metrics: no registry");
    collector *c = calloc(1, sizeof *c);
    if (!c) return terr_set(err, "metrics: out of memory");
    c->fn = fn;
    c->ctx = ctx;
    pthread_mutex_lock(&r->mu);
    collector **tail = &r->collectors;
    while (*tail) tail = &(*tail)->next;
    *tail = c;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* ---- rendering */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

/* Escapes backslash and newline, and the double quote when quote is set. */
static void put_escaped(buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\') puts_(b, "\\\\");
        else if (*s == '\n') puts_(b, "\\n");
        else if (quote && *s == '"') puts_(b, "\\\"");
        else put(b, s, 1);
    }
}

/* The shortest decimal that reads back as v; "+Inf", "-Inf", "NaN". */
static void put_number(buf *b, double v)
{
    char s[40];
    if (isnan(v)) snprintf(s, sizeof s, "NaN");
    else if (isinf(v)) snprintf(s, sizeof s, "%sInf", v > 0 ? "+" : "-");
    else if (v == floor(v) && fabs(v) < 1e15) snprintf(s, sizeof s, "%.0f", v);
    else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(s, sizeof s, "%.*g", prec, v);
            if (strtod(s, NULL) == v) break;
        }
    }
    puts_(b, s);
}

/* name{l1="v1",...[,le="bound"]} value\n */
static void put_sample(buf *b, const metric *m, const char *suffix, const series *s, const char *le,
                       double v)
{
    puts_(b, m->name);
    puts_(b, suffix);
    if (m->n_labels > 0 || le) {
        puts_(b, "{");
        for (size_t i = 0; i < m->n_labels; i++) {
            if (i) puts_(b, ",");
            puts_(b, m->labels[i]);
            puts_(b, "=\"");
            put_escaped(b, s->values[i], true);
            puts_(b, "\"");
        }
        if (le) {
            if (m->n_labels) puts_(b, ",");
            puts_(b, "le=\"");
            puts_(b, le);
            puts_(b, "\"");
        }
        puts_(b, "}");
    }
    puts_(b, " ");
    put_number(b, v);
    puts_(b, "\n");
}

static void render_family(buf *b, metric *m)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    puts_(b, "# HELP ");
    puts_(b, m->name);
    puts_(b, " ");
    put_escaped(b, m->help, false);
    puts_(b, "\n# TYPE ");
    puts_(b, m->name);
    puts_(b, " ");
    puts_(b, type_names[m->type]);
    puts_(b, "\n");
    pthread_mutex_lock(&m->mu);
    for (const series *s = m->first; s; s = s->next) {
        if (m->type != M_HISTOGRAM) {
            put_sample(b, m, "", s, NULL, s->value);
            continue;
        }
        unsigned long long cum = 0;
        for (size_t i = 0; i < m->n_buckets; i++) {
            cum += s->buckets[i];
            buf le = {0};
            put_number(&le, m->bounds[i]);
            put_sample(b, m, "_bucket", s, le.oom ? "0" : le.p, (double)cum);
            free(le.p);
        }
        put_sample(b, m, "_bucket", s, "+Inf", (double)s->count);
        put_sample(b, m, "_sum", s, NULL, s->value);
        put_sample(b, m, "_count", s, NULL, (double)s->count);
    }
    pthread_mutex_unlock(&m->mu);
}

int metrics_render(metrics_registry *r, char **out, size_t *len, terr *err)
{
    *out = NULL;
    *len = 0;
    if (!r) return terr_set(err, "metrics: no registry");
    pthread_mutex_lock(&r->render_mu);
    /* Collectors run without r->mu (they register and set gauges). */
    size_t n_col = 0;
    pthread_mutex_lock(&r->mu);
    for (collector *c = r->collectors; c; c = c->next) n_col++;
    collector *cs = calloc(n_col ? n_col : 1, sizeof *cs);
    if (cs) {
        size_t i = 0;
        for (collector *c = r->collectors; c; c = c->next) cs[i++] = *c;
    }
    pthread_mutex_unlock(&r->mu);
    if (!cs) {
        pthread_mutex_unlock(&r->render_mu);
        return terr_set(err, "metrics: out of memory");
    }
    for (size_t i = 0; i < n_col; i++) cs[i].fn(cs[i].ctx, r);
    free(cs);
    buf b = {0};
    puts_(&b, "");
    pthread_mutex_lock(&r->mu); /* then each family's own mutex */
    for (metric *m = r->first; m; m = m->next) render_family(&b, m);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&r->render_mu);
    if (b.oom) {
        free(b.p);
        return terr_set(err, "metrics: out of memory while rendering");
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
