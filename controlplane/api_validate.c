#include "api_validate.h"

#include <stdlib.h>
#include <string.h>

#include "api_network.h"
#include "json_util.h"
#include "torpor_limits.h"

bool api_validate_template_name(const char *s) { return limits_template_name_valid(s); }

bool api_validate_sandbox_id(const char *s, size_t n)
{
    if (!s || n < 1 || n >= SANDBOX_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Checks a path-like field: length and no control characters (NUL would
 * cut the path in the guest; the others have no place in a file name and
 * would end up in logs). */
static int check_path(const char *field, const char *path, size_t len, terr *err)
{
    if (!path || len == 0) return terr_set(err, "field \"%s\" must not be empty", field);
    if (len > API_PATH_MAX) return terr_set(err, "field \"%s\" is longer than %d bytes", field, API_PATH_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c < 0x20 || c == 0x7f)
            return terr_set(err, "field \"%s\" contains a control character (byte 0x%02x at offset %zu)", field,
                            c, i);
    }
    return 0;
}

int api_validate_create(const json_t *body, api_create_req *out, terr *err)
{
    static const char *const allowed[] = {"template", "vcpus", "memory_mb", "timeout_sec", "network",
                                          "auto_resume", NULL};
    memset(out, 0, sizeof *out);
    strcpy(out->template_name, "minimal");
    out->vcpus = 1;
    out->memory_mb = 512;
    out->timeout_sec = 0;
    if (json_util_check_keys(body, allowed, err) != 0) return -1;

    const char *tpl;
    if (json_util_get_string(body, "template", false, true, 0, &tpl, err) != 0) return -1;
    if (tpl) {
        if (!api_validate_template_name(tpl))
            return terr_set(err, "field \"template\" must match ^[a-z0-9][a-z0-9._-]{0,62}$");
        strcpy(out->template_name, tpl);
    }
    bool present;
    long long v;
    if (json_util_get_int(body, "vcpus", API_VCPUS_MIN, API_VCPUS_MAX, &present, &v, err) != 0)
        return -1;
    if (present) out->vcpus = (int)v;
    if (json_util_get_int(body, "memory_mb", API_MEMORY_MB_MIN, API_MEMORY_MB_MAX, &present, &v, err) != 0)
        return -1;
    if (present) out->memory_mb = (int)v;
    if (json_util_get_int(body, "timeout_sec", 0, API_TIMEOUT_SEC_MAX, &present, &v, err) != 0)
        return -1;
    if (present) out->timeout_sec = (int)v;
    json_t *ar = json_object_get(body, "auto_resume");
    if (ar && !json_is_boolean(ar)) return terr_set(err, "field \"auto_resume\" must be a boolean");
    out->auto_resume = ar && json_is_true(ar);
    json_t *net = json_object_get(body, "network");
    net_policy p;
    if (net) return api_network_validate(net, &p, out->network, sizeof out->network, err);
    net_policy_default(&p);
    return api_network_canonical(&p, out->network, sizeof out->network, err);
}

void api_exec_req_free(api_exec_req *r)
{
    free(r->args);
    for (size_t i = 0; i < r->n_env; i++) free(r->env[i]);
    free(r->env);
    memset(r, 0, sizeof *r);
}

static int parse_env(const json_t *env, api_exec_req *out, terr *err)
{
    if (!json_is_object(env)) return terr_set(err, "field \"env\" must be an object of strings");
    size_t n = json_object_size(env);
    out->env = calloc(n ? n : 1, sizeof *out->env);
    if (!out->env) return terr_set(err, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)env, key, val) {
        if (!*key || strchr(key, '='))
            return terr_set(err, "env name \"%s\" must be non-empty and contain no '='", key);
        if (!json_is_string(val)) return terr_set(err, "env \"%s\" must be a string", key);
        char *kv;
        if (asprintf(&kv, "%s=%s", key, json_string_value(val)) < 0) return terr_set(err, "out of memory");
        out->env[out->n_env++] = kv;
    }
    return 0;
}

int api_validate_exec(const json_t *body, api_exec_req *out, terr *err)
{
    static const char *const allowed[] = {"cmd", "args", "timeout_sec", "env", "cwd", NULL};
    memset(out, 0, sizeof *out);
    out->timeout_sec = API_EXEC_TIMEOUT_DEFAULT;
    if (json_util_check_keys(body, allowed, err) != 0) return -1;
    if (json_util_get_string(body, "cmd", true, true, 0, &out->cmd, err) != 0) return -1;
    if (json_util_get_string(body, "cwd", false, true, API_PATH_MAX, &out->cwd, err) != 0) return -1;
    if (out->cwd && check_path("cwd", out->cwd, json_string_length(json_object_get(body, "cwd")), err) != 0)
        return -1;

    bool present;
    long long v;
    if (json_util_get_int(body, "timeout_sec", 1, API_EXEC_TIMEOUT_MAX, &present, &v, err) != 0)
        return -1;
    if (present) out->timeout_sec = (int)v;

    json_t *args = json_object_get(body, "args");
    if (args) {
        if (!json_is_array(args)) return terr_set(err, "field \"args\" must be an array of strings");
        size_t n = json_array_size(args);
        out->args = calloc(n ? n : 1, sizeof *out->args);
        if (!out->args) return terr_set(err, "out of memory");
        for (size_t i = 0; i < n; i++) {
            json_t *a = json_array_get(args, i);
            if (!json_is_string(a)) {
                api_exec_req_free(out);
                return terr_set(err, "args[%zu] must be a string", i);
            }
            out->args[out->n_args++] = json_string_value(a);
        }
    }
    json_t *env = json_object_get(body, "env");
    if (env && parse_env(env, out, err) != 0) {
        api_exec_req_free(out);
        return -1;
    }
    return 0;
}

int api_validate_timeout(const json_t *body, int *timeout_sec, terr *err)
{
    static const char *const allowed[] = {"timeout_sec", NULL};
    if (json_util_check_keys(body, allowed, err) != 0) return -1;
    bool present;
    long long v;
    if (json_util_get_int(body, "timeout_sec", 0, API_TIMEOUT_SEC_MAX, &present, &v, err) != 0) return -1;
    if (!present) return terr_set(err, "field \"timeout_sec\" is required");
    *timeout_sec = (int)v;
    return 0;
}

int api_validate_path(const char *path, size_t len, terr *err) { return check_path("path", path, len, err); }

/* The string field "path" of body, checked like every path. */
static int get_path(const json_t *body, const char **path, terr *err)
{
    if (json_util_get_string(body, "path", true, true, API_PATH_MAX, path, err) != 0) return -1;
    return api_validate_path(*path, json_string_length(json_object_get(body, "path")), err);
}

int api_validate_file_read(const json_t *body, const char **path, terr *err)
{
    static const char *const allowed[] = {"path", NULL};
    if (json_util_check_keys(body, allowed, err) != 0) return -1;
    return get_path(body, path, err);
}

int api_validate_file_write(const json_t *body, const char **path, uint8_t **content,
                            size_t *content_len, terr *err)
{
    static const char *const allowed[] = {"path", "content_base64", NULL};
    *content = NULL;
    *content_len = 0;
    if (json_util_check_keys(body, allowed, err) != 0) return -1;
    if (get_path(body, path, err) != 0) return -1;
    const char *b64;
    if (json_util_get_string(body, "content_base64", true, false, 0, &b64, err) != 0) return -1;
    size_t n = json_string_length(json_object_get(body, "content_base64"));
    if (json_util_base64_decode(b64, n, content, content_len, err) != 0)
        return terr_wrap(err, "field \"content_base64\"");
    return 0;
}
