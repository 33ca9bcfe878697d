/* libFuzzer target: QMP reply parsing on jansson (agent/runtime/qemu_json.c,
 * the lookup the QEMU driver runs on each answer line QEMU sends): the
 * paths the driver uses ({"return","status"}, {"error","desc"}, {"return"},
 * {"event"}) on arbitrary text. A string found must be NUL-terminated within
 * the output buffer; a failure leaves "". */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "qemu_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size + 1);
    if (!line) return 0;
    memcpy(line, data, size);
    line[size] = '\0';
    static const char *const status[] = {"return", "status"};
    static const char *const desc[] = {"error", "desc"};
    static const char *const ret[] = {"return"};
    static const char *const event[] = {"event"};
    static const char *const *paths[] = {status, desc, ret, event};
    static const size_t lens[] = {2, 2, 1, 1};
    for (size_t i = 0; i < 4; i++) {
        char out[64];
        memset(out, 'x', sizeof out);
        int rc = qjson_get_string(line, paths[i], lens[i], out, sizeof out);
        FUZZ_CHECK(memchr(out, '\0', sizeof out) != NULL);
        if (rc != 0) FUZZ_CHECK(out[0] == '\0');
    }
    char tiny[1];
    (void)qjson_get_string(line, status, 2, tiny, sizeof tiny);
    free(line);
    return 0;
}
