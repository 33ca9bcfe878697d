/* rpc_internal: helpers shared by the rpc_*.c files; no other module includes
 * this header.
 *
 * rpc_tls_*: turn an rpc_tls_config into grpc credentials. A config is either
 * all-NULL (plaintext, loopback only) or has cert, key and CA all set (mutual
 * TLS); anything in between is an error rather than a silent downgrade. The
 * PEM files are read and checked with OpenSSL first so that a wrong path, a
 * key that does not match its certificate or a non-PEM file is reported at
 * start-up with the file name, not as a handshake failure later. */
#ifndef TORPOR_RPC_INTERNAL_H
#define TORPOR_RPC_INTERNAL_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <stdbool.h>

#include "rpc.h"
#include "terr.h"

/* Sets *enabled (true = mutual TLS); -1 when only some paths are set. */
int rpc_tls_mode(const rpc_tls_config *tls, bool *enabled, terr *err);

/* Server credentials that require and verify a client certificate signed by
 * tls->ca_path (or insecure ones when TLS is off). The caller releases them. */
int rpc_tls_server_creds(const rpc_tls_config *tls, grpc_server_credentials **out, terr *err);

/* Channel credentials presenting tls->cert_path and verifying the server
 * against tls->ca_path (or insecure ones when TLS is off). */
int rpc_tls_channel_creds(const rpc_tls_config *tls, grpc_channel_credentials **out, terr *err);

/* "NOT_FOUND" etc.; "UNKNOWN_STATUS" for values outside the enum. */
const char *rpc_status_name(grpc_status_code code);

#endif
