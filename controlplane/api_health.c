#include "api_health.h"

#include <stdlib.h>

#include "reconciler.h"

void api_healthz(api_request *r)
{
    http_reply_json(r->req, 200, json_pack("{s:s}", "status", "ok"));
}

void api_readyz(api_request *r)
{
    terr err;
    db_host *hosts = NULL;
    size_t n = 0;
    if (db_ping(r->db, &err) != 0 || db_host_list(r->db, &hosts, &n, &err) != 0) {
        api_reply_internal(r, &err); /* 503 when the database is unreachable */
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        double age = 0;
        int reach = reconciler_host_reach(r->ctx->rec, hosts[i].id, &age);
        json_t *h =
            json_pack("{s:s, s:s, s:o, s:o}", "id", hosts[i].id, "address", hosts[i].address,
                      "reachable", reach < 0 ? json_null() : json_boolean(reach),
                      "checked_seconds_ago", reach < 0 ? json_null() : json_real(age));
        if (!h || json_array_append_new(list, h) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    free(hosts);
    if (!list) {
        terr_set(&err, "out of memory");
        api_reply_internal(r, &err);
        return;
    }
    http_reply_json(
        r->req, 200,
        json_pack("{s:s, s:s, s:o}", "status", "ready", "database", "ok", "hosts", list));
}
