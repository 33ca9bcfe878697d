#include "rpc_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest_protocol.h"
#include "hostagent.pb-c.h"
#include "rpc_handlers.h"
#include "runtime.h"
#include "torpor_limits.h"

#define PATH_MAX_BYTES 4096

/* True (and the call failed) when id or path is unusable. */
static bool bad_fields(rpc_call *call, const char *id, const char *path)
{
    if (!limits_sandbox_id_valid(id)) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                 "invalid sandbox_id: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$");
        return true;
    }
    size_t n = path ? strlen(path) : 0;
    if (n == 0 || path[0] != '/' || n > PATH_MAX_BYTES) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "path must be absolute and 1..%d bytes",
                 PATH_MAX_BYTES);
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c < 0x20 || c == 0x7f) {
            rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                     "path contains a control character at offset %zu", i);
            return true;
        }
    }
    return false;
}

/* Encodes nothing itself: sends b (freed here) and returns the answer's
 * payload, or fails the call. */
static int guest(agent_rpc *app, rpc_call *call, const char *id, const char *what, gp_buf *b,
                 uint8_t req_type, uint8_t resp_type, uint8_t **p, size_t *n)
{
    terr e;
    /* The RPC's deadline bounds the guest call too (it answers before its
     * caller gives up): without it a caller with a deadline shorter than
     * RPC_FILES_GUEST_MS left the call holding the guest channel. */
    runtime_call_deadline_set(rpc_call_deadline_mono_ms(call));
    agent_code c = lifecycle_guest_call(app->lc, id, what, req_type, b->data, b->len, resp_type,
                                        RPC_FILES_GUEST_MS, p, n, &e);
    runtime_call_deadline_set(0);
    gp_buf_free(b);
    if (c != AGENT_OK) {
        rpc_fail(call, agent_code_to_grpc(c), "%s", e.msg);
        return -1;
    }
    return 0;
}

void rpc_files_write_chunk(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    const Torpor__Hostagent__V1__WriteFileChunkRequest *req = (const void *)m;
    if (bad_fields(call, req->sandbox_id, req->path)) return;
    if (!gp_upload_id_valid(req->upload_id)) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "upload_id must be 1..%d of [A-Za-z0-9]",
                 GP_UPLOAD_ID_MAX);
        return;
    }
    if (req->data.len > GP_CHUNK_MAX || req->mode > 07777 || (req->commit && req->abort)) {
        rpc_fail(
            call, GRPC_STATUS_INVALID_ARGUMENT,
            "chunk of %zu bytes (at most %u), mode %o (at most 07777), commit and abort not both",
            req->data.len, GP_CHUNK_MAX, req->mode);
        return;
    }
    gp_write_chunk_req g = {
        .path = req->path,
        .upload_id = req->upload_id,
        .offset = req->offset,
        .mode = req->mode ? req->mode : 0644,
        .flags = (req->commit ? GP_CHUNK_F_COMMIT : 0) | (req->abort ? GP_CHUNK_F_ABORT : 0),
        .data = req->data.data,
        .len = req->data.len,
    };
    gp_buf b = {0};
    terr e;
    if (gp_encode_write_chunk(&b, &g, &e) < 0) {
        gp_buf_free(&b);
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", e.msg);
        return;
    }
    uint8_t *p;
    size_t n;
    if (guest(appv, call, req->sandbox_id, "write_chunk", &b, GP_WRITE_CHUNK, GP_CHUNK_RESULT, &p,
              &n) < 0)
        return;
    gp_chunk_result r;
    int rc = gp_decode_chunk_result(p, n, &r, &e);
    free(p);
    if (rc < 0) {
        rpc_fail(call, GRPC_STATUS_INTERNAL, "write_chunk answer: %s", e.msg);
        return;
    }
    Torpor__Hostagent__V1__WriteFileChunkResponse resp =
        TORPOR__HOSTAGENT__V1__WRITE_FILE_CHUNK_RESPONSE__INIT;
    resp.guest_errno = r.status;
    resp.message = (char *)r.message;
    resp.size = r.size;
    rpc_reply(call, &resp.base);
    gp_chunk_result_free(&r);
}

