/* db_templates: the SQL of custom templates (tables templates and
 * template_hosts, migrations/0003_templates.sql). Same rules as db.h: 0 or
 * -1 with a message; "not found" through a bool. */
#ifndef TORPOR_CP_DB_TEMPLATES_H
#define TORPOR_CP_DB_TEMPLATES_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "template_model.h"

/* Inserts a building template (id, team_id, name, base, packages, host_id)
 * with setup, and its (template, host) row. *duplicate: the team already has
 * a template of that name (nothing inserted, returns 0). */
int db_template_insert(db_conn *db, const template_row *in, const char *setup, bool *duplicate,
                       terr *err);
int db_template_get(db_conn *db, const char *team_id, const char *name, template_row *out,
                    bool *found, terr *err);
/* The team's templates, by name; *out malloc'd. */
int db_template_list(db_conn *db, const char *team_id, template_row **out, size_t *n, terr *err);
/* Settles a building template (and its row on host_id) to status with
 * digest/size/error; *changed false when it was no longer building. */
int db_template_settle(db_conn *db, const char *id, const char *host_id, tpl_status status,
                       const char *digest, int64_t size_bytes, const char *error, bool *changed,
                       terr *err);
int db_template_delete(db_conn *db, const char *id, terr *err);
/* How many of the team's sandboxes that are not stopped/error use template name. */
int db_template_sandboxes(db_conn *db, const char *team_id, const char *name, long *count,
                          terr *err);
/* The least-loaded host where template id is ready. */
int db_template_ready_host(db_conn *db, const char *id, db_host *out, bool *found, terr *err);

#endif
