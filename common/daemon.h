/* daemon: how both services start, stop on a signal, and fail at start-up.
 *
 * daemon_signals_block: call first in main(), before any thread exists. It
 * restores the default disposition of SIGTERM and SIGINT (a shell starts
 * background jobs with SIGINT ignored, and an ignored signal is discarded
 * even while blocked), blocks both in the calling thread so every thread
 * created later inherits the mask, ignores SIGPIPE (a peer closing a socket
 * is a failed write, not a kill) and fills *set for daemon_wait_signal.
 *
 * daemon_wait_signal: blocks until SIGTERM or SIGINT arrives; returns it.
 *
 * fatal: a start-up failure is one log line and an exit, as in OpenBSD's
 * daemons: `fatal("stage=journal %s", err.msg)` writes
 * `level=error event=fatal error="stage=journal ..."` (the text through
 * log_quote) and exits with status 1. Never returns. */
#ifndef TORPOR_DAEMON_H
#define TORPOR_DAEMON_H

#include <signal.h>

void daemon_signals_block(sigset_t *set);
int daemon_wait_signal(const sigset_t *set);
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
