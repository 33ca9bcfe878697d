/* db: the connection to PostgreSQL (open, reconnect, the one retry of a
 * plain read), running a statement (db_run, db_run_prep: prepared once per
 * connection), transactions, advisory locks, the server clock, and the
 * helpers the statement files share (db_internal.h); the contract is in
 * db.h. The statements, by table: db_keys.c (teams, API keys, quotas),
 * db_hosts.c, db_sandboxes.c, db_templates.c. */
#include "db.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "db_internal.h"
#include "log.h"

struct db_conn {
    PGconn *pg;
    bool in_tx;                /* between db_begin and db_commit/db_rollback: no retry */
    bool down;                 /* the last failure was the connection, not the statement */
    bool prepared[PREP_COUNT]; /* on this connection (a reset forgets them) */
};

static atomic_uint_least64_t errors; /* db_error_count */

static void count_error(void) { atomic_fetch_add_explicit(&errors, 1, memory_order_relaxed); }

uint64_t db_error_count(void) { return atomic_load_explicit(&errors, memory_order_relaxed); }

/* A connect to an unreachable server gives up after this long (a value in
 * the caller's conninfo wins). */
#define DB_CONNECT_TIMEOUT "5"

static void notice_to_log(void *arg, const char *message)
{
    size_t n = strlen(message);
    while (n > 0 && message[n - 1] == '\n') n--;
    log_debug("event=pg_notice message=\"%.*s\"", (int)n, message);
}

int db_open(const char *conninfo, db_conn **out, terr *err)
{
    *out = NULL;
    if (!conninfo || !*conninfo)
        return terr_set(err, "no database URL (set --database-url or TORPOR_DATABASE_URL)");
    db_conn *db = calloc(1, sizeof *db);
    if (!db) return terr_set(err, "out of memory");
    /* connect_timeout first: a value in the caller's conninfo overrides it. */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const vals[] = {DB_CONNECT_TIMEOUT, conninfo, NULL};
    db->pg = PQconnectdbParams(keys, vals, 1);
    if (!db->pg || PQstatus(db->pg) != CONNECTION_OK) {
        terr_set(err, "connect to PostgreSQL: %s",
                 db->pg ? PQerrorMessage(db->pg) : "out of memory");
        /* libpq messages end with a newline; drop it so log lines stay whole. */
        if (err) {
            size_t n = strlen(err->msg);
            while (n > 0 && err->msg[n - 1] == '\n') err->msg[--n] = '\0';
        }
        PQfinish(db->pg);
        free(db);
        count_error();
        return -1;
    }
    PQsetNoticeProcessor(db->pg, notice_to_log, NULL);
    *out = db;
    return 0;
}

void db_close(db_conn *db)
{
    if (!db) return;
    PQfinish(db->pg);
    free(db);
}

PGconn *db_pg(db_conn *db) { return db->pg; }

static int pg_error(db_conn *db, terr *err, const char *what)
{
    terr_set(err, "%s: %s", what, PQerrorMessage(db->pg));
    if (err) {
        size_t n = strlen(err->msg);
        while (n > 0 && err->msg[n - 1] == '\n') err->msg[--n] = '\0';
    }
    return -1;
}

int db_ensure(db_conn *db, terr *err)
{
    if (PQstatus(db->pg) == CONNECTION_OK) return 0;
    db->in_tx = false; /* a transaction does not survive its connection */
    PQreset(db->pg);
    memset(db->prepared, 0, sizeof db->prepared); /* a new server session */
    if (PQstatus(db->pg) != CONNECTION_OK) {
        count_error();
        db->down = true;
        log_warn("event=db_reconnect ok=0");
        return pg_error(db, err, "reconnect to PostgreSQL");
    }
    log_warn("event=db_reconnect ok=1");
    return 0;
}

bool db_unavailable(const db_conn *db) { return db->down; }

/* A statement that may run twice with the same effect: a plain read. Reads
 * that take session state (advisory locks) or row locks are not retried. */
static bool db_idempotent(const char *sql)
{
    while (*sql == ' ' || *sql == '\n') sql++;
    return strncasecmp(sql, "SELECT", 6) == 0 && !strstr(sql, "pg_advisory") &&
           !strstr(sql, "FOR UPDATE");
}

/* One execution of sql: prepared as statement ps first when ps is not
 * PREP_NONE and this connection has not prepared it yet. NULL or a failed
 * result as PQexecParams gives them. */
static PGresult *exec_once(db_conn *db, db_prep ps, const char *sql, int n,
                           const char *const *params)
{
    if (ps == PREP_NONE) return PQexecParams(db->pg, sql, n, NULL, params, NULL, NULL, 0);
    char name[16];
    snprintf(name, sizeof name, "tp%d", (int)ps);
    if (!db->prepared[ps]) {
        PGresult *p = PQprepare(db->pg, name, sql, n, NULL);
        if (!p || PQresultStatus(p) != PGRES_COMMAND_OK) return p;
        PQclear(p);
        db->prepared[ps] = true;
    }
    return PQexecPrepared(db->pg, name, n, params, NULL, NULL, 0);
}

