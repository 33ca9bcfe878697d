/* net_policy: parse, format and render a sandbox's egress policy (see net_policy.h). */
#include "net_policy.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const net_policy_refused[] = {
    "0.0.0.0/8",     "10.0.0.0/8",     "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4",   "240.0.0.0/4", "::1/128",
    "fc00::/7",      "fe80::/10",      "ff00::/8",      NULL,
};

void net_policy_default(net_policy *p)
{
    memset(p, 0, sizeof *p);
    p->egress_allow = true;
}

static int parse_uint(const char *s, size_t n, long max, long *out)
{
    if (n == 0 || n > 6) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

static bool host_bits_clear(const net_rule *r)
{
    int bytes = r->family == 4 ? 4 : 16;
    for (int bit = r->prefix; bit < bytes * 8; bit++)
        if (r->addr[bit / 8] & (0x80 >> (bit % 8))) return false;
    return true;
}

int net_rule_parse(const char *text, net_rule *r, terr *err)
{
    memset(r, 0, sizeof *r);
    if (!text || !*text) return terr_set(err, "empty network entry");
    size_t len = strlen(text);
    if (len >= NET_POLICY_ENTRY_MAX) return terr_set(err, "network entry too long");
    char buf[NET_POLICY_ENTRY_MAX];
    const char *port = NULL;
    size_t port_len = 0;
    if (text[0] == '[') { /* [v6/prefix]:port */
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') return terr_set(err, "invalid network entry \"%s\"", text);
        memcpy(buf, text + 1, (size_t)(close - text - 1));
        buf[close - text - 1] = '\0';
        port = close + 2;
        port_len = strlen(port);
    } else {
        memcpy(buf, text, len + 1);
        if (!strchr(buf, ':')) { /* IPv4, maybe with :port */
        } else if (strchr(buf, '.') && strchr(buf, ':') == strrchr(buf, ':')) {
            char *c = strchr(buf, ':');
            *c = '\0';
            port = text + (c - buf) + 1;
            port_len = strlen(port);
        }
    }
    char *slash = strchr(buf, '/');
    if (slash) *slash = '\0';
    if (inet_pton(AF_INET, buf, r->addr) == 1) r->family = 4;
    else if (inet_pton(AF_INET6, buf, r->addr) == 1) r->family = 6;
    else return terr_set(err, "invalid address in network entry \"%s\"", text);
    int maxp = r->family == 4 ? 32 : 128;
    long v = maxp;
    if (slash && parse_uint(slash + 1, strlen(slash + 1), maxp, &v) < 0)
        return terr_set(err, "invalid prefix length in network entry \"%s\"", text);
    r->prefix = (int)v;
    if (port) {
        if (parse_uint(port, port_len, 65535, &v) < 0 || v < 1)
            return terr_set(err, "invalid port in network entry \"%s\" (1..65535)", text);
        r->port = (int)v;
    }
    if (!host_bits_clear(r))
        return terr_set(err, "network entry \"%s\" has host bits set beyond /%d", text, r->prefix);
    return 0;
}

void net_rule_format(const net_rule *r, char *buf, size_t n)
{
    char a[INET6_ADDRSTRLEN];
    inet_ntop(r->family == 4 ? AF_INET : AF_INET6, r->addr, a, sizeof a);
    if (r->port && r->family == 6) snprintf(buf, n, "[%s/%d]:%d", a, r->prefix, r->port);
    else if (r->port) snprintf(buf, n, "%s/%d:%d", a, r->prefix, r->port);
    else snprintf(buf, n, "%s/%d", a, r->prefix);
}

int net_policy_set_egress(net_policy *p, const char *egress, terr *err)
{
    if (egress && !strcmp(egress, "allow")) p->egress_allow = true;
    else if (egress && !strcmp(egress, "deny")) p->egress_allow = false;
    else return terr_set(err, "egress must be \"allow\" or \"deny\"");
    return 0;
}

int net_policy_add(net_policy *p, bool allow, const char *text, terr *err)
{
    size_t *n = allow ? &p->n_allow : &p->n_deny;
    if (*n >= NET_POLICY_ENTRIES_MAX)
        return terr_set(err, "at most %d %s entries", NET_POLICY_ENTRIES_MAX,
                        allow ? "allow" : "deny");
    net_rule r;
    if (net_rule_parse(text, &r, err) < 0) return -1;
    (allow ? p->allow : p->deny)[(*n)++] = r;
    return 0;
}

typedef struct out {
    char *buf;
    size_t n, used;
    bool overflow;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    if (o->overflow) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(o->buf + o->used, o->n - o->used, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= o->n - o->used) o->overflow = true;
    else o->used += (size_t)w;
}

static bool rules_same(const net_rule *a, const net_rule *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].family != b[i].family || a[i].prefix != b[i].prefix || a[i].port != b[i].port ||
            memcmp(a[i].addr, b[i].addr, sizeof a[i].addr) != 0)
            return false;
    return true;
}

bool net_policy_same(const net_policy *a, const net_policy *b)
{
    return a->egress_allow == b->egress_allow && a->n_allow == b->n_allow &&
           a->n_deny == b->n_deny && rules_same(a->allow, b->allow, a->n_allow) &&
           rules_same(a->deny, b->deny, a->n_deny);
}

