/* tcp_listen: a listening TCP socket from an address string, for the HTTP
 * servers of both services (the REST API, /metrics).
 *
 * Contract: addr is "host:port" or "[v6]:port" (host "" = every address,
 * port 0 = any free port). tcp_listen returns 0 with *out_fd a bound,
 * listening, non-blocking, close-on-exec socket and *out_port its port
 * (useful with port 0); -1 with a message naming addr (what: "listen",
 * "metrics", ... begins it) and nothing left open. */
#ifndef TORPOR_TCP_LISTEN_H
#define TORPOR_TCP_LISTEN_H

#include "terr.h"

int tcp_listen(const char *what, const char *addr, int backlog, int *out_fd, int *out_port,
               terr *err);

#endif