/* Runs a parameterised statement (prepared as ps unless PREP_NONE); *res is
 * set only on success (TUPLES_OK or COMMAND_OK) and must be PQclear'ed. */
int db_run_prep(db_conn *db, db_prep ps, const char *what, const char *sql, int n,
                const char *const *params, PGresult **res, terr *err)
{
    *res = NULL;
    db->down = false;
    if (db_ensure(db, err) != 0) return -1;
    bool was_tx = db->in_tx;
    PGresult *r = exec_once(db, ps, sql, n, params);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && PQstatus(db->pg) != CONNECTION_OK) {
        /* The connection broke (PostgreSQL restarted, a network cut): a
         * plain read outside a transaction is retried once on a fresh one,
         * so the first request after a restart does not fail. */
        if (!was_tx && db_idempotent(sql)) {
            PQclear(r);
            log_warn("event=db_retry what=\"%s\"", what);
            if (db_ensure(db, err) != 0) return -1;
            r = exec_once(db, ps, sql, n, params);
            st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        }
        if (PQstatus(db->pg) != CONNECTION_OK) {
            db->down = true;
            db->in_tx = false;
        }
    }
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        count_error();
        if (r) {
            terr_set(err, "%s: %s", what, PQresultErrorMessage(r));
            if (err) {
                size_t len = strlen(err->msg);
                while (len > 0 && err->msg[len - 1] == '\n') err->msg[--len] = '\0';
            }
            PQclear(r);
            return -1;
        }
        return pg_error(db, err, what);
    }
    *res = r;
    return 0;
}

int db_run(db_conn *db, const char *what, const char *sql, int n, const char *const *params,
           PGresult **res, terr *err)
{
    return db_run_prep(db, PREP_NONE, what, sql, n, params, res, err);
}

int db_exec_simple(db_conn *db, const char *sql, terr *err)
{
    PGresult *r;
    if (db_run(db, sql, sql, 0, NULL, &r, err) != 0) return -1;
    PQclear(r);
    return 0;
}

int db_begin(db_conn *db, terr *err)
{
    if (db_exec_simple(db, "BEGIN", err) != 0) return -1;
    db->in_tx = true;
    return 0;
}

int db_commit(db_conn *db, terr *err)
{
    int rc = db_exec_simple(db, "COMMIT", err);
    db->in_tx = false;
    return rc;
}

void db_rollback(db_conn *db)
{
    db->in_tx = false;
    PGresult *r = PQexec(db->pg, "ROLLBACK");
    PQclear(r);
}

int db_ping(db_conn *db, terr *err)
{
    PGresult *r;
    if (db_run(db, "ping", "SELECT 1", 0, NULL, &r, err) != 0) return -1;
    PQclear(r);
    return 0;
}

int db_clock_us(db_conn *db, int64_t *out, terr *err)
{
    PGresult *r;
    if (db_run(db, "read the database clock",
               "SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint", 0, NULL, &r,
               err) != 0)
        return -1;
    *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return 0;
}

int db_try_advisory_lock(db_conn *db, const char *key, bool *acquired, terr *err)
{
    PGresult *r;
    const char *p[1] = {key};
    if (db_run(db, "advisory lock", "SELECT pg_try_advisory_lock(hashtext($1))", 1, p, &r, err) !=
        0)
        return -1;
    *acquired = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return 0;
}

int db_advisory_lock(db_conn *db, const char *key, terr *err)
{
    PGresult *r;
    const char *p[1] = {key};
    if (db_run(db, "advisory lock", "SELECT pg_advisory_lock(hashtext($1))", 1, p, &r, err) != 0)
        return -1;
    PQclear(r);
    return 0;
}

int db_advisory_unlock(db_conn *db, const char *key, terr *err)
{
    PGresult *r;
    const char *p[1] = {key};
    if (db_run(db, "advisory unlock", "SELECT pg_advisory_unlock(hashtext($1))", 1, p, &r, err) !=
        0)
        return -1;
    PQclear(r);
    return 0;
}

/* A PostgreSQL text[] literal of arbitrary strings: every element quoted,
 * '"' and '\' escaped. malloc'd. */
char *db_text_array(const char *const *items, size_t n)
{
    size_t size = 3;
    for (size_t i = 0; i < n; i++) size += 2 * strlen(items[i]) + 3;
    char *buf = malloc(size);
    if (!buf) return NULL;
    size_t o = 0;
    buf[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) buf[o++] = ',';
        buf[o++] = '"';
        for (const char *c = items[i]; *c; c++) {
            if (*c == '"' || *c == '\\') buf[o++] = '\\';
            buf[o++] = *c;
        }
        buf[o++] = '"';
    }
    buf[o++] = '}';
    buf[o] = '\0';
    return buf;
}
