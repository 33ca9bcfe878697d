#include "multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

bool multipart_is_form_data(const char *ct)
{
    if (!ct) return false;
    while (*ct == ' ') ct++;
    return strncasecmp(ct, "multipart/form-data", 19) == 0 && (ct[19] == '\0' || ct[19] == ';' || ct[19] == ' ');
}

int multipart_boundary(const char *ct, char *out, size_t size, terr *err)
{
    const char *p = ct ? strcasestr(ct, "boundary=") : NULL;
    if (!p) return terr_set(err, "multipart Content-Type has no boundary");
    p += 9;
    size_t n;
    if (*p == '"') {
        p++;
        const char *q = strchr(p, '"');
        if (!q) return terr_set(err, "multipart boundary has no closing quote");
        n = (size_t)(q - p);
    } else {
        n = strcspn(p, "; \t");
    }
    if (n == 0 || n > 70 || n + 1 > size) return terr_set(err, "multipart boundary must be 1..70 characters");
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

/* The value of name="..." in a Content-Disposition header block. */
static bool part_name(const char *hdr, size_t hlen, const char **name, size_t *nlen)
{
    const char *end = hdr + hlen;
    for (const char *p = hdr; p + 6 <= end; p++) {
        /* " name=" or ";name=", not "filename=" */
        if (strncasecmp(p, "name=\"", 6) != 0) continue;
        if (p > hdr && (isalnum((unsigned char)p[-1]) || p[-1] == '_')) continue;
        const char *v = p + 6;
        const char *q = memchr(v, '"', (size_t)(end - v));
        if (!q) return false;
        *name = v;
        *nlen = (size_t)(q - v);
        return true;
    }
    return false;
}

int multipart_field(const char *body, size_t len, const char *boundary, const char *name,
                    const char **data, size_t *data_len, bool *found, terr *err)
{
    *found = false;
    *data = NULL;
    *data_len = 0;
    char delim[80];
    size_t dlen = (size_t)snprintf(delim, sizeof delim, "--%s", boundary);
    const char *end = body + len;
    const char *p = memmem(body, len, delim, dlen);
    if (!p) return terr_set(err, "multipart body has no boundary delimiter");
    p += dlen;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return 0; /* closing delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return terr_set(err, "malformed multipart delimiter line");
        p += 2;
        const char *hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hdr_end) return terr_set(err, "multipart part has unterminated headers");
        const char *content = hdr_end + 4;
        /* The content ends at CRLF + delimiter. */
        char close[84];
        size_t clen = (size_t)snprintf(close, sizeof close, "\r\n%s", delim);
        const char *next = memmem(content, (size_t)(end - content), close, clen);
        if (!next) return terr_set(err, "multipart part is not terminated by the boundary");
        const char *pname;
        size_t pnlen;
        if (part_name(p, (size_t)(hdr_end - p), &pname, &pnlen) && pnlen == strlen(name) &&
            memcmp(pname, name, pnlen) == 0 && !*found) {
            *found = true;
            *data = content;
            *data_len = (size_t)(next - content);
        }
        p = next + clen;
    }
}
