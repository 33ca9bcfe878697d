/* api_proxy: the port proxy's control-plane end (see api_proxy.h). */
#include "api_proxy.h"

/* The TLS handshake and token line to the agent's tunnel. */
#define TUNNEL_HELLO_MS 5000

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "fd_io.h"
#include "log.h"
#include "proxy_stream.h"
#include "sandbox_ops.h"
#include "tunnel_tls.h"

static bool skip_request_header(const char *n)
{
    static const char *const skip[] = {
        "connection", "keep-alive",        "proxy-connection", "te",
        "trailer",    "transfer-encoding", "upgrade",          "content-length",
        "x-api-key",  "x-access-token",    "expect",           NULL};
    for (int i = 0; skip[i]; i++)
        if (!strcasecmp(n, skip[i])) return true;
    return false;
}

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static int add_header(void *cls, const char *name, const char *value)
{
    buf *b = cls;
    if (skip_request_header(name) || strpbrk(value, "\r\n")) return 0;
    puts_(b, name);
    puts_(b, ": ");
    puts_(b, value);
    puts_(b, "\r\n");
    return 0;
}

/* The tunnel's TLS client context, made on first use from the control
 * plane's gRPC client certificate, key and CA (never freed). */
static tunnel_tls *client_tls(const cp_config *cfg, terr *err)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static tunnel_tls *tls;
    pthread_mutex_lock(&mu);
    if (!tls && tunnel_tls_client(cfg->tls_cert, cfg->tls_key, cfg->tls_ca,
                                  cfg->agent_tls_server_name, &tls, err) != 0)
        tls = NULL;
    tunnel_tls *t = tls;
    pthread_mutex_unlock(&mu);
    return t;
}

typedef struct tls_bridge {
    tunnel_tls_conn *tc;
    int tfd; /* the TCP connection under tc */
    int sfd; /* our end of the socket pair */
} tls_bridge;

/* Plain bytes on the socket pair <-> TLS to the agent, until both ended. */
static void *bridge_main(void *arg)
{
    tls_bridge *b = arg;
    tunnel_tls_pump(b->tc, b->sfd, NULL, NULL);
    tunnel_tls_end(b->tc);
    close(b->tfd);
    close(b->sfd);
    free(b);
    return NULL;
}

/* With TLS: the handshake and the token line on fd (taken), then a bridge
 * thread between the TLS connection and a socket pair, whose other end is
 * the tunnel for the caller (plain bytes: the relays stay as they are). */
static int tls_wrap(const cp_config *cfg, int fd, const char *host, const char *line, terr *err)
{
    tunnel_tls *tls = client_tls(cfg, err);
    tunnel_tls_conn *tc = tls ? tunnel_tls_connect(tls, fd, host, TUNNEL_HELLO_MS, err) : NULL;
    if (!tc || tunnel_tls_write_all(tc, line, strlen(line), TUNNEL_HELLO_MS, err) != 0) {
        terr_wrap(err, "the agent's tunnel");
        tunnel_tls_end(tc);
        close(fd);
        return -1;
    }
    int sp[2];
    tls_bridge *b = malloc(sizeof *b);
    if (!b || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
        free(b);
        tunnel_tls_end(tc);
        close(fd);
        return terr_set(err, "tunnel bridge: out of resources");
    }
    *b = (tls_bridge){.tc = tc, .tfd = fd, .sfd = sp[1]};
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &at, bridge_main, b);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        tunnel_tls_end(tc);
        close(fd);
        close(sp[0]);
        close(sp[1]);
        free(b);
        return terr_set(err, "tunnel bridge: no thread");
    }
    return sp[0];
}

/* connect() that gives up after ms (an unreachable agent must not hold the
 * request for the kernel's minutes); 0 or the errno. fd stays blocking. */
static int connect_within(int fd, const struct sockaddr *sa, socklen_t len, int ms)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return errno;
    int e = 0;
    if (connect(fd, sa, len) < 0) {
        e = errno;
        if (e == EINPROGRESS) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            int n;
            while ((n = poll(&pf, 1, ms)) < 0 && errno == EINTR) {}
            socklen_t el = sizeof e;
            if (n == 0) e = ETIMEDOUT;
            else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0) e = errno;
        }
    }
    fcntl(fd, F_SETFL, fl);
    return e;
}

/* Connects to host:port of the agent's tunnel and sends the token line
 * (through mutual TLS when the control plane has its certificates). */
