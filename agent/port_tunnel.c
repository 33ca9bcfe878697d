/* port_tunnel: one-time tokens for guest connections and the byte pump (see port_tunnel.h). */
#include "port_tunnel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ids.h"
#include "log.h"
#include "mono_time.h"

#define PENDING_MAX 256
#define CONNECT_MS 3000
#define LIVE_MAX 1024
#define STOP_WAIT_MS 5000
#define HELLO_MS 5000 /* TLS handshake and token line */

typedef struct pending {
    char token[TUNNEL_TOKEN_LEN + 1];
    char id[RUNTIME_ID_MAX];
    int fd; /* -1 = free slot */
    long long expires_ms;
} pending;

struct port_tunnel {
    tunnel_tls *tls; /* NULL: plaintext (loopback only) */
    lifecycle *lc;
    agent_net *net;
    int lfd;
    int port;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    pending slots[PENDING_MAX];
    /* Live connections (both fds), so tunnel_stop can end them and wait:
     * their threads use the lifecycle, which is closed after the stop. */
    int live[LIVE_MAX][2];
    int n_live;
    bool stopping;
};

/* Registers a live connection; false when stopping or full. */
static bool live_add(port_tunnel *t, int cfd, int *slot)
{
    pthread_mutex_lock(&t->mu);
    bool ok = !t->stopping;
    *slot = -1;
    for (int i = 0; ok && i < LIVE_MAX && *slot < 0; i++)
        if (t->live[i][0] < 0) *slot = i;
    if (ok && *slot >= 0) {
        t->live[*slot][0] = cfd;
        t->live[*slot][1] = -1;
        t->n_live++;
    }
    pthread_mutex_unlock(&t->mu);
    return ok && *slot >= 0;
}

static void live_set_guest(port_tunnel *t, int slot, int gfd)
{
    pthread_mutex_lock(&t->mu);
    t->live[slot][1] = gfd;
    if (t->stopping) shutdown(gfd, SHUT_RDWR);
    pthread_mutex_unlock(&t->mu);
}

static void live_remove(port_tunnel *t, int slot)
{
    pthread_mutex_lock(&t->mu);
    t->live[slot][0] = t->live[slot][1] = -1;
    t->n_live--;
    pthread_cond_broadcast(&t->idle);
    pthread_mutex_unlock(&t->mu);
}

static void expire_locked(port_tunnel *t)
{
    long long now = mono_ms();
    for (int i = 0; i < PENDING_MAX; i++)
        if (t->slots[i].fd >= 0 && t->slots[i].expires_ms < now) {
            close(t->slots[i].fd);
            t->slots[i].fd = -1;
        }
}

agent_code tunnel_open(port_tunnel *t, const char *id, int port, char *token, int *closed,
                       terr *err)
{
    *closed = 0;
    if (port < 1 || port > 65535) {
        terr_set(err, "port must be 1..65535");
        return AGENT_INVALID_ARGUMENT;
    }
    lifecycle_info info;
    agent_code c = lifecycle_get(t->lc, id, &info, err);
    if (c != AGENT_OK) return c;
    if (info.status != SANDBOX_RUNNING) {
        terr_set(err, "sandbox %s is %s, not running", id, sandbox_status_name(info.status));
        return AGENT_FAILED_PRECONDITION;
    }
    int64_t last;
    lifecycle_ping(t->lc, id, &last, err); /* each proxied request is activity */
    int fd;
    if (net_connect(t->net, id, port, CONNECT_MS, &fd, closed, err) < 0) return AGENT_INTERNAL;
    if (ids_random_hex(token, TUNNEL_TOKEN_LEN / 2, err) < 0) {
        close(fd);
        return AGENT_INTERNAL;
    }
    pthread_mutex_lock(&t->mu);
    expire_locked(t);
    int slot = -1;
    for (int i = 0; i < PENDING_MAX && slot < 0; i++)
        if (t->slots[i].fd < 0) slot = i;
    if (slot < 0) {
        pthread_mutex_unlock(&t->mu);
        close(fd);
        terr_set(err, "too many port connections waiting for the control plane");
        return AGENT_INTERNAL;
    }
    pending *p = &t->slots[slot];
    snprintf(p->token, sizeof p->token, "%s", token);
    snprintf(p->id, sizeof p->id, "%s", id);
    p->fd = fd;
    p->expires_ms = mono_ms() + TUNNEL_TOKEN_TTL_MS;
    pthread_mutex_unlock(&t->mu);
    return AGENT_OK;
}

