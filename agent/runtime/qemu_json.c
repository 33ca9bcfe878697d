/* qemu_json: see qemu_json.h. */
#include "qemu_json.h"

#include <jansson.h>
#include <string.h>

int qjson_get_string(const char *json, const char *const *keys, size_t n_keys, char *out, size_t n)
{
    if (n > 0) out[0] = '\0';
    json_t *root = json ? json_loads(json, 0, NULL) : NULL;
    if (!root) return -1;
    json_t *v = root;
    for (size_t i = 0; v && i < n_keys; i++) v = json_object_get(v, keys[i]);
    int rc = -1;
    if (v && json_is_string(v) && n > 0) {
        size_t len = json_string_length(v);
        if (len > n - 1) len = n - 1;
        memcpy(out, json_string_value(v), len);
        out[len] = '\0';
        rc = 0;
    }
    json_decref(root);
    return rc;
}
