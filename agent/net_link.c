/* net_link: rtnetlink, tun and mount calls for the sandbox network (see net_link.h). */
#include "net_link.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_arp.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define NETNS_RUN_DIR "/run/netns"
#define MSG_MAX 1024

/* ---- a netlink request with its attributes ---- */

typedef struct req {
    union {
        struct nlmsghdr h;
        char buf[MSG_MAX];
    } u;
    bool overflow;
} req;

static void *req_init(req *r, uint16_t type, uint16_t flags, size_t body)
{
    memset(r, 0, sizeof *r);
    r->u.h.nlmsg_len = (uint32_t)NLMSG_LENGTH(body);
    r->u.h.nlmsg_type = type;
    r->u.h.nlmsg_flags = (uint16_t)(NLM_F_REQUEST | NLM_F_ACK | flags);
    return NLMSG_DATA(&r->u.h);
}

static struct rtattr *attr(req *r, uint16_t type, const void *data, size_t len)
{
    size_t off = NLMSG_ALIGN(r->u.h.nlmsg_len);
    if (off + RTA_SPACE(len) > sizeof r->u.buf) {
        r->overflow = true;
        return NULL;
    }
    struct rtattr *a = (struct rtattr *)(r->u.buf + off);
    a->rta_type = type;
    a->rta_len = (uint16_t)RTA_LENGTH(len);
    if (data && len) memcpy(RTA_DATA(a), data, len);
    r->u.h.nlmsg_len = (uint32_t)(off + RTA_SPACE(len));
    return a;
}

static void nest_end(req *r, struct rtattr *a)
{
    if (a) a->rta_len = (uint16_t)(r->u.buf + r->u.h.nlmsg_len - (char *)a);
}

/* Sends r and waits for its acknowledgement. */
static int talk(req *r, const char *what, terr *err)
{
    if (r->overflow) return terr_set(err, "%s: netlink message too long", what);
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0) return terr_set(err, "%s: netlink socket: %s", what, strerror(errno));
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    r->u.h.nlmsg_seq = 1;
    int rc = 0;
    if (sendto(s, r->u.buf, r->u.h.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0) {
        rc = terr_set(err, "%s: netlink send: %s", what, strerror(errno));
        goto out;
    }
    for (;;) {
        char buf[4096];
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            rc = terr_set(err, "%s: netlink receive: %s", what, n < 0 ? strerror(errno) : "EOF");
            goto out;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != 1 || h->nlmsg_type != NLMSG_ERROR) continue;
            const struct nlmsgerr *e = NLMSG_DATA(h);
            if (e->error) rc = terr_set(err, "%s: %s", what, strerror(-e->error));
            goto out;
        }
    }
out:
    close(s);
    return rc;
}

static int ifindex(const char *ifname, terr *err)
{
    unsigned i = if_nametoindex(ifname);
    if (!i) return terr_set(err, "no interface %s: %s", ifname, strerror(errno));
    return (int)i;
}

/* ---- links, addresses, routes ---- */

int net_link_veth_add(const char *name, const char *peer, int peer_nsfd, terr *err)
{
    req r;
    req_init(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof(struct ifinfomsg));
    attr(&r, IFLA_IFNAME, name, strlen(name) + 1);
    struct rtattr *info = attr(&r, IFLA_LINKINFO, NULL, 0);
    attr(&r, IFLA_INFO_KIND, "veth", 4);
    struct rtattr *data = attr(&r, IFLA_INFO_DATA, NULL, 0);
    struct rtattr *pe = attr(&r, VETH_INFO_PEER, NULL, sizeof(struct ifinfomsg));
    attr(&r, IFLA_IFNAME, peer, strlen(peer) + 1);
    uint32_t fd = (uint32_t)peer_nsfd;
    attr(&r, IFLA_NET_NS_FD, &fd, sizeof fd);
    nest_end(&r, pe);
    nest_end(&r, data);
    nest_end(&r, info);
    return talk(&r, "add veth", err);
}

int net_link_up(const char *ifname, terr *err)
{
    int i = ifindex(ifname, err);
    if (i < 0) return -1;
    req r;
    struct ifinfomsg *m = req_init(&r, RTM_NEWLINK, 0, sizeof *m);
    m->ifi_family = AF_UNSPEC;
    m->ifi_index = i;
    m->ifi_flags = IFF_UP;
    m->ifi_change = IFF_UP;
    return talk(&r, "set link up", err);
}

int net_link_addr_add(const char *ifname, const char *addr, int prefix, terr *err)
{
    int i = ifindex(ifname, err);
    if (i < 0) return -1;
    struct in_addr a;
    if (inet_pton(AF_INET, addr, &a) != 1) return terr_set(err, "bad address %s", addr);
    req r;
    struct ifaddrmsg *m = req_init(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, sizeof *m);
    m->ifa_family = AF_INET;
    m->ifa_prefixlen = (unsigned char)prefix;
    m->ifa_scope = RT_SCOPE_UNIVERSE;
    m->ifa_index = (unsigned)i;
    attr(&r, IFA_LOCAL, &a, sizeof a);
    attr(&r, IFA_ADDRESS, &a, sizeof a);
    if (prefix < 31) { /* like `ip addr add`: the broadcast address of the subnet */
        uint32_t host = prefix ? 0xffffffffu >> prefix : 0xffffffffu;
        struct in_addr b = {.s_addr = a.s_addr | htonl(host)};
        attr(&r, IFA_BROADCAST, &b, sizeof b);
    }
    return talk(&r, "add address", err);
}

