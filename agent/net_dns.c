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
#define DROP_LOG_MS 10000

typedef struct sbx {
    bool used, allowed;
    unsigned gen;
    int fd;
    int inflight;
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

int net_dns_attach(net_dns *d, const char *id, int fd, bool allowed, terr *err)
{
    if (strlen(id) >= ID_MAX) {
        close(fd);
        return terr_set(err, "dns: sandbox id too long");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        close(fd);
        return terr_set(err, "dns: fcntl: %s", strerror(errno));
    }
    pthread_mutex_lock(&d->mu);
    long i = find_sb(d, id);
    if (i >= 0) { /* replace: the old socket goes (a rebuilt namespace) */
        close(d->sb[i].fd);
        d->sb[i].used = false;
    } else {
        for (size_t k = 0; k < d->n_sb && i < 0; k++)
            if (!d->sb[k].used) i = (long)k;
    }
    if (i < 0) {
        sbx *grown = realloc(d->sb, (d->n_sb + 16) * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&d->mu);
            close(fd);
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
    s->allowed = allowed;
    s->tokens = NET_DNS_BURST;
    s->refilled_ms = mono_ms();
    s->drop_logged_ms = -DROP_LOG_MS;
    snprintf(s->id, sizeof s->id, "%s", id);
    struct epoll_event ev = {.events = EPOLLIN,
                             .data.u64 = ((uint64_t)gen << 32) | ((uint64_t)i + 2)};
    int rc = 0;
    if (epoll_ctl(d->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        rc = terr_set(err, "dns: epoll_ctl: %s", strerror(errno));
        s->used = false;
        close(fd);
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
    if (i >= 0) d->sb[i].allowed = allowed;
    pthread_mutex_unlock(&d->mu);
}

void net_dns_detach(net_dns *d, const char *id)
{
    pthread_mutex_lock(&d->mu);
    long i = find_sb(d, id);
    if (i >= 0) {
        close(d->sb[i].fd); /* also leaves the epoll set */
        d->sb[i].used = false;
    }
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

static void on_query(net_dns *d, size_t i, const uint8_t *m, size_t len,
                     const struct sockaddr_in *from)
{
    sbx *s = &d->sb[i];
    if (!s->allowed) {
        drop(d, s, "policy");
        return;
    }
    size_t qend = question_end(m, len);
    if (!qend) {
        drop(d, s, "malformed");
        return;
    }
    long long now = mono_ms();
    s->tokens += (double)(now - s->refilled_ms) * NET_DNS_RATE / 1000.0;
    if (s->tokens > NET_DNS_BURST) s->tokens = NET_DNS_BURST;
    s->refilled_ms = now;
    if (s->tokens < 1) {
        drop(d, s, "rate");
        return;
    }
    if (s->inflight >= NET_DNS_INFLIGHT) {
        drop(d, s, "inflight");
        return;
    }
    pend *p = NULL;
    for (size_t k = 0; k < NET_DNS_PENDING && !p; k++)
        if (!d->pending[k].used) p = &d->pending[k];
    if (!p) {
        drop(d, s, "forwarder_full");
        return;
    }
    s->tokens -= 1;
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
            uint64_t tag = evs[k].data.u64;
            uint32_t lo = (uint32_t)tag, gen = (uint32_t)(tag >> 32);
            if (lo == TAG_WAKE) continue;
            if (lo == TAG_HOST) {
                read_host(d);
                continue;
            }
            size_t i = lo - 2;
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
    if (getrandom(&d->rng, sizeof d->rng, 0) != sizeof d->rng) d->rng = (uint64_t)mono_ms();
    d->rng |= 1;
    d->host_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    d->ep = epoll_create1(EPOLL_CLOEXEC);
    d->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event h = {.events = EPOLLIN, .data.u64 = TAG_HOST};
    struct epoll_event w = {.events = EPOLLIN, .data.u64 = TAG_WAKE};
    if (!d->pending || d->host_fd < 0 || d->ep < 0 || d->wake < 0 ||
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
        if (d->sb[i].used) close(d->sb[i].fd);
    if (d->host_fd >= 0) close(d->host_fd);
    if (d->ep >= 0) close(d->ep);
    if (d->wake >= 0) close(d->wake);
    pthread_mutex_destroy(&d->mu);
    free(d->sb);
    free(d->pending);
    free(d);
}
