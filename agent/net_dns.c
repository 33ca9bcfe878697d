/* net_dns: one forwarder thread answering DNS in every sandbox's namespace (see net_dns.h). */
#include "net_dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "mono_time.h"

#define RESOLV_CONF "/etc/resolv.conf"
#define ID_MAX 80
#define TAG_WAKE 0
#define TAG_HOST 1
/* An epoll tag: low 32 bits = kind (top 4 bits) | index, high 32 = generation.
 * Kind 0 is the wake fd, the host socket and the sandboxes' UDP sockets
 * (index + 2); the others are the sandboxes' TCP listeners and a TCP
 * connection's two sides. */
#define KIND_SHIFT 28
#define KIND_LISTEN 1u
#define KIND_CLIENT 2u
#define KIND_UPSTREAM 3u
#define DROP_LOG_MS 10000
#define TCP_BACKLOG 16

typedef struct sbx {
    bool used, allowed;
    unsigned gen;
    int fd, lfd; /* UDP socket; TCP listener or -1 */
    int inflight, tcp_conns;
    double tokens;
    long long refilled_ms, drop_logged_ms;
    unsigned long drops;
    char id[ID_MAX];
} sbx;

typedef struct pend {
    bool used;
    uint16_t our_id, orig_id;
    size_t sb;
    unsigned gen;
    struct sockaddr_in client;
    long long deadline;
    int up, tries;
    uint16_t len, qend;
    uint8_t q[NET_DNS_QUERY_MAX];
} pend;

/* A guest's DNS-over-TCP connection: one query at a time (a pipelined
 * second one waits in qb or in the socket), each on a fresh upstream TCP
 * connection. */
typedef enum { TC_FREE, TC_QUERY, TC_CONNECT, TC_UPSTREAM, TC_ANSWER } tc_state;

typedef struct tconn {
    tc_state st;
    unsigned gen;
    int cfd, ufd;
    size_t sb;
    unsigned sbgen;
    bool eof, counted; /* client sent EOF; counted in the sandbox's inflight */
    long long end, try_deadline;
    int up, tries;
    uint16_t our_id, orig_id, qend;
    size_t qhave;                      /* bytes of qb in use */
    uint8_t qb[2 + NET_DNS_QUERY_MAX]; /* from the guest: framed queries */
    uint8_t uq[2 + NET_DNS_QUERY_MAX]; /* to the upstream: the framed query */
    size_t uq_len, uq_sent;
    uint8_t *ab; /* the framed answer (2 + 65535), lazily */
    size_t a_have, a_sent;
} tconn;

struct net_dns {
    net_rule ups[NET_DNS_UPSTREAMS];
    struct sockaddr_in up_sa[NET_DNS_UPSTREAMS];
    size_t n_ups;
    int pref; /* the upstream tried first */
    int host_fd, ep, wake;
    pthread_t thread;
    bool started, stop;
    pthread_mutex_t mu; /* everything below */
    sbx *sb;
    size_t n_sb;
    pend *pending;
    tconn *tc; /* NET_DNS_TCP_CONNS */
    int tcp_ms;
    uint64_t rng;
};

/* ---- upstreams ---- */

int net_dns_parse_upstreams(const char *list, net_rule *out, size_t max, size_t *n, terr *err)
{
    *n = 0;
    const char *s = list;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        char item[NET_POLICY_ENTRY_MAX];
        if (len == 0 || len >= sizeof item)
            return terr_set(err, "--dns-upstream: empty or overlong entry");
        memcpy(item, s, len);
        item[len] = '\0';
        net_rule r;
        if (net_rule_parse(item, &r, err) < 0) return terr_wrap(err, "--dns-upstream");
        if (r.family != 4 || r.prefix != 32)
            return terr_set(err, "--dns-upstream: \"%s\" is not an IPv4 ADDR[:PORT]", item);
        if (!r.port) r.port = 53;
        if (*n >= max) return terr_set(err, "--dns-upstream: at most %zu resolvers", max);
        out[(*n)++] = r;
        if (!comma) return 0;
        s = comma + 1;
    }
}

