/* embedded: the static files built into torpor-cp (the dashboard, the
 * OpenAPI spec as JSON), so an installed binary serves them without the
 * source tree.
 *
 * Contract: embedded_files[] is generated at build time by
 * controlplane/gen_embedded.py (into the build dir) from docs/openapi.yaml
 * and controlplane/dashboard/: "openapi.json", "index.html" and "ui/<file>"
 * for the dashboard's other files, each with its Content-Type.
 * embedded_find returns the file of that exact name or NULL; it is pure and
 * thread-safe (the table is constant). */
#ifndef TORPOR_CP_EMBEDDED_H
#define TORPOR_CP_EMBEDDED_H

#include <stddef.h>

typedef struct embedded_file {
    const char *name;         /* "ui/dashboard.js" */
    const char *content_type; /* "text/javascript; charset=utf-8" */
    const unsigned char *data;
    size_t len;
} embedded_file;

extern const embedded_file embedded_files[];
extern const size_t embedded_file_count;

const embedded_file *embedded_find(const char *name);

#endif
