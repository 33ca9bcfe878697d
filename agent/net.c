/* net: per-sandbox network namespaces, TAP devices and nftables rules (see net.h).
 *
 * Over 600 lines because one sandbox's network is one life cycle: the slot
 * (address) claim, the state file, the namespace, its links (net_link.c does
 * the rtnetlink part), the rules, the DNS forwarder hook (net_dns.c) and the
 * teardown must agree on the order of every step and on what a crash between
 * two of them leaves behind (sweep_orphans, dns_reattach). Split by step, each
 * file would need the others' invariants. */
#include "net.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs_util.h"
#include "log.h"
#include "mono_time.h"
#include "net_dns.h"
#include "net_link.h"
#include "torpor_limits.h"

#define IP_BIN "/usr/sbin/ip"
#define NFT_BIN "/usr/sbin/nft"
#define SLOT_DIR "/run/torpor-net/slots"
#define SLOTS 16384 /* 10.201.0.0/16 in /30s */
#define NS_PREFIX "torpor-"
#define GUEST_IF "tap0"
#define UPLINK_IF "eth0"
#define POLICY_TEXT_MAX 8192
#define NFT_TEXT_MAX 65536

struct agent_net {
    char dir[4096];         /* <state_dir>/net */
    pthread_mutex_t mu;     /* serialises slot allocation */
    pthread_mutex_t pol_mu; /* serialises policy read-apply-store */
    net_dns *dns;           /* NULL: no DNS forwarder */
};

/* ---- running ip/nft ---- */

/* A started ip/nft: its pid and the read end of its stderr. */
typedef struct proc {
    pid_t pid;
    int errfd;
    const char *name, *arg1;
} proc;

/* Starts argv (absolute path) with input on stdin, inside the namespace
 * nsfd (-1: the agent's); run_wait collects it. */