/* The IPv4 nameservers of /etc/resolv.conf, without 127.0.0.0/8. */
static size_t resolv_conf(net_rule *out, size_t max)
{
    FILE *f = fopen(RESOLV_CONF, "re");
    if (!f) return 0;
    size_t n = 0;
    char line[512];
    while (n < max && fgets(line, sizeof line, f)) {
        char addr[128];
        if (sscanf(line, " nameserver %127s", addr) != 1) continue;
        net_rule r = {.family = 4, .prefix = 32, .port = 53};
        if (inet_pton(AF_INET, addr, r.addr) != 1) continue; /* IPv6: not supported */
        if (r.addr[0] == 127) continue;
        out[n++] = r;
    }
    fclose(f);
    return n;
}

size_t net_dns_upstreams(const net_dns *d, net_rule *out, size_t max)
{
    size_t n = d->n_ups < max ? d->n_ups : max;
    memcpy(out, d->ups, n * sizeof *out);
    return n;
}

/* ---- sandboxes ---- */

static long find_sb(net_dns *d, const char *id)
{
    for (size_t i = 0; i < d->n_sb; i++)
        if (d->sb[i].used && !strcmp(d->sb[i].id, id)) return (long)i;
    return -1;
}

static void drop(net_dns *d, sbx *s, const char *reason)
{
    (void)d;
    s->drops++;
    long long now = mono_ms();
    if (now - s->drop_logged_ms < DROP_LOG_MS) return;
    s->drop_logged_ms = now;
    log_warn("event=dns_query_dropped sandbox_id=%s reason=%s dropped_total=%lu", s->id, reason,
             s->drops);
}

static void tc_close_sandbox(net_dns *d, size_t i);

static void sb_close(net_dns *d, size_t i)
{
    tc_close_sandbox(d, i);
    close(d->sb[i].fd); /* also leaves the epoll set */
    if (d->sb[i].lfd >= 0) close(d->sb[i].lfd);
    d->sb[i].used = false;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -1 : 0;
}

static uint64_t tag(unsigned kind, size_t index, unsigned gen)
{
    return ((uint64_t)gen << 32) | ((uint64_t)kind << KIND_SHIFT) | (uint64_t)index;
}

