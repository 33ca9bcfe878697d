/* net_policy: a sandbox's egress policy — parse, validate, canonical text,
 * and the nftables rules that enforce it (docs/network.md).
 *
 * Contract:
 * - An entry is "CIDR[:port]": an IPv4 address with an optional /0..32
 *   prefix and an optional :1..65535 port, or an IPv6 address with an
 *   optional /0..128 prefix (as "[addr/prefix]:port" when it has a port).
 *   A port matches TCP and UDP. Host bits set in the address are an error
 *   ("10.0.0.1/8"), so an entry always reads as what it matches.
 * - Evaluation order (first match wins): deny entries, allow entries, the
 *   refused ranges (net_policy_refused, always refused unless an allow entry
 *   names them), then the default (egress allow | deny).
 * - The same text parses the same everywhere: the control plane validates
 *   REST input with it and the agent again on gRPC input.
 * - At most NET_POLICY_ENTRIES_MAX entries per list. Pure functions, no
 *   allocation, thread-safe. */
#ifndef TORPOR_NET_POLICY_H
#define TORPOR_NET_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "terr.h"

#define NET_POLICY_ENTRIES_MAX 64
#define NET_POLICY_ENTRY_MAX 64 /* longest entry text, with its NUL */

typedef struct net_rule {
    int family; /* 4 or 6 */
    uint8_t addr[16];
    int prefix;
    int port; /* 0 = any port */
} net_rule;

typedef struct net_policy {
    bool egress_allow;
    size_t n_allow, n_deny;
    net_rule allow[NET_POLICY_ENTRIES_MAX];
    net_rule deny[NET_POLICY_ENTRIES_MAX];
} net_policy;

/* The default: egress allowed to public addresses. */
void net_policy_default(net_policy *p);

int net_rule_parse(const char *text, net_rule *r, terr *err);
/* Canonical text of r ("10.1.0.0/16:443", "fc00::/7"); buf >= NET_POLICY_ENTRY_MAX. */
void net_rule_format(const net_rule *r, char *buf, size_t n);

/* "allow" | "deny" -> egress_allow. */
int net_policy_set_egress(net_policy *p, const char *egress, terr *err);
int net_policy_add(net_policy *p, bool allow, const char *text, terr *err);

/* The ranges refused unless allowed (the list), as entry texts, NULL-terminated. */
extern const char *const net_policy_refused[];

/* Whether a and b say the same: egress and the same entries in the same order. */
bool net_policy_same(const net_policy *a, const net_policy *b);

/* Text form for storage: "egress allow\nallow 10.0.0.0/8\ndeny ...\n". */
int net_policy_to_text(const net_policy *p, char *buf, size_t n, terr *err);
int net_policy_from_text(const char *text, net_policy *p, terr *err);

/* Whether r (an address, its prefix and port; port 0 = any) covers the
 * host address a (family 4 or 6) at port. */
bool net_rule_covers(const net_rule *r, int family, const uint8_t *a, int port);

/* Whether p lets the guest use the agent's DNS forwarder, which sends its
 * queries to the upstream resolvers ups[0..n) (host addresses with their
 * port): an upstream is allowed when no deny entry covers it and either an
 * allow entry covers it or egress is "allow"; the refused ranges do not
 * apply (the agent, not the guest, talks to the resolver). True when at
 * least one upstream is allowed. */
bool net_policy_allows_dns(const net_policy *p, const net_rule *ups, size_t n);

/* The nftables script (for `nft -f -` inside the sandbox's network
 * namespace) that replaces table inet torpor atomically (replace; without
 * it the script only creates the table, for a new namespace: nft takes
 * ~3x longer on a "delete table" transaction): egress from
 * guest_if filtered by p, masqueraded out of uplink_if; nothing from the
 * guest reaches the namespace itself except, when dns_addr is not NULL,
 * UDP port 53 of that (IPv4) address (the DNS forwarder). */
int net_policy_nft(const net_policy *p, const char *guest_if, const char *uplink_if,
                   const char *dns_addr, bool replace, char *buf, size_t n, terr *err);

#endif