typedef struct conn {
    port_tunnel *t;
    int cfd;
} conn;

/* Traffic is activity: a ping at most once a second per connection. */
typedef struct toucher {
    port_tunnel *t;
    const char *id;
    long long last;
} toucher;

static void touch(void *cls)
{
    toucher *w = cls;
    if (mono_ms() - w->last < 1000) return;
    w->last = mono_ms();
    int64_t last;
    terr ignored;
    lifecycle_ping(w->t->lc, w->id, &last, &ignored);
}

/* Copies both ways until both directions ended (half-close passed on). */
static void pump(toucher *w, int a, int b)
{
    char buf[65536];
    bool a_open = true, b_open = true;
    while (a_open || b_open) {
        struct pollfd pf[2] = {{.fd = a_open ? a : -1, .events = POLLIN},
                               {.fd = b_open ? b : -1, .events = POLLIN}};
        int r = poll(pf, 2, 60000);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue; /* idle connections stay; the peers decide */
        for (int i = 0; i < 2; i++) {
            if (!pf[i].revents) continue;
            int from = i ? b : a, to = i ? a : b;
            ssize_t n = read(from, buf, sizeof buf);
            if (n <= 0) {
                shutdown(to, SHUT_WR);
                if (i) b_open = false;
                else a_open = false;
                continue;
            }
            for (ssize_t off = 0; off < n;) {
                ssize_t wr = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
                if (wr < 0 && errno == EINTR) continue;
                if (wr <= 0) return;
                off += wr;
            }
            touch(w);
        }
    }
}

/* The token line, through TLS or not, within HELLO_MS. */
static int read_token(port_tunnel *t, int cfd, tunnel_tls_conn **tc, char *line, size_t n)
{
    terr err;
    if (t->tls) {
        int64_t t0 = mono_ms();
        if (!(*tc = tunnel_tls_accept(t->tls, cfd, HELLO_MS, &err))) {
            char q[LOG_QUOTE_MAX];
            log_warn("event=tunnel_refused reason=tls error=\"%s\"",
                     log_quote(err.msg, q, sizeof q));
            return -1;
        }
        int left = HELLO_MS - (int)(mono_ms() - t0);
        return tunnel_tls_read_line(*tc, line, n, left > 0 ? left : 1, &err);
    }
    struct timeval tv = {HELLO_MS / 1000, 0};
    setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t got = 0;
    int64_t deadline = mono_ms() + HELLO_MS;
    /* Byte by byte: nothing after the newline may be consumed here. */
    while (got + 1 < n && mono_ms() < deadline) {
        ssize_t r = read(cfd, line + got, 1);
        if (r <= 0) return -1;
        if (line[got] == '\n') {
            line[got] = '\0';
            tv.tv_sec = 0;
            setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            return 0;
        }
        got++;
    }
    return -1;
}

static void *conn_main(void *arg)
{
    conn *c = arg;
    port_tunnel *t = c->t;
    int cfd = c->cfd;
    free(c);
    int lslot;
    if (!live_add(t, cfd, &lslot)) {
        close(cfd);
        return NULL;
    }
    char line[TUNNEL_TOKEN_LEN + 2];
    tunnel_tls_conn *tc = NULL;
    int gfd = -1;
    char id[RUNTIME_ID_MAX] = "";
    if (read_token(t, cfd, &tc, line, sizeof line) == 0 && strlen(line) == TUNNEL_TOKEN_LEN) {
        pthread_mutex_lock(&t->mu);
        expire_locked(t);
        for (int i = 0; i < PENDING_MAX; i++)
            if (t->slots[i].fd >= 0 && !strcmp(t->slots[i].token, line)) {
                gfd = t->slots[i].fd;
                snprintf(id, sizeof id, "%s", t->slots[i].id);
                t->slots[i].fd = -1;
                break;
            }
        pthread_mutex_unlock(&t->mu);
    }
    if (gfd < 0) {
        if (!t->tls || tc) log_warn("event=tunnel_refused reason=bad_token");
        tunnel_tls_end(tc);
        live_remove(t, lslot);
        close(cfd);
        return NULL;
    }
    live_set_guest(t, lslot, gfd);
    toucher w = {.t = t, .id = id, .last = mono_ms()};
    if (tc) tunnel_tls_pump(tc, gfd, touch, &w);
    else pump(&w, cfd, gfd);
    tunnel_tls_end(tc);
    live_remove(t, lslot);
    close(gfd);
    close(cfd);
    return NULL;
}

