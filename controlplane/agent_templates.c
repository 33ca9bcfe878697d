#include "agent_templates.h"

grpc_status_code agent_build_template(rpc_client *c, const char *image, const char *base,
                                      const char *const *packages, size_t n, const char *setup,
                                      terr *err)
{
    Torpor__Hostagent__V1__BuildTemplateRequest req =
        TORPOR__HOSTAGENT__V1__BUILD_TEMPLATE_REQUEST__INIT;
    req.name = (char *)image;
    req.base_template = (char *)(base ? base : "");
    req.packages = (char **)packages;
    req.n_packages = n;
    req.setup = (char *)(setup ? setup : "");
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = agent_call(c, RPC_BUILD_TEMPLATE, &req.base,
                                     &torpor__hostagent__v1__build_template_response__descriptor,
                                     &resp, AGENT_DEADLINE_TEMPLATE_MS, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return st;
}

grpc_status_code agent_get_template(rpc_client *c, const char *image, int log_tail,
                                    Torpor__Hostagent__V1__GetTemplateResponse **out, terr *err)
{
    Torpor__Hostagent__V1__GetTemplateRequest req =
        TORPOR__HOSTAGENT__V1__GET_TEMPLATE_REQUEST__INIT;
    req.name = (char *)image;
    req.log_tail_bytes = log_tail;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = agent_call(c, RPC_GET_TEMPLATE, &req.base,
                                     &torpor__hostagent__v1__get_template_response__descriptor,
                                     &resp, AGENT_DEADLINE_TEMPLATE_MS, err);
    if (st != GRPC_STATUS_OK && resp) {
        protobuf_c_message_free_unpacked(resp, NULL);
        resp = NULL;
    }
    *out = (Torpor__Hostagent__V1__GetTemplateResponse *)resp;
    return st;
}

grpc_status_code agent_delete_template(rpc_client *c, const char *image, terr *err)
{
    Torpor__Hostagent__V1__DeleteTemplateRequest req =
        TORPOR__HOSTAGENT__V1__DELETE_TEMPLATE_REQUEST__INIT;
    req.name = (char *)image;
    return agent_call_no_answer(c, RPC_DELETE_TEMPLATE, &req.base,
                                &torpor__hostagent__v1__delete_template_response__descriptor,
                                AGENT_DEADLINE_TEMPLATE_MS, err);
}

/* ------------------------------------------------------------ copies */

grpc_status_code agent_export_template_image(
    rpc_client *c, const char *image, Torpor__Hostagent__V1__ExportTemplateImageResponse **out,
    terr *err)
{
    Torpor__Hostagent__V1__ExportTemplateImageRequest req =
        TORPOR__HOSTAGENT__V1__EXPORT_TEMPLATE_IMAGE_REQUEST__INIT;
    req.name = (char *)image;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st =
        agent_call(c, RPC_EXPORT_TEMPLATE_IMAGE, &req.base,
                   &torpor__hostagent__v1__export_template_image_response__descriptor, &resp,
                   AGENT_DEADLINE_TEMPLATE_COPY_MS, err);
    if (st != GRPC_STATUS_OK && resp) {
        protobuf_c_message_free_unpacked(resp, NULL);
        resp = NULL;
    }
    *out = (Torpor__Hostagent__V1__ExportTemplateImageResponse *)resp;
    return st;
}

grpc_status_code agent_read_template_chunk(
    rpc_client *c, const char *image, const char *file, int64_t offset,
    Torpor__Hostagent__V1__ReadSandboxFileChunkResponse **out, terr *err)
{
    Torpor__Hostagent__V1__ReadTemplateImageChunkRequest req =
        TORPOR__HOSTAGENT__V1__READ_TEMPLATE_IMAGE_CHUNK_REQUEST__INIT;
    req.name = (char *)image;
    req.file = (char *)file;
    req.offset = offset;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st =
        agent_call(c, RPC_READ_TEMPLATE_CHUNK, &req.base,
                   &torpor__hostagent__v1__read_sandbox_file_chunk_response__descriptor, &resp,
                   AGENT_DEADLINE_TRANSFER_MS, err);
    if (st != GRPC_STATUS_OK && resp) {
        protobuf_c_message_free_unpacked(resp, NULL);
        resp = NULL;
    }
    *out = (Torpor__Hostagent__V1__ReadSandboxFileChunkResponse *)resp;
    return st;
}

grpc_status_code agent_write_template_chunk(rpc_client *c, const char *image, const char *file,
                                            int64_t offset, const uint8_t *data, size_t len,
                                            int64_t zero_len, terr *err)
{
    Torpor__Hostagent__V1__WriteTemplateImageChunkRequest req =
        TORPOR__HOSTAGENT__V1__WRITE_TEMPLATE_IMAGE_CHUNK_REQUEST__INIT;
    req.name = (char *)image;
    req.file = (char *)file;
    req.offset = offset;
    req.data.data = (uint8_t *)data;
    req.data.len = len;
    req.zero_len = zero_len;
    return agent_call_no_answer(
        c, RPC_WRITE_TEMPLATE_CHUNK, &req.base,
        &torpor__hostagent__v1__write_sandbox_file_chunk_response__descriptor,
        AGENT_DEADLINE_TRANSFER_MS, err);
}

grpc_status_code agent_commit_template_image(
    rpc_client *c, const char *image, const Torpor__Hostagent__V1__ExportTemplateImageResponse *m,
    terr *err)
{
    Torpor__Hostagent__V1__CommitTemplateImageRequest req =
        TORPOR__HOSTAGENT__V1__COMMIT_TEMPLATE_IMAGE_REQUEST__INIT;
    req.name = (char *)image;
    req.digest = m->digest;
    req.files = m->files;
    req.n_files = m->n_files;
    return agent_call_no_answer(c, RPC_COMMIT_TEMPLATE_IMAGE, &req.base,
                                &torpor__hostagent__v1__commit_template_image_response__descriptor,
                                AGENT_DEADLINE_TEMPLATE_COPY_MS, err);
}

grpc_status_code agent_abort_template_image(rpc_client *c, const char *image, terr *err)
{
    Torpor__Hostagent__V1__AbortTemplateImageRequest req =
        TORPOR__HOSTAGENT__V1__ABORT_TEMPLATE_IMAGE_REQUEST__INIT;
    req.name = (char *)image;
    return agent_call_no_answer(c, RPC_ABORT_TEMPLATE_IMAGE, &req.base,
                                &torpor__hostagent__v1__abort_sandbox_import_response__descriptor,
                                AGENT_DEADLINE_TEMPLATE_MS, err);
}