/* The no-progress deadline of a proxied request (--proxy-idle-timeout). */
static int proxy_idle_ms(const cp_config *cfg)
{
    double ms = cfg->proxy_idle_timeout_sec * 1000.0;
    return ms >= 1 && ms <= 86400000.0 ? (int)ms : PROXY_IDLE_DEFAULT_MS;
}

static int tunnel_connect(const cp_config *cfg, const char *agent_addr, int port, const char *token,
                          terr *err)
{
    char host[256];
    const char *start = agent_addr[0] == '[' ? agent_addr + 1 : agent_addr;
    const char *end = agent_addr[0] == '[' ? strchr(agent_addr, ']') : strrchr(agent_addr, ':');
    snprintf(host, sizeof host, "%.*s", (int)(end ? (size_t)(end - start) : strlen(start)), start);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai)
        return terr_set(err, "agent address %s unresolvable", host);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int e = fd < 0 ? errno : connect_within(fd, ai->ai_addr, ai->ai_addrlen, TUNNEL_HELLO_MS);
    freeaddrinfo(ai);
    if (e) {
        if (fd >= 0) close(fd);
        return terr_set(err, "connect to the agent's tunnel: %s", strerror(e));
    }
    char line[80];
    int n = snprintf(line, sizeof line, "%s\n", token);
    if (cfg->tls_cert && (fd = tls_wrap(cfg, fd, host, line, err)) < 0) return -1;
    int idle_ms = proxy_idle_ms(cfg);
    struct timeval tv = {idle_ms / 1000, (idle_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (!cfg->tls_cert && send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return terr_set(err, "tunnel handshake failed");
    }
    return fd;
}

/* ---- WebSocket (any Upgrade): after the guest's 101, bytes both ways */

typedef struct ws_relay {
    int tfd;       /* the tunnel to the guest */
    char *pending; /* guest bytes read past its 101 headers */
    size_t pending_len;
    char *extra; /* client bytes read past its request */
    size_t extra_len;
    int cfd;
    http_upgraded *h;
} ws_relay;

static void relay_pump(int a, int b)
{
    char chunk[65536];
    bool a_open = true, b_open = true;
    while (a_open || b_open) {
        struct pollfd pf[2] = {{.fd = a_open ? a : -1, .events = POLLIN},
                               {.fd = b_open ? b : -1, .events = POLLIN}};
        int n = poll(pf, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return;
        for (int i = 0; i < 2; i++) {
            if (!pf[i].revents) continue;
            int from = i ? b : a, to = i ? a : b;
            ssize_t got = recv(from, chunk, sizeof chunk, 0);
            if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (got <= 0) {
                shutdown(to, SHUT_WR);
                if (i) b_open = false;
                else a_open = false;
                continue;
            }
            if (fd_send_all(to, chunk, (size_t)got) < 0) return;
        }
    }
}

static void *relay_main(void *arg)
{
    ws_relay *w = arg;
    int fl = fcntl(w->cfd, F_GETFL);
    if (fl >= 0) fcntl(w->cfd, F_SETFL, fl & ~O_NONBLOCK);
    struct timeval none = {0, 0};
    setsockopt(w->tfd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    setsockopt(w->tfd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    if ((w->pending_len == 0 || fd_send_all(w->cfd, w->pending, w->pending_len) == 0) &&
        (w->extra_len == 0 || fd_send_all(w->tfd, w->extra, w->extra_len) == 0))
        relay_pump(w->cfd, w->tfd);
    close(w->tfd);
    http_upgraded_close(w->h);
    free(w->pending);
    free(w->extra);
    free(w);
    return NULL;
}

/* I/O thread: must not block; hands the sockets to a relay thread. */
static void on_upgraded(void *cls, int fd, const char *extra, size_t extra_len, http_upgraded *h)
{
    ws_relay *w = cls;
    w->cfd = fd;
    w->h = h;
    if (extra_len) {
        w->extra = malloc(extra_len);
        if (w->extra) {
            memcpy(w->extra, extra, extra_len);
            w->extra_len = extra_len;
        }
    }
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &at, relay_main, w) != 0) {
        close(w->tfd);
        http_upgraded_close(h);
        free(w->pending);
        free(w->extra);
        free(w);
    }
    pthread_attr_destroy(&at);
}

/* After an Upgrade request went out: the guest's answer headers decide. A
 * 101 switches the client's connection too; anything else is answered as a
 * normal reply. Takes fd. */
static void upgrade_answer(api_request *r, int fd, const char *protocol)
{
    buf in = {0};
    char chunk[4096];
    char *end = NULL;
    while (!end) {
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || in.len > 65536) break;
        put(&in, chunk, (size_t)n);
        end = in.p ? strstr(in.p, "\r\n\r\n") : NULL;
    }
    int status = 0;
    if (!end || sscanf(in.p, "HTTP/1.%*d %d", &status) != 1) {
        close(fd);
        http_reply_error(r->req, 502, "bad_gateway",
                         "the sandbox's answer to the upgrade is not HTTP/1.x");
        free(in.p);
        return;
    }
    if (status != 101) { /* an ordinary answer: streamed as any other */
        proxy_stream *p = proxy_stream_start_read(r->req, fd, in.p, in.len,
                                                  !strcmp(http_request_method(r->req), "HEAD"),
                                                  proxy_idle_ms(r->ctx->cfg));
        free(in.p);
        if (p) proxy_stream_answer(p, r->req);
        else http_reply_error(r->req, 500, "internal_error", "cannot start the proxy's relay");
        return;
    }
    ws_relay *w = calloc(1, sizeof *w);
    if (!w) {
        close(fd);
        free(in.p);
        http_reply_error(r->req, 500, "internal_error", "out of memory");
        return;
    }
    w->tfd = fd;
    size_t head = (size_t)(end + 4 - in.p);
    if (in.len > head) {
        w->pending_len = in.len - head;
        w->pending = malloc(w->pending_len);
        if (w->pending) memcpy(w->pending, in.p + head, w->pending_len);
        else w->pending_len = 0;
    }
    *end = '\0';
    char *save = NULL;
    strtok_r(in.p, "\r\n", &save);
    for (char *line = strtok_r(NULL, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        if (strcasecmp(line, "connection") && strcasecmp(line, "upgrade") &&
            strcasecmp(line, "date"))
            http_add_header(r->req, line, v);
    }
    free(in.p);
    http_reply_upgrade(r->req, protocol, on_upgraded, w);
}

/* ---- opening: auth done; the sandbox awake, the tunnel connected */

/* Parses /v1/sandboxes/<id>/ports/<port>[/rest]; replies 400/404 and
 * returns -1 on a bad path. */
static int parse_target(api_request *r, long *port, const char **guest_path)
{
    const char *path = http_request_path(r->req);
    const char *p = strstr(path, "/ports/");
    if (!p) {
        http_reply_error(r->req, 404, "not_found", "no such route");
        return -1;
    }
    p += 7;
    long n = 0;
    const char *q = p;
    while (*q >= '0' && *q <= '9' && q - p < 6) n = n * 10 + (*q++ - '0');
    if (q == p || (*q && *q != '/') || n < 1 || n > 65535) {
        http_reply_error(r->req, 400, "invalid_request", "port must be 1..65535");
        return -1;
    }
    *port = n;
    *guest_path = *q ? q : "/";
    return 0;
}

/* Wakes the sandbox, has the agent connect to the port, connects the
 * tunnel; the fd, or -1 after a reply (502 port_closed, ...). */
static int proxy_open(api_request *r, long port)
{
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    rpc_client *client;
    sandbox_ops_open_awake(&c, r->id, &client, &res);
    if (res.outcome != SBOP_OK) {
        api_reply_outcome(r, "proxy", &res, 200);
        return -1;
    }
    char token[80];
    int tport = 0;
    terr err;
    grpc_status_code st =
        agent_open_port(client, r->id, (int)port, token, sizeof token, &tport, &err);
    if (st == GRPC_STATUS_OUT_OF_RANGE) {
        http_reply_error(r->req, 502, "port_closed", "nothing listens on port %ld in sandbox %s",
                         port, r->id);
        return -1;
    }
    if (st != GRPC_STATUS_OK) {
        api_reply_agent_error(r, "open_port", st, &err);
        return -1;
    }
    sandbox_ops_touch(&c, r->id);
    db_host host;
    bool found;
    if (db_host_get(r->db, res.row.host_id, &host, &found, &err) != 0 || !found) {
        if (found) api_reply_internal(r, &err);
        else
            http_reply_error(r->req, 502, "agent_error", "host %s is not registered",
                             res.row.host_id);
        return -1;
    }
    int fd = tunnel_connect(r->ctx->cfg, host.address, tport, token, &err);
    if (fd < 0) http_reply_error(r->req, 502, "agent_error", "%s", err.msg);
    return fd;
}

/* The request line and headers for the guest; body_hdr frames the body. */
static int send_head(api_request *r, int fd, const char *guest_path, const char *body_hdr)
{
    buf out = {0};
    const char *query = http_request_query(r->req);
    puts_(&out, http_request_method(r->req));
    puts_(&out, " ");
    puts_(&out, guest_path);
    if (query && *query) {
        puts_(&out, "?");
        puts_(&out, query);
    }
    puts_(&out, " HTTP/1.1\r\n");
    http_request_headers_each(r->req, add_header, &out);
    puts_(&out, body_hdr);
    int rc = out.oom ? -1 : fd_send_all(fd, out.p, out.len);
    free(out.p);
    return rc;
}

static bool has_body(http_request *req)
{
    const char *cl = http_request_header(req, "Content-Length");
    return http_request_header(req, "Transfer-Encoding") || (cl && strtoull(cl, NULL, 10) > 0);
}

/* Opens the tunnel, sends the head and starts the relay; the stream is the
 * request's data from then on. -1 after a reply. */
static proxy_stream *stream_open(api_request *r, long port, const char *guest_path)
{
    const char *cl = http_request_header(r->req, "Content-Length");
    const char *te = http_request_header(r->req, "Transfer-Encoding");
    const char *method = http_request_method(r->req);
    char body_hdr[96];
    bool chunked = false;
    if (te) {
        chunked = true;
        snprintf(body_hdr, sizeof body_hdr,
                 "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    } else if (cl && strtoull(cl, NULL, 10) > 0) {
        snprintf(body_hdr, sizeof body_hdr, "Content-Length: %llu\r\nConnection: close\r\n\r\n",
                 strtoull(cl, NULL, 10));
    } else if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        snprintf(body_hdr, sizeof body_hdr, "Content-Length: 0\r\nConnection: close\r\n\r\n");
    } else {
        snprintf(body_hdr, sizeof body_hdr, "Connection: close\r\n\r\n");
    }
    int fd = proxy_open(r, port);
    if (fd < 0) return NULL;
    if (send_head(r, fd, guest_path, body_hdr) != 0) {
        close(fd);
        http_reply_error(r->req, 502, "bad_gateway", "the connection to the sandbox failed");
        return NULL;
    }
    proxy_stream *p =
        proxy_stream_start(r->req, fd, has_body(r->req), chunked, !strcmp(method, "HEAD"),
                           proxy_idle_ms(r->ctx->cfg));
    if (!p) http_reply_error(r->req, 500, "internal_error", "cannot start the proxy's relay");
    return p;
}

static const char *upgrade_of(http_request *req)
{
    const char *upgrade = http_request_header(req, "Upgrade");
    if (upgrade && (!*upgrade || strpbrk(upgrade, "\r\n"))) upgrade = NULL;
    return upgrade;
}

bool api_proxy_opens_early(http_request *req) { return has_body(req) && !upgrade_of(req); }

void api_proxy_open_early(api_request *r)
{
    long port;
    const char *guest_path;
    if (parse_target(r, &port, &guest_path) != 0) return;
    stream_open(r, port, guest_path);
}

void api_proxy(api_request *r)
{
    long port;
    const char *guest_path;
    if (parse_target(r, &port, &guest_path) != 0) return;
    const char *upgrade = upgrade_of(r->req);
    proxy_stream *p = http_request_data(r->req);
    if (!p && !upgrade) p = stream_open(r, port, guest_path);
    if (!p && !upgrade) return; /* replied */
    if (p) {
        proxy_stream_answer(p, r->req);
        return;
    }
    /* Upgrade (WebSocket): the request as is, then the guest's 101 decides */
    int fd = proxy_open(r, port);
    if (fd < 0) return;
    buf hdr = {0};
    puts_(&hdr, "Connection: Upgrade\r\nUpgrade: ");
    puts_(&hdr, upgrade);
    puts_(&hdr, "\r\n\r\n");
    int rc = hdr.oom ? -1 : send_head(r, fd, guest_path, hdr.p);
    free(hdr.p);
    if (rc != 0) {
        close(fd);
        http_reply_error(r->req, 502, "bad_gateway", "the connection to the sandbox failed");
        return;
    }
    upgrade_answer(r, fd, upgrade);
}