void rpc_files_read_chunk(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    const Torpor__Hostagent__V1__ReadFileChunkRequest *req = (const void *)m;
    if (bad_fields(call, req->sandbox_id, req->path)) return;
    if (req->length == 0 || req->length > GP_CHUNK_MAX) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "length %u must be 1..%u", req->length,
                 GP_CHUNK_MAX);
        return;
    }
    gp_read_chunk_req g = {.path = req->path,
                           .offset = req->offset,
                           .max_len = req->length,
                           .expect_ino = req->expect_ino};
    gp_buf b = {0};
    terr e;
    if (gp_encode_read_chunk(&b, &g, &e) < 0) {
        gp_buf_free(&b);
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", e.msg);
        return;
    }
    uint8_t *p;
    size_t n;
    if (guest(appv, call, req->sandbox_id, "read_chunk", &b, GP_READ_CHUNK, GP_READ_CHUNK_RESULT,
              &p, &n) < 0)
        return;
    gp_read_chunk_result r;
    int rc = gp_decode_read_chunk_result(p, n, &r, &e);
    free(p);
    if (rc < 0) {
        rpc_fail(call, GRPC_STATUS_INTERNAL, "read_chunk answer: %s", e.msg);
        return;
    }
    Torpor__Hostagent__V1__ReadFileChunkResponse resp =
        TORPOR__HOSTAGENT__V1__READ_FILE_CHUNK_RESPONSE__INIT;
    resp.guest_errno = r.status;
    resp.message = (char *)r.message;
    resp.file_size = r.file_size;
    resp.ino = r.ino;
    resp.data.data = (uint8_t *)r.data;
    resp.data.len = r.len;
    rpc_reply(call, &resp.base);
    gp_read_chunk_result_free(&r);
}

static const char *type_name(uint32_t t)
{
    switch (t) {
    case GP_ENTRY_FILE: return "file";
    case GP_ENTRY_DIR: return "dir";
    case GP_ENTRY_SYMLINK: return "symlink";
    default: return "other";
    }
}

void rpc_files_list_dir(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    const Torpor__Hostagent__V1__ListDirRequest *req = (const void *)m;
    if (bad_fields(call, req->sandbox_id, req->path)) return;
    if (req->max_entries == 0 || req->max_entries > GP_LIST_MAX_ENTRIES) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "max_entries %u must be 1..%u",
                 req->max_entries, GP_LIST_MAX_ENTRIES);
        return;
    }
    gp_list_dir_req g = {.path = req->path, .max_entries = req->max_entries};
    gp_buf b = {0};
    terr e;
    if (gp_encode_list_dir(&b, &g, &e) < 0) {
        gp_buf_free(&b);
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", e.msg);
        return;
    }
    uint8_t *p;
    size_t n;
    if (guest(appv, call, req->sandbox_id, "list_dir", &b, GP_LIST_DIR, GP_LIST_RESULT, &p, &n) < 0)
        return;
    gp_list_result r;
    int rc = gp_decode_list_result(p, n, &r, &e);
    free(p);
    if (rc < 0) {
        rpc_fail(call, GRPC_STATUS_INTERNAL, "list_dir answer: %s", e.msg);
        return;
    }
    Torpor__Hostagent__V1__DirEntry *ents = calloc(r.n ? r.n : 1, sizeof *ents);
    Torpor__Hostagent__V1__DirEntry **ptrs = calloc(r.n ? r.n : 1, sizeof *ptrs);
    if (!ents || !ptrs) {
        free(ents);
        free(ptrs);
        gp_list_result_free(&r);
        rpc_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "list_dir: out of memory");
        return;
    }
    for (size_t i = 0; i < r.n; i++) {
        torpor__hostagent__v1__dir_entry__init(&ents[i]);
        ents[i].name = (char *)r.entries[i].name;
        ents[i].type = (char *)type_name(r.entries[i].type);
        ents[i].mode = r.entries[i].mode;
        ents[i].size = r.entries[i].size;
        ents[i].mtime_unix = r.entries[i].mtime_sec;
        ptrs[i] = &ents[i];
    }
    Torpor__Hostagent__V1__ListDirResponse resp = TORPOR__HOSTAGENT__V1__LIST_DIR_RESPONSE__INIT;
    resp.guest_errno = r.status;
    resp.message = (char *)r.message;
    resp.truncated = r.truncated;
    resp.n_entries = r.n;
    resp.entries = ptrs;
    rpc_reply(call, &resp.base);
    free(ents);
    free(ptrs);
    gp_list_result_free(&r);
}
