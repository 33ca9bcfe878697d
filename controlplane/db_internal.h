/* db_internal: what db.c shares with the files that hold the statements by
 * table (db_keys.c, db_hosts.c, db_sandboxes.c). For db_*.c only: callers
 * use db.h. The connection itself (struct db_conn) stays private to db.c;
 * the others reach PostgreSQL only through db_run / db_run_prep, which keep
 * db.h's rules (reconnect, one retry of a plain read, db_unavailable, the
 * error metric). */
#ifndef TORPOR_CP_DB_INTERNAL_H
#define TORPOR_CP_DB_INTERNAL_H

#include <stdio.h>

#include "db.h"

/* The statements of the hot paths (every request's key check, the row of a
 * GET or ping, the ping's touch, the reconciler's per-pass queries) are
 * prepared once per connection: PostgreSQL then skips parsing and planning,
 * which was about half of its time per statement. */
typedef enum db_prep {
    PREP_NONE = -1,
    PREP_KEY_LOOKUP,
    PREP_SANDBOX_GET_TEAM,
    PREP_SANDBOX_GET_ANY,
    PREP_SANDBOX_WITH_HOST,
    PREP_TOUCH,
    PREP_HOST_ROWS,
    PREP_TRANSITION_UNCHANGED,
    PREP_COUNT
} db_prep;

/* What a host reads as (db_host.status), over hosts h. */
#define STR2(x) #x
#define STR(x) STR2(x)
#define HOST_STATUS_EXPR             \
    "(CASE WHEN h.failures >= " STR( \
        DB_HOST_UNREACHABLE_FAILURES) " THEN 'unreachable' ELSE h.state END)"

/* The columns of a host, over hosts h, as db_host_from_result_at reads them,
 * without the per-host sandbox counts (0): for the request path. */
#define HOST_COLS_LIGHT                                                                                            \
    "h.id, h.address, h.agent_id, h.state, " HOST_STATUS_EXPR " AS status, "                                       \
    "coalesce(extract(epoch from now() - h.last_seen)::float8, -1) AS seen_age, h.failures, "                      \
    "coalesce(h.max_memory_mb, -1) AS max_mem, h.memory_total_mb, h.memory_reserved_mb, h.disk_free_mb, h.vcpus, " \
    "0 AS n_live, 0 AS mem_used, coalesce(h.memory_capacity_mb, 0) AS mem_capacity"

/* Runs a parameterised statement (prepared as ps unless PREP_NONE); *res is
 * set only on success (TUPLES_OK or COMMAND_OK) and must be PQclear'ed. */
int db_run_prep(db_conn *db, db_prep ps, const char *what, const char *sql, int n,
                const char *const *params, PGresult **res, terr *err);
/* db_run_prep without preparing (PREP_NONE). */
int db_run(db_conn *db, const char *what, const char *sql, int n, const char *const *params,
           PGresult **res, terr *err);

/* A PostgreSQL text[] literal of arbitrary strings: every element quoted,
 * '"' and '\' escaped. malloc'd; NULL when out of memory. */
char *db_text_array(const char *const *items, size_t n);

/* Row i of r as a host, its columns (HOST_COLS_LIGHT's order) from column c
 * on (db_hosts.c). */
void db_host_from_result_at(PGresult *r, int i, int c, db_host *h);

static inline void copy_field(char *dst, size_t size, PGresult *r, int row, int col)
{
    snprintf(dst, size, "%s", PQgetvalue(r, row, col));
}

#endif
