/* guest_channel against a hostile fake guest (a thread on the other end of
 * the unix socket): a guest that stops reading cannot hold a call past its
 * deadline, a request cut off mid-frame breaks the channel (later calls fail
 * at once), a caller queued behind a stuck send keeps its own deadline, an
 * answer larger than its call allows breaks the channel before it is
 * buffered, and a large frame nobody waits for is dropped (streamed past,
 * not buffered) while the channel goes on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "guest_channel.h"
#include "guest_protocol.h"
#include "mono_time.h"

typedef enum {
    FAKE_STOP_READING,   /* answers the handshake, then never reads again */
    FAKE_HUGE_PONG,      /* answers the 2nd PING with a header announcing 1 MiB */
    FAKE_JUNK_THEN_PONG, /* before the 2nd PONG: an 8 MiB frame with an unknown id */
} fake_mode;

typedef struct {
    char dir[64];
    int dirfd, lfd;
    atomic_int cfd; /* set by the fake's thread once it accepted */
    fake_mode mode;
    pthread_t th;
    atomic_bool quit;
} fake_guest;

static int read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (uint8_t *)p + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Reads one frame (payload discarded); -1 at EOF. */
static int read_frame(int fd, gp_header *h)
{
    uint8_t hdr[GP_HEADER_SIZE];
    terr e;
    if (read_full(fd, hdr, sizeof hdr) < 0 || gp_header_decode(hdr, h, &e) < 0) return -1;
    size_t left = h->payload_len;
    uint8_t tmp[4096];
    while (left) {
        size_t k = left < sizeof tmp ? left : sizeof tmp;
        if (read_full(fd, tmp, k) < 0) return -1;
        left -= k;
    }
    return 0;
}

static int pong(int fd, uint32_t id)
{
    terr e;
    uint8_t up[8] = {0};
    return gp_write_frame(fd, GP_PONG, id, up, sizeof up, &e);
}

static void *fake_main(void *arg)
{
    fake_guest *f = arg;
    f->cfd = accept(f->lfd, NULL, NULL);
    if (f->cfd < 0) return NULL;
    gp_header h;
    int pings = 0;
    while (!atomic_load(&f->quit) && read_frame(f->cfd, &h) == 0) {
        if (h.type != GP_PING) continue;
        pings++;
        if (pings == 1) {
            pong(f->cfd, h.request_id);
            if (f->mode == FAKE_STOP_READING) break;
            continue;
        }
        if (f->mode == FAKE_HUGE_PONG) {
            uint8_t hdr[GP_HEADER_SIZE];
            gp_header_encode(hdr, GP_PONG, h.request_id, 1024 * 1024);
            if (write(f->cfd, hdr, sizeof hdr) != (ssize_t)sizeof hdr) break;
        } else if (f->mode == FAKE_JUNK_THEN_PONG) {
            size_t n = 8u * 1024 * 1024;
            uint8_t *junk = calloc(1, n);
            terr e;
            gp_write_frame(f->cfd, GP_READ_RESULT, h.request_id + 12345, junk, n, &e);
            free(junk);
            pong(f->cfd, h.request_id);
        }
    }
    while (!atomic_load(&f->quit)) usleep(10 * 1000);
    return NULL;
}

static fake_guest *fake_start(fake_mode mode)
{
    fake_guest *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/torpor-gch-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->dirfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    f->cfd = -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/g.sock", f->dir);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 1), 0);
    f->mode = mode;
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
    return f;
}

static void fake_stop(fake_guest *f)
{
    atomic_store(&f->quit, true);
    if (f->cfd >= 0) shutdown(f->cfd, SHUT_RDWR);
    shutdown(f->lfd, SHUT_RDWR);
    pthread_join(f->th, NULL);
    if (f->cfd >= 0) close(f->cfd);
    close(f->lfd);
    unlinkat(f->dirfd, "g.sock", 0);
    close(f->dirfd);
    rmdir(f->dir);
    free(f);
}

/* Waits (bounded) until at least n bytes sent to the fake guest lie unread
 * in its socket: a sender is then in the middle of its frame (and holds the
 * channel's write turn). More than the handshake's PINGs can account for. */
static void wait_unread(fake_guest *f, int n)
{
    long long end = mono_ms() + 20000;
    for (;;) {
        int q = 0;
        if (ioctl(f->cfd, FIONREAD, &q) == 0 && q >= n) return;
        if (mono_ms() > end) fail_msg("only %d bytes reached the fake guest", q);
        usleep(5 * 1000);
    }
}

static guest_channel *open_ch(fake_guest *f)
{
    guest_channel *ch = NULL;
    terr e = {{0}};
    int rc = guest_channel_open(f->dirfd, "g.sock", "sb-test", -1, 5000, &ch, &e);
    if (rc < 0) fail_msg("open: %s", e.msg);
    return ch;
}

