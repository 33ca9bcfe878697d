/* port_tunnel: the agent's end of the port proxy (docs/network.md, "Inbound").
 *
 * The control plane asks OpenPort(sandbox, port): the agent connects from
 * inside the sandbox's namespace to the guest's 10.0.0.2:port at once (so
 * "nothing listening" is known before anything is proxied), parks that
 * connection under a random one-time token (valid TUNNEL_TOKEN_TTL_MS) and
 * answers the token and its tunnel port. The control plane then opens a TCP
 * connection to the tunnel port and sends "<token>\n"; from then on the
 * agent copies bytes both ways until both directions ended. Traffic in
 * either direction counts as the sandbox's activity (lifecycle_ping, at most
 * once a second per connection).
 *
 * Contract: with tls (the agent's gRPC certificate, key and CA, and its
 * --tls-client-name if set: common/tunnel_tls.h) the tunnel listens on the
 * gRPC listen host, any address, and a connection must complete a mutual
 * TLS handshake with a client certificate the CA signed (and that names the
 * expected client, when set) before its token line is read; without tls it
 * listens on a loopback address only, plaintext (tunnel_start refuses
 * another). The handshake and the token line must arrive within HELLO_MS
 * (5 s) of the connection; a refused handshake, an unknown or expired token
 * closes the connection. One thread per live connection (at most 1024); tunnel_stop
 * closes the listener, ends every live connection and waits (up to 5 s) for
 * their threads, so the lifecycle can be closed after it. */
#ifndef TORPOR_AGENT_PORT_TUNNEL_H
#define TORPOR_AGENT_PORT_TUNNEL_H

#include "lifecycle.h"
#include "net.h"
#include "terr.h"
#include "tunnel_tls.h"

#define TUNNEL_TOKEN_TTL_MS 10000
#define TUNNEL_TOKEN_LEN 32 /* hex chars */

typedef struct port_tunnel port_tunnel;

/* listen_host: an address or name; tls NULL = plaintext, else owned from a
 * successful start on (tunnel_stop frees it). */
int tunnel_start(const char *listen_host, tunnel_tls *tls, lifecycle *lc, agent_net *net,
                 port_tunnel **out, terr *err);
void tunnel_stop(port_tunnel *t);
int tunnel_port(const port_tunnel *t);

/* AGENT_OK: token (TUNNEL_TOKEN_LEN + 1 bytes) to send on the tunnel port.
 * *closed is set when the guest refused the connection (nothing listening). */
agent_code tunnel_open(port_tunnel *t, const char *id, int port, char *token, int *closed,
                       terr *err);

#endif
