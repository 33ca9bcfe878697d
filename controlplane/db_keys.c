/* db_keys: the SQL of teams, API keys and team quotas (tables teams and
 * api_keys); the contract is in db.h, the shared helpers in db_internal.h.
 * The quota check of a sandbox insert is db_sandbox_insert_within_quota in
 * db_sandboxes.c. */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

int db_team_ensure(db_conn *db, const char *name, char team_id[64], terr *err)
{
    PGresult *r;
    const char *p[1] = {name};
    /* DO UPDATE (a no-op) so RETURNING also yields an existing team. */
    if (db_run(
            db, "ensure team",
            "INSERT INTO teams (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name "
            "RETURNING id::text",
            1, p, &r, err) != 0)
        return -1;
    copy_field(team_id, 64, r, 0, 0);
    PQclear(r);
    return 0;
}

int db_api_key_insert(db_conn *db, const char *team_id, const char *key_hash,
                      const char *key_prefix, terr *err)
{
    PGresult *r;
    const char *p[3] = {team_id, key_hash, key_prefix};
    if (db_run(db, "insert API key",
               "INSERT INTO api_keys (team_id, key_hash, key_prefix) VALUES ($1::uuid, $2, $3)", 3,
               p, &r, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

int db_api_key_team(db_conn *db, const char *key_hash, char team_id[64], char key_id[64],
                    bool *stale, bool *found, terr *err)
{
    bool admin;
    return db_api_key_team_role(db, key_hash, team_id, key_id, stale, &admin, found, err);
}

int db_api_key_insert_role(db_conn *db, const char *team_id, const char *key_hash,
                           const char *key_prefix, bool admin, terr *err)
{
    PGresult *r;
    const char *p[4] = {team_id, key_hash, key_prefix, admin ? "admin" : "member"};
    if (db_run(
            db, "insert API key",
            "INSERT INTO api_keys (team_id, key_hash, key_prefix, role) VALUES ($1::uuid, $2, $3, $4)",
            4, p, &r, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

int db_api_key_team_role(db_conn *db, const char *key_hash, char team_id[64], char key_id[64],
                         bool *stale, bool *admin, bool *found, terr *err)
{
    PGresult *r;
    const char *p[1] = {key_hash};
    *found = false;
    *stale = false;
    *admin = false;
    if (db_run_prep(
            db, PREP_KEY_LOOKUP, "look up API key",
            "SELECT team_id::text, id::text, "
            "(last_used_at IS NULL OR last_used_at < now() - interval '1 minute'), role = 'admin' "
            "FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            1, p, &r, err) != 0)
        return -1;
    if (PQntuples(r) == 1) {
        copy_field(team_id, 64, r, 0, 0);
        copy_field(key_id, 64, r, 0, 1);
        *stale = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
        *admin = strcmp(PQgetvalue(r, 0, 3), "t") == 0;
        *found = true;
    }
    PQclear(r);
    return 0;
}

int db_api_key_touch(db_conn *db, const char *key_id, terr *err)
{
    PGresult *r;
    const char *p[1] = {key_id};
    if (db_run(db, "record API key use",
               "UPDATE api_keys SET last_used_at = now() WHERE id = $1::uuid "
               "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
               1, p, &r, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

#define KEY_COLS                                                                                   \
    "k.id::text, k.key_prefix, "                                                                   \
    "coalesce(to_char(k.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "   \
    "coalesce(to_char(k.last_used_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), " \
    "coalesce(to_char(k.revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"

static void key_from_result(PGresult *r, int i, db_api_key *k)
{
    copy_field(k->id, sizeof k->id, r, i, 0);
    copy_field(k->prefix, sizeof k->prefix, r, i, 1);
    copy_field(k->created_at, sizeof k->created_at, r, i, 2);
    copy_field(k->last_used_at, sizeof k->last_used_at, r, i, 3);
    copy_field(k->revoked_at, sizeof k->revoked_at, r, i, 4);
}

int db_api_key_list(db_conn *db, const char *team_name, db_api_key **out, size_t *n,
                    bool *team_found, terr *err)
{
    PGresult *r;
    const char *p[1] = {team_name};
    *out = NULL;
    *n = 0;
    *team_found = false;
    if (db_run(db, "find team", "SELECT id FROM teams WHERE name = $1", 1, p, &r, err) != 0)
        return -1;
    *team_found = PQntuples(r) == 1;
    PQclear(r);
    if (!*team_found) return 0;
    if (db_run(db, "list API keys",
               "SELECT " KEY_COLS
               " FROM api_keys k JOIN teams t ON t.id = k.team_id WHERE t.name = $1 "
               "ORDER BY k.created_at, k.id",
               1, p, &r, err) != 0)
        return -1;
    int rows = PQntuples(r);
    db_api_key *keys = calloc(rows ? (size_t)rows : 1, sizeof *keys);
    if (!keys) {
        PQclear(r);
        return terr_set(err, "out of memory");
    }
    for (int i = 0; i < rows; i++) key_from_result(r, i, &keys[i]);
    PQclear(r);
    *out = keys;
    *n = (size_t)rows;
    return 0;
}

int db_api_key_revoke(db_conn *db, const char *key_id, const char *prefix, db_api_key *out,
                      int *matched, terr *err)
{
    PGresult *r;
    const char *p[2] = {key_id, prefix};
    *matched = 0;
    /* One statement: count the matches and revoke only when there is one. */
    if (db_run(
            db, "revoke API key",
            "WITH m AS (SELECT id FROM api_keys WHERE revoked_at IS NULL AND "
            "  (($1::text IS NOT NULL AND id::text = $1) OR ($1::text IS NULL AND key_prefix = $2)) FOR UPDATE), "
            "n AS (SELECT count(*) AS c FROM m), "
            "u AS (UPDATE api_keys k SET revoked_at = now() FROM n WHERE n.c = 1 AND k.id IN (SELECT id FROM m) "
            "      RETURNING " KEY_COLS ") "
            "SELECT n.c, u.* FROM n LEFT JOIN u ON true",
            2, p, &r, err) != 0)
        return -1;
    if (PQntuples(r) >= 1) {
        *matched = atoi(PQgetvalue(r, 0, 0));
        if (*matched == 1 && !PQgetisnull(r, 0, 1)) {
            db_api_key k;
            copy_field(k.id, sizeof k.id, r, 0, 1);
            copy_field(k.prefix, sizeof k.prefix, r, 0, 2);
            copy_field(k.created_at, sizeof k.created_at, r, 0, 3);
            copy_field(k.last_used_at, sizeof k.last_used_at, r, 0, 4);
            copy_field(k.revoked_at, sizeof k.revoked_at, r, 0, 5);
            if (out) *out = k;
        }
    }
    PQclear(r);
    return 0;
}

int db_team_set_quota(db_conn *db, const char *name, long long max_sandboxes,
                      long long max_memory_mb, bool *found, terr *err)
{
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", max_sandboxes);
    snprintf(b, sizeof b, "%lld", max_memory_mb);
    const char *p[3] = {name, max_sandboxes < 0 ? NULL : a, max_memory_mb < 0 ? NULL : b};
    PGresult *r;
    if (db_run(
            db, "set team quota",
            "UPDATE teams SET max_sandboxes = $2::int, max_memory_mb = $3::bigint WHERE name = $1",
            3, p, &r, err) != 0)
        return -1;
    *found = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return 0;
}
