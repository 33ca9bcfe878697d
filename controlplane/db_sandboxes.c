/* db_sandboxes: the SQL of sandboxes (table sandboxes): insert (within the
 * team quota), rows by id, team or host, the compare-and-set transitions,
 * the reconciler's pass rows and status reads, moves, per-host counts; the
 * contract is in db.h, the shared helpers in db_internal.h. */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

/* Columns of a sandbox row, in the order row_from_result reads them. */
#define SANDBOX_COLS_BASE                                                           \
    "id, team_id::text, host_id, status, template, vcpus, memory_mb, timeout_sec, " \
    "(extract(epoch from created_at) * 1000000)::bigint, "                          \
    "coalesce((extract(epoch from started_at) * 1000000)::bigint, 0), "             \
    "coalesce((extract(epoch from last_active_at) * 1000000)::bigint, 0), "         \
    "(extract(epoch from last_updated) * 1000000)::bigint, disk_mb, network::text, auto_resume, "
#define SANDBOX_COLS                                       \
    SANDBOX_COLS_BASE "coalesce((SELECT " HOST_STATUS_EXPR \
                      " FROM hosts h WHERE h.id = sandboxes.host_id), '')"
/* The same without the host's status ("": the reconciler knows its host). */
#define SANDBOX_COLS_NOHOST SANDBOX_COLS_BASE "''"
#define SANDBOX_NCOLS 16

int db_sandbox_counts(db_conn *db, size_t max_rows, db_sandbox_count **out, size_t *n, terr *err)
{
    PGresult *r;
    char limit[32];
    snprintf(limit, sizeof limit, "%zu", max_rows);
    const char *p[1] = {limit};
    *out = NULL;
    *n = 0;
    if (db_run(
            db, "count sandboxes",
            "SELECT h.id, s.status, count(sb.id) FROM hosts h "
            "CROSS JOIN unnest(ARRAY['pending','running','pausing','paused','resuming','stopped','error','moving']) "
            "  AS s(status) "
            "LEFT JOIN sandboxes sb ON sb.host_id = h.id AND sb.status = s.status "
            "GROUP BY h.id, s.status ORDER BY h.id, s.status LIMIT $1::bigint",
            1, p, &r, err) != 0)
        return -1;
    int rows = PQntuples(r);
    db_sandbox_count *c = calloc(rows ? (size_t)rows : 1, sizeof *c);
    if (!c) {
        PQclear(r);
        return terr_set(err, "out of memory");
    }
    for (int i = 0; i < rows; i++) {
        copy_field(c[i].host_id, sizeof c[i].host_id, r, i, 0);
        copy_field(c[i].status, sizeof c[i].status, r, i, 1);
        c[i].count = atoll(PQgetvalue(r, i, 2));
    }
    PQclear(r);
    *out = c;
    *n = (size_t)rows;
    return 0;
}

static int row_from_result(PGresult *r, int i, sandbox_row *s, terr *err)
{
    memset(s, 0, sizeof *s);
    copy_field(s->id, sizeof s->id, r, i, 0);
    copy_field(s->team_id, sizeof s->team_id, r, i, 1);
    copy_field(s->host_id, sizeof s->host_id, r, i, 2);
    if (sb_status_parse(PQgetvalue(r, i, 3), &s->status) != 0)
        return terr_set(err, "sandbox %s has unknown status \"%s\" in the database", s->id,
                        PQgetvalue(r, i, 3));
    copy_field(s->template_name, sizeof s->template_name, r, i, 4);
    s->vcpus = atoi(PQgetvalue(r, i, 5));
    s->memory_mb = atoi(PQgetvalue(r, i, 6));
    s->timeout_sec = atoi(PQgetvalue(r, i, 7));
    s->created_at_us = strtoll(PQgetvalue(r, i, 8), NULL, 10);
    s->started_at_us = strtoll(PQgetvalue(r, i, 9), NULL, 10);
    s->last_active_at_us = strtoll(PQgetvalue(r, i, 10), NULL, 10);
    s->last_updated_us = strtoll(PQgetvalue(r, i, 11), NULL, 10);
    s->disk_mb = atoi(PQgetvalue(r, i, 12));
    copy_field(s->network, sizeof s->network, r, i, 13);
    s->auto_resume = strcmp(PQgetvalue(r, i, 14), "t") == 0;
    copy_field(s->host_status, sizeof s->host_status, r, i, 15);
    return 0;
}

