/* net_dns: the sandboxes' DNS forwarder against a hostile guest. No
 * namespaces: the "sandbox" sockets are a UDP and a TCP socket on 127.0.0.1
 * handed to net_dns_attach, the upstream a UDP socket and a TCP listener of
 * the test on one 127.0.0.1 port (the test thread plays guest and upstream
 * in turn; the forwarder has its own thread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_dns.h"

typedef struct fx {
    net_dns *d;
    int upstream, upstream_tcp, client;
    struct sockaddr_in sandbox_sa;     /* where the client sends its queries */
    struct sockaddr_in sandbox_tcp_sa; /* where it connects for TCP */
} fx;

static int udp_bound(struct sockaddr_in *sa)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof *sa;
    assert_int_equal(getsockname(s, (struct sockaddr *)sa, &l), 0);
    return s;
}

static int tcp_bound(struct sockaddr_in *sa, int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        close(s);
        return -1;
    }
    socklen_t l = sizeof *sa;
    assert_int_equal(getsockname(s, (struct sockaddr *)sa, &l), 0);
    return s;
}

static int setup(void **state)
{
    static fx f;
    memset(&f, 0, sizeof f);
    struct sockaddr_in up, up_tcp;
    f.upstream_tcp = -1;
    for (int k = 0; k < 50 && f.upstream_tcp < 0; k++) { /* one port for UDP and TCP */
        if (k) close(f.upstream);
        f.upstream = udp_bound(&up);
        f.upstream_tcp = tcp_bound(&up_tcp, ntohs(up.sin_port));
    }
    assert_true(f.upstream_tcp >= 0);
    assert_int_equal(listen(f.upstream_tcp, 16), 0);
    char spec[64];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", ntohs(up.sin_port));
    terr e;
    assert_int_equal(net_dns_open(spec, &f.d, &e), 0);
    assert_non_null(f.d);
    int sb = udp_bound(&f.sandbox_sa);
    int sb_tcp = tcp_bound(&f.sandbox_tcp_sa, 0);
    assert_true(sb_tcp >= 0);
    assert_int_equal(net_dns_attach(f.d, "sb-test", sb, sb_tcp, true, &e), 0);
    struct sockaddr_in c;
    f.client = udp_bound(&c);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    net_dns_close(f->d);
    close(f->upstream);
    close(f->upstream_tcp);
    close(f->client);
    return 0;
}

/* A standard query for "a.test" type A with the given id. */
static size_t query(uint8_t *m, uint16_t id)
{
    static const uint8_t q[] = {0, 0,   0x01, 0x00, 0,   1,   0,   0, 0, 0, 0, 0,
                                1, 'a', 4,    't',  'e', 's', 't', 0, 0, 1, 0, 1};
    memcpy(m, q, sizeof q);
    m[0] = (uint8_t)(id >> 8);
    m[1] = (uint8_t)id;
    return sizeof q;
}

static ssize_t recv_within(int fd, uint8_t *buf, size_t n, int ms, struct sockaddr_in *from)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1) return -1;
    socklen_t l = sizeof *from;
    return recvfrom(fd, buf, n, 0, (struct sockaddr *)from, &l);
}

static void send_to_sandbox(fx *f, const uint8_t *m, size_t len)
{
    assert_int_equal(
        sendto(f->client, m, len, 0, (struct sockaddr *)&f->sandbox_sa, sizeof f->sandbox_sa),
        (ssize_t)len);
}

/* Upstream answers the query it got (echoing it with QR set) from src. */
static void answer_from(int src, const uint8_t *q, size_t len, const struct sockaddr_in *to)
{
    uint8_t a[512];
    memcpy(a, q, len);
    a[2] |= 0x80;
    assert_int_equal(sendto(src, a, len, 0, (const struct sockaddr *)to, sizeof *to), (ssize_t)len);
}

