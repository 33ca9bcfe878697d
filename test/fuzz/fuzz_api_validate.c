/* libFuzzer target: REST body validation (controlplane/api_validate.c and
 * the JSON parsing in front of it, json_util.c): the create, exec, timeout
 * and files bodies a client sends. The first byte picks nothing: every
 * validator sees every body. Accepted bodies must satisfy the documented
 * limits. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "api_validate.h"
#include "fuzz_check.h"
#include "json_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body;
    terr err;
    if (json_util_parse_object((const char *)data, size, true, &body, &err) != 0) return 0;

    api_create_req c;
    if (api_validate_create(body, &c, &err) == 0) {
        FUZZ_CHECK(c.vcpus >= API_VCPUS_MIN && c.vcpus <= API_VCPUS_MAX);
        FUZZ_CHECK(c.memory_mb >= API_MEMORY_MB_MIN && c.memory_mb <= API_MEMORY_MB_MAX);
        FUZZ_CHECK(c.timeout_sec >= 0 && c.timeout_sec <= API_TIMEOUT_SEC_MAX);
        FUZZ_CHECK(api_validate_template_name(c.template_name));
    }
    api_exec_req e;
    if (api_validate_exec(body, &e, &err) == 0) {
        FUZZ_CHECK(e.cmd != NULL);
        FUZZ_CHECK(e.timeout_sec >= 1 && e.timeout_sec <= API_EXEC_TIMEOUT_MAX);
        api_exec_req_free(&e);
    }
    int t;
    if (api_validate_timeout(body, &t, &err) == 0) FUZZ_CHECK(t >= 0 && t <= API_TIMEOUT_SEC_MAX);
    const char *path;
    if (api_validate_file_read(body, &path, &err) == 0) FUZZ_CHECK(path != NULL);
    uint8_t *content;
    size_t len;
    if (api_validate_file_write(body, &path, &content, &len, &err) == 0) {
        FUZZ_CHECK(path != NULL);
        free(content);
    }
    json_decref(body);
    return 0;
}