/* A PostgreSQL text[] literal of the status names in mask. */
static void status_array(unsigned mask, char *buf, size_t size)
{
    size_t o = 0;
    buf[o++] = '{';
    for (int s = 0; s < SB_STATUS_COUNT; s++) {
        if (!(mask & SB_STATUS_BIT(s))) continue;
        o += (size_t)snprintf(buf + o, size - o, "%s%s", o > 1 ? "," : "", sb_status_name(s));
    }
    snprintf(buf + o, size - o, "}");
}

static int single_row(PGresult *r, sandbox_row *out, bool *found, terr *err)
{
    *found = PQntuples(r) == 1;
    int rc = 0;
    if (*found && out) rc = row_from_result(r, 0, out, err);
    PQclear(r);
    return rc;
}

int db_sandbox_insert(db_conn *db, const sandbox_row *in, sandbox_row *out, terr *err)
{
    char vcpus[16], mem[16], tmo[16], disk[16];
    snprintf(vcpus, sizeof vcpus, "%d", in->vcpus);
    snprintf(mem, sizeof mem, "%d", in->memory_mb);
    snprintf(tmo, sizeof tmo, "%d", in->timeout_sec);
    snprintf(disk, sizeof disk, "%d", in->disk_mb > 0 ? in->disk_mb : 4096);
    const char *p[12] = {in->id,
                         in->team_id,
                         in->host_id,
                         in->template_name,
                         vcpus,
                         mem,
                         tmo,
                         disk,
                         in->env_json ? in->env_json : "{}",
                         in->network[0] ? in->network
                                        : "{\"egress\": \"allow\", \"allow\": [], \"deny\": []}",
                         in->auto_resume ? "true" : "false",
                         in->access_token_hash};
    PGresult *r;
    if (db_run(
            db, "insert sandbox",
            "INSERT INTO sandboxes (id, team_id, host_id, status, template, vcpus, memory_mb, timeout_sec, "
            "disk_mb, env, network, auto_resume, access_token_hash) "
            "VALUES ($1, $2::uuid, $3, 'pending', $4, $5::int, $6::int, $7::int, $8::int, $9::jsonb, $10::jsonb, "
            "$11::boolean, $12) "
            "RETURNING " SANDBOX_COLS,
            12, p, &r, err) != 0)
        return -1;
    bool found;
    if (single_row(r, out, &found, err) != 0) return -1;
    return found ? 0 : terr_set(err, "insert sandbox %s returned no row", in->id);
}

int db_sandbox_env(db_conn *db, const char *id, char **env_json, terr *err)
{
    *env_json = NULL;
    PGresult *r;
    const char *p[1] = {id};
    if (db_run(db, "get sandbox env", "SELECT env::text FROM sandboxes WHERE id = $1", 1, p, &r,
               err) != 0)
        return -1;
    int rc = 0;
    if (PQntuples(r) != 1) rc = terr_set(err, "sandbox %s not found reading its env", id);
    else if (!(*env_json = strdup(PQgetvalue(r, 0, 0)))) rc = terr_set(err, "out of memory");
    PQclear(r);
    return rc;
}