static void test_answer_reaches_the_guest_with_its_own_id(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    size_t len = query(m, 0xbeef);
    send_to_sandbox(f, m, len);
    struct sockaddr_in from;
    ssize_t r = recv_within(f->upstream, got, sizeof got, 2000, &from);
    assert_int_equal(r, (ssize_t)len);
    assert_memory_equal(got + 2, m + 2, len - 2);
    answer_from(f->upstream, got, (size_t)r, &from);
    r = recv_within(f->client, got, sizeof got, 2000, &from);
    assert_int_equal(r, (ssize_t)len);
    assert_int_equal(got[0], 0xbe);
    assert_int_equal(got[1], 0xef);
    assert_true(got[2] & 0x80);
}

static void test_malformed_queries_are_not_forwarded(void **state)
{
    fx *f = *state;
    uint8_t m[600], got[600];
    struct sockaddr_in from;
    size_t len = query(m, 1);
    send_to_sandbox(f, m, 11); /* shorter than a header */
    m[2] |= 0x80;              /* a response, not a query */
    send_to_sandbox(f, m, len);
    query(m, 2);
    m[5] = 2; /* two questions */
    send_to_sandbox(f, m, len);
    query(m, 3);
    m[12] = 0xc0; /* a compression pointer in the question */
    send_to_sandbox(f, m, len);
    memset(m, 0, sizeof m);
    query(m, 4);
    send_to_sandbox(f, m, 513); /* over 512 bytes */
    assert_int_equal(recv_within(f->upstream, got, sizeof got, 300, &from), -1);
}

static void test_queries_are_dropped_when_dns_is_not_allowed(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    struct sockaddr_in from;
    net_dns_set_allowed(f->d, "sb-test", false);
    send_to_sandbox(f, m, query(m, 7));
    assert_int_equal(recv_within(f->upstream, got, sizeof got, 300, &from), -1);
    net_dns_set_allowed(f->d, "sb-test", true);
    send_to_sandbox(f, m, query(m, 8));
    assert_true(recv_within(f->upstream, got, sizeof got, 2000, &from) > 0);
}

/* An answer from another address/port than the upstream's is ignored. */
static void test_answer_from_elsewhere_is_ignored(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    struct sockaddr_in from, other_sa;
    size_t len = query(m, 9);
    send_to_sandbox(f, m, len);
    ssize_t r = recv_within(f->upstream, got, sizeof got, 2000, &from);
    assert_int_equal(r, (ssize_t)len);
    int other = udp_bound(&other_sa);
    answer_from(other, got, (size_t)r, &from);
    assert_int_equal(recv_within(f->client, m, sizeof m, 300, &from), -1);
    close(other);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A flood gets the burst plus what the rate refills meanwhile, no more.
 * Queries go in rounds of 10, each answered before the next round, so the
 * in-flight bound never is what stops them. */
static void test_a_flood_is_cut_to_the_rate_bound(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    struct sockaddr_in from;
    int forwarded = 0, sent = 0;
    double t0 = now_s();
    for (int round = 0; round < 30; round++) {
        /* While the burst lasts every query of the round is forwarded: wait
         * for each (a starved forwarder thread is late, and a round sent
         * meanwhile would meet the in-flight bound); past it, whatever
         * comes within 20 ms. */
        int due = NET_DNS_BURST - forwarded, in_round = 0;
        due = due < 0 ? 0 : due > 10 ? 10 : due;
        for (int i = 0; i < 10; i++) send_to_sandbox(f, m, query(m, (uint16_t)sent++));
        ssize_t r;
        while ((r = recv_within(f->upstream, got, sizeof got, in_round < due ? 5000 : 20, &from)) >
               0) {
            answer_from(f->upstream, got, (size_t)r, &from);
            forwarded++;
            in_round++;
        }
    }
    double elapsed = now_s() - t0;
    assert_true(forwarded >= NET_DNS_BURST);
    assert_true(forwarded <= NET_DNS_BURST + (int)(NET_DNS_RATE * elapsed) + 1);
    assert_true(forwarded < sent);
}

/* ---- DNS over TCP ---- */

static int tcp_client(fx *f)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    assert_int_equal(connect(s, (struct sockaddr *)&f->sandbox_tcp_sa, sizeof f->sandbox_tcp_sa),
                     0);
    return s;
}

