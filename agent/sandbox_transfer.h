/* sandbox_transfer: a paused sandbox's snapshot directory leaving one agent
 * and arriving at another, in bounded chunks, for the control plane's move
 * (the control plane reads from the source and writes to the target; agents
 * never talk to each other).
 *
 * Contract:
 *  - Export: the regular files of <state>/sandboxes/<id>/ (RAM file, device
 *    state, disk overlay, meta) with their sizes and SHA-256, only while the
 *    lifecycle holds the sandbox paused; read_chunk returns at most
 *    TRANSFER_CHUNK_MAX bytes at an offset (*zero = the bytes are all zero
 *    and were not copied out: holes stay holes).
 *  - Import: chunks are written into <state>/sandboxes/.incoming-<id>/ (a
 *    name recover() never takes for a sandbox, so an agent restart removes an
 *    unfinished import); a zero chunk only extends the file. commit checks
 *    every file against the manifest (size, SHA-256), checks that a disk
 *    overlay's base image (meta's rootfs) exists here with the same digest
 *    (at the same path, or as <state>/template-images/<digest>/, a template
 *    copy or a built image: then the overlay is rebased onto it with
 *    `qemu-img rebase -u` and the meta's rootfs, and its kernel/initrd when
 *    the source's are not here, rewritten),
 *    fsyncs, renames the directory to sandboxes/<id> (atomic) and adopts the
 *    sandbox as paused (lifecycle_adopt_paused). A commit repeated after it
 *    succeeded is OK. abort removes the incoming directory.
 *  - File names are plain names ([A-Za-z0-9._-], no leading dot); nothing
 *    is held whole in memory.
 * Return codes are agent_code with err set. */
#ifndef TORPOR_AGENT_SANDBOX_TRANSFER_H
#define TORPOR_AGENT_SANDBOX_TRANSFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lifecycle.h"

#define TRANSFER_CHUNK_MAX (1024 * 1024)
#define TRANSFER_FILES_MAX 32

typedef struct transfer_file {
    char name[64];
    int64_t size;
    char sha256[65];
} transfer_file;

agent_code transfer_export_manifest(lifecycle *lc, const char *state_dir, const char *id,
                                    transfer_file *files, size_t *n, terr *err);
/* buf has TRANSFER_CHUNK_MAX bytes; *len gets the bytes read (0 at EOF). */
agent_code transfer_read_chunk(lifecycle *lc, const char *state_dir, const char *id,
                               const char *name, int64_t offset, size_t max_len, uint8_t *buf,
                               size_t *len, bool *zero, terr *err);
/* zero_len > 0: that many zero bytes at offset (data ignored). */
agent_code transfer_write_chunk(lifecycle *lc, const char *state_dir, const char *id,
                                const char *name, int64_t offset, const uint8_t *data, size_t len,
                                size_t zero_len, terr *err);
agent_code transfer_commit(lifecycle *lc, const char *state_dir, const runtime_spec *spec,
                           const transfer_file *files, size_t n, terr *err);
agent_code transfer_abort(const char *state_dir, const char *id, terr *err);

/* Shared with the template image copy (template_transfer.c): a plain file
 * name ([A-Za-z0-9._-], no leading dot, < 64 bytes), and the SHA-256 of a
 * file (lowercase hex) streamed in TRANSFER_CHUNK_MAX reads; -1 with err. */
bool transfer_name_ok(const char *name);
int transfer_file_sha256(const char *path, char out[65], int64_t *size, terr *err);
/* Up to max_len bytes of path at offset into buf (*len; short at the end),
 * *zero when they are all zero bytes (sent as a hole). AGENT_NOT_FOUND when
 * there is no such file. */
agent_code transfer_file_read(const char *path, int64_t offset, uint8_t *buf, size_t max_len,
                              size_t *len, bool *zero, terr *err);
/* Writes len bytes of data at offset into path (created 0600, never through
 * a link), or with zero_len > 0 only makes the file reach offset + zero_len
 * (a hole). AGENT_INTERNAL with err on failure. */
agent_code transfer_file_write(const char *path, int64_t offset, const uint8_t *data, size_t len,
                               size_t zero_len, terr *err);

#endif
