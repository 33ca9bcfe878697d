#include "db_templates.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEMPLATE_COLS                                                                                   \
    "t.id, t.team_id::text, t.name, t.base, array_to_string(t.packages, ','), t.setup <> '', "          \
    "t.status, t.digest, t.size_bytes, t.error, (extract(epoch from t.created_at) * 1000000)::bigint, " \
    "coalesce((SELECT h.host_id FROM template_hosts h WHERE h.template_id = t.id AND h.builder), '')"

static void trim_nl(terr *err)
{
    if (!err) return;
    size_t n = strlen(err->msg);
    while (n > 0 && err->msg[n - 1] == '\n') err->msg[--n] = '\0';
}

/* PQexecParams with the checks of db.c's db_run(); *sqlstate (if non-NULL)
 * gets the error's SQLSTATE ("" on success). */
static int q(db_conn *db, const char *what, const char *sql, int n, const char *const *params,
             PGresult **res, char sqlstate[6], terr *err)
{
    *res = NULL;
    if (sqlstate) sqlstate[0] = '\0';
    if (db_ensure(db, err) != 0) return -1;
    PGresult *r = PQexecParams(db_pg(db), sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (sqlstate && code) snprintf(sqlstate, 6, "%s", code);
        terr_set(err, "%s: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(db_pg(db)));
        trim_nl(err);
        PQclear(r);
        return -1;
    }
    *res = r;
    return 0;
}

static void cp(char *dst, size_t size, PGresult *r, int row, int col)
{
    snprintf(dst, size, "%s", PQgetvalue(r, row, col));
}

static void from_result(PGresult *r, int i, template_row *t)
{
    memset(t, 0, sizeof *t);
    cp(t->id, sizeof t->id, r, i, 0);
    cp(t->team_id, sizeof t->team_id, r, i, 1);
    cp(t->name, sizeof t->name, r, i, 2);
    cp(t->base, sizeof t->base, r, i, 3);
    cp(t->packages, sizeof t->packages, r, i, 4);
    t->has_setup = strcmp(PQgetvalue(r, i, 5), "t") == 0;
    if (tpl_status_parse(PQgetvalue(r, i, 6), &t->status) != 0) t->status = TPL_ERROR;
    cp(t->digest, sizeof t->digest, r, i, 7);
    t->size_bytes = strtoll(PQgetvalue(r, i, 8), NULL, 10);
    cp(t->error, sizeof t->error, r, i, 9);
    t->created_at_us = strtoll(PQgetvalue(r, i, 10), NULL, 10);
    cp(t->host_id, sizeof t->host_id, r, i, 11);
}

int db_template_insert(db_conn *db, const template_row *in, const char *setup, bool *duplicate,
                       terr *err)
{
    *duplicate = false;
    char arr[sizeof in->packages + 2];
    snprintf(arr, sizeof arr, "{%s}", in->packages); /* names are [a-z0-9+.-]: no quoting needed */
    const char *p[7] = {in->id, in->team_id,        in->name,   in->base,
                        arr,    setup ? setup : "", in->host_id};
    PGresult *r;
    char state[6];
    int rc =
        q(db, "insert template",
          "WITH t AS (INSERT INTO templates (id, team_id, name, base, packages, setup) "
          "VALUES ($1, $2::uuid, $3, $4, $5::text[], $6) RETURNING id) "
          "INSERT INTO template_hosts (template_id, host_id, builder) SELECT id, $7, true FROM t",
          7, p, &r, state, err);
    if (rc != 0) {
        if (strcmp(state, "23505") == 0) {
            *duplicate = true;
            return 0;
        }
        return -1;
    }
    PQclear(r);
    return 0;
}

int db_template_get(db_conn *db, const char *team_id, const char *name, template_row *out,
                    bool *found, terr *err)
{
    *found = false;
    const char *p[2] = {team_id, name};
    PGresult *r;
    if (q(db, "get template",
          "SELECT " TEMPLATE_COLS " FROM templates t WHERE t.team_id = $1::uuid AND t.name = $2", 2,
          p, &r, NULL, err) != 0)
        return -1;
    if (PQntuples(r) == 1) {
        from_result(r, 0, out);
        *found = true;
    }
    PQclear(r);
    return 0;
}

int db_template_list(db_conn *db, const char *team_id, template_row **out, size_t *n, terr *err)
{
    *out = NULL;
    *n = 0;
    const char *p[1] = {team_id};
    PGresult *r;
    if (q(db, "list templates",
          "SELECT " TEMPLATE_COLS " FROM templates t WHERE t.team_id = $1::uuid ORDER BY t.name", 1,
          p, &r, NULL, err) != 0)
        return -1;
    int rows = PQntuples(r);
    template_row *v = calloc(rows ? (size_t)rows : 1, sizeof *v);
    if (!v) {
        PQclear(r);
        return terr_set(err, "out of memory");
    }
    for (int i = 0; i < rows; i++) from_result(r, i, &v[i]);
    PQclear(r);
    *out = v;
    *n = (size_t)rows;
    return 0;
}

int db_template_settle(db_conn *db, const char *id, const char *host_id, tpl_status status,
                       const char *digest, int64_t size_bytes, const char *error, bool *changed,
                       terr *err)
{
    *changed = false;
    char size[32];
    snprintf(size, sizeof size, "%lld", (long long)size_bytes);
    const char *p[6] = {id,   tpl_status_name(status), digest ? digest : "",
                        size, error ? error : "",      host_id};
    PGresult *r;
    if (q(db, "settle template",
          "WITH t AS (UPDATE templates SET status = $2, digest = $3, size_bytes = $4::bigint, error = $5 "
          "WHERE id = $1 AND status = 'building' RETURNING id) "
          "UPDATE template_hosts SET status = $2, digest = $3, updated_at = now() "
          "WHERE template_id IN (SELECT id FROM t) AND host_id = $6 "
          "RETURNING template_id",
          6, p, &r, NULL, err) != 0)
        return -1;
    *changed = PQntuples(r) > 0;
    PQclear(r);
    return 0;
}

int db_template_delete(db_conn *db, const char *id, terr *err)
{
    const char *p[1] = {id};
    PGresult *r;
    if (q(db, "delete template", "DELETE FROM templates WHERE id = $1", 1, p, &r, NULL, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

int db_template_sandboxes(db_conn *db, const char *team_id, const char *name, long *count,
                          terr *err)
{
    *count = 0;
    const char *p[2] = {team_id, name};
    PGresult *r;
    if (q(db, "count template sandboxes",
          "SELECT count(*) FROM sandboxes WHERE team_id = $1::uuid AND template = $2 "
          "AND status NOT IN ('stopped', 'error')",
          2, p, &r, NULL, err) != 0)
        return -1;
    *count = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

int db_template_hosts(db_conn *db, const char *id, template_host_row **out, size_t *n, terr *err)
{
    *out = NULL;
    *n = 0;
    const char *p[1] = {id};
    PGresult *r;
    if (q(db, "template hosts",
          "SELECT th.host_id, th.status, th.digest, th.builder, th.error, th.attempts "
          "FROM template_hosts th WHERE th.template_id = $1 ORDER BY th.host_id",
          1, p, &r, NULL, err) != 0)
        return -1;
    int rows = PQntuples(r);
    template_host_row *v = calloc(rows ? (size_t)rows : 1, sizeof *v);
    if (!v) {
        PQclear(r);
        return terr_set(err, "out of memory");
    }
    for (int i = 0; i < rows; i++) {
        cp(v[i].host_id, sizeof v[i].host_id, r, i, 0);
        cp(v[i].status, sizeof v[i].status, r, i, 1);
        cp(v[i].digest, sizeof v[i].digest, r, i, 2);
        v[i].builder = strcmp(PQgetvalue(r, i, 3), "t") == 0;
        cp(v[i].error, sizeof v[i].error, r, i, 4);
        v[i].attempts = atoi(PQgetvalue(r, i, 5));
    }
    PQclear(r);
    *out = v;
    *n = (size_t)rows;
    return 0;
}

/* Which (template, host) may take a copy: the template is ready with a
 * digest, the host reads ready (not draining, not unreachable) and has no
 * row for it, or a failed one whose backoff passed, or a copy not settled
 * within stale_sec (its control plane died). The "due" test is written out
 * twice: for the candidate's row (th) and for the conflicting row (x). */
int db_template_copy_claim(db_conn *db, const char *tpl_id, const char *host_id, int stale_sec,
                           template_copy_claim *out, bool *found, terr *err)
{
    *found = false;
    char stale[16], base[16], max[16], fails[16];
    snprintf(stale, sizeof stale, "%d", stale_sec);
    snprintf(base, sizeof base, "%d", TEMPLATE_COPY_RETRY_BASE_SEC);
    snprintf(max, sizeof max, "%d", TEMPLATE_COPY_RETRY_MAX_SEC);
    snprintf(fails, sizeof fails, "%d", DB_HOST_UNREACHABLE_FAILURES);
    const char *p[6] = {tpl_id, host_id, stale, base, max, fails};
    PGresult *r;
    if (q(db, "claim template copy",
          "WITH cand AS (SELECT t.id, h.id AS host_id, t.digest FROM templates t CROSS JOIN hosts h "
          "  LEFT JOIN template_hosts th ON th.template_id = t.id AND th.host_id = h.id "
          "  WHERE t.status = 'ready' AND t.digest <> '' AND h.state = 'ready' "
          "    AND h.failures < $6::int "
          "    AND ($1::text IS NULL OR t.id = $1) AND ($2::text IS NULL OR h.id = $2) "
          "    AND (th.template_id IS NULL "
          "      OR (th.status = 'error' AND NOT th.builder AND th.updated_at < now() - "
          "          make_interval(secs => least($4::int * power(2, least(th.attempts, 16)), $5::int))) "
          "      OR (th.status = 'copying' AND th.updated_at < now() - make_interval(secs => $3::int))) "
          "  ORDER BY t.created_at, h.id LIMIT 1) "
          "INSERT INTO template_hosts AS x (template_id, host_id, status, digest, updated_at) "
          "SELECT id, host_id, 'copying', digest, now() FROM cand "
          "ON CONFLICT (template_id, host_id) DO UPDATE SET status = 'copying', "
          "  digest = excluded.digest, updated_at = now(), error = '' "
          "  WHERE (x.status = 'error' AND NOT x.builder AND x.updated_at < now() - "
          "          make_interval(secs => least($4::int * power(2, least(x.attempts, 16)), $5::int))) "
          "     OR (x.status = 'copying' AND x.updated_at < now() - make_interval(secs => $3::int)) "
          "RETURNING x.template_id, x.host_id, x.digest",
          6, p, &r, NULL, err) != 0)
        return -1;
    if (PQntuples(r) == 1) {
        memset(out, 0, sizeof *out);
        cp(out->template_id, sizeof out->template_id, r, 0, 0);
        cp(out->host_id, sizeof out->host_id, r, 0, 1);
        cp(out->digest, sizeof out->digest, r, 0, 2);
        *found = true;
    }
    PQclear(r);
    return 0;
}

int db_template_copy_settle(db_conn *db, const char *tpl_id, const char *host_id, bool ok,
                            const char *error, bool *changed, terr *err)
{
    *changed = false;
    const char *p[4] = {tpl_id, host_id, ok ? "ready" : "error", error ? error : ""};
    PGresult *r;
    if (q(db, "settle template copy",
          "UPDATE template_hosts SET status = $3, error = $4, updated_at = now(), "
          "  attempts = CASE WHEN $3 = 'ready' THEN 0 ELSE attempts + 1 END "
          "WHERE template_id = $1 AND host_id = $2 AND status = 'copying' RETURNING template_id",
          4, p, &r, NULL, err) != 0)
        return -1;
    *changed = PQntuples(r) > 0;
    PQclear(r);
    return 0;
}

int db_template_copy_heartbeat(db_conn *db, const char *tpl_id, const char *host_id, terr *err)
{
    const char *p[2] = {tpl_id, host_id};
    PGresult *r;
    if (q(db, "template copy heartbeat",
          "UPDATE template_hosts SET updated_at = now() "
          "WHERE template_id = $1 AND host_id = $2 AND status = 'copying'",
          2, p, &r, NULL, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

int db_template_copy_source(db_conn *db, const char *tpl_id, const char *digest,
                            const char *not_host, db_host *out, bool *found, terr *err)
{
    *found = false;
    char fails[16];
    snprintf(fails, sizeof fails, "%d", DB_HOST_UNREACHABLE_FAILURES);
    const char *p[4] = {tpl_id, digest, not_host ? not_host : "", fails};
    PGresult *r;
    if (q(db, "template copy source",
          "SELECT h.id, h.address, h.agent_id FROM hosts h JOIN template_hosts th ON th.host_id = h.id "
          "WHERE th.template_id = $1 AND th.status = 'ready' AND th.digest = $2 AND h.id <> $3 "
          "  AND h.failures < $4::int "
          "ORDER BY th.builder DESC, h.id LIMIT 1",
          4, p, &r, NULL, err) != 0)
        return -1;
    if (PQntuples(r) == 1) {
        memset(out, 0, sizeof *out);
        cp(out->id, sizeof out->id, r, 0, 0);
        cp(out->address, sizeof out->address, r, 0, 1);
        cp(out->agent_id, sizeof out->agent_id, r, 0, 2);
        *found = true;
    }
    PQclear(r);
    return 0;
}