static int run_start(const char *const argv[], int nsfd, const char *input, proc *pr, terr *err)
{
    int in[2], errp[2];
    if (pipe2(in, O_CLOEXEC) < 0) return terr_set(err, "pipe: %s", strerror(errno));
    if (pipe2(errp, O_CLOEXEC) < 0) {
        close(in[0]);
        close(in[1]);
        return terr_set(err, "pipe: %s", strerror(errno));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(in[0]), close(in[1]), close(errp[0]), close(errp[1]);
        return terr_set(err, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) < 0) _exit(126);
        int nul = open("/dev/null", O_WRONLY);
        if (dup2(in[0], 0) < 0 || dup2(nul >= 0 ? nul : errp[1], 1) < 0 || dup2(errp[1], 2) < 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(errp[1]);
    signal(SIGPIPE, SIG_IGN);
    if (input) {
        size_t len = strlen(input), off = 0;
        while (off < len) {
            ssize_t w = write(in[1], input + off, len - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            off += (size_t)w;
        }
    }
    close(in[1]);
    *pr = (proc){.pid = pid, .errfd = errp[0], .name = argv[0], .arg1 = argv[1] ? argv[1] : ""};
    return 0;
}

/* Waits for pr; its stderr becomes the error message. */
static int run_wait(proc *pr, terr *err)
{
    char msg[400];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(pr->errfd, msg + got, sizeof msg - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
        if (got == sizeof msg - 1) {
            char sink[256];
            while (read(pr->errfd, sink, sizeof sink) > 0) {}
            break;
        }
    }
    close(pr->errfd);
    msg[got] = '\0';
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    int st;
    while (waitpid(pr->pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return terr_set(err, "%s %s failed (status %d): %s", pr->name, pr->arg1,
                        WIFEXITED(st) ? WEXITSTATUS(st) : -1, msg);
    return 0;
}

static int run(const char *const argv[], int nsfd, const char *input, terr *err)
{
    proc pr;
    if (run_start(argv, nsfd, input, &pr, err) < 0) return -1;
    return run_wait(&pr, err);
}

/* ---- namespaces ---- */

static void ns_name(const char *id, char *buf, size_t n) { snprintf(buf, n, NS_PREFIX "%s", id); }

static void ns_path(const char *id, char *buf, size_t n)
{
    snprintf(buf, n, "/run/netns/" NS_PREFIX "%s", id);
}

/* The namespace of sandbox id, opened read-only; -1 if there is none.
 * Present means /run/netns/torpor-<id> is a namespace (nsfs) in this
 * agent's mount namespace: the one test every "does it exist" decision
 * uses. An agent in a mount namespace of its own (systemd's ProtectSystem=,
 * `ip netns exec`) loses the bind mounts it made there when it exits; its
 * successor then finds the mount point alone, an empty file that opens
 * fine but is no namespace (setns: EINVAL). ns_clear removes that file. */
static int ns_open(const char *id, terr *err)
{
    char path[320];
    ns_path(id, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        terr_set(err, "network namespace of %s: %s", id, strerror(errno));
        return -1;
    }
    struct statfs sf;
    if (fstatfs(fd, &sf) == 0 && sf.f_type == NSFS_MAGIC) return fd;
    close(fd);
    terr_set(err, "network namespace of %s: %s is not mounted in this mount namespace", id, path);
    errno = ENOENT;
    return -1;
}

/* Whether sandbox id has a live namespace mounted here (ns_open's test). */
static bool ns_exists(const char *id)
{
    int fd = ns_open(id, NULL);
    if (fd < 0) return false;
    close(fd);
    return true;
}

/* Removes whatever /run/netns/torpor-<id> is: a namespace (`ip netns
 * del`), or the empty mount point file an agent in another mount
 * namespace left behind (unlinked, so a create can make it again). */
static int ns_clear(const char *id, terr *err)
{
    char path[320];
    ns_path(id, path, sizeof path);
    if (ns_exists(id)) {
        char ns[160];
        ns_name(id, ns, sizeof ns);
        const char *del[] = {IP_BIN, "netns", "del", ns, NULL};
        return run(del, -1, NULL, err);
    }
    struct stat st;
    if (lstat(path, &st) < 0) return 0;
    if (!S_ISREG(st.st_mode) || st.st_size != 0)
        return terr_set(err, "%s is neither a network namespace nor an empty file", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return terr_set(err, "unlink %s: %s", path, strerror(errno));
    log_info("event=net_stale_netns_removed sandbox_id=%s", id);
    return 0;
}

/* Switches the calling thread into nsfd; *saved is the way back. */
static int ns_enter(int nsfd, int *saved, terr *err)
{
    *saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (*saved < 0) return terr_set(err, "open own network namespace: %s", strerror(errno));
    if (setns(nsfd, CLONE_NEWNET) < 0) {
        int e = errno;
        close(*saved);
        return terr_set(err, "setns: %s", strerror(e));
    }
    return 0;
}

static void ns_leave(int saved)
{
    if (setns(saved, CLONE_NEWNET) < 0) {
        /* This thread would go on serving requests in a sandbox's
         * namespace: never. */
        log_error("event=net_setns_back_failed error=\"%s\"", strerror(errno));
        abort();
    }
    close(saved);
}

/* Switches this thread into sandbox id's namespace (ns_leave(*saved) to
 * come back); -1 with err when it has none or setns fails. */
static int ns_enter_id(const char *id, int *saved, terr *err)
{
    int nsfd = ns_open(id, err);
    if (nsfd < 0) return -1;
    int rc = ns_enter(nsfd, saved, err);
    close(nsfd); /* the thread stays in the namespace without it */
    return rc;
}

/* A new socket (type | NONBLOCK | CLOEXEC) made inside the namespace of
 * sandbox id, so it lives there whatever thread uses it later; -1 with err
 * ("<what>: ..."). */
static int ns_socket(const char *id, int type, const char *what, terr *err)
{
    int saved;
    if (ns_enter_id(id, &saved, err) < 0) return -1;
    int s = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int e = errno;
    ns_leave(saved);
    if (s < 0) terr_set(err, "%s: %s", what, strerror(e));
    return s;
}

static int write_sysctl(const char *path, const char *value, terr *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return terr_set(err, "open %s: %s", path, strerror(errno));
    ssize_t w = write(fd, value, strlen(value));
    int e = errno;
    close(fd);
    if (w != (ssize_t)strlen(value)) return terr_set(err, "write %s: %s", path, strerror(e));
    return 0;
}

/* ---- slots ---- */

static void slot_addr(int slot, int host, char *buf, size_t n)
{
    unsigned v = (10u << 24) | (201u << 16) | (((unsigned)slot * 4u) + (host ? 1u : 2u));
    snprintf(buf, n, "%u.%u.%u.%u", v >> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255);
}

/* A slot file holds "<sandbox id>\n<the owning agent's net dir>\n". */
static int slot_read(int slot, char *id, size_t n, char *dir, size_t dn)
{
    char path[128], buf[4400];
    snprintf(path, sizeof path, SLOT_DIR "/%d", slot);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r < 0) return -1;
    buf[r] = '\0';
    char *nl = strchr(buf, '\n');
    if (nl) *nl = '\0';
    size_t l = strlen(buf);
    if (l >= n) return -1;
    memcpy(id, buf, l + 1);
    if (dir) {
        char *d = nl ? nl + 1 : buf + r;
        char *nl2 = strchr(d, '\n');
        if (nl2) *nl2 = '\0';
        l = strlen(d);
        if (l >= dn) return -1;
        memcpy(dir, d, l + 1);
    }
    return 0;
}

static int slot_owner(int slot, char *id, size_t n) { return slot_read(slot, id, n, NULL, 0); }

/* Claims a slot for id: the one it had (kept in the state file) if still
 * free or its own, else the first free one from a hash of the id. */
static int slot_claim(agent_net *n, const char *id, int hint, int *slot, terr *err)
{
    if (fs_mkdir_p(SLOT_DIR, 0755, err) < 0) return -1;
    unsigned h = 2166136261u;
    for (const char *p = id; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    pthread_mutex_lock(&n->mu);
    for (int i = -1; i < SLOTS; i++) {
        int s = i < 0 ? hint : (int)((h + (unsigned)i) % SLOTS);
        if (s < 0 || s >= SLOTS) continue;
        char path[128], owner[128];
        snprintf(path, sizeof path, SLOT_DIR "/%d", s);
        if (slot_owner(s, owner, sizeof owner) == 0) {
            if (!strcmp(owner, id)) {
                pthread_mutex_unlock(&n->mu);
                *slot = s;
                return 0;
            }
            continue;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) continue; /* another agent of this host won it */
        char line[4400];
        int len = snprintf(line, sizeof line, "%s\n%s\n", id, n->dir);
        ssize_t w = write(fd, line, (size_t)len);
        close(fd);
        if (w != len) {
            unlink(path);
            continue;
        }
        pthread_mutex_unlock(&n->mu);
        *slot = s;
        return 0;
    }
    pthread_mutex_unlock(&n->mu);
    return terr_set(err, "no free network slot on this host (%d in use)", SLOTS);
}

static void slot_release(int slot, const char *id)
{
    char owner[128];
    if (slot_owner(slot, owner, sizeof owner) == 0 && !strcmp(owner, id)) {
        char path[128];
        snprintf(path, sizeof path, SLOT_DIR "/%d", slot);
        unlink(path);
    }
}

/* ---- stored state: "slot N\n" + the policy text ---- */

static void state_path(agent_net *n, const char *id, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", n->dir, id);
}

static int state_read(agent_net *n, const char *id, int *slot, net_policy *p, terr *err)
{
    char path[4200];
    state_path(n, id, path, sizeof path);
    *slot = -1;
    net_policy_default(p);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        return terr_set(err, "open %s: %s", path, strerror(errno));
    }
    char buf[POLICY_TEXT_MAX + 32];
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r < 0) return terr_set(err, "read %s: %s", path, strerror(errno));
    buf[r] = '\0';
    char *nl = strchr(buf, '\n');
    if (strncmp(buf, "slot ", 5) != 0 || !nl) return terr_set(err, "%s: malformed", path);
    *slot = atoi(buf + 5);
    return net_policy_from_text(nl + 1, p, err);
}

static int state_write(agent_net *n, const char *id, int slot, const net_policy *p, terr *err)
{
    char text[POLICY_TEXT_MAX], buf[POLICY_TEXT_MAX + 32], path[4200], tmp[4210];
    if (net_policy_to_text(p, text, sizeof text, err) < 0) return -1;
    int len = snprintf(buf, sizeof buf, "slot %d\n%s", slot, text);
    state_path(n, id, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return terr_set(err, "open %s: %s", tmp, strerror(errno));
    if (write(fd, buf, (size_t)len) != len || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return terr_set(err, "write %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return terr_set(err, "rename %s: %s", path, strerror(e));
    }
    return 0;
}

/* ---- public ---- */

static const char host_rules[] = "table inet torpor_host\n"
                                 "delete table inet torpor_host\n"
                                 "table inet torpor_host {\n"
                                 "  chain input {\n"
                                 "    type filter hook input priority filter; policy accept;\n"
                                 "    iifname \"tnv*\" ct state established,related accept\n"
                                 "    iifname \"tnv*\" drop\n"
                                 "  }\n"
                                 "  chain forward {\n"
                                 "    type filter hook forward priority filter; policy accept;\n"
                                 "    iifname \"tnv*\" oifname \"tnv*\" drop\n"
                                 "  }\n"
                                 "  chain postrouting {\n"
                                 "    type nat hook postrouting priority srcnat; policy accept;\n"
                                 "    ip saddr 10.201.0.0/16 oifname != \"tnv*\" masquerade\n"
                                 "  }\n"
                                 "}\n";

/* Namespaces whose owning agent's state dir is gone (a test stack's temp
 * dir, a removed installation) belong to nobody: removed at start. A live
 * agent's namespaces are never touched. */
static void sweep_orphans(void)
{
    int swept = 0;
    DIR *d = opendir(SLOT_DIR);
    if (!d) return;
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        int s = atoi(e->d_name);
        char id[128], dir[4200], path[4300];
        if (slot_read(s, id, sizeof id, dir, sizeof dir) < 0) continue;
        if (!dir[0] || access(dir, F_OK) == 0 || !limits_sandbox_id_valid(id)) continue;
        terr ignored;
        if (ns_clear(id, &ignored) < 0) continue;
        snprintf(path, sizeof path, SLOT_DIR "/%d", s);
        unlink(path);
        swept++;
    }
    closedir(d);
    if (swept) log_info("event=net_orphans_removed count=%d", swept);
}

static int dns_ensure(agent_net *n, const char *id, const net_policy *p, terr *err);

/* The namespaces that outlived an earlier agent get their DNS socket back. */
static void dns_reattach(agent_net *n)
{
    DIR *d = opendir(n->dir);
    if (!d) return;
    int count = 0;
    for (struct dirent *e = readdir(d); e; e = readdir(d)) {
        if (!limits_sandbox_id_valid(e->d_name)) continue;
        if (!ns_exists(e->d_name)) continue;
        int slot;
        net_policy p;
        terr err;
        if (state_read(n, e->d_name, &slot, &p, &err) < 0 ||
            dns_ensure(n, e->d_name, &p, &err) < 0) {
            char q[LOG_QUOTE_MAX];
            log_warn("event=dns_reattach_failed sandbox_id=%s error=\"%s\"", e->d_name,
                     log_quote(err.msg, q, sizeof q));
            continue;
        }
        count++;
    }
    closedir(d);
    if (count) log_info("event=dns_reattached count=%d", count);
}

int net_open(const char *state_dir, const char *dns_upstream, agent_net **out, terr *err)
{
    agent_net *n = calloc(1, sizeof *n);
    if (!n) return terr_set(err, "out of memory");
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->pol_mu, NULL);
    snprintf(n->dir, sizeof n->dir, "%s/net", state_dir);
    const char *nft[] = {NFT_BIN, "-f", "-", NULL};
    if (fs_mkdir_p(n->dir, 0750, err) < 0 || run(nft, -1, host_rules, err) < 0 ||
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1", err) < 0) {
        net_close(n);
        return terr_wrap(err, "host network setup");
    }
    if (net_dns_open(dns_upstream, &n->dns, err) < 0) {
        net_close(n);
        return -1;
    }
    sweep_orphans();
    dns_reattach(n);
    *out = n;
    return 0;
}

void net_close(agent_net *n)
{
    if (!n) return;
    net_dns_close(n->dns);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->pol_mu);
    free(n);
}

/* Creates the namespace (removing any half-made rest of an earlier attempt
 * first), in-process (net_link.h). */
static int ns_create(const char *id, int slot, terr *err)
{
    char ns[128], veth[32], probe[256];
    ns_name(id, ns, sizeof ns);
    snprintf(veth, sizeof veth, "tnv%d", slot);
    /* Checked before running anything: each exec costs milliseconds. */
    terr ignored;
    if (ns_clear(id, err) < 0) return -1;
    snprintf(probe, sizeof probe, "/sys/class/net/%s", veth);
    const char *delv[] = {IP_BIN, "link", "del", veth, NULL};
    if (access(probe, F_OK) == 0) run(delv, -1, NULL, &ignored);
    return net_link_netns_add(ns, err);
}

/* The veth pair, addresses, default route, tap0 and sysctls of a namespace
 * ns_create made; no exec of `ip` on this path. */
static int ns_links(const char *id, int slot, terr *err)
{
    char veth[32], host_addr[32], ns_addr[32];
    snprintf(veth, sizeof veth, "tnv%d", slot);
    slot_addr(slot, 1, host_addr, sizeof host_addr);
    slot_addr(slot, 0, ns_addr, sizeof ns_addr);
    int nsfd = ns_open(id, err);
    if (nsfd < 0) return -1;
    int rc = net_link_veth_add(veth, UPLINK_IF, nsfd, err);
    if (rc == 0) rc = net_link_addr_add(veth, host_addr, 30, err);
    if (rc == 0) rc = net_link_up(veth, err);
    int saved;
    if (rc == 0 && ns_enter(nsfd, &saved, err) == 0) {
        rc = net_link_up("lo", err);
        if (rc == 0) rc = net_link_addr_add(UPLINK_IF, ns_addr, 30, err);
        if (rc == 0) rc = net_link_up(UPLINK_IF, err);
        if (rc == 0) rc = net_link_route_default(host_addr, err);
        if (rc == 0) rc = net_link_tap_add(GUEST_IF, err);
        if (rc == 0) rc = net_link_addr_add(GUEST_IF, NET_GATEWAY_ADDR, 24, err);
        if (rc == 0) rc = net_link_up(GUEST_IF, err);
        /* Routing for the guest; no IPv6 at all (so none of the refused
         * IPv6 ranges is reachable either). */
        if (rc == 0) rc = write_sysctl("/proc/sys/net/ipv4/ip_forward", "1", err);
        if (rc == 0) rc = write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1", err);
        if (rc == 0) rc = write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1", err);
        if (rc == 0)
            rc = write_sysctl("/proc/sys/net/ipv6/conf/" GUEST_IF "/disable_ipv6", "1", err);
        ns_leave(saved);
    } else {
        rc = -1;
    }
    close(nsfd);
    return rc;
}

static bool dns_allowed(agent_net *n, const net_policy *p)
{
    if (!n->dns) return false;
    net_rule ups[NET_DNS_UPSTREAMS];
    size_t k = net_dns_upstreams(n->dns, ups, NET_DNS_UPSTREAMS);
    return net_policy_allows_dns(p, ups, k);
}

/* A socket of type bound to 10.0.0.1:53 inside the namespace of id (TCP
 * with SO_REUSEADDR: an agent restart finds its predecessor's connections
 * in TIME_WAIT). */
static int dns_socket(const char *id, int type, terr *err)
{
    const char *what = type == SOCK_STREAM ? "dns tcp socket" : "dns socket";
    int s = ns_socket(id, type, what, err);
    if (s < 0) return -1;
    int one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, NET_GATEWAY_ADDR, &sa.sin_addr);
    if ((type == SOCK_STREAM && setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) ||
        bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(s);
        return terr_set(err, "%s: bind " NET_GATEWAY_ADDR ":53: %s", what, strerror(e));
    }
    return s;
}

/* Gives the sandbox its DNS forwarder sockets, UDP and TCP (10.0.0.1:53
 * inside its namespace) unless it has them: after a build, and after an
 * agent restart for the namespaces that outlived the old agent. */
static int dns_ensure(agent_net *n, const char *id, const net_policy *p, terr *err)
{
    if (!n->dns || net_dns_attached(n->dns, id)) return 0;
    int s = dns_socket(id, SOCK_DGRAM, err);
    if (s < 0) return -1;
    int t = dns_socket(id, SOCK_STREAM, err);
    if (t < 0) {
        close(s);
        return -1;
    }
    return net_dns_attach(n->dns, id, s, t, dns_allowed(n, p), err);
}

/* Starts `nft -f -` with the rules of p inside the namespace (the rules
 * name interfaces, so they load before the interfaces exist); *dns says
 * whether they open the DNS forwarder. */
static int rules_start(agent_net *n, const char *id, const net_policy *p, bool fresh, proc *pr,
                       bool *dns, terr *err)
{
    char *script = malloc(NFT_TEXT_MAX);
    if (!script) return terr_set(err, "out of memory");
    *dns = dns_allowed(n, p);
    int rc = net_policy_nft(p, GUEST_IF, UPLINK_IF, *dns ? NET_GATEWAY_ADDR : NULL, !fresh, script,
                            NFT_TEXT_MAX, err);
    int nsfd = rc == 0 ? ns_open(id, err) : -1;
    if (nsfd < 0) rc = -1;
    if (rc == 0) {
        const char *nft[] = {NFT_BIN, "-f", "-", NULL};
        rc = run_start(nft, nsfd, script, pr, err);
    }
    if (nsfd >= 0) close(nsfd);
    free(script);
    return rc;
}

static int rules_finish(agent_net *n, const char *id, proc *pr, bool dns, terr *err)
{
    if (run_wait(pr, err) < 0) return -1;
    if (n->dns) net_dns_set_allowed(n->dns, id, dns);
    return 0;
}

static int apply_rules(agent_net *n, const char *id, const net_policy *p, terr *err)
{
    proc pr;
    bool dns = false;
    if (rules_start(n, id, p, false, &pr, &dns, err) < 0) return -1;
    return rules_finish(n, id, &pr, dns, err);
}

int net_setup(agent_net *n, const char *id, const net_policy *p, terr *err)
{
    long long t0 = mono_ms(), u0 = mono_us(), build_us = 0, write_us = 0, rules_us = 0;
    int slot;
    net_policy stored;
    int had = state_read(n, id, &slot, &stored, err);
    if (had < 0) return -1;
    if (!p || (had == 0 && net_policy_same(p, &stored))) p = &stored;
    int old_slot = slot;
    if (slot_claim(n, id, slot, &slot, err) < 0) return -1;
    bool built = false;
    /* A namespace made with another slot (the host rebooted and the slot
     * went to someone else) is rebuilt too. */
    bool rebuild = !ns_exists(id) || slot != old_slot;
    /* Resume of a sandbox whose namespace is still there: its rules are
     * the stored policy already (net_apply keeps both in step). */
    if (!rebuild && p == &stored) {
        if (dns_ensure(n, id, p, err) < 0) return -1;
        log_info("event=net_setup sandbox_id=%s slot=%d built=0 reapplied=0 duration_ms=%lld", id,
                 slot, mono_ms() - t0);
        return 0;
    }
    if (rebuild) {
        long long u = mono_us();
        if (ns_create(id, slot, err) < 0) goto fail;
        build_us = mono_us() - u;
        built = true;
    }
    pthread_mutex_lock(&n->pol_mu);
    if (p == &stored) { /* a policy change may have landed since the first read */
        int s2;
        if (state_read(n, id, &s2, &stored, err) < 0) {
            pthread_mutex_unlock(&n->pol_mu);
            goto fail;
        }
    }
    /* nft (the slowest part: an exec that loads the ruleset) runs while
     * this thread makes the links and writes the state file. */
    long long u = mono_us();
    proc pr;
    bool dns = false;
    int rc = rules_start(n, id, p, built, &pr, &dns, err);
    bool started = rc == 0;
    if (rc == 0 && built) {
        long long b = mono_us();
        rc = ns_links(id, slot, err);
        build_us += mono_us() - b;
    }
    if (rc == 0) {
        long long w = mono_us();
        rc = state_write(n, id, slot, p, err);
        write_us = mono_us() - w;
    }
    if (started) {
        terr later;
        int r2 = rules_finish(n, id, &pr, dns, rc == 0 ? err : &later);
        if (rc == 0) rc = r2;
    }
    rules_us = mono_us() - u;
    pthread_mutex_unlock(&n->pol_mu);
    if (rc == 0) rc = dns_ensure(n, id, p, err);
    if (rc < 0) goto fail;
    log_info("event=net_setup sandbox_id=%s slot=%d built=%d egress=%s allow=%zu deny=%zu "
             "build_us=%lld write_us=%lld rules_us=%lld total_us=%lld duration_ms=%lld",
             id, slot, built, p->egress_allow ? "allow" : "deny", p->n_allow, p->n_deny, build_us,
             write_us, rules_us, mono_us() - u0, mono_ms() - t0);
    return 0;
fail:
    if (built) {
        terr ignored;
        net_teardown(n, id, &ignored);
    }
    return -1;
}

int net_apply(agent_net *n, const char *id, const net_policy *p, terr *err)
{
    int slot;
    net_policy old;
    pthread_mutex_lock(&n->pol_mu);
    if (state_read(n, id, &slot, &old, err) < 0) goto fail;
    /* No namespace (a paused sandbox after a host reboot, or one moved here
     * and not resumed yet, which has no state either: slot -1): the stored
     * policy is what the next resume applies. */
    bool live = ns_exists(id);
    if (slot < 0 && live) {
        terr_set(err, "sandbox %s has a namespace but no network state", id);
        goto fail;
    }
    if (live && apply_rules(n, id, p, err) < 0) goto fail;
    if (state_write(n, id, slot, p, err) < 0) {
        terr ignored;
        if (live) apply_rules(n, id, &old, &ignored);
        goto fail;
    }
    pthread_mutex_unlock(&n->pol_mu);
    log_info("event=net_policy_applied sandbox_id=%s egress=%s allow=%zu deny=%zu", id,
             p->egress_allow ? "allow" : "deny", p->n_allow, p->n_deny);
    return 0;
fail:
    pthread_mutex_unlock(&n->pol_mu);
    return -1;
}

int net_get(agent_net *n, const char *id, net_policy *p, terr *err)
{
    int slot;
    return state_read(n, id, &slot, p, err) < 0 ? -1 : 0;
}

int net_tap_open(agent_net *n, const char *id, int *fd, terr *err)
{
    (void)n;
    int saved;
    if (ns_enter_id(id, &saved, err) < 0) return -1;
    int t = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    int rc = 0;
    if (t < 0) {
        rc = terr_set(err, "open /dev/net/tun: %s", strerror(errno));
    } else {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, GUEST_IF);
        if (ioctl(t, TUNSETIFF, &ifr) < 0) {
            rc = terr_set(err, "attach to " GUEST_IF " of %s: %s", id, strerror(errno));
            close(t);
            t = -1;
        }
    }
    ns_leave(saved);
    if (rc < 0) return -1;
    *fd = t;
    return 0;
}

