/* api_files: POST /v1/sandboxes/{id}/files/write and /files/read.
 *
 * Contract: write takes {path, content_base64} as JSON (body at most 64 MiB),
 * or multipart/form-data with the fields "path" and "file" (streamed: any
 * size), and answers 204; both forms are written through the chunked path
 * of api_files_stream.h (atomic; a full disk is 507); read takes {path} and
 * answers 200 application/octet-stream with the raw bytes. Both need a running
 * sandbox (409), count as activity (DB last_active_at), and map agent errors
 * like every route (a missing file is the agent's NOT_FOUND -> 404 with the
 * agent's message). */
#ifndef TORPOR_CP_API_FILES_H
#define TORPOR_CP_API_FILES_H

#include "api_request.h"

/* The most a JSON files/write body may be (its route's body_limit, and the
 * HTTP server's max_body). */
#define API_FILES_BODY_LIMIT (64 * 1024 * 1024)

/* Body fn of files/write (I/O thread): buffers JSON up to
 * API_FILES_BODY_LIMIT (more is 413), parses multipart as it arrives and
 * spools its "file" field (no limit but the sandbox's disk). */
int api_files_write_body(void *cls, http_request *req, const char *data, size_t len);
void api_files_write(api_request *r);
void api_files_read(api_request *r);

#endif
