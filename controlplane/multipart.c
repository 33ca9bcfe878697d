#include "multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool multipart_is_form_data(const char *ct)
{
    if (!ct) return false;
    while (*ct == ' ') ct++;
    return strncasecmp(ct, "multipart/form-data", 19) == 0 &&
           (ct[19] == '\0' || ct[19] == ';' || ct[19] == ' ');
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
    if (n == 0 || n > 70 || n + 1 > size)
        return terr_set(err, "multipart boundary must be 1..70 characters");
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
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return terr_set(err, "malformed multipart delimiter line");
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

/* ---- incremental parser ---- */

enum { MS_PRE, MS_AFTER_DELIM, MS_HEADERS, MS_BODY, MS_DONE };
#define MS_WINDOW 65536
#define MS_HEADERS_MAX 8192

struct multipart_stream {
    multipart_cb cb;
    char delim[84]; /* "\r\n--boundary" */
    size_t dlen;
    int state;
    char work[MS_WINDOW + MS_HEADERS_MAX + 128];
    size_t wlen;
    char hdr[MS_HEADERS_MAX];
    size_t hlen;
};

multipart_stream *multipart_stream_new(const char *boundary, const multipart_cb *cb, terr *err)
{
    size_t bl = boundary ? strlen(boundary) : 0;
    if (bl == 0 || bl > 70) {
        terr_set(err, "multipart boundary must be 1..70 characters");
        return NULL;
    }
    multipart_stream *m = calloc(1, sizeof *m);
    if (!m) {
        terr_set(err, "out of memory");
        return NULL;
    }
    m->cb = *cb;
    m->dlen = (size_t)snprintf(m->delim, sizeof m->delim, "\r\n--%s", boundary);
    /* A virtual CRLF, so a delimiter at the very start is found like any other. */
    memcpy(m->work, "\r\n", 2);
    m->wlen = 2;
    m->state = MS_PRE;
    return m;
}

void multipart_stream_free(multipart_stream *m) { free(m); }

static void consume(multipart_stream *m, size_t n)
{
    memmove(m->work, m->work + n, m->wlen - n);
    m->wlen -= n;
}

/* Runs the state machine over the window; leaves at most dlen bytes in it
 * (fewer than a delimiter) unless it needs more input. */
static int process(multipart_stream *m, terr *err)
{
    for (;;) {
        switch (m->state) {
        case MS_PRE:
        case MS_BODY: {
            const char *hit = memmem(m->work, m->wlen, m->delim, m->dlen);
            if (hit) {
                size_t k = (size_t)(hit - m->work);
                if (m->state == MS_BODY) {
                    if (k && m->cb.data(m->cb.cls, m->work, k, err) != 0) return -1;
                    if (m->cb.end(m->cb.cls, err) != 0) return -1;
                }
                consume(m, k + m->dlen);
                m->state = MS_AFTER_DELIM;
                continue;
            }
            size_t keep = m->dlen - 1;
            if (m->wlen > keep) {
                size_t out = m->wlen - keep;
                if (m->state == MS_BODY && m->cb.data(m->cb.cls, m->work, out, err) != 0) return -1;
                consume(m, out);
            }
            return 0;
        }
        case MS_AFTER_DELIM:
            if (m->wlen < 2) return 0;
            if (m->work[0] == '-' && m->work[1] == '-') {
                m->state = MS_DONE;
                m->wlen = 0;
                return 0;
            }
            if (m->work[0] != '\r' || m->work[1] != '\n')
                return terr_set(err, "malformed multipart delimiter line");
            consume(m, 2);
            m->state = MS_HEADERS;
            m->hlen = 0;
            continue;
        case MS_HEADERS: {
            size_t room = MS_HEADERS_MAX - m->hlen, n = m->wlen < room ? m->wlen : room;
            size_t from = m->hlen >= 3 ? m->hlen - 3 : 0; /* the CRLFCRLF may straddle */
            memcpy(m->hdr + m->hlen, m->work, n);
            m->hlen += n;
            consume(m, n);
            const char *end = memmem(m->hdr + from, m->hlen - from, "\r\n\r\n", 4);
            if (!end) {
                if (m->hlen >= MS_HEADERS_MAX)
                    return terr_set(err, "multipart part headers over %d bytes", MS_HEADERS_MAX);
                return 0;
            }
            size_t k = (size_t)(end - m->hdr), rest = m->hlen - (k + 4);
            /* Body bytes that came with the headers go back in front. */
            memmove(m->work + rest, m->work, m->wlen);
            memcpy(m->work, m->hdr + k + 4, rest);
            m->wlen += rest;
            const char *name = "";
            size_t nlen = 0;
            if (!part_name(m->hdr, k, &name, &nlen)) {
                name = "";
                nlen = 0;
            }
            if (m->cb.begin(m->cb.cls, name, nlen, err) != 0) return -1;
            m->state = MS_BODY;
            continue;
        }
        default: /* MS_DONE: the epilogue is ignored */ m->wlen = 0; return 0;
        }
    }
}

int multipart_stream_feed(multipart_stream *m, const char *data, size_t len, terr *err)
{
    while (len > 0) {
        if (m->state == MS_DONE) return 0;
        size_t room = MS_WINDOW - (m->wlen < MS_WINDOW ? m->wlen : MS_WINDOW);
        size_t take = len < room ? len : room;
        if (take == 0) return terr_set(err, "multipart parser window overflow");
        memcpy(m->work + m->wlen, data, take);
        m->wlen += take;
        data += take;
        len -= take;
        if (process(m, err) != 0) return -1;
    }
    return 0;
}

int multipart_stream_finish(multipart_stream *m, terr *err)
{
    switch (m->state) {
    case MS_DONE: return 0;
    case MS_PRE: return terr_set(err, "multipart body has no boundary delimiter");
    case MS_HEADERS: return terr_set(err, "multipart part has unterminated headers");
    case MS_BODY: return terr_set(err, "multipart part is not terminated by the boundary");
    default: return terr_set(err, "malformed multipart delimiter line");
    }
}