int net_teardown(agent_net *n, const char *id, terr *err)
{
    int slot;
    net_policy p;
    terr ignored;
    if (state_read(n, id, &slot, &p, &ignored) < 0) slot = -1;
    char path[4200];
    if (n->dns) net_dns_detach(n->dns, id);
    if (ns_clear(id, err) < 0) return -1;
    if (slot >= 0) slot_release(slot, id);
    state_path(n, id, path, sizeof path);
    if (unlink(path) < 0 && errno != ENOENT)
        return terr_set(err, "unlink %s: %s", path, strerror(errno));
    return 0;
}

int net_reattach(agent_net *n, const char *id, int tap_fd, terr *err)
{
    int slot;
    net_policy p;
    if (state_read(n, id, &slot, &p, err) < 0) return -1;
    if (slot < 0) return 0; /* no network state: nothing of ours */
    if (ns_exists(id)) return dns_ensure(n, id, &p, err);
    if (tap_fd < 0) return terr_set(err, "no namespace, and no TAP of the VM to find it by");
    int nsfd = ioctl(tap_fd, TUNGETDEVNETNS);
    if (nsfd < 0) return terr_set(err, "namespace of the VM's TAP: %s", strerror(errno));
    char ns[160];
    ns_name(id, ns, sizeof ns);
    int rc = ns_clear(id, err);
    if (rc == 0) rc = net_link_netns_mount(ns, nsfd, err);
    close(nsfd);
    if (rc < 0) return -1;
    log_info("event=net_namespace_recovered sandbox_id=%s slot=%d", id, slot);
    return dns_ensure(n, id, &p, err);
}

int net_connect(agent_net *n, const char *id, int port, int timeout_ms, int *fd, int *refused,
                terr *err)
{
    (void)n;
    *refused = 0;
    int s = ns_socket(id, SOCK_STREAM, "socket", err);
    if (s < 0) return -1;
    int e;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, NET_GUEST_ADDR, &sa.sin_addr);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        e = errno;
        close(s);
        if (e == ECONNREFUSED) *refused = 1;
        return terr_set(err, "connect to port %d: %s", port, strerror(e));
    }
    struct pollfd pf = {.fd = s, .events = POLLOUT};
    int r;
    do r = poll(&pf, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        close(s);
        return terr_set(err, "connect to port %d: timed out after %d ms", port, timeout_ms);
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        close(s);
        if (soerr == ECONNREFUSED) *refused = 1;
        return terr_set(err, "connect to port %d: %s", port, strerror(soerr));
    }
    int fl = fcntl(s, F_GETFL);
    fcntl(s, F_SETFL, fl & ~O_NONBLOCK);
    *fd = s;
    return 0;
}
