#include "auth.h"

#include <string.h>

#include "ids.h"

bool auth_key_well_formed(const char *key)
{
    if (!key || strlen(key) != AUTH_KEY_LEN || strncmp(key, AUTH_KEY_PREFIX, 4) != 0) return false;
    for (const char *c = key + 4; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return false;
    return true;
}

int auth_key_create(db_conn *db, const char *team_name, char key[AUTH_KEY_LEN + 1], char team_id[64],
                    terr *err)
{
    if (!team_name || !*team_name || strlen(team_name) > 200)
        return terr_set(err, "team name must be 1..200 characters");
    char hex[33], hash[65], prefix[9];
    if (ids_random_hex(hex, 16, err) != 0) return -1;
    memcpy(key, AUTH_KEY_PREFIX, 4);
    memcpy(key + 4, hex, 33);
    if (ids_sha256_hex(key, AUTH_KEY_LEN, hash) != 0) return terr_set(err, "SHA-256 of the new key failed");
    memcpy(prefix, key, 8);
    prefix[8] = '\0';
    if (db_team_ensure(db, team_name, team_id, err) != 0) return -1;
    return db_api_key_insert(db, team_id, hash, prefix, err);
}

int auth_check(db_conn *db, const char *key, char team_id[64], bool *ok, terr *err)
{
    *ok = false;
    if (!auth_key_well_formed(key)) return 0;
    char hash[65];
    if (ids_sha256_hex(key, strlen(key), hash) != 0) return terr_set(err, "SHA-256 of the API key failed");
    return db_api_key_team(db, hash, team_id, ok, err);
}
