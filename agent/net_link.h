/* net_link: the kernel objects of a sandbox's network made in-process (rtnetlink,
 * /dev/net/tun, mount) instead of by exec'ing `ip`, which cost a fork/exec
 * each (docs/network.md, "Setup cost").
 *
 * Contract:
 * - Every call acts in the calling thread's current network namespace
 *   (net.c switches threads with setns), except net_link_netns_add.
 * - net_link_netns_add makes a named namespace exactly as `ip netns add`
 *   does: /run/netns a shared mount, an empty file /run/netns/<name>, a
 *   new namespace (unshare on this thread) bind-mounted onto it; the thread
 *   is back in its own namespace afterwards (abort if it cannot be).
 * - Addresses are IPv4 text. Errors: -1 with the kernel's reason.
 * - Thread-safe (a netlink socket per call). */
#ifndef TORPOR_AGENT_NET_LINK_H
#define TORPOR_AGENT_NET_LINK_H

#include "terr.h"

int net_link_netns_add(const char *name, terr *err);
/* The existing namespace nsfd bind-mounted on /run/netns/<name> (which must
 * not exist), /run/netns made shared first as above. */
int net_link_netns_mount(const char *name, int nsfd, terr *err);
/* A veth pair: name here, peer moved into the namespace peer_nsfd. */
int net_link_veth_add(const char *name, const char *peer, int peer_nsfd, terr *err);
int net_link_addr_add(const char *ifname, const char *addr, int prefix, terr *err);
int net_link_up(const char *ifname, terr *err);
int net_link_route_default(const char *gateway, terr *err);
/* A persistent TAP (IFF_TAP | IFF_NO_PI) nobody is attached to, with the
 * fixed MAC address 52:54:00:00:00:01 (the guest's gateway) in every
 * namespace, so a namespace rebuilt under a resumed guest keeps the
 * address in the guest's ARP cache valid. */
int net_link_tap_add(const char *ifname, terr *err);

#endif
