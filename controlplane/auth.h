/* auth: API keys and the team they belong to.
 *
 * Contract: a key is "tpk_" + 32 lowercase hex digits (128 random bits). It
 * is shown once by auth_key_create; only its SHA-256 (hex) and its first
 * AUTH_KEY_PREFIX_LEN characters (to tell keys apart in `keys list`) are
 * stored. A key that is absent, malformed, unknown or revoked authenticates
 * nothing (*ok = false, return 0); -1 is only for database failures. A
 * check reads the database unless cache (may be NULL) confirmed the key
 * recently (auth_cache.h): a revocation holds on every replica once the
 * cache's time (at most AUTH_CACHE_MAX_MS) has passed. A check that read the
 * database records the key's last_used_at when the stored one is older than
 * a minute (one UPDATE per key per minute at most; a failure to record it
 * is logged, not fatal). */
#ifndef TORPOR_CP_AUTH_H
#define TORPOR_CP_AUTH_H

#include <stdbool.h>

#include "auth_cache.h"
#include "db.h"
#include "terr.h"

#define AUTH_KEY_PREFIX "tpk_"
#define AUTH_KEY_LEN 36        /* "tpk_" + 32 hex */
#define AUTH_KEY_PREFIX_LEN 12 /* stored: "tpk_" + 8 hex (keys before 0003: 8 characters) */

/* Creates the team if needed and a new key for it. */
int auth_key_create(db_conn *db, const char *team_name, char key[AUTH_KEY_LEN + 1],
                    char team_id[64], terr *err);

/* True when key has the shape of a Torpor API key. */
bool auth_key_well_formed(const char *key);

int auth_check(db_conn *db, auth_cache *cache, const char *key, char team_id[64], bool *ok,
               terr *err);
/* auth_check plus *admin: whether the key's role is admin. */
int auth_check_role(db_conn *db, auth_cache *cache, const char *key, char team_id[64], bool *ok,
                    bool *admin, terr *err);
/* auth_key_create with a role: admin (true) or member. */
int auth_key_create_role(db_conn *db, const char *team_name, bool admin, char key[AUTH_KEY_LEN + 1],
                         char team_id[64], terr *err);

#endif
