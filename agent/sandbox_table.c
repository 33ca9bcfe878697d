#include "sandbox_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sandbox_table {
    pthread_mutex_t mu;
    sandbox **items; /* a flat array: an agent holds hundreds, not millions */
    size_t n, cap;
};

const char *sandbox_status_name(sandbox_status s)
{
    switch (s) {
    case SANDBOX_CREATING: return "creating";
    case SANDBOX_RUNNING: return "running";
    case SANDBOX_PAUSING: return "pausing";
    case SANDBOX_PAUSED: return "paused";
    case SANDBOX_RESUMING: return "resuming";
    case SANDBOX_DESTROYING: return "destroying";
    case SANDBOX_RECOVERING: return "recovering";
    }
    return "unknown";
}

int sandbox_table_new(sandbox_table **out, terr *err)
{
    sandbox_table *t = calloc(1, sizeof *t);
    if (!t) return terr_set(err, "sandbox table: out of memory");
    pthread_mutex_init(&t->mu, NULL);
    *out = t;
    return 0;
}

static void sandbox_free(sandbox *sb)
{
    runtime_vm_unref(sb->vm);
    pthread_cond_destroy(&sb->lifecycle_cv);
    free(sb);
}

void sandbox_table_free(sandbox_table *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) {
        sandbox *sb = t->items[i];
        sb->in_table = false;
        if (--sb->refs == 0) sandbox_free(sb);
    }
    free(t->items);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void sandbox_table_lock(sandbox_table *t) { pthread_mutex_lock(&t->mu); }
void sandbox_table_unlock(sandbox_table *t) { pthread_mutex_unlock(&t->mu); }

sandbox *sandbox_table_find_locked(sandbox_table *t, const char *id)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->items[i]->id, id) == 0) return t->items[i];
    return NULL;
}

sandbox *sandbox_table_insert_locked(sandbox_table *t, const runtime_spec *spec,
                                     sandbox_status status, terr *err)
{
    if (sandbox_table_find_locked(t, spec->sandbox_id)) {
        terr_set(err, "sandbox %s already exists", spec->sandbox_id);
        return NULL;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        sandbox **items = realloc(t->items, cap * sizeof *items);
        if (!items) {
            terr_set(err, "sandbox table: out of memory");
            return NULL;
        }
        t->items = items;
        t->cap = cap;
    }
    sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        terr_set(err, "sandbox table: out of memory");
        return NULL;
    }
    snprintf(sb->id, sizeof sb->id, "%s", spec->sandbox_id);
    sb->spec = *spec;
    sb->status = status;
    sb->in_table = true;
    sb->refs = 2; /* the table's and the caller's */
    pthread_cond_init(&sb->lifecycle_cv, NULL);
    t->items[t->n++] = sb;
    return sb;
}

void sandbox_table_remove_locked(sandbox_table *t, sandbox *sb)
{
    for (size_t i = 0; i < t->n; i++) {
        if (t->items[i] != sb) continue;
        t->items[i] = t->items[--t->n];
        sb->in_table = false;
        sandbox_unref_locked(t, sb);
        return;
    }
}

size_t sandbox_table_count_locked(const sandbox_table *t) { return t->n; }
sandbox *sandbox_table_at_locked(const sandbox_table *t, size_t i) { return t->items[i]; }

void sandbox_ref_locked(sandbox *sb) { sb->refs++; }

void sandbox_unref_locked(sandbox_table *t, sandbox *sb)
{
    (void)t;
    if (--sb->refs == 0) sandbox_free(sb);
}

void sandbox_lifecycle_acquire_locked(sandbox_table *t, sandbox *sb)
{
    while (sb->lifecycle_busy) pthread_cond_wait(&sb->lifecycle_cv, &t->mu);
    sb->lifecycle_busy = true;
}

bool sandbox_lifecycle_try_locked(sandbox *sb)
{
    if (sb->lifecycle_busy) return false;
    sb->lifecycle_busy = true;
    return true;
}

void sandbox_lifecycle_release_locked(sandbox *sb)
{
    sb->lifecycle_busy = false;
    pthread_cond_broadcast(&sb->lifecycle_cv);
}

sandbox *sandbox_table_get(sandbox_table *t, const char *id)
{
    sandbox_table_lock(t);
    sandbox *sb = sandbox_table_find_locked(t, id);
    if (sb) sandbox_ref_locked(sb);
    sandbox_table_unlock(t);
    return sb;
}