int db_sandbox_insert_within_quota(db_conn *db, const sandbox_row *in, sandbox_row *out, bool *over,
                                   char *msg, size_t msg_size, terr *err)
{
    *over = false;
    if (db_begin(db, err) != 0) return -1;
    PGresult *r;
    const char *p[1] = {in->team_id};
    if (db_run(db, "quota lock", "SELECT pg_advisory_xact_lock(hashtext($1))", 1, p, &r, err) != 0)
        goto fail;
    PQclear(r);
    if (db_run(
            db, "quota usage",
            "SELECT coalesce(t.max_sandboxes::text, ''), coalesce(t.max_memory_mb::text, ''), count(s.id), "
            "coalesce(sum(s.memory_mb), 0) FROM teams t "
            "LEFT JOIN sandboxes s ON s.team_id = t.id AND s.status NOT IN ('stopped', 'error') "
            "WHERE t.id = $1::uuid GROUP BY t.id",
            1, p, &r, err) != 0)
        goto fail;
    if (PQntuples(r) == 1) {
        const char *max_sb = PQgetvalue(r, 0, 0), *max_mem = PQgetvalue(r, 0, 1);
        long long n = strtoll(PQgetvalue(r, 0, 2), NULL, 10),
                  mem = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        if (*max_sb && n + 1 > strtoll(max_sb, NULL, 10)) {
            snprintf(msg, msg_size,
                     "team quota exceeded: %lld sandboxes (running + paused) of at most %s", n,
                     max_sb);
            *over = true;
        } else if (*max_mem && mem + in->memory_mb > strtoll(max_mem, NULL, 10)) {
            snprintf(
                msg, msg_size,
                "team quota exceeded: %lld MiB in use (running + paused) + %d MiB requested exceeds %s MiB",
                mem, in->memory_mb, max_mem);
            *over = true;
        }
    }
    PQclear(r);
    if (*over) {
        db_rollback(db);
        return 0;
    }
    if (db_sandbox_insert(db, in, out, err) != 0) goto fail;
    if (db_commit(db, err) != 0) goto fail;
    return 0;
fail:
    db_rollback(db);
    return -1;
}

int db_sandbox_get(db_conn *db, const char *team_id, const char *id, sandbox_row *out, bool *found,
                   terr *err)
{
    PGresult *r;
    const char *p[2] = {id, team_id};
    int rc = team_id ? db_run_prep(db, PREP_SANDBOX_GET_TEAM, "get sandbox",
                                   "SELECT " SANDBOX_COLS
                                   " FROM sandboxes WHERE id = $1 AND team_id = $2::uuid",
                                   2, p, &r, err)
                     : db_run_prep(db, PREP_SANDBOX_GET_ANY, "get sandbox",
                                   "SELECT " SANDBOX_COLS " FROM sandboxes WHERE id = $1", 1, p, &r,
                                   err);
    if (rc != 0) return -1;
    return single_row(r, out, found, err);
}

/* Every row of r as a malloc'd array (*out, *n); clears r. */
static int rows_to_list(PGresult *r, sandbox_row **out, size_t *n, terr *err)
{
    int rows = PQntuples(r);
    sandbox_row *list = calloc(rows ? (size_t)rows : 1, sizeof *list);
    if (!list) {
        PQclear(r);
        return terr_set(err, "out of memory listing %d sandboxes", rows);
    }
    for (int i = 0; i < rows; i++) {
        if (row_from_result(r, i, &list[i], err) != 0) {
            free(list);
            PQclear(r);
            return -1;
        }
    }
    PQclear(r);
    *out = list;
    *n = (size_t)rows;
    return 0;
}

int db_sandbox_list(db_conn *db, const char *team_id, unsigned status_mask, sandbox_row **out,
                    size_t *n, terr *err)
{
    char statuses[128];
    status_array(status_mask, statuses, sizeof statuses);
    const char *p[2] = {team_id, statuses};
    PGresult *r;
    *out = NULL;
    *n = 0;
    if (db_run(db, "list sandboxes",
               "SELECT " SANDBOX_COLS
               " FROM sandboxes WHERE team_id = $1::uuid AND status = ANY($2::text[]) "
               "ORDER BY created_at DESC, id DESC",
               2, p, &r, err) != 0)
        return -1;
    return rows_to_list(r, out, n, err);
}

