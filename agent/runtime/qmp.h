/* qmp: a blocking QMP (QEMU Machine Protocol) client over a unix socket.
 *
 * Contract:
 * - qmp_connect() connects to <dir>/<name> through /proc/self/fd/<dirfd>/,
 *   so the 108-byte sun_path limit never depends on how long the state dir
 *   is. It retries while QEMU has not created/listened on the socket yet,
 *   gives up at the deadline or as soon as pidfd (if >= 0) says QEMU exited,
 *   reads the greeting and negotiates capabilities.
 * - qmp_call() sends one command and waits for its answer, skipping
 *   asynchronous events. A QMP "error" answer fails with QEMU's message.
 *   EOF (QEMU gone) fails with a message containing "connection closed".
 * - One caller at a time per connection (the driver serialises lifecycle
 *   calls per VM); different connections are independent. */
#ifndef TORPOR_QMP_H
#define TORPOR_QMP_H

#include "terr.h"

typedef struct qmp qmp;

int qmp_connect(int dirfd, const char *name, int pidfd, int timeout_ms, qmp **out, terr *err);

/* Sends `{"execute":cmd[,"arguments":args_json]}`. On success and if reply
 * is non-NULL, *reply is the malloc'd answer line (caller frees). */
int qmp_call(qmp *q, const char *cmd, const char *args_json, int timeout_ms, char **reply,
             terr *err);

/* Passes fd to QEMU under fdname (QMP "getfd", SCM_RIGHTS), e.g. for a
 * "fd:<fdname>" migration URI. The caller keeps (and closes) its fd. */
int qmp_getfd(qmp *q, const char *fdname, int fd, int timeout_ms, terr *err);

/* Sends cmd and does not wait for an answer (used for "quit", whose answer
 * may be lost when QEMU exits first). */
int qmp_send(qmp *q, const char *cmd, terr *err);

void qmp_close(qmp *q); /* NULL-safe */

#endif
