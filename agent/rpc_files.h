/* rpc_files: the chunked file RPCs (WriteFileChunk, ReadFileChunk,
 * ListDir) of HostAgentService.
 *
 * Contract: each handler checks its fields (sandbox id, path absolute and
 * without control bytes, upload id, chunk at most GP_CHUNK_MAX), turns the
 * request into one guest-protocol request (common/guest_protocol.h) and
 * sends it as an activity of the running sandbox (lifecycle_guest_call,
 * with RPC_FILES_GUEST_MS or the RPC's own deadline, less 1 s, whichever is
 * nearer, as the guest's deadline). A failure the guest
 * reports about the file (an errno: ENOENT, EISDIR, ENOSPC, ESTALE...) is
 * answered OK with guest_errno and message set, so the caller can map it
 * (404, 400, 507); gRPC errors mean the sandbox or the call failed. The
 * agent keeps no upload state: the guest's temp file is the session. */
#ifndef TORPOR_AGENT_RPC_FILES_H
#define TORPOR_AGENT_RPC_FILES_H

#include "rpc.h"

/* The guest's deadline for one chunk when the caller's is further away;
 * below the control plane's default per-call deadline (torpor-cp
 * --files-timeout, 60 s). */
#define RPC_FILES_GUEST_MS 50000

void rpc_files_write_chunk(void *app, rpc_call *call, const ProtobufCMessage *m);
void rpc_files_read_chunk(void *app, rpc_call *call, const ProtobufCMessage *m);
void rpc_files_list_dir(void *app, rpc_call *call, const ProtobufCMessage *m);

#endif
