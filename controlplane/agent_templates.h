/* agent_templates: typed calls of the template RPCs (BuildTemplate,
 * GetTemplate, DeleteTemplate), each with its deadline, like agent_client.h. */
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

#endif
