#include "api_files.h"

#include <stdlib.h>
#include <string.h>

#include "api_validate.h"
#include "guest_protocol.h"
#include "http_server.h"
#include "json_util.h"
#include "log.h"
#include "multipart.h"

/* Path and content of a files/write request, from JSON or multipart. */
typedef struct write_input {
    json_t *json;     /* owns path when JSON */
    char *path;       /* malloc'd copy when multipart */
    const char *path_ref;
    uint8_t *decoded; /* malloc'd content (JSON base64) */
    const uint8_t *content;
    size_t content_len;
} write_input;

static void write_input_free(write_input *in)
{
    json_decref(in->json);
    free(in->path);
    free(in->decoded);
}

static int parse_write(api_request *r, write_input *in, terr *err)
{
    memset(in, 0, sizeof *in);
    const char *ct = http_request_header(r->req, "Content-Type");
    if (multipart_is_form_data(ct)) {
        char boundary[80];
        const char *path, *file;
        size_t path_len, file_len;
        bool has_path, has_file;
        if (multipart_boundary(ct, boundary, sizeof boundary, err) != 0 ||
            multipart_field(r->body, r->body_len, boundary, "path", &path, &path_len, &has_path, err) != 0 ||
            multipart_field(r->body, r->body_len, boundary, "file", &file, &file_len, &has_file, err) != 0)
            return -1;
        if (!has_path) return terr_set(err, "multipart field \"path\" is required");
        if (!has_file) return terr_set(err, "multipart field \"file\" is required");
        if (api_validate_path(path, path_len, err) != 0) return -1;
        if (!(in->path = strndup(path, path_len))) return terr_set(err, "out of memory");
        in->path_ref = in->path;
        in->content = (const uint8_t *)file;
        in->content_len = file_len;
        return 0;
    }
    json_t *body;
    if (json_util_parse_object(r->body, r->body_len, false, &body, err) != 0) return -1;
    in->json = body;
    if (api_validate_file_write(body, &in->path_ref, &in->decoded, &in->content_len, err) != 0) return -1;
    in->content = in->decoded;
    return 0;
}

void api_files_write(api_request *r)
{
    write_input in;
    terr err;
    if (parse_write(r, &in, &err) != 0) {
        http_reply_error(r->req, 400, "invalid_request", "%s", err.msg);
        write_input_free(&in);
        return;
    }
    if (in.content_len > GP_FILE_MAX) {
        /* The body limit is larger (base64 inflates by 4/3), so the content
         * itself is checked against what the guest accepts. */
        http_reply_error(r->req, 413, "too_large", "file content of %zu bytes is over the %u-byte limit",
                         in.content_len, (unsigned)GP_FILE_MAX);
        write_input_free(&in);
        return;
    }
    rpc_client *client;
    sbop_ctx c = api_ops_ctx(r);
    sbop_result res;
    sandbox_ops_open_awake(&c, r->id, &client, &res);
    if (res.outcome != SBOP_OK) {
        api_reply_outcome(r, "write_file", &res, 204);
        write_input_free(&in);
        return;
    }
    grpc_status_code st = agent_write_file(client, r->id, in.path_ref, in.content, in.content_len, &err);
    if (st != GRPC_STATUS_OK) {
        api_reply_agent_error(r, "write_file", st, &err);
    } else {
        sandbox_ops_touch(&c, r->id);
        log_info("event=file_written sandbox_id=%s bytes=%zu", r->id, in.content_len);
        http_reply_empty(r->req, 204);
    }
    write_input_free(&in);
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
    if ((st == GRPC_STATUS_INTERNAL || st == GRPC_STATUS_NOT_FOUND) && strcasestr(err.msg, "no such file")) {
        /* The agent reports a guest-side failure as INTERNAL with the guest's
         * text ("no such file: PATH"); a missing file is the caller's 404, not
         * a 502. NOT_FOUND covers an agent that maps it itself. */
        char q[LOG_QUOTE_MAX];
        log_info("event=file_not_found sandbox_id=%s error=\"%s\"", r->id, log_quote(err.msg, q, sizeof q));
        http_reply_error(r->req, 404, "not_found", "file %s not found in sandbox %s (%s)", path, r->id, err.msg);
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
