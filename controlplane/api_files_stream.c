#include "api_files_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_validate.h"
#include "ids.h"
#include "json_util.h"
#include "log.h"
#include "time_util.h"

/* ------------------------------------------------------------ spool */

typedef api_spool spool;

void api_spool_free(void *p)
{
    spool *sp = p;
    if (!sp) return;
    if (sp->fd >= 0) close(sp->fd);
    free(sp);
}

spool *api_spool_new(void)
{
    spool *sp = calloc(1, sizeof *sp);
    if (!sp) return NULL;
    const char *dir = getenv("TORPOR_CP_SPOOL_DIR");
    if (!dir || !*dir) dir = API_FILES_SPOOL_DIR;
    sp->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (sp->fd < 0) {
        /* Filesystems without O_TMPFILE: a named file, unlinked at once. */
        char tmpl[4096];
        snprintf(tmpl, sizeof tmpl, "%s/torpor-spool.XXXXXX", dir);
        sp->fd = mkostemp(tmpl, O_CLOEXEC);
        if (sp->fd >= 0) unlink(tmpl);
    }
    if (sp->fd < 0) sp->err = errno;
    return sp;
}

int api_spool_write(spool *sp, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0 && !sp->err) {
        ssize_t w = pwrite(sp->fd, p, len, (off_t)sp->size);
        if (w < 0) {
            if (errno == EINTR) continue;
            sp->err = errno;
            return -1;
        }
        p += w;
        len -= (size_t)w;
        sp->size += (uint64_t)w;
    }
    return sp->err ? -1 : 0;
}

int api_files_put_body(void *cls, http_request *req, const char *data, size_t len)
{
    (void)cls;
    spool *sp = http_request_data(req);
    if (!sp) {
        if (!(sp = api_spool_new())) return -1;
        http_request_set_data(req, sp, api_spool_free);
    }
    /* A failed spool keeps draining the body, so the client reads the 507. */
    if (!sp->err) api_spool_write(sp, data, len);
    return 0;
}

/* ------------------------------------------------------------ query */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Value of key in the raw query, percent-decoded into out (NUL-terminated;
 * *out_len, when given, is its length, which may include decoded NULs):
 * 1 found, 0 absent, -1 malformed or too long. */
static int query_get_n(const char *query, const char *key, char *out, size_t out_size,
                       size_t *out_len)
{
    size_t kl = strlen(key);
    for (const char *p = query ? query : ""; *p;) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
            size_t o = 0;
            for (size_t i = kl + 1; i < n; i++) {
                char c = p[i];
                if (c == '+') c = ' ';
                else if (c == '%') {
                    if (i + 2 >= n) return -1;
                    int h = hexval(p[i + 1]), l = hexval(p[i + 2]);
                    if (h < 0 || l < 0) return -1;
                    c = (char)(h * 16 + l);
                    i += 2;
                }
                if (o + 1 >= out_size) return -1;
                out[o++] = c;
            }
            out[o] = '\0';
            if (out_len) *out_len = o;
            return 1;
        }
        p += n;
        if (*p == '&') p++;
    }
    return 0;
}

static int query_get(const char *query, const char *key, char *out, size_t out_size)
{
    return query_get_n(query, key, out, out_size, NULL);
}

/* The "path" query parameter: required, absolute, checked like every path
 * (api_validate_path). Replies 400 and returns -1 otherwise. */
