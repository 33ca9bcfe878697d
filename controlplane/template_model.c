#include "template_model.h"

#include <stdio.h>
#include <string.h>

#include "json_util.h"
#include "time_util.h"
#include "torpor_limits.h"

const char *tpl_status_name(tpl_status s)
{
    switch (s) {
    case TPL_BUILDING: return "building";
    case TPL_READY: return "ready";
    case TPL_ERROR: return "error";
    }
    return "error";
}

int tpl_status_parse(const char *s, tpl_status *out)
{
    if (!s) return -1;
    if (strcmp(s, "building") == 0) *out = TPL_BUILDING;
    else if (strcmp(s, "ready") == 0) *out = TPL_READY;
    else if (strcmp(s, "error") == 0) *out = TPL_ERROR;
    else return -1;
    return 0;
}

int template_validate_create(const json_t *body, template_create_req *out, terr *err)
{
    static const char *const allowed[] = {"name", "base", "packages", "setup", NULL};
    memset(out, 0, sizeof *out);
    strcpy(out->base, "debian");
    if (json_util_check_keys(body, allowed, err) != 0) return -1;
    const char *name, *base, *setup;
    if (json_util_get_string(body, "name", true, true, 0, &name, err) != 0) return -1;
    if (!limits_template_name_valid(name))
        return terr_set(err, "field \"name\" must match ^[a-z0-9][a-z0-9._-]{0,62}$");
    if (template_is_builtin(name)) return terr_set(err, "template name \"%s\" is reserved", name);
    if (!template_user_name_allowed(name))
        return terr_set(err,
                        "template names starting with \"" TEMPLATE_IMAGE_PREFIX "\" are reserved");
    strcpy(out->name, name);
    if (json_util_get_string(body, "base", false, true, 0, &base, err) != 0) return -1;
    if (base && strcmp(base, "debian") != 0)
        return terr_set(
            err, "field \"base\" must be \"debian\" (the only template custom ones build on)");
    const json_t *pk = json_object_get(body, "packages");
    if (pk && !json_is_null(pk)) {
        if (!json_is_array(pk))
            return terr_set(err, "field \"packages\" must be an array of strings");
        size_t n = json_array_size(pk);
        if (n > TEMPLATE_PACKAGES_MAX)
            return terr_set(err, "field \"packages\" has %zu entries, more than %d", n,
                            TEMPLATE_PACKAGES_MAX);
        size_t used = 0;
        for (size_t i = 0; i < n; i++) {
            const json_t *v = json_array_get(pk, i);
            const char *p = json_is_string(v) ? json_string_value(v) : NULL;
            if (!p) return terr_set(err, "field \"packages\" must be an array of strings");
            if (!template_package_name_valid(p))
                return terr_set(
                    err,
                    "package name \"%.130s\" is not a Debian package name (^[a-z0-9][a-z0-9+.-]+$, "
                    "at most %d characters)",
                    p, TEMPLATE_PACKAGE_NAME_MAX);
            for (size_t j = 0; j < i; j++)
                if (strcmp(out->packages_v[j], p) == 0)
                    return terr_set(err, "package \"%s\" is listed twice", p);
            out->packages_v[i] = p;
            used += (size_t)snprintf(out->packages + used, sizeof out->packages - used, "%s%s",
                                     i ? "," : "", p);
        }
        out->n_packages = n;
    }
    if (json_util_get_string(body, "setup", false, false, 0, &setup, err) != 0) return -1;
    if (setup) {
        size_t len = strlen(setup);
        if (len > TEMPLATE_SETUP_MAX)
            return terr_set(err, "field \"setup\" is %zu bytes, more than %d", len,
                            TEMPLATE_SETUP_MAX);
        if (len > 0) out->setup = setup;
    }
    return 0;
}

bool template_next_status(tpl_status cur, tpl_agent_answer a, const char *agent_status,
                          tpl_status *next)
{
    *next = cur;
    if (cur != TPL_BUILDING) return false;
    switch (a) {
    case TPL_AGENT_NOT_FOUND: *next = TPL_ERROR; break;
    case TPL_AGENT_NO_ANSWER: break;
    case TPL_AGENT_STATUS:
        if (tpl_status_parse(agent_status, next) != 0) *next = cur;
        break;
    }
    return *next != cur;
}

json_t *template_row_to_json(const template_row *r, terr *err)
{
    json_t *pk = json_array();
    if (pk && r->packages[0]) {
        char buf[sizeof r->packages];
        snprintf(buf, sizeof buf, "%s", r->packages);
        for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save))
            json_array_append_new(pk, json_string(p));
    }
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:o?, s:b, s:b, s:I, s:s?, s:s?}", "name", r->name, "status",
                  tpl_status_name(r->status), "base", r->base[0] ? r->base : "debian", "packages",
                  pk, "public", r->team_id[0] == '\0', "setup", r->has_setup, "size_bytes",
                  (json_int_t)r->size_bytes, "digest", r->digest[0] ? r->digest : NULL, "error",
                  r->status == TPL_ERROR ? r->error : NULL);
    if (!o) {
        terr_set(err, "out of memory building template JSON");
        return NULL;
    }
    if (r->created_at_us > 0) {
        char buf[TIME_RFC3339_LEN];
        if (time_util_format_rfc3339(r->created_at_us, buf, err) != 0) {
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, "created_at", json_string(buf));
    } else {
        json_object_set_new(o, "created_at", json_null());
    }
    return o;
}
