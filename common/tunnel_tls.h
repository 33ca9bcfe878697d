/* tunnel_tls: mutual TLS for the port proxy's tunnel (agent/port_tunnel.c
 * serves it, controlplane/api_proxy.c connects), from the same PEM files
 * as gRPC (docs/network.md, "Inbound").
 *
 * Contract: a context is a server (the agent: its certificate and key, the
 * CA that signed the clients; with client_name set, a client is accepted
 * only if one of its certificate's identities -- SAN DNS, URI, e-mail or IP
 * entries, else its CN -- equals that name, as the gRPC server checks) or a
 * client (the control plane: its certificate and key, the CA that signed
 * the agents; the server certificate must name the host it was reached at
 * -- DNS name or IP address -- or server_name when set). TLS 1.2 or newer,
 * both sides always present a certificate the CA signed. A handshake
 * (tunnel_tls_accept / tunnel_tls_connect) and tunnel_tls_read_line finish
 * within their deadline or fail; they leave the socket non-blocking.
 * tunnel_tls_pump copies bytes both ways between the TLS connection and a
 * plain blocking socket until both directions ended (an end of one
 * direction is passed on: close_notify <-> shutdown(SHUT_WR)); on_traffic
 * (may be NULL) runs after each piece moved. tunnel_tls_end frees the TLS
 * state; the caller closes the sockets. Functions that can fail return -1
 * (or NULL) with a terr message. */
#ifndef TORPOR_COMMON_TUNNEL_TLS_H
#define TORPOR_COMMON_TUNNEL_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "terr.h"

typedef struct tunnel_tls tunnel_tls;
typedef struct tunnel_tls_conn tunnel_tls_conn;

int tunnel_tls_server(const char *cert, const char *key, const char *ca, const char *client_name,
                      tunnel_tls **out, terr *err);
int tunnel_tls_client(const char *cert, const char *key, const char *ca, const char *server_name,
                      tunnel_tls **out, terr *err);
void tunnel_tls_free(tunnel_tls *t);

/* fd: a connected socket (not taken: the caller closes it). */
tunnel_tls_conn *tunnel_tls_accept(tunnel_tls *t, int fd, int timeout_ms, terr *err);
tunnel_tls_conn *tunnel_tls_connect(tunnel_tls *t, int fd, const char *host, int timeout_ms,
                                    terr *err);
/* Reads up to and excluding '\n' into buf (NUL-terminated, at most n - 1
 * bytes, nothing after the newline consumed from the stream's bytes). */
int tunnel_tls_read_line(tunnel_tls_conn *c, char *buf, size_t n, int timeout_ms, terr *err);
int tunnel_tls_write_all(tunnel_tls_conn *c, const void *data, size_t n, int timeout_ms, terr *err);
void tunnel_tls_pump(tunnel_tls_conn *c, int fd, void (*on_traffic)(void *cls), void *cls);
void tunnel_tls_end(tunnel_tls_conn *c);

#endif
