#include "sandbox_model.h"

#include <string.h>

#include "time_util.h"

static const char *const status_names[SB_STATUS_COUNT] = {
    "pending", "running", "pausing", "paused", "resuming", "stopped", "error", "moving",
};

const char *sb_status_name(sb_status s)
{
    if ((unsigned)s >= SB_STATUS_COUNT) return "unknown";
    return status_names[s];
}

int sb_status_parse(const char *name, sb_status *out)
{
    if (!name) return -1;
    for (int i = 0; i < SB_STATUS_COUNT; i++) {
        if (strcmp(status_names[i], name) == 0) {
            *out = (sb_status)i;
            return 0;
        }
    }
    return -1;
}

int sb_status_parse_filter(const char *list, unsigned *mask, terr *err)
{
    *mask = 0;
    if (!list || !*list) return terr_set(err, "status filter is empty");
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char name[16];
        sb_status s;
        if (n == 0 || n >= sizeof name)
            return terr_set(err, "unknown status in filter \"%.64s\"", list);
        memcpy(name, p, n);
        name[n] = '\0';
        if (sb_status_parse(name, &s) != 0)
            return terr_set(err,
                            "unknown status \"%s\" (expected pending, running, pausing, paused, "
                            "resuming, stopped, error or moving)",
                            name);
        *mask |= SB_STATUS_BIT(s);
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

static int set_time(json_t *o, const char *key, int64_t us, bool nullable, terr *err)
{
    if (us == 0 && nullable)
        return json_object_set_new(o, key, json_null()) == 0 ? 0 : terr_set(err, "out of memory");
    char buf[TIME_RFC3339_LEN];
    if (time_util_format_rfc3339(us, buf, err) != 0) return -1;
    return json_object_set_new(o, key, json_string(buf)) == 0 ? 0 : terr_set(err, "out of memory");
}

json_t *sandbox_row_to_json(const sandbox_row *r, terr *err)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:s}", "id", r->id, "status",
                          sb_status_name(r->status), "template", r->template_name, "vcpus",
                          r->vcpus, "memory_mb", r->memory_mb, "disk_mb", r->disk_mb, "timeout_sec",
                          r->timeout_sec, "host_id", r->host_id);
    if (!o) {
        terr_set(err, "out of memory building sandbox JSON");
        return NULL;
    }
    if (set_time(o, "created_at", r->created_at_us, false, err) ||
        set_time(o, "started_at", r->started_at_us, true, err) ||
        set_time(o, "last_active_at", r->last_active_at_us, true, err) ||
        set_time(o, "last_updated", r->last_updated_us, false, err) ||
        set_time(o, "expires_at",
                 r->status == SB_RUNNING && r->timeout_sec > 0 && r->last_active_at_us
                     ? r->last_active_at_us + (int64_t)r->timeout_sec * 1000000
                     : 0,
                 true, err) ||
        (r->host_status[0] &&
         json_object_set_new(o, "host_status", json_string(r->host_status)) != 0 &&
         terr_set(err, "out of memory"))) {
        json_decref(o);
        return NULL;
    }
    json_t *net = r->network[0]
                      ? json_loads(r->network, 0, NULL)
                      : json_pack("{s:s, s:[], s:[]}", "egress", "allow", "allow", "deny");
    if (!net || json_object_set_new(o, "network", net) != 0 ||
        json_object_set_new(o, "auto_resume", json_boolean(r->auto_resume)) != 0) {
        terr_set(err, "building sandbox JSON: bad network policy in the row");
        json_decref(o);
        return NULL;
    }
    return o;
}
