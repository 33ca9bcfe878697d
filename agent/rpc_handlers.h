/* rpc_handlers: HostAgentService on top of lifecycle + journal.
 *
 * Contract: one plain handler per RPC (common/rpc.h), each translating the
 * protobuf request into a lifecycle call and the agent_code into a gRPC
 * status: NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT, ALREADY_EXISTS,
 * INTERNAL. Fields are validated before anything is copied into fixed-size
 * buffers (an over-long id is INVALID_ARGUMENT, never truncated).
 * ListSandboxes first applies ack_auto_paused_sandbox_ids to the journal,
 * then reports every sandbox held, the still-unacknowledged ids and the
 * agent's persistent id (agent_identity.h). Acks
 * are best effort: a journal write failure is logged and the list still
 * answers (the unrecorded acks stay in the reported ids). */
#ifndef TORPOR_AGENT_RPC_HANDLERS_H
#define TORPOR_AGENT_RPC_HANDLERS_H

#include <grpc/status.h>
#include <stddef.h>

#include "hostagent.pb-c.h"
#include "journal.h"
#include "lifecycle.h"
#include "rpc.h"
#include "sandbox_transfer.h"
#include "template_builder.h"

typedef struct agent_rpc {
    lifecycle *lc;               /* borrowed */
    journal *journal;            /* borrowed */
    const char *host_ip;         /* reported in SandboxInfo.host_ip; may be "" */
    const char *agent_id;        /* reported in ListSandboxesResponse.agent_id; NULL = "" */
    template_builder *templates; /* borrowed; NULL = template RPCs fail UNIMPLEMENTED */
    const char *state_dir;       /* GetHostInfo: disk free under it; NULL = not reported */
    const char *image_dir;       /* GetHostInfo: its subdirectories are the templates ready */
    struct port_tunnel *tunnel;  /* NULL: OpenPort answers UNAVAILABLE */
    int64_t memory_capacity_mb;  /* GetHostInfo: the admission limit; 0 = none */
} agent_rpc;

/* The method table; pass an agent_rpc* as rpc_server_config.app. */
const rpc_method *agent_rpc_methods(size_t *n);
/* The methods whose handler never blocks (rpc_server_config.quick_methods):
 * PingSandbox, a lookup and a time stamp under the sandbox table's lock. */
const char *const *agent_rpc_quick_methods(void);

grpc_status_code agent_code_to_grpc(agent_code c);

/* The file list of a transfer (a sandbox move, a template image copy) in
 * and out of protobuf. to_pb fills pbs/ptrs (n entries, pointing into
 * files); from_pb copies n entries into out and is false on a missing or
 * over-long name, or a sha256 that is not 64 characters (the caller has
 * checked 1 <= n <= TRANSFER_FILES_MAX). */
void agent_rpc_files_to_pb(const transfer_file *files, size_t n,
                           Torpor__Hostagent__V1__TransferFile *pbs,
                           Torpor__Hostagent__V1__TransferFile **ptrs);
bool agent_rpc_files_from_pb(Torpor__Hostagent__V1__TransferFile *const *in, size_t n,
                             transfer_file *out);

/* BuildTemplate, GetTemplate, ListTemplates, DeleteTemplate (rpc_templates.c). */
void agent_rpc_build_template(void *app, rpc_call *call, const ProtobufCMessage *m);
void agent_rpc_get_template(void *app, rpc_call *call, const ProtobufCMessage *m);
void agent_rpc_list_templates(void *app, rpc_call *call, const ProtobufCMessage *m);
void agent_rpc_delete_template(void *app, rpc_call *call, const ProtobufCMessage *m);
/* The image copies between hosts (template_builder.h, "Copies"). */
void agent_rpc_export_template_image(void *app, rpc_call *call, const ProtobufCMessage *m);
void agent_rpc_read_template_chunk(void *app, rpc_call *call, const ProtobufCMessage *m);
void agent_rpc_write_template_chunk(void *app, rpc_call *call, const ProtobufCMessage *m);
void agent_rpc_commit_template_image(void *app, rpc_call *call, const ProtobufCMessage *m);
void agent_rpc_abort_template_image(void *app, rpc_call *call, const ProtobufCMessage *m);

#endif