int net_link_route_default(const char *gateway, terr *err)
{
    struct in_addr g;
    if (inet_pton(AF_INET, gateway, &g) != 1) return terr_set(err, "bad gateway %s", gateway);
    req r;
    struct rtmsg *m = req_init(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, sizeof *m);
    m->rtm_family = AF_INET;
    m->rtm_table = RT_TABLE_MAIN;
    m->rtm_protocol = RTPROT_BOOT;
    m->rtm_scope = RT_SCOPE_UNIVERSE;
    m->rtm_type = RTN_UNICAST;
    attr(&r, RTA_GATEWAY, &g, sizeof g);
    return talk(&r, "add default route", err);
}

int net_link_tap_add(const char *ifname, terr *err)
{
    int t = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (t < 0) return terr_set(err, "open /dev/net/tun: %s", strerror(errno));
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    int rc = 0;
    if (ioctl(t, TUNSETIFF, &ifr) < 0 || ioctl(t, TUNSETPERSIST, 1) < 0)
        rc = terr_set(err, "create tap %s: %s", ifname, strerror(errno));
    /* A fixed address, not a random one: a rebuilt namespace (after a host
     * reboot, or after an agent in its own mount namespace restarted) must
     * look the same to a guest resumed from a snapshot, whose ARP cache
     * holds the gateway's address. */
    static const unsigned char mac[6] = {0x52, 0x54, 0x00, 0x00, 0x00, 0x01};
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, sizeof mac);
    if (rc == 0 && ioctl(t, SIOCSIFHWADDR, &ifr) < 0)
        rc = terr_set(err, "set the address of tap %s: %s", ifname, strerror(errno));
    close(t);
    return rc;
}

/* ---- named namespaces ---- */

/* /run/netns as a shared mount, as `ip netns add` leaves it, so a namespace
 * mounted there is seen from every mount namespace. */
static int run_dir_shared(terr *err)
{
    if (mkdir(NETNS_RUN_DIR, 0755) < 0 && errno != EEXIST)
        return terr_set(err, "mkdir " NETNS_RUN_DIR ": %s", strerror(errno));
    if (mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, NULL) == 0) return 0;
    if (errno != EINVAL)
        return terr_set(err, "mount --make-shared " NETNS_RUN_DIR ": %s", strerror(errno));
    /* Not a mount point yet: bind it onto itself first. */
    if (mount(NETNS_RUN_DIR, NETNS_RUN_DIR, "none", MS_BIND | MS_REC, NULL) < 0 ||
        mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, NULL) < 0)
        return terr_set(err, "mount --bind " NETNS_RUN_DIR ": %s", strerror(errno));
    return 0;
}

int net_link_netns_mount(const char *name, int nsfd, terr *err)
{
    if (run_dir_shared(err) < 0) return -1;
    char path[256], src[64];
    snprintf(path, sizeof path, NETNS_RUN_DIR "/%s", name);
    snprintf(src, sizeof src, "/proc/self/fd/%d", nsfd);
    int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
    if (fd < 0) return terr_set(err, "create %s: %s", path, strerror(errno));
    close(fd);
    if (mount(src, path, "none", MS_BIND, NULL) < 0) {
        int e = errno;
        unlink(path);
        return terr_set(err, "mount the namespace on %s: %s", path, strerror(e));
    }
    return 0;
}

int net_link_netns_add(const char *name, terr *err)
{
    if (run_dir_shared(err) < 0) return -1;
    char path[256];
    snprintf(path, sizeof path, NETNS_RUN_DIR "/%s", name);
    int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
    if (fd < 0) return terr_set(err, "create %s: %s", path, strerror(errno));
    close(fd);
    int saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (saved < 0) {
        int e = errno;
        unlink(path);
        return terr_set(err, "open own network namespace: %s", strerror(e));
    }
    int rc = 0;
    if (unshare(CLONE_NEWNET) < 0) {
        rc = terr_set(err, "unshare(CLONE_NEWNET): %s", strerror(errno));
    } else {
        if (mount("/proc/thread-self/ns/net", path, "none", MS_BIND, NULL) < 0)
            rc = terr_set(err, "mount the namespace on %s: %s", path, strerror(errno));
        if (setns(saved, CLONE_NEWNET) < 0) {
            log_error("event=net_setns_back_failed error=\"%s\"", strerror(errno));
            abort();
        }
    }
    close(saved);
    if (rc < 0) unlink(path);
    return rc;
}
