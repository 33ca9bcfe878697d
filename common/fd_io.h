/* fd_io: write a whole buffer to a file descriptor.
 *
 * Contract: both return 0 once all n bytes are written, else -1 with errno
 * set (EPIPE for a peer that closed, for a socket whose send wrote nothing).
 * EINTR is retried. They block as the descriptor does: a deadline, where one
 * is needed, is the caller's (SO_SNDTIMEO, or a non-blocking fd and poll). */
#ifndef TORPOR_FD_IO_H
#define TORPOR_FD_IO_H

#include <stddef.h>

/* write(2) until done: files and pipes. */
int fd_write_all(int fd, const void *buf, size_t n);
/* send(2) with MSG_NOSIGNAL until done: sockets, never SIGPIPE. */
int fd_send_all(int fd, const void *buf, size_t n);

#endif