int db_sandbox_transition(db_conn *db, const char *id, unsigned from_mask, sb_status to,
                          unsigned flags, const char *error_message, sandbox_row *out,
                          bool *changed, terr *err)
{
    char from[128];
    status_array(from_mask, from, sizeof from);
    const char *p[6] = {id,
                        from,
                        sb_status_name(to),
                        (flags & DB_SET_STARTED) ? "t" : "f",
                        (flags & DB_SET_ACTIVE) ? "t" : "f",
                        error_message};
    PGresult *r;
    if (db_run(db, "update sandbox status",
               "UPDATE sandboxes SET status = $3, last_updated = now(), "
               "started_at = CASE WHEN $4::bool THEN now() ELSE started_at END, "
               "last_active_at = CASE WHEN $5::bool THEN now() ELSE last_active_at END, "
               "error_message = coalesce($6, error_message) "
               "WHERE id = $1 AND status = ANY($2::text[]) RETURNING " SANDBOX_COLS,
               6, p, &r, err) != 0)
        return -1;
    return single_row(r, out, changed, err);
}

int db_sandbox_transition_unchanged(db_conn *db, const char *id, unsigned from_mask,
                                    int64_t last_updated_us, sb_status to, unsigned flags,
                                    const char *error_message, bool *changed, terr *err)
{
    char from[128], lu[32];
    status_array(from_mask, from, sizeof from);
    snprintf(lu, sizeof lu, "%lld", (long long)last_updated_us);
    const char *p[7] = {id,
                        from,
                        sb_status_name(to),
                        (flags & DB_SET_STARTED) ? "t" : "f",
                        (flags & DB_SET_ACTIVE) ? "t" : "f",
                        error_message,
                        lu};
    PGresult *r;
    if (db_run_prep(db, PREP_TRANSITION_UNCHANGED, "update sandbox status (reconciler)",
                    "UPDATE sandboxes SET status = $3, last_updated = now(), "
                    "started_at = CASE WHEN $4::bool THEN now() ELSE started_at END, "
                    "last_active_at = CASE WHEN $5::bool THEN now() ELSE last_active_at END, "
                    "error_message = coalesce($6, error_message) "
                    "WHERE id = $1 AND status = ANY($2::text[]) "
                    "AND (extract(epoch from last_updated) * 1000000)::bigint = $7::bigint",
                    7, p, &r, err) != 0)
        return -1;
    *changed = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    return 0;
}

