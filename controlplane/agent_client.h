/* agent_client: the control plane's gRPC clients to host agents.
 *
 * Contract: one rpc_client per host (rpc clients are thread-safe), opened on
 * first use and kept until agent_pool_close; a host whose address changed gets
 * a new client (the old one stays valid until close, so a thread still using
 * it is safe). Every call the control plane makes carries one of the
 * deadlines below. agent_status_to_http is the one mapping from a gRPC status
 * to a REST answer. */
#ifndef TORPOR_CP_AGENT_CLIENT_H
#define TORPOR_CP_AGENT_CLIENT_H

#include <grpc/status.h>

#include "db.h"
#include "sandbox_model.h"
#include "hostagent.pb-c.h"
#include "rpc.h"
#include "terr.h"

/* A first create boots the template, hence the generous deadline. */
#define AGENT_DEADLINE_CREATE_MS 120000
#define AGENT_DEADLINE_PAUSE_MS 120000
#define AGENT_DEADLINE_RESUME_MS 120000
/* The longest of create, pause and resume: rows in pending/pausing/resuming
 * may legitimately wait this long for their request thread. */
#define AGENT_DEADLINE_TRANSITION_MAX_MS 120000
#define AGENT_DEADLINE_DESTROY_MS 60000
#define AGENT_DEADLINE_SHORT_MS 10000 /* ping, list, timeout */
#define AGENT_DEADLINE_FILES_MS 60000 /* default of torpor-cp --files-timeout */
/* In the message of an UNAVAILABLE answer for a sandbox the agent is still
 * re-attaching after a restart (REST: 503 unavailable + Retry-After). */
#define AGENT_RECOVERING_MARK "is recovering"
#define AGENT_EXEC_SLACK_MS 15000 /* exec deadline = its timeout + this */
/* GetHostInfo as a health probe: a frozen agent keeps its TCP connection
 * open, so only a short call deadline tells it from a slow one. */
#define AGENT_DEADLINE_PROBE_MS 1000

typedef struct agent_pool agent_pool;

/* tls strings are copied; all-NULL = plaintext (loopback agents only). */
int agent_pool_open(const rpc_tls_config *tls, agent_pool **out, terr *err);
void agent_pool_close(agent_pool *p);
int agent_pool_get(agent_pool *p, const db_host *host, rpc_client **out, terr *err);

/* How long a call keeps retrying a connection failure (see agent_call). */
#define AGENT_CONNECT_RETRY_MS 5000

/* rpc_client_call plus a retry, with short sleeps for up to
 * AGENT_CONNECT_RETRY_MS and within deadline_ms, of
 *  - any call that never reached an agent (agent_is_connect_failure:
 *    UNAVAILABLE "failed to connect ..." or "Broken pipe"), and
 *  - an idempotent call (agent_method_is_idempotent) that failed UNAVAILABLE
 *    in any way (e.g. "Socket closed" on a connection the agent dropped).
 * Create, pause, resume and exec are never repeated once they may have
 * reached an agent. Why: after an agent restart the gRPC channel sits in
 * reconnect backoff (about 1 s) or still holds the dead connection, and fails
 * calls fast with the old error although the agent is back. */
grpc_status_code agent_call(rpc_client *c, const char *method_path, const ProtobufCMessage *request,
                            const ProtobufCMessageDescriptor *response_descriptor,
                            ProtobufCMessage **response, int deadline_ms, terr *err);
/* agent_call for a method whose answer is empty: the answer is dropped. */
grpc_status_code agent_call_no_answer(rpc_client *c, const char *method_path,
                                      const ProtobufCMessage *request,
                                      const ProtobufCMessageDescriptor *response_desc,
                                      int deadline_ms, terr *err);

/* True for the status/message of a call that never reached the agent. */
bool agent_is_connect_failure(grpc_status_code code, const char *message);
/* True for methods whose repetition has the effect of one call: List, Ping,
 * SetSandboxTimeout, ReadFile, WriteFile, Destroy, ReadFileChunk, ListDir, GetTemplate,
 * ListTemplates, GetHostInfo. */
bool agent_method_is_idempotent(const char *method_path);

/* REST status and error code for a failed agent call. */
void agent_status_to_http(grpc_status_code code, int *http_status, const char **error_code);

/* What one agent reports about one sandbox id in a ListSandboxes answer. */
typedef enum agent_view {
    AGENT_VIEW_ABSENT = 0,
    AGENT_VIEW_RUNNING,
    AGENT_VIEW_PAUSING,
    AGENT_VIEW_PAUSED,
    AGENT_VIEW_RESUMING,
} agent_view;

/* Looks id up in a ListSandboxes response; *auto_paused tells whether it is
 * among auto_paused_sandbox_ids. */
agent_view agent_view_of(const Torpor__Hostagent__V1__ListSandboxesResponse *resp, const char *id,
                         bool *auto_paused);

/* DestroySandbox with its deadline; the caller decides whether NOT_FOUND
 * (nothing left on the agent) counts as success. */
grpc_status_code agent_destroy(rpc_client *c, const char *sandbox_id, terr *err);

/* One typed call per RPC, each with its deadline above, so no caller
 * spells a protobuf descriptor or a deadline. Answers that carry data are
 * returned in *out (free with protobuf_c_message_free_unpacked; NULL unless
 * the call succeeded). */
