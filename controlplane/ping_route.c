#include "ping_route.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox_model.h"

typedef struct slot {
    char id[SANDBOX_ID_MAX]; /* "" = empty */
    char team_id[64];
    int64_t reached_ms;
    db_host host;
} slot;

struct ping_route {
    pthread_mutex_t mu;
    slot slots[PING_ROUTE_SLOTS];
};

int ping_route_new(ping_route **out, terr *err)
{
    ping_route *p = calloc(1, sizeof *p);
    if (!p) return terr_set(err, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return 0;
}

void ping_route_free(ping_route *p)
{
    if (!p) return;
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static slot *slot_of(ping_route *p, const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)id; *c; c++) h = (h ^ *c) * 16777619u;
    return &p->slots[h % PING_ROUTE_SLOTS];
}

static bool fits(const char *team_id, const char *id)
{
    return team_id && id && *id && strlen(id) < SANDBOX_ID_MAX && strlen(team_id) < 64;
}

bool ping_route_get(ping_route *p, const char *team_id, const char *id, int64_t now_ms,
                    db_host *host)
{
    if (!p || !fits(team_id, id)) return false;
    bool hit = false;
    pthread_mutex_lock(&p->mu);
    slot *s = slot_of(p, id);
    if (strcmp(s->id, id) == 0 && strcmp(s->team_id, team_id) == 0 &&
        now_ms - s->reached_ms < PING_ROUTE_TTL_MS) {
        *host = s->host;
        hit = true;
    }
    pthread_mutex_unlock(&p->mu);
    return hit;
}

void ping_route_put(ping_route *p, const char *team_id, const char *id, int64_t now_ms,
                    const db_host *host)
{
    if (!p || !fits(team_id, id)) return;
    pthread_mutex_lock(&p->mu);
    slot *s = slot_of(p, id);
    strcpy(s->id, id);
    strcpy(s->team_id, team_id);
    s->reached_ms = now_ms;
    s->host = *host;
    pthread_mutex_unlock(&p->mu);
}

void ping_route_forget(ping_route *p, const char *id)
{
    if (!p || !id) return;
    pthread_mutex_lock(&p->mu);
    slot *s = slot_of(p, id);
    if (strcmp(s->id, id) == 0) s->id[0] = '\0';
    pthread_mutex_unlock(&p->mu);
}
