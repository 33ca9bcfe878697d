/* api_files: POST /v1/sandboxes/{id}/files/write and /files/read.
 *
 * Contract: write takes {path, content_base64} as JSON, or multipart/form-data
 * with the fields "path" and "file", and answers 204; read takes {path} and
 * answers 200 application/octet-stream with the raw bytes. Both need a running
 * sandbox (409), count as activity (DB last_active_at), and map agent errors
 * like every route (a missing file is the agent's NOT_FOUND -> 404 with the
 * agent's message). */
#ifndef TORPOR_CP_API_FILES_H
#define TORPOR_CP_API_FILES_H

#include "api_request.h"

void api_files_write(api_request *r);
void api_files_read(api_request *r);

#endif