int net_policy_to_text(const net_policy *p, char *buf, size_t n, terr *err)
{
    out o = {buf, n, 0, false};
    put(&o, "egress %s\n", p->egress_allow ? "allow" : "deny");
    char e[NET_POLICY_ENTRY_MAX];
    for (size_t i = 0; i < p->n_allow; i++) {
        net_rule_format(&p->allow[i], e, sizeof e);
        put(&o, "allow %s\n", e);
    }
    for (size_t i = 0; i < p->n_deny; i++) {
        net_rule_format(&p->deny[i], e, sizeof e);
        put(&o, "deny %s\n", e);
    }
    if (o.overflow) return terr_set(err, "network policy text too long");
    return 0;
}

int net_policy_from_text(const char *text, net_policy *p, terr *err)
{
    net_policy_default(p);
    const char *s = text;
    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        char line[NET_POLICY_ENTRY_MAX + 16];
        if (len >= sizeof line) return terr_set(err, "network policy line too long");
        memcpy(line, s, len);
        line[len] = '\0';
        s += len + (nl ? 1 : 0);
        if (!line[0]) continue;
        char *sp = strchr(line, ' ');
        if (!sp) return terr_set(err, "malformed network policy line");
        *sp = '\0';
        int rc;
        if (!strcmp(line, "egress")) rc = net_policy_set_egress(p, sp + 1, err);
        else if (!strcmp(line, "allow")) rc = net_policy_add(p, true, sp + 1, err);
        else if (!strcmp(line, "deny")) rc = net_policy_add(p, false, sp + 1, err);
        else rc = terr_set(err, "unknown network policy line \"%s\"", line);
        if (rc < 0) return -1;
    }
    return 0;
}

/* One nft rule matching r ("ip daddr 10.0.0.0/8 tcp dport 80 accept"). */
static void put_rule(out *o, const net_rule *r, const char *verdict)
{
    char a[INET6_ADDRSTRLEN];
    inet_ntop(r->family == 4 ? AF_INET : AF_INET6, r->addr, a, sizeof a);
    const char *fam = r->family == 4 ? "ip" : "ip6";
    if (r->port) {
        put(o, "    %s daddr %s/%d tcp dport %d %s\n", fam, a, r->prefix, r->port, verdict);
        put(o, "    %s daddr %s/%d udp dport %d %s\n", fam, a, r->prefix, r->port, verdict);
    } else {
        put(o, "    %s daddr %s/%d %s\n", fam, a, r->prefix, verdict);
    }
}

bool net_rule_covers(const net_rule *r, int family, const uint8_t *a, int port)
{
    if (r->family != family || (r->port && r->port != port)) return false;
    for (int bit = 0; bit < r->prefix; bit++) {
        uint8_t m = (uint8_t)(0x80 >> (bit % 8));
        if ((r->addr[bit / 8] & m) != (a[bit / 8] & m)) return false;
    }
    return true;
}

bool net_policy_allows_dns(const net_policy *p, const net_rule *ups, size_t n)
{
    for (size_t u = 0; u < n; u++) {
        bool denied = false, allowed = p->egress_allow;
        for (size_t i = 0; i < p->n_deny && !denied; i++)
            denied = net_rule_covers(&p->deny[i], ups[u].family, ups[u].addr, ups[u].port);
        for (size_t i = 0; i < p->n_allow && !allowed; i++)
            allowed = net_rule_covers(&p->allow[i], ups[u].family, ups[u].addr, ups[u].port);
        if (!denied && allowed) return true;
    }
    return false;
}

int net_policy_nft(const net_policy *p, const char *guest_if, const char *uplink_if,
                   const char *dns_addr, bool replace, char *buf, size_t n, terr *err)
{
    out o = {buf, n, 0, false};
    /* "add + delete + define" in one transaction: atomic replace, and no
     * error when the table does not exist yet. */
    if (replace) put(&o, "table inet torpor\ndelete table inet torpor\n");
    put(&o, "table inet torpor {\n");
    put(&o, "  chain egress {\n");
    for (size_t i = 0; i < p->n_deny; i++) put_rule(&o, &p->deny[i], "drop");
    for (size_t i = 0; i < p->n_allow; i++) put_rule(&o, &p->allow[i], "accept");
    for (size_t i = 0; net_policy_refused[i]; i++) {
        net_rule r;
        if (net_rule_parse(net_policy_refused[i], &r, err) < 0) return -1;
        put_rule(&o, &r, "drop");
    }
    put(&o, "    %s\n  }\n", p->egress_allow ? "accept" : "drop");
    put(&o,
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy drop;\n"
        "    iifname \"%s\" oifname \"%s\" jump egress\n"
        "    iifname \"%s\" oifname \"%s\" ct state established,related accept\n"
        "  }\n",
        guest_if, uplink_if, uplink_if, guest_if);
    /* The namespace itself (its gateway address, anything listening in it)
     * is not a destination for the guest; answers to connections the agent
     * opens into the guest (the port proxy) are. */
    put(&o,
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        "    iifname \"%s\" ct state established,related accept\n",
        guest_if);
    if (dns_addr) { /* the forwarder: UDP, and TCP for truncated answers */
        put(&o, "    iifname \"%s\" ip daddr %s udp dport 53 accept\n", guest_if, dns_addr);
        put(&o, "    iifname \"%s\" ip daddr %s tcp dport 53 accept\n", guest_if, dns_addr);
    }
    put(&o,
        "    iifname \"%s\" drop\n"
        "  }\n",
        guest_if);
    put(&o,
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        "    oifname \"%s\" masquerade\n"
        "  }\n}\n",
        uplink_if);
    if (o.overflow) return terr_set(err, "network policy too large for its rules");
    return 0;
}
