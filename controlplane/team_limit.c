#include "team_limit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct team_count {
    char team[64];
    int n;
} team_count;

struct team_limit {
    pthread_mutex_t mu;
    int max;
    team_count *teams; /* only teams with n > 0 */
    size_t n_teams, cap;
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
    free(t);
}

static team_count *find(team_limit *t, const char *team)
{
    for (size_t i = 0; i < t->n_teams; i++)
        if (strcmp(t->teams[i].team, team) == 0) return &t->teams[i];
    return NULL;
}

bool team_limit_enter(team_limit *t, const char *team)
{
    pthread_mutex_lock(&t->mu);
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
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void team_limit_leave(team_limit *t, const char *team)
{
    pthread_mutex_lock(&t->mu);
    team_count *c = find(t, team);
    if (c && --c->n <= 0) *c = t->teams[--t->n_teams];
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
