/* migrate: applies migrations/NNNN_name.sql files in order at start-up.
 *
 * Contract: files whose names start with 4 digits and end in ".sql" are
 * applied in ascending name order, each inside its own transaction together
 * with its row in schema_migrations (version = the file name without .sql);
 * a file already recorded is skipped, so starting twice applies nothing twice.
 * Concurrent starts (several replicas) are serialised with a PostgreSQL
 * advisory lock. A failing file rolls back and stops with its name and the
 * PostgreSQL message. *applied counts the files applied by this call. */
#ifndef TORPOR_CP_MIGRATE_H
#define TORPOR_CP_MIGRATE_H

#include "db.h"
#include "terr.h"

int migrate_run(db_conn *db, const char *dir, int *applied, terr *err);

/* True for names like "0001_init.sql". */
bool migrate_is_migration_name(const char *name);

#endif
