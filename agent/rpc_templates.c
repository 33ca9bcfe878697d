/* The template RPCs of HostAgentService on top of template_builder (see
 * rpc_handlers.h and proto/hostagent.proto), the image copies included. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostagent.pb-c.h"
#include "rpc_handlers.h"
#include "sandbox_transfer.h"

typedef Torpor__Hostagent__V1__TemplateInfo pb_tpl;

static void to_pb(const tb_info *in, pb_tpl *pb)
{
    torpor__hostagent__v1__template_info__init(pb);
    pb->name = (char *)in->name;
    pb->status = (char *)tb_status_name(in->status);
    pb->size_bytes = in->size_bytes;
    pb->digest = (char *)in->digest;
    pb->created_at_unix = in->created_at_unix;
    pb->error = (char *)in->error;
    pb->builtin = in->builtin;
}

static template_builder *builder(void *appv, rpc_call *call)
{
    agent_rpc *app = appv;
    if (!app->templates)
        rpc_fail(call, GRPC_STATUS_UNIMPLEMENTED, "this agent does not build templates");
    return app->templates;
}

void agent_rpc_build_template(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    const Torpor__Hostagent__V1__BuildTemplateRequest *req = (const void *)m;
    tb_info info;
    terr e;
    agent_code c = tb_build(tb, req->name, req->base_template, (const char *const *)req->packages,
                            req->n_packages, req->setup, &info, &e);
    if (c != AGENT_OK) {
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return;
    }
    pb_tpl pb;
    to_pb(&info, &pb);
    Torpor__Hostagent__V1__BuildTemplateResponse resp =
        TORPOR__HOSTAGENT__V1__BUILD_TEMPLATE_RESPONSE__INIT;
    resp.template_ = &pb;
    rpc_reply(call, &resp.base);
}

void agent_rpc_get_template(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    const Torpor__Hostagent__V1__GetTemplateRequest *req = (const void *)m;
    tb_info info;
    char *log = NULL;
    size_t log_len = 0;
    terr e;
    size_t tail = req->log_tail_bytes > 0 ? (size_t)req->log_tail_bytes : 0;
    agent_code c = tb_get(tb, req->name, tail, &info, &log, &log_len, &e);
    if (c != AGENT_OK) {
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return;
    }
    pb_tpl pb;
    to_pb(&info, &pb);
    Torpor__Hostagent__V1__GetTemplateResponse resp =
        TORPOR__HOSTAGENT__V1__GET_TEMPLATE_RESPONSE__INIT;
    resp.template_ = &pb;
    resp.log.data = (uint8_t *)log;
    resp.log.len = log_len;
    rpc_reply(call, &resp.base);
    free(log);
}

void agent_rpc_list_templates(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    (void)m;
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    tb_info *v = NULL;
    size_t n = 0;
    terr e;
    if (tb_list(tb, &v, &n, &e) != 0) {
        rpc_fail(call, GRPC_STATUS_INTERNAL, "%s", e.msg);
        return;
    }
    pb_tpl *pbs = calloc(n ? n : 1, sizeof *pbs);
    pb_tpl **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!pbs || !ptrs) {
        free(pbs);
        free(ptrs);
        free(v);
        rpc_fail(call, GRPC_STATUS_INTERNAL, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        to_pb(&v[i], &pbs[i]);
        ptrs[i] = &pbs[i];
    }
    Torpor__Hostagent__V1__ListTemplatesResponse resp =
        TORPOR__HOSTAGENT__V1__LIST_TEMPLATES_RESPONSE__INIT;
    resp.templates = ptrs;
    resp.n_templates = n;
    rpc_reply(call, &resp.base);
    free(ptrs);
    free(pbs);
    free(v);
}

void agent_rpc_delete_template(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    const Torpor__Hostagent__V1__DeleteTemplateRequest *req = (const void *)m;
    terr e;
    agent_code c = tb_delete(tb, req->name, &e);
    if (c != AGENT_OK) {
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return;
    }
    Torpor__Hostagent__V1__DeleteTemplateResponse resp =
        TORPOR__HOSTAGENT__V1__DELETE_TEMPLATE_RESPONSE__INIT;
    rpc_reply(call, &resp.base);
}

/* ------------------------------------------------------------ copies */

typedef Torpor__Hostagent__V1__TransferFile pb_tfile;

static const char *str(const char *s) { return s ? s : ""; }

