/* api_files_stream: files of any size and directory listings.
 *
 *   PUT /v1/sandboxes/{id}/files/content?path=/x[&mode=0644]
 *       raw body (Content-Length or chunked) -> 200 {path, size}
 *   GET /v1/sandboxes/{id}/files/content?path=/x -> 200 raw bytes
 *   GET /v1/sandboxes/{id}/files?path=/dir[&limit=N] -> 200 {path, entries, truncated}
 *
 * Contract: a file travels in chunks of API_FILES_CHUNK bytes: HTTP ->
 * spool -> one WriteFileChunk call per chunk (each with its deadline) ->
 * guest temp file -> fsync + rename on the last chunk, so a reader in the
 * sandbox sees the old or the new file and no process holds more than a
 * chunk or two of it. The spool is an unlinked file in API_FILES_SPOOL_DIR
 * (env TORPOR_CP_SPOOL_DIR, default /var/tmp): the HTTP server hands a
 * streamed body over as it arrives on its I/O thread, which must not wait
 * for the agent, and a streamed reply is produced on that thread too; the
 * spool decouples them with bounded memory (see docs/architecture.md).
 * A read spools the file the same way, chunk by chunk (the inode is checked
 * on every chunk: a file replaced meanwhile is 409 file_changed), then
 * streams it with its Content-Length.
 * Errors the guest reports about the file: missing -> 404 not_found, a
 * directory or a non-directory in the way -> 400 invalid_request, disk full
 * -> 507 insufficient_storage (the old file intact), else 502 agent_error.
 * api_files_push also serves POST files/write (JSON and multipart). */
#ifndef TORPOR_CP_API_FILES_STREAM_H
#define TORPOR_CP_API_FILES_STREAM_H

#include <stdint.h>

#include "api_request.h"

#define API_FILES_CHUNK (1024 * 1024)
#define API_FILES_LIST_DEFAULT 1000
#define API_FILES_LIST_MAX 10000
#define API_FILES_SPOOL_DIR "/var/tmp"

/* A transfer's spool: an unlinked file in the spool dir. err is the errno
 * of the first failure (creating it or writing to it); later writes are
 * dropped. api_spool_free takes a void* so it can be a request data free. */
typedef struct api_spool {
    int fd;
    uint64_t size;
    int err;
} api_spool;
api_spool *api_spool_new(void); /* NULL only without memory */
int api_spool_write(api_spool *sp, const void *data, size_t len);
void api_spool_free(void *sp);

/* Body fn of the PUT route (I/O thread): appends to the request's spool. */
int api_files_put_body(void *cls, http_request *req, const char *data, size_t len);
void api_files_put_content(api_request *r);
void api_files_get_content(api_request *r);
void api_files_list(api_request *r);

/* Writes len bytes (from mem, or from fd when mem is NULL) to path in the
 * running sandbox through the chunk calls; on failure replies (mapped as
 * above) and returns -1; on success replies nothing and returns 0. */
int api_files_push(api_request *r, rpc_client *client, const char *path, unsigned mode,
                   const uint8_t *mem, int fd, uint64_t len);

#endif
