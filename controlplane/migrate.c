#include "migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define MIGRATE_LOCK_KEY "torpor.migrate"

bool migrate_is_migration_name(const char *name)
{
    size_t n = strlen(name);
    if (n < 9 || strcmp(name + n - 4, ".sql") != 0) return false;
    for (int i = 0; i < 4; i++)
        if (!isdigit((unsigned char)name[i])) return false;
    return name[4] == '_' || name[4] == '.';
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_files(const char *dir, char ***out, size_t *n, terr *err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return terr_set(err, "open migrations dir %s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!migrate_is_migration_name(e->d_name)) continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) goto oom;
            names = grown;
        }
        if (!(names[count] = strdup(e->d_name))) goto oom;
        count++;
    }
    closedir(d);
    if (count > 1) qsort(names, count, sizeof *names, cmp_names);
    *out = names;
    *n = count;
    return 0;
oom:
    closedir(d);
    for (size_t i = 0; i < count; i++) free(names[i]);
    free(names);
    return terr_set(err, "out of memory listing %s", dir);
}

static char *read_file(const char *path, terr *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        terr_set(err, "open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            char *g = realloc(buf, cap);
            if (!g) {
                free(buf);
                fclose(f);
                terr_set(err, "out of memory reading %s", path);
                return NULL;
            }
            buf = g;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        terr_set(err, "read %s failed", path);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* Applies one file and records it, in one transaction; skips it when another
 * run recorded it first. */
static int apply_one(db_conn *db, const char *dir, const char *name, bool *did, terr *err)
{
    *did = false;
    char version[256];
    snprintf(version, sizeof version, "%.*s", (int)(strlen(name) - 4), name);
    PGconn *pg = db_pg(db);

    const char *p[1] = {version};
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, p,
                               NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        terr_set(err, "read schema_migrations: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    bool done = PQntuples(r) > 0;
    PQclear(r);
    if (done) return 0;

    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *sql = read_file(path, err);
    if (!sql) return -1;

    if (db_begin(db, err) != 0) {
        free(sql);
        return -1;
    }
    /* PQexec runs a multi-statement string; inside BEGIN it is all or nothing. */
    r = PQexec(pg, sql);
    free(sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        terr_set(err, "migration %s failed: %s", name, PQresultErrorMessage(r));
        PQclear(r);
        db_rollback(db);
        return -1;
    }
    PQclear(r);
    r = PQexecParams(pg, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, NULL, p, NULL,
                     NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        terr_set(err, "record migration %s: %s", name, PQresultErrorMessage(r));
        PQclear(r);
        db_rollback(db);
        return -1;
    }
    PQclear(r);
    if (db_commit(db, err) != 0) {
        db_rollback(db);
        return terr_wrap(err, "commit migration %s", name);
    }
    *did = true;
    {
        char q[LOG_QUOTE_MAX];
        log_info("event=migration_applied version=\"%s\"", log_quote(version, q, sizeof q));
    }
    return 0;
}

int migrate_run(db_conn *db, const char *dir, int *applied, terr *err)
{
    *applied = 0;
    char **names;
    size_t n;
    if (list_files(dir, &names, &n, err) != 0) return -1;
    int rc = 0;
    if (db_advisory_lock(db, MIGRATE_LOCK_KEY, err) != 0) {
        rc = -1;
        goto out;
    }
    if (db_exec_simple(db,
                       "CREATE TABLE IF NOT EXISTS schema_migrations ("
                       "version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                       err) != 0) {
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bool did;
        if (apply_one(db, dir, names[i], &did, err) != 0) rc = -1;
        else if (did) (*applied)++;
    }
    terr unlock_err;
    if (db_advisory_unlock(db, MIGRATE_LOCK_KEY, &unlock_err) != 0 && rc == 0)
        rc = terr_set(err, "%s", unlock_err.msg);
out:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}