static int query_path(api_request *r, char *path, size_t size)
{
    terr err;
    size_t n = 0;
    int rc = query_get_n(http_request_query(r->req), "path", path, size, &n);
    if (rc <= 0) {
        http_reply_error(r->req, 400, "invalid_request",
                         rc == 0 ? "query parameter \"path\" is required"
                                 : "query parameter \"path\" is malformed or too long");
        return -1;
    }
    if (api_validate_path(path, n, &err) != 0) { /* n: a decoded NUL is refused too */
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return -1;
    }
    if (path[0] != '/') {
        http_reply_error(r->req, 400, "invalid_request",
                         "query parameter \"path\" must be absolute");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ errors */

/* Replies to a failure the guest reported about path (errno e). */
static void reply_guest_errno(api_request *r, const char *op, int e, const char *msg,
                              const char *path)
{
    char q[LOG_QUOTE_MAX];
    log_info("event=file_error op=%s sandbox_id=%s errno=%d error=\"%s\"", op, r->id, e,
             log_quote(msg, q, sizeof q));
    switch (e) {
    case ENOENT:
        http_reply_error(r->req, 404, "not_found", "file %s not found in sandbox %s (%s)", path,
                         r->id, msg);
        break;
    case ENOSPC:
    case EDQUOT:
        http_reply_error(r->req, 507, "insufficient_storage",
                         "no space left in sandbox %s writing %s (%s)", r->id, path, msg);
        break;
    case ESTALE:
        http_reply_error(r->req, 409, "file_changed",
                         "%s changed in sandbox %s during the transfer (%s)", path, r->id, msg);
        break;
    case EISDIR:
    case ENOTDIR:
    case EINVAL:
    case EACCES:
    case EPERM:
    case EROFS:
    case ENAMETOOLONG:
    case ELOOP:
    case EEXIST: http_reply_error(r->req, 400, "invalid_request", "%s", msg); break;
    default:
        http_reply_error(r->req, 502, "agent_error", "%s of %s in sandbox %s failed: %s", op, path,
                         r->id, msg);
        break;
    }
}

/* ------------------------------------------------------------ push */

/* Best effort: drops an unfinished upload's temp file in the guest. */
static void push_abort(rpc_client *client, const char *id, const char *path, const char *upload_id)
{
    agent_chunk_args a = {.sandbox_id = id, .path = path, .upload_id = upload_id, .abort = true};
    Torpor__Hostagent__V1__WriteFileChunkResponse *resp = NULL;
    terr err;
    if (agent_write_chunk(client, &a, &resp, &err) == GRPC_STATUS_OK)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

int api_files_push(api_request *r, rpc_client *client, const char *path, unsigned mode,
                   const uint8_t *mem, int fd, uint64_t len)
{
    char upload_id[33];
    terr err;
    if (ids_random_hex(upload_id, 16, &err) != 0) {
        api_reply_internal(r, &err);
        return -1;
    }
    uint8_t *buf = mem ? NULL : malloc(API_FILES_CHUNK);
    if (!mem && !buf) {
        terr_set(&err, "out of memory for a file chunk");
        api_reply_internal(r, &err);
        return -1;
    }
    uint64_t off = 0;
    int rc = -1;
    for (;;) {
        size_t n = len - off > API_FILES_CHUNK ? API_FILES_CHUNK : (size_t)(len - off);
        const uint8_t *data = mem ? mem + off : buf;
        if (!mem) {
            size_t got = 0;
            while (got < n) {
                ssize_t k = pread(fd, buf + got, n - got, (off_t)(off + got));
                if (k < 0 && errno == EINTR) continue;
                if (k <= 0) {
                    terr_set(&err, "reading the upload spool: %s",
                             k < 0 ? strerror(errno) : "short file");
                    api_reply_internal(r, &err);
                    push_abort(client, r->id, path, upload_id);
                    goto out;
                }
                got += (size_t)k;
            }
        }
        bool last = off + n == len;
        agent_chunk_args a = {.sandbox_id = r->id,
                              .path = path,
                              .upload_id = upload_id,
                              .offset = off,
                              .data = data,
                              .len = n,
                              .mode = mode,
                              .commit = last};
        Torpor__Hostagent__V1__WriteFileChunkResponse *resp;
        grpc_status_code st = agent_write_chunk(client, &a, &resp, &err);
        if (st != GRPC_STATUS_OK) {
            api_reply_agent_error(r, "write_file", st, &err);
            push_abort(client, r->id, path, upload_id);
            goto out;
        }
        int e = resp->guest_errno;
        if (e != 0) {
            reply_guest_errno(r, "write_file", e, resp->message, path);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            goto out;
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        off += n;
        if (last) break;
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

/* ------------------------------------------------------------ PUT */

void api_files_put_content(api_request *r)
{
    char path[API_PATH_MAX + 1], modestr[16];
    if (query_path(r, path, sizeof path) != 0) return;
    unsigned mode = 0644;
    int mrc = query_get(http_request_query(r->req), "mode", modestr, sizeof modestr);
    if (mrc != 0) {
        char *end;
        unsigned long m = strtoul(modestr, &end, 8);
        if (mrc < 0 || !*modestr || *end || m > 07777) {
            http_reply_error(r->req, 400, "invalid_request",
                             "query parameter \"mode\" must be octal 0..7777");
            return;
        }
        mode = (unsigned)m;
    }
    spool *sp = http_request_data(r->req);
    if (sp && sp->err) {
        log_error("event=spool_failed sandbox_id=%s error=\"%s\"", r->id, strerror(sp->err));
        http_reply_error(r->req, 507, "insufficient_storage",
                         "the control plane could not spool the upload: %s", strerror(sp->err));
        return;
    }
    rpc_client *client;
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_open_awake(&c, r->id, &client, &res);
    if (res.outcome != SBOP_OK) {
        api_reply_outcome(r, "write_file", &res, 200);
        return;
    }
    uint64_t size = sp ? sp->size : 0;
    static const uint8_t empty[1];
    if (api_files_push(r, client, path, mode, sp ? NULL : empty, sp ? sp->fd : -1, size) != 0)
        return;
    sandbox_ops_touch(&c, r->id);
    char q[LOG_QUOTE_MAX];
    log_info("event=file_written sandbox_id=%s path=\"%s\" bytes=%llu", r->id,
             log_quote(path, q, sizeof q), (unsigned long long)size);
    http_reply_json(r->req, 200, json_pack("{s:s, s:I}", "path", path, "size", (json_int_t)size));
}

/* ------------------------------------------------------------ GET */

static ssize_t spool_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    spool *sp = cls;
    if (pos >= sp->size) return HTTP_STREAM_END;
    if (max > sp->size - pos) max = (size_t)(sp->size - pos);
    for (;;) {
        ssize_t n = pread(sp->fd, buf, max, (off_t)pos);
        if (n < 0 && errno == EINTR) continue;
        return n <= 0 ? HTTP_STREAM_ERROR : n;
    }
}

void api_files_get_content(api_request *r)
{
    char path[API_PATH_MAX + 1];
    if (query_path(r, path, sizeof path) != 0) return;
    rpc_client *client;
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_open_awake(&c, r->id, &client, &res);
    if (res.outcome != SBOP_OK) {
        api_reply_outcome(r, "read_file", &res, 200);
        return;
    }
    spool *sp = NULL;
    uint64_t off = 0, ino = 0;
    terr err;
    for (;;) {
        Torpor__Hostagent__V1__ReadFileChunkResponse *resp;
        grpc_status_code st =
            agent_read_chunk(client, r->id, path, off, API_FILES_CHUNK, ino, &resp, &err);
        if (st != GRPC_STATUS_OK) {
            api_reply_agent_error(r, "read_file", st, &err);
            api_spool_free(sp);
            return;
        }
        if (resp->guest_errno != 0) {
            reply_guest_errno(r, "read_file", resp->guest_errno, resp->message, path);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            api_spool_free(sp);
            return;
        }
        ino = resp->ino;
        size_t n = resp->data.len;
        bool end = n < API_FILES_CHUNK;
        if (off == 0 && end) {
            /* The whole file in one chunk: no spool. */
            sandbox_ops_touch(&c, r->id);
            http_reply_bytes(r->req, 200, "application/octet-stream", resp->data.data, n);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            return;
        }
        if (!sp && (!(sp = api_spool_new()) || sp->err)) {
            int e = sp ? sp->err : ENOMEM;
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            api_spool_free(sp);
            http_reply_error(r->req, 507, "insufficient_storage",
                             "the control plane could not spool the file: %s", strerror(e));
            return;
        }
        int wrc = n ? api_spool_write(sp, resp->data.data, n) : 0;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (wrc != 0) {
            http_reply_error(r->req, 507, "insufficient_storage",
                             "the control plane could not spool the file: %s", strerror(sp->err));
            api_spool_free(sp);
            return;
        }
        off += n;
        if (end) break;
    }
    sandbox_ops_touch(&c, r->id);
    char q[LOG_QUOTE_MAX];
    log_info("event=file_read sandbox_id=%s path=\"%s\" bytes=%llu", r->id,
             log_quote(path, q, sizeof q), (unsigned long long)sp->size);
    http_reply_stream(r->req, 200, "application/octet-stream", (int64_t)sp->size, spool_read, sp,
                      api_spool_free);
}

/* ------------------------------------------------------------ list */

void api_files_list(api_request *r)
{
    char path[API_PATH_MAX + 1], limstr[16];
    if (query_path(r, path, sizeof path) != 0) return;
    long limit = API_FILES_LIST_DEFAULT;
    int lrc = query_get(http_request_query(r->req), "limit", limstr, sizeof limstr);
    if (lrc != 0) {
        char *end;
        limit = strtol(limstr, &end, 10);
        if (lrc < 0 || !*limstr || *end || limit < 1 || limit > API_FILES_LIST_MAX) {
            http_reply_error(r->req, 400, "invalid_request",
                             "query parameter \"limit\" must be 1..%d", API_FILES_LIST_MAX);
            return;
        }
    }
    rpc_client *client;
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_open_awake(&c, r->id, &client, &res);
    if (res.outcome != SBOP_OK) {
        api_reply_outcome(r, "list_files", &res, 200);
        return;
    }
    Torpor__Hostagent__V1__ListDirResponse *resp;
    terr err;
    grpc_status_code st = agent_list_dir(client, r->id, path, (uint32_t)limit, &resp, &err);
    if (st != GRPC_STATUS_OK) {
        api_reply_agent_error(r, "list_files", st, &err);
        return;
    }
    if (resp->guest_errno != 0) {
        reply_guest_errno(r, "list_files", resp->guest_errno, resp->message, path);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < resp->n_entries; i++) {
        const Torpor__Hostagent__V1__DirEntry *e = resp->entries[i];
        char when[TIME_RFC3339_LEN];
        json_t *j = NULL;
        if (time_util_format_rfc3339(e->mtime_unix * 1000000, when, &err) == 0)
            j = json_pack("{s:s, s:s, s:I, s:i, s:s}", "name", e->name, "type", e->type, "size",
                          (json_int_t)e->size, "mode", (int)e->mode, "mtime", when);
        if (!j || json_array_append_new(arr, j) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    json_t *out = arr ? json_pack("{s:s, s:o, s:b}", "path", path, "entries", arr, "truncated",
                                  resp->truncated)
                      : NULL;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (!out) {
        terr_set(&err, "building the listing failed");
        api_reply_internal(r, &err);
        return;
    }
    sandbox_ops_touch(&c, r->id);
    http_reply_json(r->req, 200, out);
}
