/* net_dns: the DNS forwarder of this agent's sandboxes (docs/network.md).
 *
 * One thread per agent (not a process per sandbox) answers UDP DNS on the
 * gateway address (10.0.0.1:53) inside every sandbox's network namespace
 * and forwards each query to the host's upstream resolvers; the answer goes
 * back to the guest with the guest's own query id.
 *
 * Contract:
 * - Upstreams: "auto" (or NULL) = the IPv4 `nameserver` lines of
 *   /etc/resolv.conf, skipping 127.0.0.0/8 (a host-local stub such as
 *   systemd-resolved's is unreachable from nowhere but the host; give it
 *   explicitly to use it); "off" = no forwarder; else a comma-separated
 *   list of IPv4 ADDR[:PORT] (port 53 by default), at most NET_DNS_UPSTREAMS.
 *   No usable upstream = no forwarder (net_dns_open gives NULL, not an error).
 * - The guest is hostile: a query must be a well-formed standard query of
 *   at most 512 bytes with one question, else it is dropped; each sandbox
 *   may have NET_DNS_INFLIGHT queries in flight and send NET_DNS_RATE per
 *   second (burst NET_DNS_BURST), the rest is dropped; the whole forwarder
 *   has NET_DNS_PENDING in flight. A query gets NET_DNS_TRY_MS per upstream
 *   (then the next upstream, once each), then it is forgotten (the guest's
 *   resolver retries). An answer is accepted only from the upstream the
 *   query went to, with its id and its question; at most 4096 bytes.
 * - A sandbox is attached with a UDP socket already bound inside its
 *   namespace (the caller switches namespaces: net.c) and a flag saying
 *   whether its policy allows DNS (net_policy_allows_dns); queries of a
 *   sandbox whose flag is off are dropped (the namespace's input rule drops
 *   them first; this is the second line). Attach/detach/flag changes are
 *   thread-safe and take effect for the next query.
 * - net_dns_close stops the thread and closes every socket. */
#ifndef TORPOR_AGENT_NET_DNS_H
#define TORPOR_AGENT_NET_DNS_H

#include <stdbool.h>
#include <stddef.h>

#include "net_policy.h"
#include "terr.h"

#define NET_DNS_UPSTREAMS 4
#define NET_DNS_INFLIGHT 32
#define NET_DNS_PENDING 1024
#define NET_DNS_RATE 50
#define NET_DNS_BURST 100
#define NET_DNS_TRY_MS 2000
#define NET_DNS_QUERY_MAX 512
#define NET_DNS_ANSWER_MAX 4096

typedef struct net_dns net_dns;

/* *out = NULL when spec is "off" or no upstream is usable (logged). */
int net_dns_open(const char *spec, net_dns **out, terr *err);
void net_dns_close(net_dns *d);

/* The upstreams as policy rules (family 4, /32, their port), for
 * net_policy_allows_dns. Returns how many (<= max). */
size_t net_dns_upstreams(const net_dns *d, net_rule *out, size_t max);

/* Takes over fd (closed on failure too); replaces an earlier attachment. */
int net_dns_attach(net_dns *d, const char *id, int fd, bool allowed, terr *err);
bool net_dns_attached(net_dns *d, const char *id);
void net_dns_set_allowed(net_dns *d, const char *id, bool allowed);
void net_dns_detach(net_dns *d, const char *id);

/* Parses a spec's list form (for tests and the flag check); 0 or -1. */
int net_dns_parse_upstreams(const char *list, net_rule *out, size_t max, size_t *n, terr *err);

#endif