void agent_rpc_export_template_image(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    const Torpor__Hostagent__V1__ExportTemplateImageRequest *req = (const void *)m;
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n = 0;
    char digest[65] = "";
    terr e;
    agent_code c = tb_image_export(tb, str(req->name), digest, files, TRANSFER_FILES_MAX, &n, &e);
    if (c != AGENT_OK) {
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return;
    }
    pb_tfile pbs[TRANSFER_FILES_MAX];
    pb_tfile *ptrs[TRANSFER_FILES_MAX];
    agent_rpc_files_to_pb(files, n, pbs, ptrs);
    Torpor__Hostagent__V1__ExportTemplateImageResponse resp =
        TORPOR__HOSTAGENT__V1__EXPORT_TEMPLATE_IMAGE_RESPONSE__INIT;
    resp.digest = digest;
    resp.files = ptrs;
    resp.n_files = n;
    rpc_reply(call, &resp.base);
}

void agent_rpc_read_template_chunk(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    const Torpor__Hostagent__V1__ReadTemplateImageChunkRequest *req = (const void *)m;
    uint8_t *buf = malloc(TRANSFER_CHUNK_MAX);
    if (!buf) {
        rpc_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t len = 0;
    bool zero = false;
    terr e;
    agent_code c =
        tb_image_read_chunk(tb, str(req->name), str(req->file), req->offset,
                            req->max_len > 0 ? (size_t)req->max_len : 0, buf, &len, &zero, &e);
    if (c != AGENT_OK) {
        free(buf);
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return;
    }
    Torpor__Hostagent__V1__ReadSandboxFileChunkResponse resp =
        TORPOR__HOSTAGENT__V1__READ_SANDBOX_FILE_CHUNK_RESPONSE__INIT;
    if (zero) {
        resp.zero_len = (int64_t)len;
    } else {
        resp.data.data = buf;
        resp.data.len = len;
    }
    rpc_reply(call, &resp.base);
    free(buf);
}

void agent_rpc_write_template_chunk(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    const Torpor__Hostagent__V1__WriteTemplateImageChunkRequest *req = (const void *)m;
    if (req->zero_len < 0 || req->zero_len > TRANSFER_CHUNK_MAX) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "zero_len out of range");
        return;
    }
    terr e;
    agent_code c = tb_image_write_chunk(tb, str(req->name), str(req->file), req->offset,
                                        req->data.data, req->data.len, (size_t)req->zero_len, &e);
    if (c != AGENT_OK) {
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return;
    }
    Torpor__Hostagent__V1__WriteSandboxFileChunkResponse resp =
        TORPOR__HOSTAGENT__V1__WRITE_SANDBOX_FILE_CHUNK_RESPONSE__INIT;
    rpc_reply(call, &resp.base);
}

void agent_rpc_commit_template_image(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    const Torpor__Hostagent__V1__CommitTemplateImageRequest *req = (const void *)m;
    if (req->n_files == 0 || req->n_files > TRANSFER_FILES_MAX) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "bad file list");
        return;
    }
    transfer_file files[TRANSFER_FILES_MAX];
    if (!agent_rpc_files_from_pb(req->files, req->n_files, files)) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "bad file entry");
        return;
    }
    tb_info info;
    terr e;
    agent_code c =
        tb_image_commit(tb, str(req->name), str(req->digest), files, req->n_files, &info, &e);
    if (c != AGENT_OK) {
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return;
    }
    pb_tpl pb;
    to_pb(&info, &pb);
    Torpor__Hostagent__V1__CommitTemplateImageResponse resp =
        TORPOR__HOSTAGENT__V1__COMMIT_TEMPLATE_IMAGE_RESPONSE__INIT;
    resp.template_ = &pb;
    rpc_reply(call, &resp.base);
}

void agent_rpc_abort_template_image(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    template_builder *tb = builder(appv, call);
    if (!tb) return;
    const Torpor__Hostagent__V1__AbortTemplateImageRequest *req = (const void *)m;
    terr e;
    agent_code c = tb_image_abort(tb, str(req->name), &e);
    if (c != AGENT_OK) {
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return;
    }
    Torpor__Hostagent__V1__AbortSandboxImportResponse resp =
        TORPOR__HOSTAGENT__V1__ABORT_SANDBOX_IMPORT_RESPONSE__INIT;
    rpc_reply(call, &resp.base);
}
