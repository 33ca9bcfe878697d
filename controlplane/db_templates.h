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
/* A template's row on one host (template_hosts, migration 0009). */
typedef struct template_host_row {
    char host_id[64];
    char status[16]; /* building | copying | ready | error */
    char digest[65];
    bool builder;
    char error[512];
    int attempts;
} template_host_row;

/* Every host row of template id, by host id; *out malloc'd. */
int db_template_hosts(db_conn *db, const char *id, template_host_row **out, size_t *n, terr *err);

/* Copies (docs/templates.md, "Copies"). A failed copy is retried after
 * RETRY_BASE * 2^attempts seconds, at most RETRY_MAX. */
#define TEMPLATE_COPY_RETRY_BASE_SEC 5
#define TEMPLATE_COPY_RETRY_MAX_SEC 300

typedef struct template_copy_claim {
    char template_id[32];
    char host_id[64];
    char digest[65];
} template_copy_claim;

/* Claims one (template, host) copy, atomically across replicas: a ready
 * template (tpl_id, or any when NULL) and a host that reads ready (host_id,
 * or any when NULL) with no row for it, a failed row past its backoff, or a
 * copying row older than stale_sec. The row becomes copying; *found false
 * when nothing is due (or another replica took it). The builder's row is
 * never claimed. */
int db_template_copy_claim(db_conn *db, const char *tpl_id, const char *host_id, int stale_sec,
                           template_copy_claim *out, bool *found, terr *err);
/* copying -> ready (attempts reset) or error (attempts + 1, error kept);
 * *changed false when the row is no longer copying (template deleted, or
 * taken over). */
int db_template_copy_settle(db_conn *db, const char *tpl_id, const char *host_id, bool ok,
                            const char *error, bool *changed, terr *err);
/* A copy in progress is alive (updated_at = now()). */
int db_template_copy_heartbeat(db_conn *db, const char *tpl_id, const char *host_id, terr *err);
/* A host to copy from: its row is ready with digest and it is not
 * unreachable (draining is fine: it is only read); the builder first. */
int db_template_copy_source(db_conn *db, const char *tpl_id, const char *digest,
                            const char *not_host, db_host *out, bool *found, terr *err);

#endif
