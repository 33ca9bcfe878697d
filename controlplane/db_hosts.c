/* db_hosts: the SQL of hosts (table hosts): registration, status and
 * capacity, the scheduler's pick (db_host_pick, db_host_pick_template over
 * template_hosts), the probe's records, the agent identity, drain and
 * removal; the contract is in db.h, the shared helpers in db_internal.h. */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

int db_host_upsert(db_conn *db, const char *id, const char *address, terr *err)
{
    PGresult *r;
    const char *p[2] = {id, address};
    if (db_run(db, "register host",
               "INSERT INTO hosts (id, address) VALUES ($1, $2) "
               "ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address",
               2, p, &r, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

/* Columns of a host (host_from_result), over hosts h. */
#define HOST_COLS                                                                                                    \
    "h.id, h.address, h.agent_id, h.state, " HOST_STATUS_EXPR " AS status, "                                         \
    "coalesce(extract(epoch from now() - h.last_seen)::float8, -1) AS seen_age, h.failures, "                        \
    "coalesce(h.max_memory_mb, -1) AS max_mem, h.memory_total_mb, h.memory_reserved_mb, h.disk_free_mb, h.vcpus, "   \
    "(SELECT count(*) FROM sandboxes s WHERE s.host_id = h.id AND s.status NOT IN ('stopped', 'error')) AS n_live, " \
    "(SELECT coalesce(sum(s.memory_mb), 0) FROM sandboxes s WHERE s.host_id = h.id "                                 \
    "   AND s.status IN ('pending', 'running', 'pausing', 'resuming')) AS mem_used, "                                \
    "coalesce(h.memory_capacity_mb, 0) AS mem_capacity"

void db_host_from_result_at(PGresult *r, int i, int c, db_host *h)
{
    memset(h, 0, sizeof *h);
    copy_field(h->id, sizeof h->id, r, i, c + 0);
    copy_field(h->address, sizeof h->address, r, i, c + 1);
    copy_field(h->agent_id, sizeof h->agent_id, r, i, c + 2);
    copy_field(h->state, sizeof h->state, r, i, c + 3);
    copy_field(h->status, sizeof h->status, r, i, c + 4);
    h->last_seen_age_sec = strtod(PQgetvalue(r, i, c + 5), NULL);
    h->failures = atoi(PQgetvalue(r, i, c + 6));
    h->max_memory_mb = atoll(PQgetvalue(r, i, c + 7));
    h->memory_total_mb = atoll(PQgetvalue(r, i, c + 8));
    h->memory_reserved_mb = atoll(PQgetvalue(r, i, c + 9));
    h->disk_free_mb = atoll(PQgetvalue(r, i, c + 10));
    h->vcpus = atoi(PQgetvalue(r, i, c + 11));
    h->sandboxes = atoll(PQgetvalue(r, i, c + 12));
    h->memory_used_mb = atoll(PQgetvalue(r, i, c + 13));
    h->memory_capacity_mb = atoll(PQgetvalue(r, i, c + 14));
}

static void host_from_result(PGresult *r, int i, db_host *h) { db_host_from_result_at(r, i, 0, h); }

int db_host_get(db_conn *db, const char *id, db_host *out, bool *found, terr *err)
{
    PGresult *r;
    const char *p[1] = {id};
    *found = false;
    if (db_run(db, "get host", "SELECT " HOST_COLS_LIGHT " FROM hosts h WHERE h.id = $1", 1, p, &r,
               err) != 0)
        return -1;
    if (PQntuples(r) == 1) {
        host_from_result(r, 0, out);
        *found = true;
    }
    PQclear(r);
    return 0;
}

int db_host_list(db_conn *db, db_host **out, size_t *n, terr *err)
{
    PGresult *r;
    *out = NULL;
    *n = 0;
    if (db_run(db, "list hosts", "SELECT " HOST_COLS " FROM hosts h ORDER BY h.id", 0, NULL, &r,
               err) != 0)
        return -1;
    int rows = PQntuples(r);
    db_host *hosts = calloc(rows ? (size_t)rows : 1, sizeof *hosts);
    if (!hosts) {
        PQclear(r);
        return terr_set(err, "out of memory");
    }
    for (int i = 0; i < rows; i++) host_from_result(r, i, &hosts[i]);
    PQclear(r);
    *out = hosts;
    *n = (size_t)rows;
    return 0;
}

/* db_host_pick, and with tpl_id only hosts whose template_hosts row for it
 * is ready with digest (db_host_pick_template). */
static int host_pick(db_conn *db, int memory_mb, const char *template_name, const char *tpl_id,
                     const char *digest, const char *const *skip, size_t n_skip, db_host *out,
                     bool *found, terr *err)
{
    PGresult *r;
    *found = false;
    char mem[16];
    snprintf(mem, sizeof mem, "%d", memory_mb);
    char *arr = db_text_array(skip, n_skip);
    if (!arr) return terr_set(err, "out of memory");
    const char *p[5] = {mem, template_name, arr, tpl_id, digest};
    int rc = db_run(
        db, "pick host",
        "SELECT * FROM (SELECT " HOST_COLS
        ", coalesce(h.max_memory_mb, nullif(h.memory_capacity_mb, 0), nullif(h.memory_total_mb, 0)) AS cap, "
        "  h.templates FROM hosts h WHERE h.state = 'ready' AND h.failures < " STR(
            DB_HOST_UNREACHABLE_FAILURES) " AND h.id <> ALL($3::text[])) c "
                                          "WHERE (c.cap IS NULL OR c.cap - c.mem_used >= $1::bigint) "
                                          "  AND (c.disk_free_mb = 0 OR c.disk_free_mb >= $1::bigint + " STR(
                                              DB_HOST_DISK_MARGIN_MB) ") "
                                                                      "  AND ($2::text IS NULL OR cardinality(c.templates) = 0 OR $2 = ANY(c.templates)) "
                                                                      "  AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM template_hosts th "
                                                                      "       WHERE th.template_id = $4 AND th.host_id = c.id "
                                                                      "       AND th.status = 'ready' AND th.digest = $5)) "
                                                                      "ORDER BY c.n_live, c.id LIMIT 1",
        5, p, &r, err);
    free(arr);
    if (rc != 0) return -1;
    if (PQntuples(r) == 1) {
        host_from_result(r, 0, out);
        *found = true;
    }
    PQclear(r);
    return 0;
}

int db_host_pick(db_conn *db, int memory_mb, const char *template_name, const char *const *skip,
                 size_t n_skip, db_host *out, bool *found, terr *err)
{
    return host_pick(db, memory_mb, template_name, NULL, NULL, skip, n_skip, out, found, err);
}

int db_host_pick_template(db_conn *db, int memory_mb, const char *tpl_id, const char *digest,
                          const char *const *skip, size_t n_skip, db_host *out, bool *found,
                          terr *err)
{
    return host_pick(db, memory_mb, NULL, tpl_id, digest, skip, n_skip, out, found, err);
}

/* Runs an UPDATE of one host that returns (old status, new status). */
static int host_update_status(db_conn *db, const char *what, const char *sql, int n,
                              const char *const *p, char *old_status, char *new_status, terr *err)
{
    PGresult *r;
    old_status[0] = new_status[0] = '\0';
    if (db_run(db, what, sql, n, p, &r, err) != 0) return -1;
    if (PQntuples(r) == 1) {
        snprintf(old_status, 16, "%s", PQgetvalue(r, 0, 0));
        snprintf(new_status, 16, "%s", PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return 0;
}

/* Old status of hosts row h joined as o (a FOR UPDATE read of the same row). */
#define OLD_STATUS_EXPR              \
    "(CASE WHEN o.failures >= " STR( \
        DB_HOST_UNREACHABLE_FAILURES) " THEN 'unreachable' ELSE o.state END)"

int db_host_record_answer(db_conn *db, const char *id, const db_host_info *info, char *old_status,
                          char *new_status, terr *err)
{
    char total[24] = "", reserved[24] = "", disk[24] = "", vcpus[16] = "", capacity[24] = "";
    char *tpl = NULL;
    if (info) {
        snprintf(total, sizeof total, "%lld", info->memory_total_mb);
        snprintf(reserved, sizeof reserved, "%lld", info->memory_reserved_mb);
        snprintf(disk, sizeof disk, "%lld", info->disk_free_mb);
        snprintf(vcpus, sizeof vcpus, "%d", info->vcpus);
        snprintf(capacity, sizeof capacity, "%lld", info->memory_capacity_mb);
        if (!(tpl = db_text_array(info->templates, info->n_templates)))
            return terr_set(err, "out of memory");
    }
    const char *p[7] = {
        id,  info ? total : NULL,   info ? reserved : NULL, info ? disk : NULL, info ? vcpus : NULL,
        tpl, info ? capacity : NULL};
    int rc = host_update_status(
        db, "record host answer",
        "WITH o AS (SELECT id, state, failures FROM hosts WHERE id = $1 FOR UPDATE) "
        "UPDATE hosts h SET last_seen = now(), failures = 0, "
        "  state = CASE WHEN h.state = 'draining' THEN 'draining' ELSE 'ready' END, "
        "  memory_total_mb = coalesce($2::bigint, h.memory_total_mb), "
        "  memory_reserved_mb = coalesce($3::bigint, h.memory_reserved_mb), "
        "  disk_free_mb = coalesce($4::bigint, h.disk_free_mb), vcpus = coalesce($5::int, h.vcpus), "
        "  templates = coalesce($6::text[], h.templates), "
        "  memory_capacity_mb = CASE WHEN $7::bigint IS NULL THEN h.memory_capacity_mb "
        "                            ELSE nullif($7::bigint, 0) END "
        "FROM o WHERE h.id = o.id RETURNING " OLD_STATUS_EXPR ", "
        "  (CASE WHEN h.failures >= " STR(
            DB_HOST_UNREACHABLE_FAILURES) " THEN 'unreachable' ELSE h.state END)",
        7, p, old_status, new_status, err);
    free(tpl);
    return rc;
}

int db_host_record_failure(db_conn *db, const char *id, double fresh_sec, char *old_status,
                           char *new_status, terr *err)
{
    char fresh[32];
    snprintf(fresh, sizeof fresh, "%.3f", fresh_sec > 0 ? fresh_sec : 0.0);
    const char *p[2] = {id, fresh};
    /* Heard within fresh_sec by anyone: this failure is this replica's own. */
#define HOST_STALE \
    "(o.last_seen IS NULL OR o.last_seen < now() - make_interval(secs => $2::float8))"
#define HOST_FAILURES "(CASE WHEN " HOST_STALE " THEN o.failures + 1 ELSE o.failures END)"
    return host_update_status(
        db, "record host failure",
        "WITH o AS (SELECT id, state, failures, last_seen FROM hosts WHERE id = $1 FOR UPDATE) "
        "UPDATE hosts h SET failures = " HOST_FAILURES ", "
        "  state = CASE WHEN o.state = 'draining' THEN 'draining' "
        "               WHEN " HOST_FAILURES " >= " STR(
            DB_HOST_UNREACHABLE_FAILURES) " "
                                          "               THEN 'unreachable' ELSE o.state END "
                                          "FROM o WHERE h.id = o.id RETURNING " OLD_STATUS_EXPR ", "
                                          "  (CASE WHEN h.failures >= " STR(
                                              DB_HOST_UNREACHABLE_FAILURES) " THEN 'unreachable' ELSE h.state END)",
        2, p, old_status, new_status, err);
#undef HOST_FAILURES
#undef HOST_STALE
}

int db_host_set_state(db_conn *db, const char *id, const char *state, bool *found, terr *err)
{
    PGresult *r;
    const char *p[2] = {id, state};
    *found = false;
    /* ready only undoes a drain; whether it answers decides the rest. */
    if (db_run(
            db, "set host state",
            "UPDATE hosts SET state = $2 WHERE id = $1 AND ($2 <> 'ready' OR state = 'draining')",
            2, p, &r, err) != 0)
        return -1;
    *found = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return 0;
}

int db_host_set_max_memory(db_conn *db, const char *id, long long memory_mb, bool *found, terr *err)
{
    PGresult *r;
    char mem[24];
    snprintf(mem, sizeof mem, "%lld", memory_mb);
    const char *p[2] = {id, memory_mb >= 0 ? mem : NULL};
    *found = false;
    if (db_run(db, "set host memory cap",
               "UPDATE hosts SET max_memory_mb = $2::bigint WHERE id = $1", 2, p, &r, err) != 0)
        return -1;
    *found = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return 0;
}

int db_host_claim_identity(db_conn *db, const char *id, const char *agent_id, char recorded[64],
                           bool *found, terr *err)
{
    PGresult *r;
    const char *p[2] = {id, agent_id};
    *found = false;
    recorded[0] = '\0';
    /* One statement: the row lock makes the claim and the read atomic. */
    if (db_run(db, "record host agent identity",
               "UPDATE hosts SET agent_id = CASE WHEN agent_id = '' THEN $2 ELSE agent_id END "
               "WHERE id = $1 RETURNING agent_id",
               2, p, &r, err) != 0)
        return -1;
    if (PQntuples(r) == 1) {
        copy_field(recorded, 64, r, 0, 0);
        *found = true;
    }
    PQclear(r);
    return 0;
}

int db_host_reset_identity(db_conn *db, const char *id, bool *found, terr *err)
{
    PGresult *r;
    const char *p[1] = {id};
    *found = false;
    if (db_run(db, "reset host agent identity", "UPDATE hosts SET agent_id = '' WHERE id = $1", 1,
               p, &r, err) != 0)
        return -1;
    *found = strcmp(PQcmdTuples(r), "0") != 0;
    PQclear(r);
    return 0;
}

int db_host_remove(db_conn *db, const char *id, long long *live, bool *found, terr *err)
{
    PGresult *r;
    const char *p[1] = {id};
    *live = 0;
    *found = false;
    if (db_begin(db, err) != 0) return -1;
    if (db_run(db, "lock host", "SELECT 1 FROM hosts WHERE id = $1 FOR UPDATE", 1, p, &r, err) != 0)
        goto fail;
    *found = PQntuples(r) == 1;
    PQclear(r);
    if (!*found) goto done;
    if (db_run(
            db, "count host sandboxes",
            "SELECT count(*) FROM sandboxes WHERE host_id = $1 AND status NOT IN ('stopped', 'error')",
            1, p, &r, err) != 0)
        goto fail;
    *live = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (*live > 0) goto done;
    if (db_run(db, "remove host rows", "DELETE FROM sandboxes WHERE host_id = $1", 1, p, &r, err) !=
        0)
        goto fail;
    PQclear(r);
    if (db_run(db, "remove host", "DELETE FROM hosts WHERE id = $1", 1, p, &r, err) != 0) goto fail;
    PQclear(r);
done:
    return db_commit(db, err);
fail:
    db_rollback(db);
    return -1;
}
