/* multipart: the subset of multipart/form-data (RFC 7578) that files/write
 * accepts: named fields, each with a Content-Disposition header.
 *
 * Contract: pure parsing over a caller-owned buffer; results point into it.
 * A malformed body (no boundary, missing delimiter, unterminated headers)
 * is an error with a message, never a crash or an overread. */
#ifndef TORPOR_CP_MULTIPART_H
#define TORPOR_CP_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#include "terr.h"

/* True when the Content-Type is multipart/form-data (any case). */
bool multipart_is_form_data(const char *content_type);

/* Extracts the boundary parameter (quoted or bare) of a Content-Type. */
int multipart_boundary(const char *content_type, char *out, size_t size, terr *err);

/* Finds the field named `name`; *found false when absent. The whole body
 * is validated up to its closing delimiter. */
int multipart_field(const char *body, size_t len, const char *boundary, const char *name,
                    const char **data, size_t *data_len, bool *found, terr *err);

/* Incremental form, for bodies that are never held whole (files/write):
 * feed the body in pieces of any size; for each part the callbacks get its
 * name (from Content-Disposition; "" if none), its content in pieces, and
 * its end. The parser holds at most ~64 KiB (its window) plus 8 KiB of part
 * headers. A callback returning non-zero stops the parse (feed returns -1
 * with err as the callback left it). multipart_stream_finish fails unless
 * the closing delimiter was seen. Same rules as multipart_field: a preamble
 * before the first delimiter is skipped, as is anything after the closing
 * one; every part needs a header block ending in CRLF CRLF. */
typedef struct multipart_cb {
    int (*begin)(void *cls, const char *name, size_t name_len, terr *err);
    int (*data)(void *cls, const char *data, size_t len, terr *err);
    int (*end)(void *cls, terr *err);
    void *cls;
} multipart_cb;

typedef struct multipart_stream multipart_stream;
/* NULL on a bad boundary (err set) or no memory. */
multipart_stream *multipart_stream_new(const char *boundary, const multipart_cb *cb, terr *err);
int multipart_stream_feed(multipart_stream *m, const char *data, size_t len, terr *err);
int multipart_stream_finish(multipart_stream *m, terr *err);
void multipart_stream_free(multipart_stream *m);

#endif