int net_dns_attach(net_dns *d, const char *id, int fd, int tcp_fd, bool allowed, terr *err)
{
    int rc = 0;
    if (strlen(id) >= ID_MAX) rc = terr_set(err, "dns: sandbox id too long");
    else if (set_nonblock(fd) < 0 || (tcp_fd >= 0 && set_nonblock(tcp_fd) < 0))
        rc = terr_set(err, "dns: fcntl: %s", strerror(errno));
    else if (tcp_fd >= 0 && listen(tcp_fd, TCP_BACKLOG) < 0)
        rc = terr_set(err, "dns: listen: %s", strerror(errno));
    if (rc < 0) {
        close(fd);
        if (tcp_fd >= 0) close(tcp_fd);
        return -1;
    }
    pthread_mutex_lock(&d->mu);
    long i = find_sb(d, id);
    if (i >= 0) { /* replace: the old sockets go (a rebuilt namespace) */
        sb_close(d, (size_t)i);
    } else {
        for (size_t k = 0; k < d->n_sb && i < 0; k++)
            if (!d->sb[k].used) i = (long)k;
    }
    if (i < 0) {
        sbx *grown = realloc(d->sb, (d->n_sb + 16) * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&d->mu);
            close(fd);
            if (tcp_fd >= 0) close(tcp_fd);
            return terr_set(err, "out of memory");
        }
        memset(grown + d->n_sb, 0, 16 * sizeof *grown);
        d->sb = grown;
        i = (long)d->n_sb;
        d->n_sb += 16;
    }
    sbx *s = &d->sb[i];
    unsigned gen = s->gen + 1;
    memset(s, 0, sizeof *s);
    s->used = true;
    s->gen = gen;
    s->fd = fd;
    s->lfd = tcp_fd;
    s->allowed = allowed;
    s->tokens = NET_DNS_BURST;
    s->refilled_ms = mono_ms();
    s->drop_logged_ms = -DROP_LOG_MS;
    snprintf(s->id, sizeof s->id, "%s", id);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag(0, (size_t)i + 2, gen)};
    struct epoll_event lev = {.events = EPOLLIN, .data.u64 = tag(KIND_LISTEN, (size_t)i, gen)};
    if (epoll_ctl(d->ep, EPOLL_CTL_ADD, fd, &ev) < 0 ||
        (tcp_fd >= 0 && epoll_ctl(d->ep, EPOLL_CTL_ADD, tcp_fd, &lev) < 0)) {
        rc = terr_set(err, "dns: epoll_ctl: %s", strerror(errno));
        s->used = false;
        close(fd);
        if (tcp_fd >= 0) close(tcp_fd);
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

bool net_dns_attached(net_dns *d, const char *id)
{
    pthread_mutex_lock(&d->mu);
    bool r = find_sb(d, id) >= 0;
    pthread_mutex_unlock(&d->mu);
    return r;
}

void net_dns_set_allowed(net_dns *d, const char *id, bool allowed)
{
    pthread_mutex_lock(&d->mu);
    long i = find_sb(d, id);
    if (i >= 0) {
        d->sb[i].allowed = allowed;
        if (!allowed) tc_close_sandbox(d, (size_t)i); /* no open TCP connection outlives it */
    }
    pthread_mutex_unlock(&d->mu);
}

void net_dns_detach(net_dns *d, const char *id)
{
    pthread_mutex_lock(&d->mu);
    long i = find_sb(d, id);
    if (i >= 0) sb_close(d, (size_t)i);
    pthread_mutex_unlock(&d->mu);
}

/* ---- the forwarder ---- */

static uint16_t rnd16(net_dns *d)
{
    uint64_t x = d->rng; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    d->rng = x;
    return (uint16_t)(x >> 24);
}

/* End of the (single) question of a standard query, or 0 when malformed. */
static size_t question_end(const uint8_t *m, size_t len)
{
    if (len < 12 || len > NET_DNS_QUERY_MAX) return 0;
    if ((m[2] & 0x80) || ((m[2] >> 3) & 0x0f) != 0) return 0; /* a response, or not QUERY */
    if (m[4] != 0 || m[5] != 1 || m[6] || m[7] || m[8] || m[9]) return 0;
    size_t off = 12, name = 0;
    for (;;) {
        if (off >= len) return 0;
        uint8_t l = m[off++];
        if (l == 0) break;
        if (l > 63) return 0; /* compression has no place in a query's question */
        name += (size_t)l + 1;
        if (name > 255) return 0;
        off += l;
    }
    return off + 4 <= len ? off + 4 : 0;
}

static int send_upstream(net_dns *d, pend *p)
{
    ssize_t w = sendto(d->host_fd, p->q, p->len, MSG_DONTWAIT, (struct sockaddr *)&d->up_sa[p->up],
                       sizeof d->up_sa[p->up]);
    return w == p->len ? 0 : -1;
}

static void pend_free(net_dns *d, pend *p)
{
    if (p->sb < d->n_sb && d->sb[p->sb].used && d->sb[p->sb].gen == p->gen) d->sb[p->sb].inflight--;
    p->used = false;
}

/* The checks every query passes, over UDP or TCP: the sandbox's policy, the
 * query's form, its rate (a token taken) and what it has in flight. The
 * drop reason, or NULL with *qend set. */
static const char *admit(sbx *s, const uint8_t *m, size_t len, size_t *qend)
{
    if (!s->allowed) return "policy";
    *qend = question_end(m, len);
    if (!*qend) return "malformed";
    long long now = mono_ms();
    s->tokens += (double)(now - s->refilled_ms) * NET_DNS_RATE / 1000.0;
    if (s->tokens > NET_DNS_BURST) s->tokens = NET_DNS_BURST;
    s->refilled_ms = now;
    if (s->tokens < 1) return "rate";
    if (s->inflight >= NET_DNS_INFLIGHT) return "inflight";
    s->tokens -= 1;
    return NULL;
}

static void on_query(net_dns *d, size_t i, const uint8_t *m, size_t len,
                     const struct sockaddr_in *from)
{
    sbx *s = &d->sb[i];
    pend *p = NULL;
    for (size_t k = 0; k < NET_DNS_PENDING && !p; k++)
        if (!d->pending[k].used) p = &d->pending[k];
    if (!p) {
        drop(d, s, "forwarder_full");
        return;
    }
    size_t qend;
    const char *why = admit(s, m, len, &qend);
    if (why) {
        drop(d, s, why);
        return;
    }
    long long now = mono_ms();
    uint16_t id;
    bool taken;
    do {
        id = rnd16(d);
        taken = false;
        for (size_t k = 0; k < NET_DNS_PENDING && !taken; k++)
            taken = d->pending[k].used && d->pending[k].our_id == id;
    } while (taken);
    memset(p, 0, sizeof *p);
    p->used = true;
    p->our_id = id;
    p->orig_id = (uint16_t)(m[0] << 8 | m[1]);
    p->sb = i;
    p->gen = s->gen;
    p->client = *from;
    p->deadline = now + NET_DNS_TRY_MS;
    p->up = d->pref;
    p->tries = 1;
    p->len = (uint16_t)len;
    p->qend = (uint16_t)qend;
    memcpy(p->q, m, len);
    p->q[0] = (uint8_t)(id >> 8);
    p->q[1] = (uint8_t)id;
    s->inflight++;
    if (send_upstream(d, p) < 0) {
        pend_free(d, p);
        drop(d, s, "upstream_send");
    }
}

static void read_sandbox(net_dns *d, size_t i)
{
    uint8_t m[NET_DNS_QUERY_MAX + 1];
    for (int k = 0; k < 64 && d->sb[i].used; k++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t r = recvfrom(d->sb[i].fd, m, sizeof m, MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&from, &fl);
        if (r < 0) return;
        if (fl != sizeof from || from.sin_family != AF_INET) continue;
        on_query(d, i, m, (size_t)r, &from);
    }
}

static void read_host(net_dns *d)
{
    uint8_t m[NET_DNS_ANSWER_MAX + 1];
    for (int k = 0; k < 256; k++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t r = recvfrom(d->host_fd, m, sizeof m, MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&from, &fl);
        if (r < 0) return;
        size_t len = (size_t)r;
        if (len < 12 || len > NET_DNS_ANSWER_MAX || !(m[2] & 0x80)) continue;
        uint16_t id = (uint16_t)(m[0] << 8 | m[1]);
        pend *p = NULL;
        for (size_t j = 0; j < NET_DNS_PENDING && !p; j++)
            if (d->pending[j].used && d->pending[j].our_id == id) p = &d->pending[j];
        if (!p) continue;
        const struct sockaddr_in *want = &d->up_sa[p->up];
        if (from.sin_addr.s_addr != want->sin_addr.s_addr || from.sin_port != want->sin_port)
            continue;
        if (len < p->qend || memcmp(m + 12, p->q + 12, (size_t)p->qend - 12) != 0) continue;
        if (p->sb < d->n_sb && d->sb[p->sb].used && d->sb[p->sb].gen == p->gen) {
            m[0] = (uint8_t)(p->orig_id >> 8);
            m[1] = (uint8_t)p->orig_id;
            sendto(d->sb[p->sb].fd, m, len, MSG_DONTWAIT, (struct sockaddr *)&p->client,
                   sizeof p->client);
        }
        pend_free(d, p);
    }
}

/* ---- DNS over TCP ---- */

static bool tc_sb_live(net_dns *d, const tconn *c)
{
    return c->sb < d->n_sb && d->sb[c->sb].used && d->sb[c->sb].gen == c->sbgen;
}

static void tc_uncount(net_dns *d, tconn *c)
{
    if (c->counted && tc_sb_live(d, c)) d->sb[c->sb].inflight--;
    c->counted = false;
}

static void tc_close_upstream(tconn *c)
{
    if (c->ufd >= 0) close(c->ufd); /* also leaves the epoll set */
    c->ufd = -1;
}

static void tc_close(net_dns *d, tconn *c)
{
    tc_uncount(d, c);
    tc_close_upstream(c);
    close(c->cfd);
    if (tc_sb_live(d, c)) d->sb[c->sb].tcp_conns--;
    free(c->ab);
    c->ab = NULL;
    c->st = TC_FREE;
}

static void tc_close_sandbox(net_dns *d, size_t i)
{
    for (size_t j = 0; d->tc && j < NET_DNS_TCP_CONNS; j++) {
        tconn *c = &d->tc[j];
        if (c->st != TC_FREE && c->sb == i && c->sbgen == d->sb[i].gen) tc_close(d, c);
    }
}

static void tc_drop(net_dns *d, tconn *c, const char *reason)
{
    if (tc_sb_live(d, c)) drop(d, &d->sb[c->sb], reason);
    tc_close(d, c);
}

/* Which events the guest's side waits for: its next query, room for the
 * answer, or nothing while the upstream works (errors come anyway). */
static void tc_watch_client(net_dns *d, tconn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events,
                             .data.u64 = tag(KIND_CLIENT, (size_t)(c - d->tc), c->gen)};
    epoll_ctl(d->ep, EPOLL_CTL_MOD, c->cfd, &ev);
}