static void send_framed(int fd, const uint8_t *m, size_t len)
{
    uint8_t b[2 + 70000];
    b[0] = (uint8_t)(len >> 8);
    b[1] = (uint8_t)len;
    memcpy(b + 2, m, len);
    assert_int_equal(send(fd, b, len + 2, MSG_NOSIGNAL), (ssize_t)len + 2);
}

/* Exactly n bytes within ms, else -1 (EOF, error or time). */
static ssize_t recv_exact(int fd, uint8_t *buf, size_t n, int ms)
{
    size_t have = 0;
    while (have < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms) != 1) return -1;
        ssize_t r = recv(fd, buf + have, n - have, 0);
        if (r <= 0) return -1;
        have += (size_t)r;
    }
    return (ssize_t)n;
}

/* One framed message: its length, or -1. */
static ssize_t recv_framed(int fd, uint8_t *buf, size_t max, int ms)
{
    uint8_t l[2];
    if (recv_exact(fd, l, 2, ms) < 0) return -1;
    size_t len = (size_t)l[0] << 8 | l[1];
    if (len > max) return -1;
    return recv_exact(fd, buf, len, ms);
}

/* The forwarder's connection to the upstream, or -1 when none comes within ms. */
static int upstream_accept(fx *f, int ms)
{
    struct pollfd p = {.fd = f->upstream_tcp, .events = POLLIN};
    if (poll(&p, 1, ms) != 1) return -1;
    return accept4(f->upstream_tcp, NULL, NULL, SOCK_CLOEXEC);
}

/* Whether the peer closes fd within ms (what it sent before is skipped). */
static bool closed_within(int fd, int ms)
{
    uint8_t b[4096];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms) != 1) return false;
        ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN)) return true;
    }
}

/* The upstream takes one query on its connection and answers it with the
 * query echoed (QR set) followed by pad bytes; returns the query's length. */
static size_t upstream_serve(fx *f, size_t pad)
{
    int u = upstream_accept(f, 3000);
    assert_true(u >= 0);
    static uint8_t a[70000];
    ssize_t r = recv_framed(u, a, 600, 3000);
    assert_true(r >= 12);
    a[2] |= 0x80;
    for (size_t k = 0; k < pad; k++) a[(size_t)r + k] = (uint8_t)(k * 7);
    send_framed(u, a, (size_t)r + pad);
    close(u);
    return (size_t)r;
}

static void test_tcp_answer_reaches_the_guest_with_its_own_id(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    int c = tcp_client(f);
    size_t len = query(m, 0xbeef);
    send_framed(c, m, len);
    int u = upstream_accept(f, 3000);
    assert_true(u >= 0);
    ssize_t r = recv_framed(u, got, sizeof got, 3000);
    assert_int_equal(r, (ssize_t)len);
    assert_memory_equal(got + 2, m + 2, len - 2);
    got[2] |= 0x80;
    send_framed(u, got, len);
    r = recv_framed(c, got, sizeof got, 3000);
    assert_int_equal(r, (ssize_t)len);
    assert_int_equal(got[0], 0xbe);
    assert_int_equal(got[1], 0xef);
    assert_true(got[2] & 0x80);
    close(u);
    close(c);
}

/* A resolver may send its A and AAAA queries back to back on one connection. */
static void test_tcp_pipelined_queries_are_answered_in_turn(void **state)
{
    fx *f = *state;
    uint8_t m[2][512], both[1100], got[512];
    size_t l0 = query(m[0], 0x0101), l1 = query(m[1], 0x0202);
    both[0] = 0;
    both[1] = (uint8_t)l0;
    memcpy(both + 2, m[0], l0);
    both[2 + l0] = 0;
    both[3 + l0] = (uint8_t)l1;
    memcpy(both + 4 + l0, m[1], l1);
    int c = tcp_client(f);
    assert_int_equal(send(c, both, 4 + l0 + l1, 0), (ssize_t)(4 + l0 + l1));
    upstream_serve(f, 0);
    assert_int_equal(recv_framed(c, got, sizeof got, 3000), (ssize_t)l0);
    assert_int_equal(got[1], 0x01);
    upstream_serve(f, 0);
    assert_int_equal(recv_framed(c, got, sizeof got, 3000), (ssize_t)l1);
    assert_int_equal(got[1], 0x02);
    close(c);
}

