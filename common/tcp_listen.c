/* tcp_listen: see tcp_listen.h. */
#include "tcp_listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int split_host_port(const char *what, const char *addr, char *host, size_t host_size,
                           char *port, size_t port_size, terr *err)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return terr_set(err, "bad %s address \"%s\" (want [v6]:port)", what, addr);
        snprintf(host, host_size, "%.*s", (int)(close - addr - 1), addr + 1);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) return terr_set(err, "bad %s address \"%s\" (want host:port)", what, addr);
        snprintf(host, host_size, "%.*s", (int)(colon - addr), addr);
    }
    snprintf(port, port_size, "%s", colon + 1);
    if (!*port) return terr_set(err, "bad %s address \"%s\" (no port)", what, addr);
    return 0;
}

int tcp_listen(const char *what, const char *addr, int backlog, int *out_fd, int *out_port,
               terr *err)
{
    char host[256], port[32];
    if (split_host_port(what, addr, host, sizeof host, port, sizeof port, err) != 0) return -1;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc != 0) return terr_set(err, "resolve %s address %s: %s", what, addr, gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return terr_set(err, "socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        freeaddrinfo(res);
        close(fd);
        return terr_set(err, "%s on %s: %s", what, addr, strerror(e));
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *out_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *out_fd = fd;
    return 0;
}
