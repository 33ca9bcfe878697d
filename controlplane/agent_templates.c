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
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = agent_call(c, RPC_DELETE_TEMPLATE, &req.base,
                                     &torpor__hostagent__v1__delete_template_response__descriptor,
                                     &resp, AGENT_DEADLINE_TEMPLATE_MS, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return st;
}
