/* rpc: the one place that speaks the grpc C core API (grpc/grpc.h).
 *
 * Server side: a handler is a plain function from an unpacked protobuf-c
 * request to either a response (rpc_reply) or a status (rpc_fail). Every
 * call runs on its own worker thread, so a Pause that takes seconds never
 * holds up Ping or ListSandboxes. The glue owns the request message and frees
 * it after the handler returns; rpc_reply packs the response immediately, so
 * the handler keeps ownership of whatever it passed in.
 *
 * Client side: a blocking, thread-safe unary call with a mandatory deadline.
 *
 * Transport security: when TLS paths are NULL the transport is plaintext,
 * which is allowed only when the address is loopback (rpc_server_start and
 * rpc_client_open refuse otherwise). With TLS, both sides present
 * certificates signed by the CA (mutual TLS): the server requires and
 * verifies the client certificate, the client verifies the server.
 *
 * grpc_init/grpc_shutdown are reference-counted inside open/close. */
#ifndef TORPOR_RPC_H
#define TORPOR_RPC_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "terr.h"

/* 64 MiB: files and exec output travel in one message. */
#define RPC_MAX_MESSAGE_BYTES (64 * 1024 * 1024)

/* True for 127.0.0.0/8, ::1, "localhost" (with or without :port, [v6]:port). */
bool rpc_addr_is_loopback(const char *addr);

typedef struct rpc_tls_config {
    const char *cert_path; /* PEM certificate of this side; NULL = plaintext */
    const char *key_path;  /* PEM private key */
    const char *ca_path;   /* PEM CA that signed the peer's certificate */
    const char *
        server_name_override; /* client only: name to check in the server cert; NULL = from target */
    /* Server only: with TLS, a call is served only if one of the client
     * certificate's identities (SAN entries, else CN) equals this name;
     * others are refused UNAUTHENTICATED before their handler runs.
     * NULL = any certificate the CA signed. */
    const char *expected_client_name;
} rpc_tls_config;

/* ---------------------------------------------------------------- server */

typedef struct rpc_call rpc_call; /* one in-flight call; opaque to handlers */
typedef struct rpc_server rpc_server;

/* Handler: must end the call exactly once with rpc_reply or rpc_fail. */
typedef void (*rpc_handler_fn)(void *app, rpc_call *call, const ProtobufCMessage *request);

typedef struct rpc_method {
    const char *path; /* "/torpor.hostagent.v1.HostAgentService/PingSandbox" */
    const ProtobufCMessageDescriptor *request_descriptor;
    rpc_handler_fn handler;
} rpc_method;

typedef struct rpc_server_config {
    const char *listen_addr; /* "127.0.0.1:50051"; port 0 = ephemeral */
    rpc_tls_config tls;
    const rpc_method *methods;
    size_t n_methods;
    void *app;                /* passed to every handler */
    int max_concurrent_calls; /* calls beyond this get RESOURCE_EXHAUSTED; 0 = 64 */
    /* NULL-terminated paths of methods whose handler never blocks (no disk,
     * no VM, no lock held for long): it runs on the server's completion-queue
     * thread instead of a thread of its own, which saves a thread start per
     * call (the cost of a keep-alive ping). NULL = none. */
    const char *const *quick_methods;
} rpc_server_config;

/* Binds, starts serving on background threads and returns. */
int rpc_server_start(const rpc_server_config *cfg, rpc_server **out, terr *err);
/* The bound TCP port (useful with port 0). */
int rpc_server_port(const rpc_server *s);
/* Stops accepting calls, waits for running handlers to finish, frees. */
void rpc_server_stop(rpc_server *s);
/* The same, but waits at most timeout_ms for running handlers: on timeout
 * returns -1 with err set and leaves the server allocated and stopping (the
 * caller exits the process, or stops it again later). */
int rpc_server_stop_within(rpc_server *s, int timeout_ms, terr *err);

