/* guest_files: the READ_FILE and WRITE_FILE requests inside the guest.
 *
 * Contract: both fill a result whose status is 0 or a Linux errno value and
 * whose message explains a failure in one sentence naming the path
 * ("no such file: /x"). They never fail otherwise, except for running out of
 * memory (then they return -1 with err set).
 * - read: regular files (and /proc-style files whose size is not known in
 *   advance) up to GP_FILE_MAX bytes; a directory is EISDIR, a FIFO, device
 *   or socket is EINVAL (reading one could block forever), bigger is EFBIG.
 * - write: absolute paths only; creates missing parent directories (0755);
 *   writes a temp file next to the target, fsyncs, sets `mode` exactly
 *   (umask ignored) and renames it over the target, so a reader sees the old
 *   or the new content, never a mix.
 * Results own their memory: gp_read_result_free / gp_status_result_free. */
#ifndef TORPOR_GUEST_FILES_H
#define TORPOR_GUEST_FILES_H

#include "guest_protocol.h"

int guest_files_read(const gp_read_file_req *req, gp_read_result *res, terr *err);
int guest_files_write(const gp_write_file_req *req, gp_status_result *res, terr *err);

/* WRITE_CHUNK, READ_CHUNK and LIST_DIR as guest_protocol.h describes them;
 * same status/message convention (ENOSPC: "no space left on device: /x",
 * the temp file removed and the old file intact). */
/* A new upload (offset 0) first removes the directory's upload temp files
 * untouched for this long (uploads that were cut short). */
#define GUEST_UPLOAD_STALE_SEC 3600
int guest_files_write_chunk(const gp_write_chunk_req *req, gp_chunk_result *res, terr *err);
int guest_files_read_chunk(const gp_read_chunk_req *req, gp_read_chunk_result *res, terr *err);
int guest_files_list(const gp_list_dir_req *req, gp_list_result *res, terr *err);

#endif