static void test_tcp_large_answer_passes_whole(void **state)
{
    fx *f = *state;
    uint8_t m[512];
    static uint8_t got[70000];
    int c = tcp_client(f);
    size_t len = query(m, 0x4242);
    send_framed(c, m, len);
    size_t pad = 3500;
    assert_int_equal(upstream_serve(f, pad), len);
    assert_int_equal(recv_framed(c, got, sizeof got, 3000), (ssize_t)(len + pad));
    assert_int_equal(got[0], 0x42);
    assert_int_equal(got[1], 0x42);
    assert_true(got[2] & 0x80);
    assert_memory_equal(got + 3, m + 3, len - 3);
    for (size_t k = 0; k < pad; k++) assert_int_equal(got[len + k], (uint8_t)(k * 7));
    close(c);
}

static void test_tcp_answer_with_another_id_is_not_relayed(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    int c = tcp_client(f);
    size_t len = query(m, 0x5151);
    send_framed(c, m, len);
    int u = upstream_accept(f, 3000);
    assert_true(u >= 0);
    assert_int_equal(recv_framed(u, got, sizeof got, 3000), (ssize_t)len);
    got[2] |= 0x80;
    got[0] ^= 0xff;
    send_framed(u, got, len);
    assert_int_equal(recv_framed(c, got, sizeof got, 3000), -1);
    close(u);
    close(c);
}

static void test_tcp_malformed_or_oversized_queries_are_not_forwarded(void **state)
{
    fx *f = *state;
    uint8_t m[600];
    memset(m, 0, sizeof m);
    int c = tcp_client(f);
    send_framed(c, m, query(m, 1) + 513 - 24); /* a 513-byte query */
    assert_true(closed_within(c, 3000));
    close(c);
    c = tcp_client(f);
    query(m, 2);
    m[5] = 2; /* two questions */
    send_framed(c, m, 24);
    assert_true(closed_within(c, 3000));
    close(c);
    c = tcp_client(f);
    send_framed(c, m, 11); /* shorter than a header */
    assert_true(closed_within(c, 3000));
    close(c);
    c = tcp_client(f);
    uint8_t huge[2] = {0xff, 0xff}; /* announces 65535 bytes */
    assert_int_equal(send(c, huge, 2, 0), 2);
    assert_true(closed_within(c, 3000));
    close(c);
    assert_int_equal(upstream_accept(f, 300), -1);
}

static void test_tcp_gets_no_service_when_dns_is_not_allowed(void **state)
{
    fx *f = *state;
    uint8_t m[512];
    net_dns_set_allowed(f->d, "sb-test", false);
    int c = tcp_client(f);
    send_framed(c, m, query(m, 3));
    assert_true(closed_within(c, 3000));
    close(c);
    assert_int_equal(upstream_accept(f, 300), -1);
}

/* The namespace's rules let an established connection through whatever the
 * policy says now: the forwarder closes it when DNS is refused. */
static void test_tcp_open_connection_is_closed_when_dns_is_refused(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    int c = tcp_client(f);
    size_t len = query(m, 0x0909);
    send_framed(c, m, len);
    upstream_serve(f, 0);
    assert_int_equal(recv_framed(c, got, sizeof got, 3000), (ssize_t)len);
    assert_false(closed_within(c, 50));
    net_dns_set_allowed(f->d, "sb-test", false);
    assert_true(closed_within(c, 3000));
    close(c);
}

/* Connections beyond the per-sandbox bound are closed at once; the others
 * stay and are served. */