grpc_status_code agent_create(rpc_client *c, const sandbox_row *row, terr *err);
grpc_status_code agent_pause(rpc_client *c, const char *sandbox_id, terr *err);
/* timeout_sec: the TTL, which survives pause/resume. network: the row's
 * canonical policy JSON, which the agent applies and stores before the VM
 * starts (so a moved sandbox keeps its policy); "" or NULL: the agent's. */
grpc_status_code agent_resume(rpc_client *c, const char *sandbox_id, int timeout_sec,
                              const char *network, terr *err);
grpc_status_code agent_ping(rpc_client *c, const char *sandbox_id, terr *err);
grpc_status_code agent_set_timeout(rpc_client *c, const char *sandbox_id, int timeout_sec,
                                   terr *err);
/* The port proxy's first hop: a one-time token for the agent's tunnel port
 * (agent/port_tunnel.h). OUT_OF_RANGE: nothing listens on that port. */
grpc_status_code agent_open_port(rpc_client *c, const char *sandbox_id, int port, char *token,
                                 size_t token_size, int *tunnel_port, terr *err);
/* network: the canonical policy JSON of the row (api_network.h). */
grpc_status_code agent_set_network(rpc_client *c, const char *sandbox_id, const char *network,
                                   terr *err);

typedef struct agent_exec_args {
    const char *cmd;
    const char *const *args;
    size_t n_args;
    char **env; /* "KEY=VALUE" */
    size_t n_env;
    const char *cwd;           /* NULL: the guest's default */
    int timeout_sec;           /* the deadline is this + AGENT_EXEC_SLACK_MS */
    const uint8_t *stdin_data; /* NULL/0: no stdin */
    size_t stdin_len;
} agent_exec_args;
grpc_status_code agent_exec(rpc_client *c, const char *sandbox_id, const agent_exec_args *a,
                            Torpor__Hostagent__V1__ExecResponse **out, terr *err);
grpc_status_code agent_write_file(rpc_client *c, const char *sandbox_id, const char *path,
                                  const uint8_t *data, size_t len, terr *err);
grpc_status_code agent_read_file(rpc_client *c, const char *sandbox_id, const char *path,
                                 Torpor__Hostagent__V1__ReadFileResponse **out, terr *err);

/* The deadline of every files call (WriteFile, ReadFile and the chunked ones
 * below): AGENT_DEADLINE_FILES_MS unless set (torpor-cp --files-timeout),
 * once at start-up before any call. A guest that stops reading holds a call
 * this long. */
void agent_set_files_deadline_ms(int ms);

/* The chunked file calls (proto: WriteFileChunk, ReadFileChunk, ListDir),
 * each with the files deadline. A failure the guest reports about the
 * file comes back OK with guest_errno set. */
typedef struct agent_chunk_args {
    const char *sandbox_id;
    const char *path;
    const char *upload_id;
    uint64_t offset;
    const uint8_t *data;
    size_t len;
    unsigned mode;
    bool commit;
    bool abort;
} agent_chunk_args;
grpc_status_code agent_write_chunk(rpc_client *c, const agent_chunk_args *a,
                                   Torpor__Hostagent__V1__WriteFileChunkResponse **out, terr *err);
grpc_status_code agent_read_chunk(rpc_client *c, const char *sandbox_id, const char *path,
                                  uint64_t offset, uint32_t length, uint64_t expect_ino,
                                  Torpor__Hostagent__V1__ReadFileChunkResponse **out, terr *err);
grpc_status_code agent_list_dir(rpc_client *c, const char *sandbox_id, const char *path,
                                uint32_t max_entries, Torpor__Hostagent__V1__ListDirResponse **out,
                                terr *err);
/* GetHostInfo (capacity; also the health probe) with deadline_ms (<= 0:
 * AGENT_DEADLINE_PROBE_MS). */
grpc_status_code agent_host_info(rpc_client *c, int deadline_ms,
                                 Torpor__Hostagent__V1__GetHostInfoResponse **out, terr *err);

/* Moving a paused sandbox (agent/sandbox_transfer.h): each call with
 * AGENT_DEADLINE_TRANSFER_MS. */
#define AGENT_DEADLINE_TRANSFER_MS 60000
grpc_status_code agent_export_files(rpc_client *c, const char *sandbox_id,
                                    Torpor__Hostagent__V1__ExportSandboxFilesResponse **out,
                                    terr *err);
grpc_status_code agent_transfer_read_chunk(
    rpc_client *c, const char *sandbox_id, const char *name, int64_t offset,
    Torpor__Hostagent__V1__ReadSandboxFileChunkResponse **out, terr *err);
grpc_status_code agent_transfer_write_chunk(rpc_client *c, const char *sandbox_id, const char *name,
                                            int64_t offset, const uint8_t *data, size_t len,
                                            int64_t zero_len, terr *err);
grpc_status_code agent_commit_import(
    rpc_client *c, const sandbox_row *row,
    const Torpor__Hostagent__V1__ExportSandboxFilesResponse *manifest, terr *err);
grpc_status_code agent_abort_import(rpc_client *c, const char *sandbox_id, terr *err);

/* ListSandboxes with acknowledgements (may be NULL/0). */
grpc_status_code agent_list(rpc_client *c, char **ack, size_t n_ack,
                            Torpor__Hostagent__V1__ListSandboxesResponse **out, terr *err);

#endif
