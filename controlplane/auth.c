#include "auth.h"

#include <string.h>

#include "ids.h"
#include "log.h"
#include "mono_time.h"

bool auth_key_well_formed(const char *key)
{
    if (!key || strlen(key) != AUTH_KEY_LEN || strncmp(key, AUTH_KEY_PREFIX, 4) != 0) return false;
    for (const char *c = key + 4; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return false;
    return true;
}

int auth_key_create(db_conn *db, const char *team_name, char key[AUTH_KEY_LEN + 1],
                    char team_id[64], terr *err)
{
    return auth_key_create_role(db, team_name, false, key, team_id, err);
}

int auth_key_create_role(db_conn *db, const char *team_name, bool admin, char key[AUTH_KEY_LEN + 1],
                         char team_id[64], terr *err)
{
    if (!team_name || !*team_name || strlen(team_name) > 200)
        return terr_set(err, "team name must be 1..200 characters");
    char hex[33], hash[65], prefix[AUTH_KEY_PREFIX_LEN + 1];
    if (ids_random_hex(hex, 16, err) != 0) return -1;
    memcpy(key, AUTH_KEY_PREFIX, 4);
    memcpy(key + 4, hex, 33);
    if (ids_sha256_hex(key, AUTH_KEY_LEN, hash) != 0)
        return terr_set(err, "SHA-256 of the new key failed");
    memcpy(prefix, key, AUTH_KEY_PREFIX_LEN);
    prefix[AUTH_KEY_PREFIX_LEN] = '\0';
    if (db_team_ensure(db, team_name, team_id, err) != 0) return -1;
    return db_api_key_insert_role(db, team_id, hash, prefix, admin, err);
}

int auth_check(db_conn *db, auth_cache *cache, const char *key, char team_id[64], bool *ok,
               terr *err)
{
    bool admin;
    return auth_check_role(db, cache, key, team_id, ok, &admin, err);
}

int auth_check_role(db_conn *db, auth_cache *cache, const char *key, char team_id[64], bool *ok,
                    bool *admin, terr *err)
{
    *ok = false;
    *admin = false;
    if (!auth_key_well_formed(key)) return 0;
    char hash[65];
    if (ids_sha256_hex(key, strlen(key), hash) != 0)
        return terr_set(err, "SHA-256 of the API key failed");
    /* The clock is read before the query: the entry's age counts from a
     * moment the key was certainly not yet revoked. */
    int64_t now = mono_ms();
    if (auth_cache_get(cache, hash, now, team_id, admin)) {
        *ok = true;
        return 0;
    }
    char key_id[64];
    bool stale;
    if (db_api_key_team_role(db, hash, team_id, key_id, &stale, admin, ok, err) != 0) return -1;
    if (*ok) auth_cache_put(cache, hash, now, team_id, *admin);
    /* At most about once a minute per key: the request path pays one
     * extra statement only when the stored time is older than that. */
    if (*ok && stale) {
        terr terr_touch;
        if (db_api_key_touch(db, key_id, &terr_touch) != 0) {
            char q[LOG_QUOTE_MAX];
            log_warn("event=api_key_touch_failed key_id=%s error=\"%s\"", key_id,
                     log_quote(terr_touch.msg, q, sizeof q));
        }
    }
    return 0;
}
