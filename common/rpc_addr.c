/* rpc_addr: is a listen address or a dial target on the loopback interface?
 * This is the gate for plaintext gRPC, so anything it cannot parse is "not
 * loopback" (the safe answer). */
#include "rpc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

/* True when s is empty or all decimal digits (a port, possibly "0"). */
static bool rpc_addr_port_ok(const char *s)
{
    if (*s == '\0') return false;
    size_t n = strlen(s);
    if (n > 5) return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return false;
    return true;
}

static bool rpc_addr_host_is_loopback(const char *host)
{
    if (strcasecmp(host, "localhost") == 0) return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
        /* ::ffff:127.x.y.z is IPv4 loopback too. */
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return false;
}

bool rpc_addr_is_loopback(const char *addr)
{
    if (!addr) return false;
    /* grpc target prefixes that keep the host:port form. */
    static const char *const prefixes[] = {"dns:///", "dns:", "ipv4:", "ipv6:"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(addr, prefixes[i], n) == 0) {
            addr += n;
            break;
        }
    }

    char host[256];
    size_t len = strlen(addr);
    if (len == 0 || len >= sizeof host) return false;

    if (addr[0] == '[') { /* [v6] or [v6]:port */
        const char *close = strchr(addr, ']');
        if (!close || close == addr + 1) return false;
        size_t hl = (size_t)(close - addr - 1);
        memcpy(host, addr + 1, hl);
        host[hl] = '\0';
        if (close[1] != '\0' && (close[1] != ':' || !rpc_addr_port_ok(close + 2))) return false;
        return rpc_addr_host_is_loopback(host);
    }

    const char *colon = strchr(addr, ':');
    if (colon && strchr(colon + 1, ':')) { /* bare IPv6 without port: "::1" */
        memcpy(host, addr, len + 1);
        return rpc_addr_host_is_loopback(host);
    }
    size_t hl = colon ? (size_t)(colon - addr) : len;
    if (hl == 0) return false;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (colon && !rpc_addr_port_ok(colon + 1)) return false;
    return rpc_addr_host_is_loopback(host);
}