/* A fresh non-blocking connection to upstream c->up for the framed query. */
static int tc_connect(net_dns *d, tconn *c)
{
    c->ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->ufd < 0) return -1;
    c->uq_sent = 0;
    c->a_have = 0;
    c->try_deadline = mono_ms() + NET_DNS_TRY_MS;
    c->st = TC_CONNECT;
    if (connect(c->ufd, (struct sockaddr *)&d->up_sa[c->up], sizeof d->up_sa[c->up]) < 0 &&
        errno != EINPROGRESS) {
        tc_close_upstream(c);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT,
                             .data.u64 = tag(KIND_UPSTREAM, (size_t)(c - d->tc), c->gen)};
    if (epoll_ctl(d->ep, EPOLL_CTL_ADD, c->ufd, &ev) < 0) {
        tc_close_upstream(c);
        return -1;
    }
    return 0;
}

/* That upstream failed (refused, timed out, a wrong answer): the next one,
 * once each, then the guest's connection is closed (its resolver retries). */
static void tc_upstream_failed(net_dns *d, tconn *c)
{
    tc_close_upstream(c);
    while (c->tries < (int)d->n_ups) {
        c->up = (c->up + 1) % (int)d->n_ups;
        c->tries++;
        if (tc_connect(d, c) == 0) return;
    }
    tc_drop(d, c, "upstream_tcp");
}

