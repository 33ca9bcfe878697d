/* auth: API keys and the team they belong to.
 *
 * Contract: a key is "tpk_" + 32 lowercase hex digits (128 random bits). It
 * is shown once by auth_key_create; only its SHA-256 (hex) is stored. A key
 * that is absent, malformed or unknown authenticates nothing (*ok = false,
 * return 0); -1 is only for database failures. */
#ifndef TORPOR_CP_AUTH_H
#define TORPOR_CP_AUTH_H

#include <stdbool.h>

#include "db.h"
#include "terr.h"

#define AUTH_KEY_PREFIX "tpk_"
#define AUTH_KEY_LEN 36 /* "tpk_" + 32 hex */

/* Creates the team if needed and a new key for it. */
int auth_key_create(db_conn *db, const char *team_name, char key[AUTH_KEY_LEN + 1], char team_id[64],
                    terr *err);

/* True when key has the shape of a Torpor API key. */
bool auth_key_well_formed(const char *key);

int auth_check(db_conn *db, const char *key, char team_id[64], bool *ok, terr *err);

#endif
