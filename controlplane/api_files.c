#include "api_files.h"

#include <stdlib.h>
#include <string.h>

#include "api_files_stream.h"
#include "api_validate.h"
#include "http_server.h"
#include "json_util.h"
#include "log.h"
#include "multipart.h"

/* ------------------------------------------------------------ intake */

/* What arrives of a files/write body (I/O thread): JSON is buffered up to
 * the route's limit (it is parsed whole); multipart/form-data is parsed as
 * it comes, its "path" kept (at most API_PATH_MAX bytes) and its "file"
 * written to a spool, so an upload of any size holds no more memory than
 * the parser's window. The first field of each name wins. */
enum { PART_IGNORE, PART_PATH, PART_FILE };

typedef struct write_intake {
    bool multipart;
    bool too_large; /* JSON over the limit: dropped, answered 413 */
    char *json;
    size_t json_len, json_cap;
    multipart_stream *mp;
    bool failed; /* multipart: malformed; err says why (answered 400) */
    terr err;
    int part;
    bool has_path, has_file, path_too_long;
    char path[API_PATH_MAX + 1];
    size_t path_len;
    api_spool *spool;
} write_intake;

static void intake_free(void *p)
{
    write_intake *in = p;
    if (!in) return;
    free(in->json);
    multipart_stream_free(in->mp);
    api_spool_free(in->spool);
    free(in);
}

static int part_begin(void *cls, const char *name, size_t n, terr *err)
{
    (void)err;
    write_intake *in = cls;
    in->part = PART_IGNORE;
    if (n == 4 && memcmp(name, "path", 4) == 0 && !in->has_path) {
        in->part = PART_PATH;
        in->has_path = true;
    } else if (n == 4 && memcmp(name, "file", 4) == 0 && !in->has_file) {
        in->part = PART_FILE;
        in->has_file = true;
        if (!(in->spool = api_spool_new())) return terr_set(err, "out of memory");
    }
    return 0;
}

static int part_data(void *cls, const char *data, size_t len, terr *err)
{
    (void)err;
    write_intake *in = cls;
    if (in->part == PART_PATH) {
        if (in->path_len + len > API_PATH_MAX) {
            in->path_too_long = true;
            return 0;
        }
        memcpy(in->path + in->path_len, data, len);
        in->path_len += len;
        in->path[in->path_len] = '\0';
    } else if (in->part == PART_FILE) {
        api_spool_write(in->spool, data, len); /* a failure is kept in spool->err */
    }
    return 0;
}

static int part_end(void *cls, terr *err)
{
    (void)err;
    ((write_intake *)cls)->part = PART_IGNORE;
    return 0;
}

int api_files_write_body(void *cls, http_request *req, const char *data, size_t len)
{
    (void)cls;
    write_intake *in = http_request_data(req);
    if (!in) {
        if (!(in = calloc(1, sizeof *in))) return -1;
        http_request_set_data(req, in, intake_free);
        const char *ct = http_request_header(req, "Content-Type");
        if (multipart_is_form_data(ct)) {
            in->multipart = true;
            char boundary[80];
            multipart_cb cb = {.begin = part_begin, .data = part_data, .end = part_end, .cls = in};
            if (multipart_boundary(ct, boundary, sizeof boundary, &in->err) != 0 ||
                !(in->mp = multipart_stream_new(boundary, &cb, &in->err)))
                in->failed = true;
        }
    }
    if (in->multipart) {
        /* A malformed body is drained, so the client reads the 400. */
        if (!in->failed && multipart_stream_feed(in->mp, data, len, &in->err) != 0)
            in->failed = true;
        return 0;
    }
    if (in->too_large) return 0;
    if (in->json_len + len > API_FILES_BODY_LIMIT) {
        in->too_large = true;
        free(in->json);
        in->json = NULL;
        in->json_len = in->json_cap = 0;
        return 0;
    }
    if (in->json_len + len > in->json_cap) {
        size_t cap = in->json_cap ? in->json_cap : 65536;
        while (cap < in->json_len + len) cap *= 2;
        char *g = realloc(in->json, cap);
        if (!g) return -1;
        in->json = g;
        in->json_cap = cap;
    }
    memcpy(in->json + in->json_len, data, len);
    in->json_len += len;
    return 0;
}

/* ------------------------------------------------------------ write */

/* Checks what the intake gathered; replies 400/413/507 and returns -1 when
 * it cannot be written. JSON: *json owns the body, *path and *content point
 * into it / a decoded copy (*decoded, to free). */
