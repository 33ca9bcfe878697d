/* net_dns: the DNS forwarder of this agent's sandboxes (docs/network.md).
 *
 * One thread per agent (not a process per sandbox) answers DNS (UDP and TCP) on the
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
 * - DNS over TCP (RFC 7766 framing: a 2-byte length before each message),
 *   for the guest resolver's retry after a truncated (TC) answer: each query
 *   passes the same checks and counts against the same rate and in-flight
 *   bounds as over UDP, and goes on its own TCP connection to the upstream
 *   (same address and port; NET_DNS_TRY_MS each for connect + answer, then
 *   the next upstream, once each, then the guest's connection is closed);
 *   the answer is accepted with our id and the question asked, up to
 *   NET_DNS_TCP_ANSWER_MAX bytes, and relayed with its length prefix and the
 *   guest's id. Queries on one connection are answered one after the other
 *   (pipelined ones wait). A query frame over NET_DNS_QUERY_MAX or malformed
 *   closes the connection. Bounds: NET_DNS_TCP_PER_SANDBOX connections per
 *   sandbox, NET_DNS_TCP_CONNS for the whole forwarder (more are accepted
 *   and closed at once); each connection lives at most NET_DNS_TCP_MS from
 *   its accept, whatever it does. Everything is non-blocking on the one
 *   thread (a connection in progress costs ~1 KB, + 64 KB while it has an
 *   answer).
 * - A sandbox is attached with a UDP socket and a TCP socket (or -1: no
 *   TCP) already bound inside its namespace (the caller switches
 *   namespaces: net.c; attach makes the TCP one listen) and a flag saying
 *   whether its policy allows DNS (net_policy_allows_dns); queries of a
 *   sandbox whose flag is off are dropped and its TCP connections closed at
 *   accept (the namespace's input rule drops them first; this is the second
 *   line). Attach/detach/flag changes are thread-safe and take effect for
 *   the next query; turning the flag off also closes its open TCP
 *   connections.
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
#define NET_DNS_TCP_PER_SANDBOX 4
#define NET_DNS_TCP_CONNS 64
#define NET_DNS_TCP_MS 10000
#define NET_DNS_TCP_ANSWER_MAX 65535

typedef struct net_dns net_dns;

/* *out = NULL when spec is "off" or no upstream is usable (logged). */
int net_dns_open(const char *spec, net_dns **out, terr *err);
void net_dns_close(net_dns *d);

/* The upstreams as policy rules (family 4, /32, their port), for
 * net_policy_allows_dns. Returns how many (<= max). */
size_t net_dns_upstreams(const net_dns *d, net_rule *out, size_t max);

/* Takes over fd and tcp_fd (closed on failure too); replaces an earlier
 * attachment (its TCP connections closed). */
int net_dns_attach(net_dns *d, const char *id, int fd, int tcp_fd, bool allowed, terr *err);
bool net_dns_attached(net_dns *d, const char *id);
void net_dns_set_allowed(net_dns *d, const char *id, bool allowed);
void net_dns_detach(net_dns *d, const char *id);

/* For tests: a TCP connection's lifetime instead of NET_DNS_TCP_MS (for
 * connections accepted from now on; checked every 250 ms). */
void net_dns_set_tcp_deadline_ms(net_dns *d, int ms);

/* Parses a spec's list form (for tests and the flag check); 0 or -1. */
int net_dns_parse_upstreams(const char *list, net_rule *out, size_t max, size_t *n, terr *err);

#endif
