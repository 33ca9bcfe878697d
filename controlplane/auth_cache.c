#include "auth_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    char hash[65]; /* "" = empty */
    char team_id[64];
    bool admin;
    int64_t confirmed_ms;
} slot;

struct auth_cache {
    pthread_mutex_t mu;
    int ttl_ms;
    slot slots[AUTH_CACHE_SLOTS];
};

int auth_cache_new(int ttl_ms, auth_cache **out, terr *err)
{
    if (ttl_ms < 0 || ttl_ms > AUTH_CACHE_MAX_MS)
        return terr_set(err, "API key cache time must be 0..%d ms (got %d)", AUTH_CACHE_MAX_MS,
                        ttl_ms);
    auth_cache *c = calloc(1, sizeof *c);
    if (!c) return terr_set(err, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    c->ttl_ms = ttl_ms;
    *out = c;
    return 0;
}

void auth_cache_free(auth_cache *c)
{
    if (!c) return;
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The hash is SHA-256 hex already: its first 8 digits spread keys evenly. */
static slot *slot_of(auth_cache *c, const char *hash)
{
    unsigned long h = strtoul(
        (char[9]){hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7], '\0'},
        NULL, 16);
    return &c->slots[h % AUTH_CACHE_SLOTS];
}

static bool usable(const char *hash) { return hash && strlen(hash) == 64; }

bool auth_cache_get(auth_cache *c, const char *hash, int64_t now_ms, char team_id[64], bool *admin)
{
    if (!c || c->ttl_ms == 0 || !usable(hash)) return false;
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    slot *s = slot_of(c, hash);
    /* now_ms before the confirmation (a caller's older clock reading) is
     * still within the window; at ttl_ms exactly it is over. */
    if (strcmp(s->hash, hash) == 0 && now_ms - s->confirmed_ms < c->ttl_ms) {
        memcpy(team_id, s->team_id, 64);
        *admin = s->admin;
        hit = true;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void auth_cache_put(auth_cache *c, const char *hash, int64_t now_ms, const char *team_id,
                    bool admin)
{
    if (!c || c->ttl_ms == 0 || !usable(hash) || strlen(team_id) >= 64) return;
    pthread_mutex_lock(&c->mu);
    slot *s = slot_of(c, hash);
    memcpy(s->hash, hash, 65);
    strcpy(s->team_id, team_id);
    s->admin = admin;
    s->confirmed_ms = now_ms;
    pthread_mutex_unlock(&c->mu);
}