static int ping(guest_channel *ch, int timeout_ms, terr *e)
{
    uint8_t *p = NULL;
    size_t n = 0;
    int rc = guest_channel_call(ch, GP_PING, NULL, 0, GP_PONG, timeout_ms, &p, &n, e);
    free(p);
    return rc;
}

static int big_write(guest_channel *ch, int timeout_ms, terr *e)
{
    size_t n = 4u * 1024 * 1024;
    uint8_t *data = calloc(1, n);
    uint8_t *p = NULL;
    size_t pn = 0;
    int rc =
        guest_channel_call(ch, GP_WRITE_FILE, data, n, GP_WRITE_RESULT, timeout_ms, &p, &pn, e);
    free(p);
    free(data);
    return rc;
}

static void test_send_to_a_guest_that_stops_reading_fails_by_its_deadline(void **state)
{
    (void)state;
    fake_guest *f = fake_start(FAKE_STOP_READING);
    guest_channel *ch = open_ch(f);
    terr e = {{0}};
    long long t0 = mono_ms();
    assert_int_equal(big_write(ch, 500, &e), -1);
    long long took = mono_ms() - t0;
    /* Without its deadline the send would block for good (the guest never
     * reads again): any finite bound shows it; 10 s leaves room for a
     * loaded machine. */
    assert_true(took >= 450 && took < 10000);
    assert_non_null(strstr(e.msg, "broken"));

    /* Later calls fail at once with the same clear reason. */
    terr e2 = {{0}};
    t0 = mono_ms();
    assert_int_equal(ping(ch, 5000, &e2), -1);
    assert_true(mono_ms() - t0 < 2500); /* not its 5 s deadline */
    assert_non_null(strstr(e2.msg, "cut off"));
    guest_channel_unref(ch);
    fake_stop(f);
}

/* The stuck big write's deadline: far beyond the queued ping's. */
#define BG_WRITE_MS 6000

typedef struct {
    guest_channel *ch;
    int rc;
    long long took;
    terr e;
} bg_call;

static void *bg_big_write(void *arg)
{
    bg_call *c = arg;
    long long t0 = mono_ms();
    c->rc = big_write(c->ch, BG_WRITE_MS, &c->e);
    c->took = mono_ms() - t0;
    return NULL;
}

static void test_caller_behind_a_stuck_send_keeps_its_own_deadline(void **state)
{
    (void)state;
    fake_guest *f = fake_start(FAKE_STOP_READING);
    guest_channel *ch = open_ch(f);
    bg_call c = {.ch = ch};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bg_big_write, &c), 0);
    /* The big write is under way (part of it sits unread at the guest):
     * it holds the write turn until BG_WRITE_MS. */
    wait_unread(f, 32 * 1024);
    terr e = {{0}};
    long long t0 = mono_ms();
    assert_int_equal(ping(ch, 300, &e), -1);
    long long took = mono_ms() - t0;
    /* Behind the write it would wait until BG_WRITE_MS: well under that. */
    assert_true(took >= 250 && took < BG_WRITE_MS - 2000);
    assert_non_null(strstr(e.msg, "busy"));
    pthread_join(th, NULL);
    assert_int_equal(c.rc, -1);
    assert_true(c.took < BG_WRITE_MS + 10000);
    guest_channel_unref(ch);
    fake_stop(f);
}

static void test_answer_larger_than_its_call_allows_breaks_the_channel(void **state)
{
    (void)state;
    fake_guest *f = fake_start(FAKE_HUGE_PONG);
    guest_channel *ch = open_ch(f);
    terr e = {{0}};
    long long t0 = mono_ms();
    assert_int_equal(ping(ch, 5000, &e), -1);
    assert_true(mono_ms() - t0 < 4000); /* at the header, not at the 5 s deadline */
    assert_non_null(strstr(e.msg, "more than"));
    guest_channel_unref(ch);
    fake_stop(f);
}

static void test_large_frame_nobody_waits_for_is_dropped_and_the_channel_goes_on(void **state)
{
    (void)state;
    fake_guest *f = fake_start(FAKE_JUNK_THEN_PONG);
    guest_channel *ch = open_ch(f);
    terr e = {{0}};
    assert_int_equal(ping(ch, 5000, &e), 0);
    assert_int_equal(ping(ch, 5000, &e), 0);
    guest_channel_unref(ch);
    fake_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_to_a_guest_that_stops_reading_fails_by_its_deadline),
        cmocka_unit_test(test_caller_behind_a_stuck_send_keeps_its_own_deadline),
        cmocka_unit_test(test_answer_larger_than_its_call_allows_breaks_the_channel),
        cmocka_unit_test(test_large_frame_nobody_waits_for_is_dropped_and_the_channel_goes_on),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