static void *accept_main(void *arg)
{
    port_tunnel *t = arg;
    for (;;) {
        int cfd = accept4(t->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EBADF || errno == EINVAL) return NULL; /* stopped */
            continue;
        }
        conn *c = malloc(sizeof *c);
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (!c) {
            close(cfd);
        } else {
            c->t = t;
            c->cfd = cfd;
            if (pthread_create(&th, &at, conn_main, c) != 0) {
                close(cfd);
                free(c);
            }
        }
        pthread_attr_destroy(&at);
    }
}

int tunnel_start(const char *listen_host, tunnel_tls *tls, lifecycle *lc, agent_net *net,
                 port_tunnel **out, terr *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *ai = NULL;
    if (getaddrinfo(*listen_host ? listen_host : NULL, "0", &hints, &ai) != 0 || !ai)
        return terr_set(err, "the port tunnel cannot listen on %s (unresolvable)", listen_host);
    bool loopback = (ai->ai_family == AF_INET &&
                     (ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr) >> 24) == 127) ||
                    (ai->ai_family == AF_INET6 &&
                     IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr));
    if (!tls && !loopback) {
        freeaddrinfo(ai);
        return terr_set(err, "the port tunnel without TLS listens on loopback only, not %s",
                        listen_host);
    }
    port_tunnel *t = calloc(1, sizeof *t);
    if (!t) {
        freeaddrinfo(ai);
        return terr_set(err, "out of memory");
    }
    t->tls = tls;
    t->lc = lc;
    t->net = net;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->idle, NULL);
    for (int i = 0; i < PENDING_MAX; i++) t->slots[i].fd = -1;
    for (int i = 0; i < LIVE_MAX; i++) t->live[i][0] = t->live[i][1] = -1;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int one = 1;
    t->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (t->lfd >= 0) setsockopt(t->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (t->lfd < 0 || bind(t->lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(t->lfd, 128) < 0 ||
        getsockname(t->lfd, (struct sockaddr *)&sa, &sl) < 0) {
        int e = errno;
        if (t->lfd >= 0) close(t->lfd);
        freeaddrinfo(ai);
        free(t);
        return terr_set(err, "port tunnel listen: %s", strerror(e));
    }
    freeaddrinfo(ai);
    t->port = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&sa)->sin_port);
    if (pthread_create(&t->acceptor, NULL, accept_main, t) != 0) {
        close(t->lfd);
        free(t);
        return terr_set(err, "port tunnel thread");
    }
    *out = t;
    return 0;
}

int tunnel_port(const port_tunnel *t) { return t->port; }

void tunnel_stop(port_tunnel *t)
{
    if (!t) return;
    shutdown(t->lfd, SHUT_RDWR);
    close(t->lfd);
    pthread_join(t->acceptor, NULL);
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    for (int i = 0; i < PENDING_MAX; i++)
        if (t->slots[i].fd >= 0) {
            close(t->slots[i].fd);
            t->slots[i].fd = -1;
        }
    /* End every live connection (its thread closes the fds) and wait for
     * the threads, bounded: after this the lifecycle may be closed. */
    for (int i = 0; i < LIVE_MAX; i++)
        for (int k = 0; k < 2; k++)
            if (t->live[i][k] >= 0) shutdown(t->live[i][k], SHUT_RDWR);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += STOP_WAIT_MS / 1000;
    while (t->n_live > 0 && pthread_cond_timedwait(&t->idle, &t->mu, &until) == 0) {}
    int left = t->n_live;
    pthread_mutex_unlock(&t->mu);
    if (left) {
        /* A thread that outlived the wait still holds t: it stays allocated. */
        log_warn("event=tunnel_stop_timeout live=%d", left);
        return;
    }
    pthread_cond_destroy(&t->idle);
    pthread_mutex_destroy(&t->mu);
    tunnel_tls_free(t->tls);
    free(t);
}
