/* agent_templates: typed calls of the template RPCs (BuildTemplate,
 * GetTemplate, DeleteTemplate, and the image copy: ExportTemplateImage,
 * Read/WriteTemplateImageChunk, Commit/AbortTemplateImage), each with its
 * deadline, like agent_client.h. */
#ifndef TORPOR_CP_AGENT_TEMPLATES_H
#define TORPOR_CP_AGENT_TEMPLATES_H

#include "agent_client.h"

#define AGENT_DEADLINE_TEMPLATE_MS 10000
/* The most of a build log the control plane asks for and serves. */
#define AGENT_TEMPLATE_LOG_TAIL (256 * 1024)

/* packages: the names (n of them); setup NULL = none. */
grpc_status_code agent_build_template(rpc_client *c, const char *image, const char *base,
                                      const char *const *packages, size_t n, const char *setup,
                                      terr *err);
/* log_tail 0 = no log. *out freed with protobuf_c_message_free_unpacked. */
grpc_status_code agent_get_template(rpc_client *c, const char *image, int log_tail,
                                    Torpor__Hostagent__V1__GetTemplateResponse **out, terr *err);
grpc_status_code agent_delete_template(rpc_client *c, const char *image, terr *err);

/* Export and commit hash the whole image (~2 s for 512 MiB here). */
#define AGENT_DEADLINE_TEMPLATE_COPY_MS 120000
/* *out freed with protobuf_c_message_free_unpacked. */
grpc_status_code agent_export_template_image(
    rpc_client *c, const char *image, Torpor__Hostagent__V1__ExportTemplateImageResponse **out,
    terr *err);
grpc_status_code agent_read_template_chunk(
    rpc_client *c, const char *image, const char *file, int64_t offset,
    Torpor__Hostagent__V1__ReadSandboxFileChunkResponse **out, terr *err);
grpc_status_code agent_write_template_chunk(rpc_client *c, const char *image, const char *file,
                                            int64_t offset, const uint8_t *data, size_t len,
                                            int64_t zero_len, terr *err);
/* The manifest and digest exactly as the source exported them. */
grpc_status_code agent_commit_template_image(
    rpc_client *c, const char *image, const Torpor__Hostagent__V1__ExportTemplateImageResponse *m,
    terr *err);
grpc_status_code agent_abort_template_image(rpc_client *c, const char *image, terr *err);

#endif
