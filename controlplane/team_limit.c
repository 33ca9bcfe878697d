#include "team_limit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct team_count {
    char team[64];
    int n;
} team_count;

typedef struct team_holder {
    const void *holder;
    char team[64];
} team_holder;

struct team_limit {
    pthread_mutex_t mu;
    int max;
    team_count *teams; /* only teams with n > 0 */
    size_t n_teams, cap;
    team_holder *holders; /* slots taken with team_limit_enter_as */
    size_t n_holders, holders_cap;
};

int team_limit_new(int max, team_limit **out, terr *err)
{
    *out = NULL;
    if (max < 1) return terr_set(err, "team long-call limit must be >= 1 (got %d)", max);
    team_limit *t = calloc(1, sizeof *t);
    if (!t) return terr_set(err, "out of memory");
    pthread_mutex_init(&t->mu, NULL);
    t->max = max;
    *out = t;
    return 0;
}

void team_limit_free(team_limit *t)
{
    if (!t) return;
    pthread_mutex_destroy(&t->mu);
    free(t->teams);
    free(t->holders);
    free(t);
}

static team_count *find(team_limit *t, const char *team)
{
    for (size_t i = 0; i < t->n_teams; i++)
        if (strcmp(t->teams[i].team, team) == 0) return &t->teams[i];
    return NULL;
}

/* Under mu. */
static bool enter_locked(team_limit *t, const char *team)
{
    bool ok = false;
    team_count *c = find(t, team);
    if (c) {
        if (c->n < t->max) {
            c->n++;
            ok = true;
        }
    } else {
        if (t->n_teams == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 16;
            team_count *grown = realloc(t->teams, cap * sizeof *grown);
            if (grown) {
                t->teams = grown;
                t->cap = cap;
            }
        }
        if (t->n_teams < t->cap) { /* else out of memory: refused */
            c = &t->teams[t->n_teams++];
            snprintf(c->team, sizeof c->team, "%s", team);
            c->n = 1;
            ok = true;
        }
    }
    return ok;
}

static void leave_locked(team_limit *t, const char *team)
{
    team_count *c = find(t, team);
    if (c && --c->n <= 0) *c = t->teams[--t->n_teams];
}

bool team_limit_enter(team_limit *t, const char *team)
{
    pthread_mutex_lock(&t->mu);
    bool ok = enter_locked(t, team);
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void team_limit_leave(team_limit *t, const char *team)
{
    pthread_mutex_lock(&t->mu);
    leave_locked(t, team);
    pthread_mutex_unlock(&t->mu);
}

static team_holder *find_holder(team_limit *t, const void *holder)
{
    for (size_t i = 0; i < t->n_holders; i++)
        if (t->holders[i].holder == holder) return &t->holders[i];
    return NULL;
}

bool team_limit_enter_as(team_limit *t, const char *team, const void *holder)
{
    pthread_mutex_lock(&t->mu);
    bool ok = find_holder(t, holder) != NULL;
    if (!ok && t->n_holders == t->holders_cap) {
        size_t cap = t->holders_cap ? t->holders_cap * 2 : 16;
        team_holder *grown = realloc(t->holders, cap * sizeof *grown);
        if (grown) {
            t->holders = grown;
            t->holders_cap = cap;
        }
    }
    if (!ok && t->n_holders < t->holders_cap &&
        enter_locked(t, team)) { /* else out of memory: refused */
        team_holder *h = &t->holders[t->n_holders++];
        h->holder = holder;
        snprintf(h->team, sizeof h->team, "%s", team);
        ok = true;
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

bool team_limit_holds(team_limit *t, const void *holder)
{
    pthread_mutex_lock(&t->mu);
    bool held = find_holder(t, holder) != NULL;
    pthread_mutex_unlock(&t->mu);
    return held;
}

void team_limit_release(team_limit *t, const void *holder)
{
    pthread_mutex_lock(&t->mu);
    team_holder *h = find_holder(t, holder);
    if (h) {
        leave_locked(t, h->team);
        *h = t->holders[--t->n_holders];
    }
    pthread_mutex_unlock(&t->mu);
}

int team_limit_count(team_limit *t, const char *team)
{
    pthread_mutex_lock(&t->mu);
    team_count *c = find(t, team);
    int n = c ? c->n : 0;
    pthread_mutex_unlock(&t->mu);
    return n;
}