static int check_intake(api_request *r, write_intake *in, json_t **json, const char **path,
                        uint8_t **decoded, size_t *len)
{
    terr err;
    if (in && in->too_large) {
        http_reply_error(r->req, 413, "too_large",
                         "request body over the %d-byte limit of a JSON files/write "
                         "(use multipart or PUT files/content for large files)",
                         API_FILES_BODY_LIMIT);
        return -1;
    }
    if (in && in->multipart) {
        if (!in->failed && multipart_stream_finish(in->mp, &in->err) != 0) in->failed = true;
        const char *why = in->failed          ? in->err.msg
                          : !in->has_path     ? "multipart field \"path\" is required"
                          : !in->has_file     ? "multipart field \"file\" is required"
                          : in->path_too_long ? "multipart field \"path\" is longer than 4096 bytes"
                                              : NULL;
        if (why) {
            http_reply_error(r->req, 400, "invalid_request", "%s", why);
            return -1;
        }
        if (api_validate_path(in->path, in->path_len, &err) != 0) {
            http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
            return -1;
        }
        if (in->spool->err) {
            http_reply_error(r->req, 507, "insufficient_storage",
                             "the control plane could not spool the upload: %s",
                             strerror(in->spool->err));
            return -1;
        }
        *path = in->path;
        *len = (size_t)in->spool->size;
        return 0;
    }
    const char *body = in ? in->json : "";
    if (json_util_parse_object(body ? body : "", in ? in->json_len : 0, false, json, &err) != 0 ||
        api_validate_file_write(*json, path, decoded, len, &err) != 0) {
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        return -1;
    }
    return 0;
}

void api_files_write(api_request *r)
{
    write_intake *in = http_request_data(r->req);
    json_t *json = NULL;
    const char *path = NULL;
    uint8_t *decoded = NULL;
    size_t len = 0;
    if (check_intake(r, in, &json, &path, &decoded, &len) != 0) goto out;
    rpc_client *client;
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_open_awake(&c, r->id, &client, &res);
    if (res.outcome != SBOP_OK) {
        api_reply_outcome(r, "write_file", &res, 204);
        goto out;
    }
    /* Through the chunk calls like PUT files/content: no guest frame cap,
     * the limit is the guest's free disk. */
    static const uint8_t empty[1];
    bool from_spool = in && in->multipart;
    if (api_files_push(r, client, path, 0644, from_spool ? NULL : (decoded ? decoded : empty),
                       from_spool ? in->spool->fd : -1, len) == 0) {
        sandbox_ops_touch(&c, r->id);
        log_info("event=file_written sandbox_id=%s bytes=%zu", r->id, len);
        http_reply_empty(r->req, 204);
    }
out:
    free(decoded);
    json_decref(json);
}

void api_files_read(api_request *r)
{
    json_t *body = api_body_json(r, false);
    if (!body) return;
    const char *path;
    terr err;
    if (api_validate_file_read(body, &path, &err) != 0) {
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        json_decref(body);
        return;
    }
    rpc_client *client;
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_open_awake(&c, r->id, &client, &res);
    if (res.outcome != SBOP_OK) {
        api_reply_outcome(r, "read_file", &res, 200);
        json_decref(body);
        return;
    }
    Torpor__Hostagent__V1__ReadFileResponse *rf;
    grpc_status_code st = agent_read_file(client, r->id, path, &rf, &err);
    if ((st == GRPC_STATUS_INTERNAL || st == GRPC_STATUS_NOT_FOUND) &&
        strcasestr(err.msg, "no such file")) {
        /* The agent reports a guest-side failure as INTERNAL with the guest's
         * text ("no such file: PATH"); a missing file is the caller's 404, not
         * a 502. NOT_FOUND covers an agent that maps it itself. */
        char q[LOG_QUOTE_MAX];
        log_info("event=file_not_found sandbox_id=%s error=\"%s\"", r->id,
                 log_quote(err.msg, q, sizeof q));
        http_reply_error(r->req, 404, "not_found", "file %s not found in sandbox %s (%s)", path,
                         r->id, err.msg);
        json_decref(body);
        return;
    }
    json_decref(body);
    if (st != GRPC_STATUS_OK) {
        api_reply_agent_error(r, "read_file", st, &err);
        return;
    }
    sandbox_ops_touch(&c, r->id);
    http_reply_bytes(r->req, 200, "application/octet-stream", rf->content.data, rf->content.len);
    protobuf_c_message_free_unpacked(&rf->base, NULL);
}
