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

#endif
