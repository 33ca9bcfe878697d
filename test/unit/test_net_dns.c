/* net_dns: the sandboxes' DNS forwarder against a hostile guest. No
 * namespaces: the "sandbox" socket is a UDP socket on 127.0.0.1 handed to
 * net_dns_attach, the upstream a UDP socket of the test on 127.0.0.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_dns.h"

typedef struct fx {
    net_dns *d;
    int upstream, client;
    struct sockaddr_in sandbox_sa; /* where the client sends its queries */
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

static int setup(void **state)
{
    static fx f;
    memset(&f, 0, sizeof f);
    struct sockaddr_in up;
    f.upstream = udp_bound(&up);
    char spec[64];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", ntohs(up.sin_port));
    terr e;
    assert_int_equal(net_dns_open(spec, &f.d, &e), 0);
    assert_non_null(f.d);
    int sb = udp_bound(&f.sandbox_sa);
    assert_int_equal(net_dns_attach(f.d, "sb-test", sb, true, &e), 0);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