static void test_tcp_connection_flood_is_cut_to_the_bound(void **state)
{
    fx *f = *state;
    enum { N = 2 * NET_DNS_TCP_PER_SANDBOX };
    int c[N];
    bool closed[N] = {0};
    for (int k = 0; k < N; k++) c[k] = tcp_client(f);
    int n_closed = 0;
    double t0 = now_s();
    while (n_closed < N - NET_DNS_TCP_PER_SANDBOX && now_s() - t0 < 5) /* the excess ones */
        for (int j = 0; j < N; j++)
            if (!closed[j] && closed_within(c[j], 20)) {
                closed[j] = true;
                n_closed++;
            }
    assert_int_equal(n_closed, N - NET_DNS_TCP_PER_SANDBOX);
    int open_one = -1;
    for (int j = 0; j < N; j++) {
        if (!closed[j]) {
            assert_false(closed_within(c[j], 100)); /* and no more */
            open_one = j;
        }
    }
    uint8_t m[512], got[512];
    size_t len = query(m, 0x0707);
    send_framed(c[open_one], m, len);
    upstream_serve(f, 0);
    assert_int_equal(recv_framed(c[open_one], got, sizeof got, 3000), (ssize_t)len);
    for (int k = 0; k < N; k++) close(c[k]);
}

/* TCP queries take their tokens from the sandbox's one rate bucket (the
 * UDP one): one query per connection, one after the other, until the first
 * is refused (its connection closed without reaching the upstream). */
static void test_tcp_queries_are_cut_to_the_rate_bound(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    int forwarded = 0, refused = 0;
    double t0 = now_s();
    for (int k = 0; k < 1000 && !refused; k++) {
        int c = tcp_client(f);
        size_t len = query(m, (uint16_t)k);
        send_framed(c, m, len);
        struct pollfd p[2] = {{.fd = f->upstream_tcp, .events = POLLIN},
                              {.fd = c, .events = POLLIN}};
        assert_true(poll(p, 2, 3000) >= 1);
        if (p[0].revents & POLLIN) {
            upstream_serve(f, 0);
            assert_int_equal(recv_framed(c, got, sizeof got, 3000), (ssize_t)len);
            forwarded++;
        } else {
            assert_true(closed_within(c, 0));
            refused++;
        }
        close(c);
    }
    double elapsed = now_s() - t0;
    assert_int_equal(refused, 1);
    assert_true(forwarded >= NET_DNS_BURST);
    assert_true(forwarded <= NET_DNS_BURST + (int)(NET_DNS_RATE * elapsed) + 1);
    assert_int_equal(upstream_accept(f, 100), -1);
}

static void test_tcp_silent_connection_is_closed_after_its_deadline(void **state)
{
    fx *f = *state;
    net_dns_set_tcp_deadline_ms(f->d, 800);
    double t0 = now_s();
    int c = tcp_client(f);
    assert_true(closed_within(c, 5000));
    double elapsed = now_s() - t0;
    assert_true(elapsed >= 0.79);
    close(c);
}

static void test_detached_sandbox_socket_is_closed(void **state)
{
    fx *f = *state;
    uint8_t m[512], got[512];
    struct sockaddr_in from;
    net_dns_detach(f->d, "sb-test");
    assert_false(net_dns_attached(f->d, "sb-test"));
    send_to_sandbox(f, m, query(m, 11));
    assert_int_equal(recv_within(f->upstream, got, sizeof got, 300, &from), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_answer_reaches_the_guest_with_its_own_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_queries_are_not_forwarded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queries_are_dropped_when_dns_is_not_allowed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_answer_from_elsewhere_is_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_flood_is_cut_to_the_rate_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detached_sandbox_socket_is_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_answer_reaches_the_guest_with_its_own_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tcp_pipelined_queries_are_answered_in_turn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tcp_large_answer_passes_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_answer_with_another_id_is_not_relayed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tcp_malformed_or_oversized_queries_are_not_forwarded,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_gets_no_service_when_dns_is_not_allowed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tcp_open_connection_is_closed_when_dns_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_connection_flood_is_cut_to_the_bound, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tcp_queries_are_cut_to_the_rate_bound, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_tcp_silent_connection_is_closed_after_its_deadline,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
