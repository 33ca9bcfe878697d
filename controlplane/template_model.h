/* template_model: a custom template as the control plane stores it, its REST
 * JSON, the validation of POST /v1/templates, and the one rule for how a
 * template's status follows its build host's answer.
 *
 * Contract: pure (no I/O). Status: building -> ready | error, then never
 * changes again (a template is rebuilt by deleting and creating it). */
#ifndef TORPOR_CP_TEMPLATE_MODEL_H
#define TORPOR_CP_TEMPLATE_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "template_limits.h"
#include "terr.h"

typedef enum tpl_status { TPL_BUILDING = 0, TPL_READY, TPL_ERROR } tpl_status;

#define TEMPLATE_PACKAGES_TEXT_MAX (TEMPLATE_PACKAGES_MAX * (TEMPLATE_PACKAGE_NAME_MAX + 1) + 1)

typedef struct template_row {
    char id[32];      /* "tpl-" + 16 hex: the image name on agents; "" for a built-in one */
    char team_id[64]; /* "" for a built-in (public) one */
    char name[64];
    char base[64];
    char packages[TEMPLATE_PACKAGES_TEXT_MAX]; /* comma-separated */
    bool has_setup;
    tpl_status status;
    char digest[65];
    int64_t size_bytes;
    char error[512];
    int64_t created_at_us;
    char host_id[64]; /* the build host */
} template_row;

const char *tpl_status_name(tpl_status s);
int tpl_status_parse(const char *s, tpl_status *out);

/* A validated POST /v1/templates body. setup is borrowed from the JSON. */
typedef struct template_create_req {
    char name[64];
    char base[64];
    char packages[TEMPLATE_PACKAGES_TEXT_MAX]; /* comma-separated, in the given order */
    const char *packages_v[TEMPLATE_PACKAGES_MAX];
    size_t n_packages;
    const char *setup; /* NULL = none */
} template_create_req;

/* Checks keys (name, base, packages, setup), the name
 * (template_user_name_allowed), base ("debian", the default), packages
 * (an array of at most TEMPLATE_PACKAGES_MAX Debian package names, no
 * duplicates) and setup (a string of at most TEMPLATE_SETUP_MAX bytes). The
 * packages_v pointers borrow from body. */
int template_validate_create(const json_t *body, template_create_req *out, terr *err);

/* What the build host said about a building template. */
typedef enum tpl_agent_answer {
    TPL_AGENT_STATUS = 0, /* answered with agent_status ("building" | "ready" | "error") */
    TPL_AGENT_NOT_FOUND,  /* the host no longer knows the build */
    TPL_AGENT_NO_ANSWER,  /* unreachable or failed: nothing is learned */
} tpl_agent_answer;

/* The status a template row takes from its build host's answer: only a
 * building row changes; NOT_FOUND ends it in error; no answer keeps it.
 * Returns true when the status changes. */
bool template_next_status(tpl_status cur, tpl_agent_answer a, const char *agent_status,
                          tpl_status *next);

/* New reference to the REST Template object. */
json_t *template_row_to_json(const template_row *r, terr *err);

#endif
