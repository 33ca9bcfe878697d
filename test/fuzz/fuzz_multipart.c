/* libFuzzer target: the multipart/form-data parser (controlplane/multipart.c)
 * of files/write. Input: a Content-Type line, "\n", then the body. The
 * boundary is taken from the Content-Type when it has one, else a fixed
 * one; fields "path" and "content" are looked up. A found field must lie
 * inside the body. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "multipart.h"

static void field(const char *body, size_t len, const char *boundary, const char *name)
{
    const char *d;
    size_t dlen;
    bool found;
    terr err;
    if (multipart_field(body, len, boundary, name, &d, &dlen, &found, &err) == 0 && found) {
        FUZZ_CHECK(d >= body && d + dlen <= body + len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ct_len = nl ? (size_t)(nl - data) : 0;
    char *ct = malloc(ct_len + 1);
    if (!ct) return 0;
    memcpy(ct, data, ct_len);
    ct[ct_len] = '\0';
    const char *body = nl ? (const char *)nl + 1 : (const char *)data;
    size_t len = nl ? size - ct_len - 1 : size;
    /* An exact-size copy, so that an overread is caught. */
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        free(ct);
        return 0;
    }
    memcpy(copy, body, len);

    (void)multipart_is_form_data(ct);
    char boundary[128];
    terr err;
    if (multipart_boundary(ct, boundary, sizeof boundary, &err) != 0)
        snprintf(boundary, sizeof boundary, "XyZ");
    field(copy, len, boundary, "path");
    field(copy, len, boundary, "content");
    free(copy);
    free(ct);
    return 0;
}