/* The guest's buffered bytes hold a whole framed query: admitted, it goes
 * upstream; a bad one closes the connection. Returns whether one started. */
static bool tc_take_query(net_dns *d, tconn *c)
{
    if (c->qhave < 2) return false;
    size_t len = (size_t)c->qb[0] << 8 | c->qb[1];
    if (len < 12 || len > NET_DNS_QUERY_MAX) {
        tc_drop(d, c, "malformed");
        return true;
    }
    if (c->qhave < 2 + len) return false;
    size_t qend;
    const char *why = tc_sb_live(d, c) ? admit(&d->sb[c->sb], c->qb + 2, len, &qend) : "gone";
    if (why) {
        tc_drop(d, c, why);
        return true;
    }
    d->sb[c->sb].inflight++;
    c->counted = true;
    c->our_id = rnd16(d);
    c->orig_id = (uint16_t)(c->qb[2] << 8 | c->qb[3]);
    c->qend = (uint16_t)qend;
    memcpy(c->uq, c->qb, 2 + len);
    c->uq[2] = (uint8_t)(c->our_id >> 8);
    c->uq[3] = (uint8_t)c->our_id;
    c->uq_len = 2 + len;
    c->up = d->pref;
    c->tries = 1;
    tc_watch_client(d, c, 0);
    if (tc_connect(d, c) < 0) tc_upstream_failed(d, c);
    return true;
}

