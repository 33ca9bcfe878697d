#include "api_hosts.h"

#include <stdlib.h>
#include <string.h>

json_t *api_host_json(const db_host *h)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:i, s:I, s:I}", "id", h->id,
                  "status", h->status, "address", h->address, "agent_id", h->agent_id, "failures",
                  h->failures, "memory_total_mb", (json_int_t)h->memory_total_mb,
                  "memory_reserved_mb", (json_int_t)h->memory_reserved_mb, "memory_used_mb",
                  (json_int_t)h->memory_used_mb, "disk_free_mb", (json_int_t)h->disk_free_mb,
                  "vcpus", h->vcpus, "sandboxes", (json_int_t)h->sandboxes, "max_memory_mb",
                  (json_int_t)(h->max_memory_mb < 0 ? 0 : h->max_memory_mb));
    if (!o) return NULL;
    if (h->max_memory_mb < 0) json_object_set_new(o, "max_memory_mb", json_null());
    json_object_set_new(o, "memory_capacity_mb",
                        h->memory_capacity_mb > 0 ? json_integer(h->memory_capacity_mb)
                                                  : json_null());
    json_object_set_new(o, "last_seen_age_sec",
                        h->last_seen_age_sec < 0 ? json_null() : json_real(h->last_seen_age_sec));
    return o;
}

void api_hosts_list(api_request *r)
{
    db_host *hosts;
    size_t n;
    terr err;
    if (db_host_list(r->db, &hosts, &n, &err) != 0) {
        api_reply_internal(r, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *j = api_host_json(&hosts[i]);
        if (!j || json_array_append_new(arr, j) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(hosts);
    if (!arr) {
        terr_set(&err, "building the host list failed");
        api_reply_internal(r, &err);
        return;
    }
    http_reply_json(r->req, 200, arr);
}

void api_sandboxes_move(api_request *r)
{
    json_t *body = api_body_json(r, true);
    if (!body) return;
    const char *key;
    json_t *v;
    char target[64] = "";
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "host_id") != 0) {
            http_reply_error(r->req, 400, "invalid_request",
                             "unknown field \"%.64s\" (allowed: host_id)", key);
            json_decref(body);
            return;
        }
        const char *hid = json_string_value(v);
        if (!hid || !*hid || strlen(hid) >= sizeof target) {
            http_reply_error(r->req, 400, "invalid_request",
                             "host_id must be a host id (1..63 characters)");
            json_decref(body);
            return;
        }
        snprintf(target, sizeof target, "%s", hid);
    }
    json_decref(body);
    sbop_ctx c = api_ops_ctx(r);
    c.team_id = NULL; /* an admin key reaches any team's sandbox here */
    sbop_result res;
    sandbox_ops_move(&c, r->id, target[0] ? target : NULL, &res);
    api_reply_outcome(r, "move", &res, 200);
}