int db_sandbox_delete_pending(db_conn *db, const char *id, terr *err)
{
    PGresult *r;
    const char *p[1] = {id};
    if (db_run(db, "delete pending sandbox",
               "DELETE FROM sandboxes WHERE id = $1 AND status = 'pending'", 1, p, &r, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

int db_sandbox_touch(db_conn *db, const char *id, bool *changed, terr *err)
{
    PGresult *r;
    const char *p[1] = {id};
    if (db_run_prep(
            db, PREP_TOUCH, "update last_active_at",
            "UPDATE sandboxes SET last_active_at = now(), last_updated = now() "
            "WHERE id = $1 AND status = 'running' "
            "AND (last_active_at IS NULL OR last_active_at < now() - interval '" DB_TOUCH_COALESCE
            "')",
            1, p, &r, err) != 0)
        return -1;
    *changed = strcmp(PQcmdTuples(r), "1") == 0;
    PQclear(r);
    return 0;
}

int db_sandbox_set_timeout(db_conn *db, const char *id, unsigned from_mask, int timeout_sec,
                           sandbox_row *out, bool *changed, terr *err)
{
    char from[128], tmo[16];
    status_array(from_mask, from, sizeof from);
    snprintf(tmo, sizeof tmo, "%d", timeout_sec);
    const char *p[3] = {id, from, tmo};
    PGresult *r;
    if (db_run(db, "update timeout_sec",
               "UPDATE sandboxes SET timeout_sec = $3::int, last_updated = now() "
               "WHERE id = $1 AND status = ANY($2::text[]) RETURNING " SANDBOX_COLS,
               3, p, &r, err) != 0)
        return -1;
    return single_row(r, out, changed, err);
}

int db_sandbox_token_team(db_conn *db, const char *id, const char *token_hash, char team_id[64],
                          bool *found, terr *err)
{
    const char *p[2] = {id, token_hash};
    PGresult *r;
    *found = false;
    if (db_run(db, "look up access token",
               "SELECT team_id::text FROM sandboxes WHERE id = $1 AND access_token_hash <> '' "
               "AND access_token_hash = $2",
               2, p, &r, err) != 0)
        return -1;
    if (PQntuples(r) == 1) {
        copy_field(team_id, 64, r, 0, 0);
        *found = true;
    }
    PQclear(r);
    return 0;
}

int db_sandbox_set_network(db_conn *db, const char *id, unsigned from_mask, const char *network,
                           sandbox_row *out, bool *changed, terr *err)
{
    char from[128];
    status_array(from_mask, from, sizeof from);
    const char *p[3] = {id, from, network};
    PGresult *r;
    if (db_run(db, "update network",
               "UPDATE sandboxes SET network = $3::jsonb, last_updated = now() "
               "WHERE id = $1 AND status = ANY($2::text[]) RETURNING " SANDBOX_COLS,
               3, p, &r, err) != 0)
        return -1;
    return single_row(r, out, changed, err);
}

int db_sandbox_rows_for_host(db_conn *db, const char *host_id, unsigned status_mask,
                             db_pass_row **out, size_t *n, terr *err)
{
    char statuses[128];
    status_array(status_mask, statuses, sizeof statuses);
    const char *p[2] = {host_id, statuses};
    PGresult *r;
    *out = NULL;
    *n = 0;
    if (db_run_prep(db, PREP_HOST_ROWS, "read host sandboxes",
                    "SELECT id, status, (extract(epoch from last_updated) * 1000000)::bigint, "
                    "extract(epoch from now() - last_updated)::float8 "
                    "FROM sandboxes WHERE host_id = $1 AND status = ANY($2::text[])",
                    2, p, &r, err) != 0)
        return -1;
    int rows = PQntuples(r);
    db_pass_row *list = malloc((rows ? (size_t)rows : 1) * sizeof *list);
    if (!list) {
        PQclear(r);
        return terr_set(err, "out of memory");
    }
    for (int i = 0; i < rows; i++) {
        db_pass_row *l = &list[i];
        copy_field(l->id, sizeof l->id, r, i, 0);
        if (sb_status_parse(PQgetvalue(r, i, 1), &l->status) != 0) {
            terr_set(err, "sandbox %s has unknown status \"%s\" in the database", l->id,
                     PQgetvalue(r, i, 1));
            free(list);
            PQclear(r);
            return -1;
        }
        l->last_updated_us = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        l->age_sec = strtod(PQgetvalue(r, i, 3), NULL);
    }
    PQclear(r);
    *out = list;
    *n = (size_t)rows;
    return 0;
}

int db_sandbox_statuses(db_conn *db, const char *host_id, const char *const *ids, size_t n,
                        int *statuses, double *age_sec, terr *err)
{
    for (size_t i = 0; i < n; i++) {
        statuses[i] = -1;
        if (age_sec) age_sec[i] = 0;
    }
    if (n == 0) return 0;
    char *arr = db_text_array(ids, n);
    if (!arr) return terr_set(err, "out of memory");
    const char *p[2] = {arr, host_id};
    PGresult *r;
    /* $2 NULL: rows of any host. */
    int rc = db_run(
        db, "read sandbox statuses",
        "SELECT u.i, s.status, extract(epoch from now() - s.last_updated)::float8 "
        "FROM unnest($1::text[]) WITH ORDINALITY AS u(id, i) JOIN sandboxes s ON s.id = u.id "
        "WHERE ($2::text IS NULL OR s.host_id = $2::text)",
        2, p, &r, err);
    free(arr);
    if (rc != 0) return -1;
    /* u.i: the 1-based position in ids (no per-row search: n may be 10,000). */
    for (int row = 0; row < PQntuples(r); row++) {
        long long pos = atoll(PQgetvalue(r, row, 0));
        sb_status s;
        if (pos < 1 || (size_t)pos > n || sb_status_parse(PQgetvalue(r, row, 1), &s) != 0) continue;
        statuses[pos - 1] = (int)s;
        if (age_sec) age_sec[pos - 1] = strtod(PQgetvalue(r, row, 2), NULL);
    }
    PQclear(r);
    return 0;
}

int db_sandbox_move_switch(db_conn *db, const char *id, const char *from_host, const char *to_host,
                           sandbox_row *out, bool *changed, terr *err)
{
    PGresult *r;
    const char *p[3] = {id, from_host, to_host};
    if (db_run(db, "switch sandbox host",
               "UPDATE sandboxes SET host_id = $3, status = 'paused', last_updated = now() "
               "WHERE id = $1 AND host_id = $2 AND status = 'moving' RETURNING " SANDBOX_COLS,
               3, p, &r, err) != 0)
        return -1;
    return single_row(r, out, changed, err);
}

int db_sandbox_foreign(db_conn *db, const char *host_id, const char *const *ids, size_t n,
                       bool *foreign, double *age_sec, terr *err)
{
    for (size_t i = 0; i < n; i++) {
        foreign[i] = false;
        age_sec[i] = 0;
    }
    if (n == 0) return 0;
    char *arr = db_text_array(ids, n);
    if (!arr) return terr_set(err, "out of memory");
    const char *p[2] = {arr, host_id};
    PGresult *r;
    int rc = db_run(
        db, "read foreign sandbox rows",
        "SELECT u.i, extract(epoch from now() - s.last_updated)::float8 "
        "FROM unnest($1::text[]) WITH ORDINALITY AS u(id, i) JOIN sandboxes s ON s.id = u.id "
        "JOIN hosts oh ON oh.id = s.host_id JOIN hosts me ON me.id = $2 "
        "WHERE s.host_id <> $2 AND s.status <> 'moving' "
        "  AND oh.agent_id <> '' AND me.agent_id <> '' AND oh.agent_id <> me.agent_id",
        2, p, &r, err);
    free(arr);
    if (rc != 0) return -1;
    for (int row = 0; row < PQntuples(r); row++) {
        long long pos = atoll(PQgetvalue(r, row, 0));
        if (pos < 1 || (size_t)pos > n) continue;
        foreign[pos - 1] = true;
        age_sec[pos - 1] = strtod(PQgetvalue(r, row, 1), NULL);
    }
    PQclear(r);
    return 0;
}

int db_sandbox_list_host(db_conn *db, const char *host_id, unsigned status_mask, sandbox_row **out,
                         size_t *n, terr *err)
{
    char statuses[160];
    status_array(status_mask, statuses, sizeof statuses);
    const char *p[2] = {host_id, statuses};
    PGresult *r;
    *out = NULL;
    *n = 0;
    if (db_run(db, "list host sandboxes",
               "SELECT " SANDBOX_COLS
               " FROM sandboxes WHERE host_id = $1 AND status = ANY($2::text[]) "
               "ORDER BY created_at, id",
               2, p, &r, err) != 0)
        return -1;
    return rows_to_list(r, out, n, err);
}

int db_sandbox_get_with_host(db_conn *db, const char *team_id, const char *id, sandbox_row *out,
                             db_host *host, bool *found, terr *err)
{
    PGresult *r;
    const char *p[2] = {id, team_id};
    *found = false;
    if (db_run_prep(
            db, PREP_SANDBOX_WITH_HOST, "get sandbox and host",
            "SELECT s.*, " HOST_COLS_LIGHT " FROM (SELECT " SANDBOX_COLS
            ", host_id AS row_host_ FROM sandboxes "
            "  WHERE id = $1 AND ($2::uuid IS NULL OR team_id = $2::uuid)) s JOIN hosts h ON h.id = s.row_host_",
            2, p, &r, err) != 0)
        return -1;
    int rc = 0;
    if (PQntuples(r) == 1) {
        *found = true;
        rc = row_from_result(r, 0, out, err);
        db_host_from_result_at(r, 0, SANDBOX_NCOLS + 1, host);
    }
    PQclear(r);
    return rc;
}