/* End a call with a response (packed now) or with a non-OK status. */
void rpc_reply(rpc_call *call, const ProtobufCMessage *response);
void rpc_fail(rpc_call *call, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The call's gRPC deadline as a mono_ms() instant (common/mono_time.h), or
 * 0 when the client set none. */
long long rpc_call_deadline_mono_ms(const rpc_call *call);
/* The verified peer identity (client certificate SAN/CN) or "" on plaintext. */
const char *rpc_call_peer_identity(const rpc_call *call);

/* ---------------------------------------------------------------- client */

typedef struct rpc_client rpc_client;

typedef struct rpc_client_config {
    const char *target; /* "127.0.0.1:50051" */
    rpc_tls_config tls;
} rpc_client_config;

int rpc_client_open(const rpc_client_config *cfg, rpc_client **out, terr *err);
void rpc_client_close(rpc_client *c);

/* Blocking unary call; safe from any thread. On GRPC_STATUS_OK *response is
 * a message unpacked with response_descriptor, to be freed with
 * protobuf_c_message_free_unpacked(*response, NULL). Otherwise *response is
 * NULL and err holds the server's status message (or the transport error).
 * deadline_ms must be > 0. */
grpc_status_code rpc_client_call(rpc_client *c, const char *method_path,
                                 const ProtobufCMessage *request,
                                 const ProtobufCMessageDescriptor *response_descriptor,
                                 ProtobufCMessage **response, int deadline_ms, terr *err);

/* Method paths of HostAgentService, shared by both sides. */
#define RPC_HOSTAGENT_PREFIX "/torpor.hostagent.v1.HostAgentService/"
#define RPC_CREATE_SANDBOX RPC_HOSTAGENT_PREFIX "CreateSandbox"
#define RPC_DESTROY_SANDBOX RPC_HOSTAGENT_PREFIX "DestroySandbox"
#define RPC_PAUSE_SANDBOX RPC_HOSTAGENT_PREFIX "PauseSandbox"
#define RPC_RESUME_SANDBOX RPC_HOSTAGENT_PREFIX "ResumeSandbox"
#define RPC_PING_SANDBOX RPC_HOSTAGENT_PREFIX "PingSandbox"
#define RPC_SET_TIMEOUT RPC_HOSTAGENT_PREFIX "SetSandboxTimeout"
#define RPC_LIST_SANDBOXES RPC_HOSTAGENT_PREFIX "ListSandboxes"
#define RPC_EXEC RPC_HOSTAGENT_PREFIX "Exec"
#define RPC_READ_FILE RPC_HOSTAGENT_PREFIX "ReadFile"
#define RPC_WRITE_FILE RPC_HOSTAGENT_PREFIX "WriteFile"
#define RPC_WRITE_FILE_CHUNK RPC_HOSTAGENT_PREFIX "WriteFileChunk"
#define RPC_READ_FILE_CHUNK RPC_HOSTAGENT_PREFIX "ReadFileChunk"
#define RPC_LIST_DIR RPC_HOSTAGENT_PREFIX "ListDir"
#define RPC_BUILD_TEMPLATE RPC_HOSTAGENT_PREFIX "BuildTemplate"
#define RPC_GET_TEMPLATE RPC_HOSTAGENT_PREFIX "GetTemplate"
#define RPC_LIST_TEMPLATES RPC_HOSTAGENT_PREFIX "ListTemplates"
#define RPC_DELETE_TEMPLATE RPC_HOSTAGENT_PREFIX "DeleteTemplate"
#define RPC_GET_HOST_INFO RPC_HOSTAGENT_PREFIX "GetHostInfo"
#define RPC_EXPORT_FILES RPC_HOSTAGENT_PREFIX "ExportSandboxFiles"
#define RPC_READ_CHUNK RPC_HOSTAGENT_PREFIX "ReadSandboxFileChunk"
#define RPC_WRITE_CHUNK RPC_HOSTAGENT_PREFIX "WriteSandboxFileChunk"
#define RPC_COMMIT_IMPORT RPC_HOSTAGENT_PREFIX "CommitSandboxImport"
#define RPC_ABORT_IMPORT RPC_HOSTAGENT_PREFIX "AbortSandboxImport"
#define RPC_SET_NETWORK RPC_HOSTAGENT_PREFIX "SetSandboxNetwork"
#define RPC_OPEN_PORT RPC_HOSTAGENT_PREFIX "OpenPort"
#define RPC_EXPORT_TEMPLATE_IMAGE RPC_HOSTAGENT_PREFIX "ExportTemplateImage"
#define RPC_READ_TEMPLATE_CHUNK RPC_HOSTAGENT_PREFIX "ReadTemplateImageChunk"
#define RPC_WRITE_TEMPLATE_CHUNK RPC_HOSTAGENT_PREFIX "WriteTemplateImageChunk"
#define RPC_COMMIT_TEMPLATE_IMAGE RPC_HOSTAGENT_PREFIX "CommitTemplateImage"
#define RPC_ABORT_TEMPLATE_IMAGE RPC_HOSTAGENT_PREFIX "AbortTemplateImage"

#endif
