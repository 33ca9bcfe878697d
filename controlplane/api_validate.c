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
    if (len > API_PATH_MAX)
        return terr_set(err, "field \"%s\" is longer than %d bytes", field, API_PATH_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c < 0x20 || c == 0x7f)
            return terr_set(err,
                            "field \"%s\" contains a control character (byte 0x%02x at offset %zu)",
                            field, c, i);
    }
    return 0;
}

static bool env_name_valid(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > API_ENV_NAME_MAX) return false;
    if (!((k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z') || k[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

static int check_create_env(const json_t *env, terr *err)
{
    if (!json_is_object(env)) return terr_set(err, "field \"env\" must be an object of strings");
    if (json_object_size(env) > API_ENV_COUNT_MAX)
        return terr_set(err, "field \"env\" has %zu entries (at most %d)", json_object_size(env),
                        API_ENV_COUNT_MAX);
    size_t total = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)env, key, val)
    {
        if (!env_name_valid(key))
            return terr_set(
                err, "env name \"%.64s\" must match ^[A-Za-z_][A-Za-z0-9_]*$ (at most %d bytes)",
                key, API_ENV_NAME_MAX);
        if (!json_is_string(val)) return terr_set(err, "env \"%s\" must be a string", key);
        if (memchr(json_string_value(val), '\0', json_string_length(val)))
            return terr_set(err, "env \"%s\" must not contain a NUL byte", key);
        total += strlen(key) + 1 + json_string_length(val);
    }
    if (total > API_ENV_TOTAL_MAX)
        return terr_set(err, "field \"env\" is %zu bytes in total (at most %d)", total,
                        API_ENV_TOTAL_MAX);
    return 0;
}

int api_validate_create(const json_t *body, api_create_req *out, terr *err)
{
    static const char *const allowed[] = {"template",    "vcpus",       "memory_mb",
                                          "timeout_sec", "disk_mb",     "env",
                                          "network",     "auto_resume", NULL};
    memset(out, 0, sizeof *out);
    strcpy(out->template_name, "debian");
    out->disk_mb = TORPOR_DISK_MB_DEFAULT;
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
    if (json_util_get_int(body, "memory_mb", API_MEMORY_MB_MIN, API_MEMORY_MB_MAX, &present, &v,
                          err) != 0)
        return -1;
    if (present) out->memory_mb = (int)v;
    if (json_util_get_int(body, "timeout_sec", 0, API_TIMEOUT_SEC_MAX, &present, &v, err) != 0)
        return -1;
    if (present) out->timeout_sec = (int)v;
    if (json_util_get_int(body, "disk_mb", TORPOR_DISK_MB_MIN, TORPOR_DISK_MB_MAX, &present, &v,
                          err) != 0)
        return -1;
    if (present) out->disk_mb = (int)v;
    const json_t *env = json_object_get(body, "env");
    if (env) {
        if (check_create_env(env, err) != 0) return -1;
        out->env = env;
    }
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
    free(r->stdin_data);
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
    json_object_foreach((json_t *)env, key, val)
    {
        if (!*key || strchr(key, '='))
            return terr_set(err, "env name \"%s\" must be non-empty and contain no '='", key);
        if (!json_is_string(val)) return terr_set(err, "env \"%s\" must be a string", key);
        char *kv;
        if (asprintf(&kv, "%s=%s", key, json_string_value(val)) < 0)
            return terr_set(err, "out of memory");
        out->env[out->n_env++] = kv;
    }
    return 0;
}

/* "stdin" (UTF-8 text) or "stdin_base64" (bytes), not both. */
static int parse_stdin(const json_t *body, api_exec_req *out, terr *err)
{
    const json_t *text = json_object_get(body, "stdin"),
                 *b64 = json_object_get(body, "stdin_base64");
    if (text && b64) return terr_set(err, "give \"stdin\" or \"stdin_base64\", not both");
    if (text) {
        if (!json_is_string(text)) return terr_set(err, "field \"stdin\" must be a string");
        size_t n = json_string_length(text);
        if (n > API_EXEC_STDIN_MAX)
            return terr_set(err, "field \"stdin\" is %zu bytes (at most %d)", n,
                            API_EXEC_STDIN_MAX);
        if (!(out->stdin_data = malloc(n ? n : 1))) return terr_set(err, "out of memory");
        memcpy(out->stdin_data, json_string_value(text), n);
        out->stdin_len = n;
    } else if (b64) {
        if (!json_is_string(b64)) return terr_set(err, "field \"stdin_base64\" must be a string");
        if (json_util_base64_decode(json_string_value(b64), json_string_length(b64),
                                    &out->stdin_data, &out->stdin_len, err) != 0)
            return terr_wrap(err, "field \"stdin_base64\"");
        if (out->stdin_len > API_EXEC_STDIN_MAX)
            return terr_set(err, "field \"stdin_base64\" decodes to %zu bytes (at most %d)",
                            out->stdin_len, API_EXEC_STDIN_MAX);
    }
    return 0;
}

int api_validate_exec(const json_t *body, api_exec_req *out, terr *err)
{
    static const char *const allowed[] = {"cmd", "args",  "timeout_sec",  "env",
                                          "cwd", "stdin", "stdin_base64", NULL};
    memset(out, 0, sizeof *out);
    out->timeout_sec = API_EXEC_TIMEOUT_DEFAULT;
    if (json_util_check_keys(body, allowed, err) != 0) return -1;
    if (json_util_get_string(body, "cmd", true, true, 0, &out->cmd, err) != 0) return -1;
    if (json_util_get_string(body, "cwd", false, true, API_PATH_MAX, &out->cwd, err) != 0)
        return -1;
    if (out->cwd &&
        check_path("cwd", out->cwd, json_string_length(json_object_get(body, "cwd")), err) != 0)
        return -1;

    bool present;
    long long v;
    if (json_util_get_int(body, "timeout_sec", 1, API_EXEC_TIMEOUT_MAX, &present, &v, err) != 0)
        return -1;
    if (present) out->timeout_sec = (int)v;

    json_t *args = json_object_get(body, "args");
    if (args) {
        if (!json_is_array(args))
            return terr_set(err, "field \"args\" must be an array of strings");
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
    if (parse_stdin(body, out, err) != 0) {
        api_exec_req_free(out);
        return -1;
    }
    return 0;
}

int api_exec_merge_env(api_exec_req *out, const char *create_env_json, terr *err)
{
    json_error_t je;
    json_t *env = json_loads(create_env_json ? create_env_json : "{}", 0, &je);
    if (!env || !json_is_object(env)) {
        json_decref(env);
        return terr_set(err, "stored env is not a JSON object");
    }
    size_t n = json_object_size(env);
    if (n == 0) {
        json_decref(env);
        return 0;
    }
    char **merged = calloc(n + out->n_env + 1, sizeof *merged);
    if (!merged) {
        json_decref(env);
        return terr_set(err, "out of memory");
    }
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(env, key, val)
    {
        size_t kl = strlen(key);
        bool overridden = false;
        for (size_t i = 0; i < out->n_env && !overridden; i++)
            overridden = strncmp(out->env[i], key, kl) == 0 && out->env[i][kl] == '=';
        if (overridden || !json_is_string(val)) continue;
        if (asprintf(&merged[k], "%s=%s", key, json_string_value(val)) < 0) {
            for (size_t i = 0; i < k; i++) free(merged[i]);
            free(merged);
            json_decref(env);
            return terr_set(err, "out of memory");
        }
        k++;
    }
    json_decref(env);
    for (size_t i = 0; i < out->n_env; i++) merged[k++] = out->env[i];
    free(out->env);
    out->env = merged;
    out->n_env = k;
    return 0;
}

int api_validate_timeout(const json_t *body, int *timeout_sec, terr *err)
{
    static const char *const allowed[] = {"timeout_sec", NULL};
    if (json_util_check_keys(body, allowed, err) != 0) return -1;
    bool present;
    long long v;
    if (json_util_get_int(body, "timeout_sec", 0, API_TIMEOUT_SEC_MAX, &present, &v, err) != 0)
        return -1;
    if (!present) return terr_set(err, "field \"timeout_sec\" is required");
    *timeout_sec = (int)v;
    return 0;
}

int api_validate_path(const char *path, size_t len, terr *err)
{
    return check_path("path", path, len, err);
}

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
