/* auth_cache: API keys this replica verified recently, kept for a bounded time.
 *
 * Contract: an entry maps a key's SHA-256 (hex) to its team and role and is
 * answered for at most ttl_ms after the database confirmed them; afterwards
 * the next request asks the database again. So a revoked key (or a changed
 * role) still authenticates on a replica for at most ttl_ms after the
 * revocation: AUTH_CACHE_MAX_MS (5 s) is the promise, the default is
 * AUTH_CACHE_DEFAULT_MS. Only confirmations are kept: an unknown, malformed or
 * revoked key is always looked up. Capacity is fixed (AUTH_CACHE_SLOTS, a slot
 * chosen by the hash); a collision replaces the older entry, costing at most
 * one more lookup. Thread-safe (one mutex, held for a copy). Times are the
 * caller's (mono_ms in production), so tests control them. ttl_ms 0 keeps
 * nothing (every request reads the database). */
#ifndef TORPOR_CP_AUTH_CACHE_H
#define TORPOR_CP_AUTH_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "terr.h"

#define AUTH_CACHE_MAX_MS 5000
#define AUTH_CACHE_DEFAULT_MS 2000
#define AUTH_CACHE_SLOTS 1024

typedef struct auth_cache auth_cache;

/* ttl_ms in 0..AUTH_CACHE_MAX_MS. */
int auth_cache_new(int ttl_ms, auth_cache **out, terr *err);
void auth_cache_free(auth_cache *c);
/* True (and team_id, *admin filled) when hash was put less than ttl_ms
 * before now_ms. */
bool auth_cache_get(auth_cache *c, const char *hash, int64_t now_ms, char team_id[64], bool *admin);
/* Records that the database confirmed hash at now_ms. */
void auth_cache_put(auth_cache *c, const char *hash, int64_t now_ms, const char *team_id,
                    bool admin);

#endif