/* Reads what the guest sent (up to one framed query beyond what is held). */
static void tc_read_client(net_dns *d, tconn *c)
{
    if (c->qhave == sizeof c->qb) return; /* a whole query is held: never here */
    ssize_t r = recv(c->cfd, c->qb + c->qhave, sizeof c->qb - c->qhave, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (r <= 0) c->eof = true;
    else c->qhave += (size_t)r;
    if (!tc_take_query(d, c) && c->eof) tc_close(d, c);
}

static void tc_write_client(net_dns *d, tconn *c)
{
    size_t total = 2 + ((size_t)c->ab[0] << 8 | c->ab[1]);
    while (c->a_sent < total) {
        ssize_t w = send(c->cfd, c->ab + c->a_sent, total - c->a_sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            tc_close(d, c);
            return;
        }
        c->a_sent += (size_t)w;
    }
    /* answered: the next query, held already or still to come */
    size_t used = 2 + ((size_t)c->qb[0] << 8 | c->qb[1]);
    memmove(c->qb, c->qb + used, c->qhave - used);
    c->qhave -= used;
    c->st = TC_QUERY;
    if (tc_take_query(d, c)) return;
    if (c->eof) tc_close(d, c);
    else tc_watch_client(d, c, EPOLLIN);
}

static void on_client(net_dns *d, tconn *c, uint32_t events)
{
    if (c->st == TC_QUERY && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) tc_read_client(d, c);
    else if (c->st == TC_ANSWER && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
        tc_write_client(d, c);
    else if (events & (EPOLLHUP | EPOLLERR)) tc_close(d, c); /* gone while the upstream works */
}

/* The upstream's answer is whole: accepted only with our id and the
 * question asked, then relayed with the guest's id. */
static void tc_answer(net_dns *d, tconn *c)
{
    size_t len = c->a_have - 2;
    uint8_t *m = c->ab + 2;
    if (len < c->qend || !(m[2] & 0x80) || (uint16_t)(m[0] << 8 | m[1]) != c->our_id ||
        memcmp(m + 12, c->uq + 2 + 12, (size_t)c->qend - 12) != 0) {
        tc_upstream_failed(d, c);
        return;
    }
    tc_close_upstream(c);
    tc_uncount(d, c);
    m[0] = (uint8_t)(c->orig_id >> 8);
    m[1] = (uint8_t)c->orig_id;
    c->a_sent = 0;
    c->st = TC_ANSWER;
    tc_watch_client(d, c, EPOLLOUT);
    tc_write_client(d, c);
}

static void on_upstream(net_dns *d, tconn *c, uint32_t events)
{
    if (c->st == TC_CONNECT) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if ((events & EPOLLERR) || getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 ||
            soerr) {
            tc_upstream_failed(d, c);
            return;
        }
        while (c->uq_sent < c->uq_len) {
            ssize_t w = send(c->ufd, c->uq + c->uq_sent, c->uq_len - c->uq_sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            if (w <= 0) {
                tc_upstream_failed(d, c);
                return;
            }
            c->uq_sent += (size_t)w;
        }
        if (!c->ab && !(c->ab = malloc(2 + NET_DNS_TCP_ANSWER_MAX))) {
            tc_drop(d, c, "memory");
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN,
                                 .data.u64 = tag(KIND_UPSTREAM, (size_t)(c - d->tc), c->gen)};
        epoll_ctl(d->ep, EPOLL_CTL_MOD, c->ufd, &ev);
        c->st = TC_UPSTREAM;
        return;
    }
    if (c->st != TC_UPSTREAM) return;
    for (;;) {
        size_t want = c->a_have < 2 ? 2 : 2 + ((size_t)c->ab[0] << 8 | c->ab[1]);
        if (c->a_have == want) {
            if (want - 2 < 12) tc_upstream_failed(d, c);
            else tc_answer(d, c);
            return;
        }
        ssize_t r = recv(c->ufd, c->ab + c->a_have, want - c->a_have, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (r <= 0) { /* closed or failed before the whole answer */
            tc_upstream_failed(d, c);
            return;
        }
        c->a_have += (size_t)r;
    }
}

static void accept_tcp(net_dns *d, size_t i)
{
    for (int k = 0; k < 16 && d->sb[i].used; k++) {
        sbx *s = &d->sb[i];
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        tconn *c = NULL;
        for (size_t j = 0; j < NET_DNS_TCP_CONNS && !c; j++)
            if (d->tc[j].st == TC_FREE) c = &d->tc[j];
        const char *why = NULL;
        if (!s->allowed) why = "policy";
        else if (s->tcp_conns >= NET_DNS_TCP_PER_SANDBOX) why = "tcp_conns";
        else if (!c) why = "forwarder_full";
        if (why) {
            drop(d, s, why);
            close(fd);
            continue;
        }
        unsigned gen = c->gen + 1;
        memset(c, 0, sizeof *c); /* a free one holds no answer buffer (tc_close) */
        c->gen = gen;
        c->st = TC_QUERY;
        c->cfd = fd;
        c->ufd = -1;
        c->sb = i;
        c->sbgen = s->gen;
        c->end = mono_ms() + d->tcp_ms;
        struct epoll_event ev = {.events = EPOLLIN,
                                 .data.u64 = tag(KIND_CLIENT, (size_t)(c - d->tc), gen)};
        if (epoll_ctl(d->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            c->st = TC_FREE;
            continue;
        }
        s->tcp_conns++;
    }
}

static void tc_expire(net_dns *d, long long now)
{
    for (size_t j = 0; j < NET_DNS_TCP_CONNS; j++) {
        tconn *c = &d->tc[j];
        if (c->st == TC_FREE) continue;
        if (now >= c->end || !tc_sb_live(d, c)) tc_close(d, c);
        else if ((c->st == TC_CONNECT || c->st == TC_UPSTREAM) && now >= c->try_deadline)
            tc_upstream_failed(d, c);
    }
}

void net_dns_set_tcp_deadline_ms(net_dns *d, int ms)
{
    pthread_mutex_lock(&d->mu);
    d->tcp_ms = ms;
    pthread_mutex_unlock(&d->mu);
}

static void expire(net_dns *d)
{
    long long now = mono_ms();
    for (size_t j = 0; j < NET_DNS_PENDING; j++) {
        pend *p = &d->pending[j];
        if (!p->used || now < p->deadline) continue;
        bool live = p->sb < d->n_sb && d->sb[p->sb].used && d->sb[p->sb].gen == p->gen;
        if (live && p->tries < (int)d->n_ups) { /* that upstream looks dead: the next one */
            p->up = (p->up + 1) % (int)d->n_ups;
            d->pref = p->up;
            p->tries++;
            p->deadline = now + NET_DNS_TRY_MS;
            if (send_upstream(d, p) == 0) continue;
        }
        pend_free(d, p);
    }
    tc_expire(d, now);
}

static void *forwarder(void *arg)
{
    net_dns *d = arg;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(d->ep, evs, 64, 250);
        pthread_mutex_lock(&d->mu);
        if (d->stop) {
            pthread_mutex_unlock(&d->mu);
            return NULL;
        }
        for (int k = 0; k < n; k++) {
            uint64_t t = evs[k].data.u64;
            uint32_t lo = (uint32_t)t, gen = (uint32_t)(t >> 32);
            uint32_t kind = lo >> KIND_SHIFT;
            size_t i = lo & ((1u << KIND_SHIFT) - 1);
            if (kind == KIND_CLIENT || kind == KIND_UPSTREAM) {
                tconn *c = i < NET_DNS_TCP_CONNS ? &d->tc[i] : NULL;
                if (!c || c->st == TC_FREE || c->gen != gen) continue; /* closed meanwhile */
                if (kind == KIND_CLIENT) on_client(d, c, evs[k].events);
                else if (c->ufd >= 0) on_upstream(d, c, evs[k].events);
                continue;
            }
            if (kind == KIND_LISTEN) {
                if (i < d->n_sb && d->sb[i].used && d->sb[i].gen == gen && d->sb[i].lfd >= 0)
                    accept_tcp(d, i);
                continue;
            }
            if (lo == TAG_WAKE) continue;
            if (lo == TAG_HOST) {
                read_host(d);
                continue;
            }
            i = lo - 2;
            if (i < d->n_sb && d->sb[i].used && d->sb[i].gen == gen) read_sandbox(d, i);
        }
        expire(d);
        pthread_mutex_unlock(&d->mu);
    }
}

int net_dns_open(const char *spec, net_dns **out, terr *err)
{
    *out = NULL;
    if (spec && !strcmp(spec, "off")) return 0;
    net_dns *d = calloc(1, sizeof *d);
    if (!d) return terr_set(err, "out of memory");
    d->host_fd = d->ep = d->wake = -1;
    pthread_mutex_init(&d->mu, NULL);
    bool from_resolv = !spec || !spec[0] || !strcmp(spec, "auto");
    if (from_resolv) {
        d->n_ups = resolv_conf(d->ups, NET_DNS_UPSTREAMS);
    } else if (net_dns_parse_upstreams(spec, d->ups, NET_DNS_UPSTREAMS, &d->n_ups, err) < 0) {
        net_dns_close(d);
        return -1;
    }
    if (d->n_ups == 0) {
        log_warn("event=dns_forwarder_off reason=\"no IPv4 resolver outside 127.0.0.0/8 in "
                 "/etc/resolv.conf; give --dns-upstream\"");
        net_dns_close(d);
        return 0;
    }
    char list[256] = "";
    for (size_t i = 0; i < d->n_ups; i++) {
        d->up_sa[i].sin_family = AF_INET;
        memcpy(&d->up_sa[i].sin_addr, d->ups[i].addr, 4);
        d->up_sa[i].sin_port = htons((uint16_t)d->ups[i].port);
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, d->ups[i].addr, a, sizeof a);
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s:%d", i ? "," : "", a, d->ups[i].port);
    }
    d->pending = calloc(NET_DNS_PENDING, sizeof *d->pending);
    d->tc = calloc(NET_DNS_TCP_CONNS, sizeof *d->tc);
    d->tcp_ms = NET_DNS_TCP_MS;
    if (getrandom(&d->rng, sizeof d->rng, 0) != sizeof d->rng) d->rng = (uint64_t)mono_ms();
    d->rng |= 1;
    d->host_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    d->ep = epoll_create1(EPOLL_CLOEXEC);
    d->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event h = {.events = EPOLLIN, .data.u64 = TAG_HOST};
    struct epoll_event w = {.events = EPOLLIN, .data.u64 = TAG_WAKE};
    if (!d->pending || !d->tc || d->host_fd < 0 || d->ep < 0 || d->wake < 0 ||
        epoll_ctl(d->ep, EPOLL_CTL_ADD, d->host_fd, &h) < 0 ||
        epoll_ctl(d->ep, EPOLL_CTL_ADD, d->wake, &w) < 0) {
        terr_set(err, "dns forwarder: %s", strerror(errno));
        net_dns_close(d);
        return -1;
    }
    int rc = pthread_create(&d->thread, NULL, forwarder, d);
    if (rc != 0) {
        terr_set(err, "dns forwarder thread: %s", strerror(rc));
        net_dns_close(d);
        return -1;
    }
    d->started = true;
    log_info("event=dns_forwarder_started upstreams=%s source=%s", list,
             from_resolv ? "resolv.conf" : "flag");
    *out = d;
    return 0;
}

void net_dns_close(net_dns *d)
{
    if (!d) return;
    if (d->started) {
        pthread_mutex_lock(&d->mu);
        d->stop = true;
        pthread_mutex_unlock(&d->mu);
        uint64_t one = 1;
        if (write(d->wake, &one, sizeof one) < 0) {} /* the 250 ms tick would do too */
        pthread_join(d->thread, NULL);
    }
    for (size_t i = 0; i < d->n_sb; i++)
        if (d->sb[i].used) sb_close(d, i);
    for (size_t j = 0; d->tc && j < NET_DNS_TCP_CONNS; j++) free(d->tc[j].ab);
    if (d->host_fd >= 0) close(d->host_fd);
    if (d->ep >= 0) close(d->ep);
    if (d->wake >= 0) close(d->wake);
    pthread_mutex_destroy(&d->mu);
    free(d->sb);
    free(d->pending);
    free(d->tc);
    free(d);
}
