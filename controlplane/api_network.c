/* api_network: policy validation and PUT .../network (see api_network.h). */
#include "api_network.h"

#include <string.h>

#include "json_util.h"
#include "sandbox_ops.h"

int api_network_canonical(const net_policy *p, char *buf, size_t n, terr *err)
{
    json_t *allow = json_array(), *deny = json_array();
    char e[NET_POLICY_ENTRY_MAX];
    for (size_t i = 0; allow && i < p->n_allow; i++) {
        net_rule_format(&p->allow[i], e, sizeof e);
        json_array_append_new(allow, json_string(e));
    }
    for (size_t i = 0; deny && i < p->n_deny; i++) {
        net_rule_format(&p->deny[i], e, sizeof e);
        json_array_append_new(deny, json_string(e));
    }
    json_t *o = json_pack("{s:s, s:o, s:o}", "egress", p->egress_allow ? "allow" : "deny", "allow",
                          allow, "deny", deny);
    if (!o) return terr_set(err, "out of memory");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return terr_set(err, "out of memory");
    size_t len = strlen(s);
    if (len >= n) {
        free(s);
        return terr_set(err, "network policy too large");
    }
    memcpy(buf, s, len + 1);
    free(s);
    return 0;
}

static int add_list(const json_t *net, const char *key, bool allow, net_policy *p, terr *err)
{
    json_t *a = json_object_get(net, key);
    if (!a) return 0;
    if (!json_is_array(a))
        return terr_set(err, "field \"network.%s\" must be an array of strings", key);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v))
            return terr_set(err, "field \"network.%s\" must be an array of strings", key);
        if (net_policy_add(p, allow, json_string_value(v), err) < 0)
            return terr_wrap(err, "network.%s", key);
    }
    return 0;
}

int api_network_validate(const json_t *net, net_policy *p, char *buf, size_t n, terr *err)
{
    static const char *const allowed[] = {"egress", "allow", "deny", NULL};
    net_policy_default(p);
    if (!json_is_object(net)) return terr_set(err, "field \"network\" must be an object");
    if (json_util_check_keys(net, allowed, err) != 0) return terr_wrap(err, "network");
    json_t *eg = json_object_get(net, "egress");
    if (eg && (!json_is_string(eg) || net_policy_set_egress(p, json_string_value(eg), err) < 0))
        return terr_set(err, "field \"network.egress\" must be \"allow\" or \"deny\"");
    if (add_list(net, "allow", true, p, err) < 0 || add_list(net, "deny", false, p, err) < 0)
        return -1;
    return api_network_canonical(p, buf, n, err);
}

void api_network_put(api_request *r)
{
    json_t *body = api_body_json(r, false);
    if (!body) return;
    net_policy p;
    char canon[SANDBOX_NETWORK_MAX];
    terr err;
    int rc = api_network_validate(body, &p, canon, sizeof canon, &err);
    json_decref(body);
    if (rc != 0) {
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return;
    }
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_set_network(&c, r->id, canon, &res);
    api_reply_outcome(r, "set_network", &res, 200);
}
