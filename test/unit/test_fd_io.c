/* fd_io (common/fd_io.h): a whole buffer goes out however the kernel splits
 * it, and a peer that closed is an error, never a SIGPIPE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd_io.h"

#define BIG (4 * 1024 * 1024) /* far over a pipe's or socket's buffer */

typedef struct {
    int fd;
    unsigned char *got;
    size_t n;
} reader;

static void *read_all(void *arg)
{
    reader *r = arg;
    for (;;) {
        ssize_t k = read(r->fd, r->got + r->n, BIG + 1 - r->n);
        if (k <= 0) break;
        r->n += (size_t)k;
    }
    return NULL;
}

static unsigned char *pattern(void)
{
    unsigned char *p = malloc(BIG);
    assert_non_null(p);
    for (size_t i = 0; i < BIG; i++) p[i] = (unsigned char)(i * 7 + i / 4096);
    return p;
}

static void check_whole(int (*put)(int, const void *, size_t), int wfd, int rfd)
{
    unsigned char *data = pattern();
    reader r = {.fd = rfd, .got = malloc(BIG + 1)};
    pthread_t th;
    pthread_create(&th, NULL, read_all, &r);
    assert_int_equal(put(wfd, data, BIG), 0);
    close(wfd);
    pthread_join(th, NULL);
    assert_int_equal(r.n, BIG);
    assert_memory_equal(r.got, data, BIG);
    free(r.got);
    free(data);
    close(rfd);
}

static void test_write_all_through_a_pipe_delivers_every_byte_in_order(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    check_whole(fd_write_all, p[1], p[0]);
}

static void test_send_all_through_a_socket_delivers_every_byte_in_order(void **state)
{
    (void)state;
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    check_whole(fd_send_all, sp[0], sp[1]);
}

static void test_send_all_to_a_closed_peer_fails_with_epipe_not_a_signal(void **state)
{
    (void)state;
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    close(sp[1]);
    errno = 0;
    assert_int_equal(fd_send_all(sp[0], "x", 1), -1); /* SIGPIPE would end the test */
    assert_int_equal(errno, EPIPE);
    close(sp[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_all_through_a_pipe_delivers_every_byte_in_order),
        cmocka_unit_test(test_send_all_through_a_socket_delivers_every_byte_in_order),
        cmocka_unit_test(test_send_all_to_a_closed_peer_fails_with_epipe_not_a_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
