/* net: the network of each sandbox on this host (docs/network.md).
 *
 * Each sandbox gets a network namespace "torpor-<id>" holding: tap0
 * (10.0.0.1/24; the guest is always 10.0.0.2, gateway 10.0.0.1), eth0 (one
 * end of a veth pair, 10.201.S.x/30) and the table inet torpor (the egress
 * policy, net_policy.h, plus masquerade out of eth0). The other end of the
 * veth, "tnv<S>", sits in the host namespace; S is the sandbox's slot, one
 * per live sandbox on the host (/run/torpor-net/slots/<S>, shared by every
 * agent of the host). In the host namespace the table inet torpor_host
 * refuses every connection from a sandbox to the host's own addresses and
 * to another sandbox, and masquerades egress; net.ipv4.ip_forward is on.
 *
 * Contract:
 * - Everything here runs as root on the agent's side; QEMU only ever gets an
 *   already-open TAP fd (net_tap_open), so it needs no privilege.
 * - net_setup is idempotent: it (re)creates what is missing (after a host
 *   reboot the namespace is gone; the policy is kept in
 *   <state_dir>/net/<id>) and applies the policy: p, or the stored one when
 *   p is NULL (the default policy when none is stored).
 * - net_apply replaces the rules atomically (one nft transaction) and stores
 *   the policy; on failure the old rules and the old stored policy stay.
 * - The namespace outlives pause and agent restarts; net_teardown (destroy)
 *   removes it, the slot and the stored policy, and succeeds when nothing
 *   is left.
 * - DNS: each namespace has a socket on 10.0.0.1:53 served by the agent's
 *   forwarder (net_dns.h); its input rule lets the guest's UDP queries to it
 *   through only when net_policy_allows_dns says the policy allows DNS, and
 *   net_apply changes both together.
 * - net_connect opens a TCP connection from inside the sandbox's namespace
 *   to the guest (10.0.0.2:port): the agent's way in for the port proxy.
 * - Thread-safe; namespace switches are per calling thread and always
 *   switched back (a thread that cannot switch back aborts the process). */
#ifndef TORPOR_AGENT_NET_H
#define TORPOR_AGENT_NET_H

#include "net_policy.h"
#include "terr.h"

#define NET_GUEST_ADDR "10.0.0.2"
#define NET_GATEWAY_ADDR "10.0.0.1"

typedef struct agent_net agent_net;

/* Installs the host table, turns on forwarding, starts the DNS forwarder
 * (net_dns.h; dns_upstream: "auto", "off" or a list) and gives it the
 * namespaces that outlived an earlier agent. */
int net_open(const char *state_dir, const char *dns_upstream, agent_net **out, terr *err);
void net_close(agent_net *n);

int net_setup(agent_net *n, const char *id, const net_policy *p, terr *err);
int net_apply(agent_net *n, const char *id, const net_policy *p, terr *err);
/* The stored policy (default when none). */
int net_get(agent_net *n, const char *id, net_policy *p, terr *err);
/* A new fd on the sandbox's tap0 (close it after QEMU got it). */
int net_tap_open(agent_net *n, const char *id, int *fd, terr *err);
int net_teardown(agent_net *n, const char *id, terr *err);
/* For a running VM re-attached after an agent restart: when the sandbox has
 * network state but /run/netns/torpor-<id> is no namespace any more (an
 * agent in its own mount namespace lost the mount, docs/operations.md), the
 * namespace of tap_fd (the VM's TAP, TUNGETDEVNETNS) is mounted there again;
 * then its DNS forwarder is attached. 0 also when there is nothing to do. */
int net_reattach(agent_net *n, const char *id, int tap_fd, terr *err);
/* Blocking connect with a timeout; -1 with errno-like reason in err.
 * *refused is set when the guest answered RST (nothing listening). */
int net_connect(agent_net *n, const char *id, int port, int timeout_ms, int *fd, int *refused,
                terr *err);

#endif
