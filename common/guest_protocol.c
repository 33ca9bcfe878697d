/* guest_protocol: frame and message encoding, and frame I/O on a file
 * descriptor (see guest_protocol.h).
 *
 * Over 600 lines on purpose: it is the whole wire format of one protocol,
 * and the header codec, the frame writer/reader and each message's encoder
 * and decoder must change together (a field added to one message touches
 * its encoder, decoder and free in this file and nowhere else); most of the
 * length is those per-message pairs. */
#include "guest_protocol.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mono_time.h"

/* ---- gp_buf ---- */

void gp_buf_init(gp_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void gp_buf_free(gp_buf *b)
{
    free(b->data);
    gp_buf_init(b);
}

void gp_buf_reset(gp_buf *b) { b->len = 0; }

static int buf_reserve(gp_buf *b, size_t extra, terr *err)
{
    if (extra > SIZE_MAX - b->len) return terr_set(err, "buffer size overflow");
    size_t need = b->len + extra;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return terr_set(err, "out of memory growing buffer to %zu bytes", cap);
    b->data = d;
    b->cap = cap;
    return 0;
}

int gp_buf_append(gp_buf *b, const void *data, size_t len, terr *err)
{
    if (len == 0) return 0;
    if (buf_reserve(b, len, err) < 0) return -1;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* ---- little-endian helpers ---- */

static void le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le64_put(uint8_t *p, uint64_t v)
{
    le32_put(p, (uint32_t)v);
    le32_put(p + 4, (uint32_t)(v >> 32));
}

static uint64_t le64_get(const uint8_t *p)
{
    return (uint64_t)le32_get(p) | (uint64_t)le32_get(p + 4) << 32;
}

/* ---- header and frames ---- */

static const char *const type_names[] = {
    [GP_PING] = "PING",
    [GP_PONG] = "PONG",
    [GP_EXEC] = "EXEC",
    [GP_EXEC_RESULT] = "EXEC_RESULT",
    [GP_READ_FILE] = "READ_FILE",
    [GP_READ_RESULT] = "READ_RESULT",
    [GP_WRITE_FILE] = "WRITE_FILE",
    [GP_WRITE_RESULT] = "WRITE_RESULT",
    [GP_SYNC] = "SYNC",
    [GP_SYNC_RESULT] = "SYNC_RESULT",
    [GP_ERROR] = "ERROR",
    [GP_WRITE_CHUNK] = "WRITE_CHUNK",
    [GP_CHUNK_RESULT] = "CHUNK_RESULT",
    [GP_READ_CHUNK] = "READ_CHUNK",
    [GP_READ_CHUNK_RESULT] = "READ_CHUNK_RESULT",
    [GP_LIST_DIR] = "LIST_DIR",
    [GP_LIST_RESULT] = "LIST_RESULT",
};

const char *gp_type_name(int type)
{
    if (type < GP_TYPE_MIN || type > GP_TYPE_MAX) return "UNKNOWN";
    return type_names[type];
}

void gp_header_encode(uint8_t out[GP_HEADER_SIZE], uint8_t type, uint32_t request_id,
                      uint32_t payload_len)
{
    le32_put(out, GP_MAGIC);
    out[4] = GP_VERSION;
    out[5] = type;
    out[6] = 0;
    out[7] = 0;
    le32_put(out + 8, request_id);
    le32_put(out + 12, payload_len);
}

int gp_header_decode(const uint8_t in[GP_HEADER_SIZE], gp_header *h, terr *err)
{
    h->magic = le32_get(in);
    h->version = in[4];
    h->type = in[5];
    h->flags = (uint16_t)(in[6] | in[7] << 8);
    h->request_id = le32_get(in + 8);
    h->payload_len = le32_get(in + 12);
    if (h->magic != GP_MAGIC)
        return terr_set(err, "bad frame magic 0x%08x (want 0x%08x)", h->magic, GP_MAGIC);
    if (h->version != GP_VERSION)
        return terr_set(err, "unsupported frame version %u (want %u)", h->version, GP_VERSION);
    if (h->type < GP_TYPE_MIN || h->type > GP_TYPE_MAX)
        return terr_set(err, "unknown frame type %u", h->type);
    if (h->flags != 0) return terr_set(err, "unsupported frame flags 0x%04x", h->flags);
    if (h->payload_len > GP_MAX_PAYLOAD)
        return terr_set(err, "frame payload of %u bytes exceeds the %u byte limit", h->payload_len,
                        GP_MAX_PAYLOAD);
    return 0;
}

int gp_frame_encode(gp_buf *b, uint8_t type, uint32_t request_id, const void *payload, size_t len,
                    terr *err)
{
    if (len > GP_MAX_PAYLOAD)
        return terr_set(err, "frame payload of %zu bytes exceeds the %u byte limit", len,
                        GP_MAX_PAYLOAD);
    uint8_t hdr[GP_HEADER_SIZE];
    gp_header_encode(hdr, type, request_id, (uint32_t)len);
    if (buf_reserve(b, sizeof hdr + len, err) < 0) return -1;
    gp_buf_append(b, hdr, sizeof hdr, NULL);
    gp_buf_append(b, payload, len, NULL);
    return 0;
}

/* Writes iov[0..iovcnt) whole (see gp_write_framev). */
static int write_all(int fd, struct iovec *iov, int iovcnt, terr *err)
{
    bool is_sock = true;
    while (iovcnt > 0) {
        ssize_t n;
        if (is_sock) {
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
            n = sendmsg(fd, &mh, MSG_NOSIGNAL);
            if (n < 0 && errno == ENOTSOCK) {
                is_sock = false;
                continue;
            }
        } else {
            n = writev(fd, iov, iovcnt);
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return terr_set(err, "write frame: %s", strerror(errno));
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (poll(&pf, 1, -1) < 0 && errno != EINTR)
                return terr_set(err, "write frame: poll: %s", strerror(errno));
            if (pf.revents & (POLLHUP | POLLERR | POLLNVAL))
                return terr_set(err, "write frame: peer disconnected");
            continue;
        }
        if (n == 0) return terr_set(err, "write frame: wrote 0 bytes");
        size_t left = (size_t)n;
        while (iovcnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

int gp_write_framev(int fd, uint8_t type, uint32_t request_id, const struct iovec *payload, int n,
                    terr *err)
{
    if (n < 0 || n > GP_IOV_MAX) return terr_set(err, "write frame: %d payload pieces", n);
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (payload[i].iov_len > GP_MAX_PAYLOAD - len)
            return terr_set(err, "frame payload exceeds the %u byte limit", GP_MAX_PAYLOAD);
        len += payload[i].iov_len;
    }
    if (type < GP_TYPE_MIN || type > GP_TYPE_MAX)
        return terr_set(err, "write frame: unknown type %u", type);
    uint8_t hdr[GP_HEADER_SIZE];
    gp_header_encode(hdr, type, request_id, (uint32_t)len);
    struct iovec iov[1 + GP_IOV_MAX];
    iov[0] = (struct iovec){.iov_base = hdr, .iov_len = sizeof hdr};
    int k = 1;
    for (int i = 0; i < n; i++)
        if (payload[i].iov_len) iov[k++] = payload[i];
    return write_all(fd, iov, k, err);
}

int gp_write_frame(int fd, uint8_t type, uint32_t request_id, const void *payload, size_t len,
                   terr *err)
{
    if (len > GP_MAX_PAYLOAD)
        return terr_set(err, "frame payload of %zu bytes exceeds the %u byte limit", len,
                        GP_MAX_PAYLOAD);
    struct iovec one = {.iov_base = (void *)payload, .iov_len = len};
    return gp_write_framev(fd, type, request_id, &one, len ? 1 : 0, err);
}

/* Reads exactly n bytes before deadline_ms (< 0: none). what names the part
 * for the error message. */
static int read_all(int fd, uint8_t *p, size_t n, const char *what, int64_t deadline_ms,
                    int timeout_ms, terr *err)
{
    size_t got = 0;
    while (got < n) {
        int wait_ms = -1;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - mono_ms();
            if (left <= 0) {
                terr_set(err, "frame incomplete after %d ms (%zu of %zu %s bytes)", timeout_ms, got,
                         n, what);
                return GP_FRAME_BAD;
            }
            wait_ms = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, wait_ms);
        if (r < 0 && errno != EINTR) {
            terr_set(err, "read frame %s: poll: %s", what, strerror(errno));
            return GP_FRAME_IO;
        }
        if (r <= 0) continue;
        ssize_t k = read(fd, p + got, n - got);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            terr_set(err, "read frame %s: %s", what, strerror(errno));
            return GP_FRAME_IO;
        }
        if (k == 0) {
            if (got == 0 && strcmp(what, "header") == 0)
                terr_set(err, "read frame: eof (connection closed)");
            else
                terr_set(err, "read frame %s: eof after %zu of %zu bytes (connection closed)", what,
                         got, n);
            return GP_FRAME_IO;
        }
        got += (size_t)k;
    }
    return 0;
}

int gp_read_frame_within(int fd, gp_header *h, uint8_t **payload, int timeout_ms, terr *err)
{
    *payload = NULL;
    int64_t deadline = timeout_ms >= 0 ? mono_ms() + timeout_ms : -1;
    uint8_t hdr[GP_HEADER_SIZE];
    int rc = read_all(fd, hdr, sizeof hdr, "header", deadline, timeout_ms, err);
    if (rc < 0) return rc;
    if (gp_header_decode(hdr, h, err) < 0) return GP_FRAME_BAD;
    if (h->payload_len == 0) return 0;
    uint8_t *p = malloc(h->payload_len);
    if (!p) {
        terr_set(err, "out of memory for a %u byte frame", h->payload_len);
        return GP_FRAME_BAD;
    }
    rc = read_all(fd, p, h->payload_len, "payload", deadline, timeout_ms, err);
    if (rc < 0) {
        free(p);
        return rc;
    }
    *payload = p;
    return 0;
}

int gp_read_frame(int fd, gp_header *h, uint8_t **payload, terr *err)
{
    return gp_read_frame_within(fd, h, payload, -1, err) < 0 ? -1 : 0;
}

/* ---- field writers ---- */

static int put_u32(gp_buf *b, uint32_t v, terr *err)
{
    uint8_t t[4];
    le32_put(t, v);
    return gp_buf_append(b, t, sizeof t, err);
}

static int put_u64(gp_buf *b, uint64_t v, terr *err)
{
    uint8_t t[8];
    le64_put(t, v);
    return gp_buf_append(b, t, sizeof t, err);
}

static int put_blob(gp_buf *b, const void *p, size_t len, const char *field, terr *err)
{
    if (len > GP_MAX_PAYLOAD)
        return terr_set(err, "field %s of %zu bytes exceeds the %u byte frame limit", field, len,
                        GP_MAX_PAYLOAD);
    if (len && !p) return terr_set(err, "field %s: NULL data with length %zu", field, len);
    if (put_u32(b, (uint32_t)len, err) < 0) return -1;
    return gp_buf_append(b, p, len, err);
}

/* required: a NULL string is an error, else it encodes as "". */
static int put_str(gp_buf *b, const char *s, bool required, const char *field, terr *err)
{
    if (!s) {
        if (required) return terr_set(err, "field %s is required", field);
        s = "";
    }
    return put_blob(b, s, strlen(s), field, err);
}

static int put_str_list(gp_buf *b, const char *const *v, size_t n, const char *field, terr *err)
{
    if (n > UINT32_MAX) return terr_set(err, "field %s: too many entries", field);
    if (n && !v) return terr_set(err, "field %s: NULL list with %zu entries", field, n);
    if (put_u32(b, (uint32_t)n, err) < 0) return -1;
    for (size_t i = 0; i < n; i++)
        if (put_str(b, v[i], true, field, err) < 0) return -1;
    return 0;
}

/* Runs after an encoder: the message must fit one frame. */
static int check_size(const gp_buf *b, size_t start, const char *msg, terr *err)
{
    if (b->len - start > GP_MAX_PAYLOAD)
        return terr_set(err, "%s message of %zu bytes exceeds the %u byte frame limit", msg,
                        b->len - start, GP_MAX_PAYLOAD);
    return 0;
}

/* ---- field reader ---- */

typedef struct reader {
    const uint8_t *p;
    size_t len;
    size_t pos;
    const char *msg; /* message name for errors */
    terr *err;
} reader;

static int rd_need(reader *r, size_t n, const char *field)
{
    if (r->len - r->pos < n)
        return terr_set(r->err, "%s: truncated at field %s (need %zu bytes, %zu left)", r->msg,
                        field, n, r->len - r->pos);
    return 0;
}

static int rd_u32(reader *r, uint32_t *v, const char *field)
{
    if (rd_need(r, 4, field) < 0) return -1;
    *v = le32_get(r->p + r->pos);
    r->pos += 4;
    return 0;
}

static int rd_i32(reader *r, int32_t *v, const char *field)
{
    uint32_t u;
    if (rd_u32(r, &u, field) < 0) return -1;
    memcpy(v, &u, sizeof *v);
    return 0;
}

static int rd_u64(reader *r, uint64_t *v, const char *field)
{
    if (rd_need(r, 8, field) < 0) return -1;
    *v = le64_get(r->p + r->pos);
    r->pos += 8;
    return 0;
}

/* Copies a blob; *out is never NULL on success (malloc of at least 1 byte). */
static int rd_blob(reader *r, uint8_t **out, size_t *len, const char *field)
{
    uint32_t n;
    if (rd_u32(r, &n, field) < 0) return -1;
    if (rd_need(r, n, field) < 0) return -1;
    uint8_t *c = malloc(n ? n : 1);
    if (!c) return terr_set(r->err, "%s: out of memory for field %s", r->msg, field);
    memcpy(c, r->p + r->pos, n);
    r->pos += n;
    *out = c;
    *len = n;
    return 0;
}

static int rd_str(reader *r, char **out, const char *field)
{
    uint32_t n;
    if (rd_u32(r, &n, field) < 0) return -1;
    if (rd_need(r, n, field) < 0) return -1;
    if (memchr(r->p + r->pos, '\0', n))
        return terr_set(r->err, "%s: field %s contains a NUL byte", r->msg, field);
    char *c = malloc((size_t)n + 1);
    if (!c) return terr_set(r->err, "%s: out of memory for field %s", r->msg, field);
    memcpy(c, r->p + r->pos, n);
    c[n] = '\0';
    r->pos += n;
    *out = c;
    return 0;
}

static int rd_str_list(reader *r, const char *const **out, size_t *count, const char *field)
{
    uint32_t n;
    if (rd_u32(r, &n, field) < 0) return -1;
    /* Each entry needs at least its 4-byte length: reject absurd counts
     * before allocating anything. */
    if (n > (r->len - r->pos) / 4)
        return terr_set(r->err, "%s: field %s claims %u entries, more than the payload holds",
                        r->msg, field, n);
    char **v = calloc(n ? n : 1, sizeof *v);
    if (!v) return terr_set(r->err, "%s: out of memory for field %s", r->msg, field);
    *out = (const char *const *)v;
    for (uint32_t i = 0; i < n; i++) {
        if (rd_str(r, &v[i], field) < 0) return -1;
        *count = i + 1; /* so a failure frees exactly what was read */
    }
    *count = n;
    return 0;
}

static int rd_end(reader *r)
{
    if (r->pos != r->len)
        return terr_set(r->err, "%s: %zu unexpected trailing bytes", r->msg, r->len - r->pos);
    return 0;
}

static reader rd_make(const uint8_t *p, size_t len, const char *msg, terr *err)
{
    reader r = {.p = p, .len = p ? len : 0, .pos = 0, .msg = msg, .err = err};
    return r;
}

static void free_str_list(const char *const *v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++) free((void *)v[i]);
    free((void *)v);
}

/* ---- messages ---- */

int gp_decode_empty(const uint8_t *p, size_t len, terr *err)
{
    if (len != 0) return terr_set(err, "PING: expected an empty payload, got %zu bytes", len);
    return 0;
}

int gp_encode_pong(gp_buf *b, const gp_pong *m, terr *err) { return put_u64(b, m->uptime_ns, err); }

int gp_decode_pong(const uint8_t *p, size_t len, gp_pong *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "PONG", err);
    if (rd_u64(&r, &out->uptime_ns, "uptime_ns") < 0 || rd_end(&r) < 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    return 0;
}

int gp_encode_exec(gp_buf *b, const gp_exec_req *m, terr *err)
{
    size_t start = b->len;
    if (put_str(b, m->cmd, true, "cmd", err) < 0 ||
        put_str_list(b, m->args, m->n_args, "args", err) < 0 ||
        put_str_list(b, m->env, m->n_env, "env", err) < 0 ||
        put_str(b, m->cwd, false, "cwd", err) < 0 ||
        put_u32(b, (uint32_t)m->timeout_sec, err) < 0 ||
        put_blob(b, m->stdin_data, m->stdin_len, "stdin", err) < 0)
        return -1;
    return check_size(b, start, "EXEC", err);
}

void gp_exec_req_free(gp_exec_req *m)
{
    free((void *)m->cmd);
    free_str_list(m->args, m->n_args);
    free_str_list(m->env, m->n_env);
    free((void *)m->cwd);
    free((void *)m->stdin_data);
    memset(m, 0, sizeof *m);
}

int gp_decode_exec(const uint8_t *p, size_t len, gp_exec_req *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "EXEC", err);
    char *cmd = NULL, *cwd = NULL;
    uint8_t *in = NULL;
    int rc = rd_str(&r, &cmd, "cmd");
    out->cmd = cmd;
    if (rc == 0) rc = rd_str_list(&r, &out->args, &out->n_args, "args");
    if (rc == 0) rc = rd_str_list(&r, &out->env, &out->n_env, "env");
    if (rc == 0) rc = rd_str(&r, &cwd, "cwd");
    out->cwd = cwd;
    if (rc == 0) rc = rd_i32(&r, &out->timeout_sec, "timeout_sec");
    if (rc == 0) rc = rd_blob(&r, &in, &out->stdin_len, "stdin");
    out->stdin_data = in;
    if (rc == 0) rc = rd_end(&r);
    if (rc == 0 && cmd[0] == '\0') rc = terr_set(err, "EXEC: cmd is empty");
    if (rc < 0) gp_exec_req_free(out);
    return rc;
}

/* Appends the iov pieces to b (the copying form of the *_iov encoders). */
static int append_iov(gp_buf *b, const struct iovec *iov, int n, size_t total, terr *err)
{
    if (buf_reserve(b, total, err) < 0) return -1;
    for (int i = 0; i < n; i++) gp_buf_append(b, iov[i].iov_base, iov[i].iov_len, NULL);
    return 0;
}

static int iov_blob_ok(const void *p, size_t len, const char *field, terr *err)
{
    if (len > GP_MAX_PAYLOAD)
        return terr_set(err, "field %s of %zu bytes exceeds the %u byte frame limit", field, len,
                        GP_MAX_PAYLOAD);
    if (len && !p) return terr_set(err, "field %s: NULL data with length %zu", field, len);
    return 0;
}

int gp_exec_result_iov(const gp_exec_result *m, gp_iov_scratch *scratch,
                       struct iovec iov[GP_IOV_MAX], size_t *total, terr *err)
{
    if (iov_blob_ok(m->out, m->out_len, "stdout", err) < 0 ||
        iov_blob_ok(m->err, m->err_len, "stderr", err) < 0)
        return -1;
    uint32_t flags = (m->timed_out ? GP_EXEC_F_TIMED_OUT : 0) |
                     (m->stdout_truncated ? GP_EXEC_F_STDOUT_TRUNCATED : 0) |
                     (m->stderr_truncated ? GP_EXEC_F_STDERR_TRUNCATED : 0);
    uint8_t *s = scratch->b;
    le32_put(s, (uint32_t)m->exit_code);
    le32_put(s + 4, flags);
    le32_put(s + 8, (uint32_t)m->out_len);
    le32_put(s + 12, (uint32_t)m->err_len);
    iov[0] = (struct iovec){.iov_base = s, .iov_len = 12};
    iov[1] = (struct iovec){.iov_base = (void *)m->out, .iov_len = m->out_len};
    iov[2] = (struct iovec){.iov_base = s + 12, .iov_len = 4};
    iov[3] = (struct iovec){.iov_base = (void *)m->err, .iov_len = m->err_len};
    *total = 16 + m->out_len + m->err_len;
    if (*total > GP_MAX_PAYLOAD)
        return terr_set(err, "EXEC_RESULT message of %zu bytes exceeds the %u byte frame limit",
                        *total, GP_MAX_PAYLOAD);
    return 4;
}

int gp_encode_exec_result(gp_buf *b, const gp_exec_result *m, terr *err)
{
    gp_iov_scratch scratch;
    struct iovec iov[GP_IOV_MAX];
    size_t total;
    int n = gp_exec_result_iov(m, &scratch, iov, &total, err);
    return n < 0 ? -1 : append_iov(b, iov, n, total, err);
}

void gp_exec_result_free(gp_exec_result *m)
{
    free((void *)m->out);
    free((void *)m->err);
    memset(m, 0, sizeof *m);
}

int gp_decode_exec_result(const uint8_t *p, size_t len, gp_exec_result *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "EXEC_RESULT", err);
    uint32_t flags = 0;
    uint8_t *o = NULL, *e = NULL;
    int rc = rd_i32(&r, &out->exit_code, "exit_code");
    if (rc == 0) rc = rd_u32(&r, &flags, "flags");
    if (rc == 0 &&
        (flags & ~(GP_EXEC_F_TIMED_OUT | GP_EXEC_F_STDOUT_TRUNCATED | GP_EXEC_F_STDERR_TRUNCATED)))
        rc = terr_set(err, "EXEC_RESULT: unknown flags 0x%x", flags);
    if (rc == 0) rc = rd_blob(&r, &o, &out->out_len, "stdout");
    out->out = o;
    if (rc == 0) rc = rd_blob(&r, &e, &out->err_len, "stderr");
    out->err = e;
    if (rc == 0) rc = rd_end(&r);
    if (rc < 0) {
        gp_exec_result_free(out);
        return -1;
    }
    out->timed_out = flags & GP_EXEC_F_TIMED_OUT;
    out->stdout_truncated = flags & GP_EXEC_F_STDOUT_TRUNCATED;
    out->stderr_truncated = flags & GP_EXEC_F_STDERR_TRUNCATED;
    return 0;
}

int gp_encode_read_file(gp_buf *b, const gp_read_file_req *m, terr *err)
{
    size_t start = b->len;
    if (put_str(b, m->path, true, "path", err) < 0) return -1;
    return check_size(b, start, "READ_FILE", err);
}

void gp_read_file_req_free(gp_read_file_req *m)
{
    free((void *)m->path);
    memset(m, 0, sizeof *m);
}

int gp_decode_read_file(const uint8_t *p, size_t len, gp_read_file_req *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "READ_FILE", err);
    char *path = NULL;
    int rc = rd_str(&r, &path, "path");
    out->path = path;
    if (rc == 0) rc = rd_end(&r);
    if (rc == 0 && path[0] == '\0') rc = terr_set(err, "READ_FILE: path is empty");
    if (rc < 0) gp_read_file_req_free(out);
    return rc;
}

int gp_read_result_iov(const gp_read_result *m, gp_iov_scratch *scratch,
                       struct iovec iov[GP_IOV_MAX], size_t *total, terr *err)
{
    const char *msg = m->message ? m->message : "";
    size_t mlen = strlen(msg);
    if (iov_blob_ok(msg, mlen, "message", err) < 0 || iov_blob_ok(m->data, m->len, "data", err) < 0)
        return -1;
    uint8_t *s = scratch->b;
    le32_put(s, (uint32_t)m->status);
    le32_put(s + 4, (uint32_t)mlen);
    le32_put(s + 8, (uint32_t)m->len);
    iov[0] = (struct iovec){.iov_base = s, .iov_len = 8};
    iov[1] = (struct iovec){.iov_base = (void *)msg, .iov_len = mlen};
    iov[2] = (struct iovec){.iov_base = s + 8, .iov_len = 4};
    iov[3] = (struct iovec){.iov_base = (void *)m->data, .iov_len = m->len};
    *total = 12 + mlen + m->len;
    if (*total > GP_MAX_PAYLOAD)
        return terr_set(err, "READ_RESULT message of %zu bytes exceeds the %u byte frame limit",
                        *total, GP_MAX_PAYLOAD);
    return 4;
}

int gp_encode_read_result(gp_buf *b, const gp_read_result *m, terr *err)
{
    gp_iov_scratch scratch;
    struct iovec iov[GP_IOV_MAX];
    size_t total;
    int n = gp_read_result_iov(m, &scratch, iov, &total, err);
    return n < 0 ? -1 : append_iov(b, iov, n, total, err);
}

void gp_read_result_free(gp_read_result *m)
{
    free((void *)m->message);
    free((void *)m->data);
    memset(m, 0, sizeof *m);
}

int gp_decode_read_result(const uint8_t *p, size_t len, gp_read_result *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "READ_RESULT", err);
    char *msg = NULL;
    uint8_t *data = NULL;
    int rc = rd_i32(&r, &out->status, "status");
    if (rc == 0) rc = rd_str(&r, &msg, "message");
    out->message = msg;
    if (rc == 0) rc = rd_blob(&r, &data, &out->len, "data");
    out->data = data;
    if (rc == 0) rc = rd_end(&r);
    if (rc < 0) gp_read_result_free(out);
    return rc;
}

int gp_encode_write_file(gp_buf *b, const gp_write_file_req *m, terr *err)
{
    size_t start = b->len;
    if (put_str(b, m->path, true, "path", err) < 0 || put_u32(b, m->mode, err) < 0 ||
        put_blob(b, m->content, m->len, "content", err) < 0)
        return -1;
    return check_size(b, start, "WRITE_FILE", err);
}

void gp_write_file_req_free(gp_write_file_req *m)
{
    free((void *)m->path);
    free((void *)m->content);
    memset(m, 0, sizeof *m);
}

int gp_decode_write_file(const uint8_t *p, size_t len, gp_write_file_req *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "WRITE_FILE", err);
    char *path = NULL;
    uint8_t *content = NULL;
    int rc = rd_str(&r, &path, "path");
    out->path = path;
    if (rc == 0) rc = rd_u32(&r, &out->mode, "mode");
    if (rc == 0) rc = rd_blob(&r, &content, &out->len, "content");
    out->content = content;
    if (rc == 0) rc = rd_end(&r);
    if (rc == 0 && path[0] == '\0') rc = terr_set(err, "WRITE_FILE: path is empty");
    if (rc == 0 && (out->mode & ~07777u))
        rc = terr_set(err, "WRITE_FILE: mode 0%o has bits beyond 07777", out->mode);
    if (rc < 0) gp_write_file_req_free(out);
    return rc;
}

int gp_encode_status_result(gp_buf *b, const gp_status_result *m, terr *err)
{
    size_t start = b->len;
    if (put_u32(b, (uint32_t)m->status, err) < 0 ||
        put_str(b, m->message, false, "message", err) < 0)
        return -1;
    return check_size(b, start, "status result", err);
}

void gp_status_result_free(gp_status_result *m)
{
    free((void *)m->message);
    memset(m, 0, sizeof *m);
}

int gp_decode_status_result(const uint8_t *p, size_t len, gp_status_result *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "status result", err);
    char *msg = NULL;
    int rc = rd_i32(&r, &out->status, "status");
    if (rc == 0) rc = rd_str(&r, &msg, "message");
    out->message = msg;
    if (rc == 0) rc = rd_end(&r);
    if (rc < 0) gp_status_result_free(out);
    return rc;
}

int gp_encode_sync(gp_buf *b, const gp_sync_req *m, terr *err)
{
    if (m->random_len < GP_SYNC_MIN_RANDOM)
        return terr_set(err, "SYNC: %zu random bytes, need at least %d", m->random_len,
                        GP_SYNC_MIN_RANDOM);
    size_t start = b->len;
    if (put_u64(b, m->unix_time_ns, err) < 0 ||
        put_blob(b, m->random, m->random_len, "random", err) < 0)
        return -1;
    return check_size(b, start, "SYNC", err);
}

void gp_sync_req_free(gp_sync_req *m)
{
    free((void *)m->random);
    memset(m, 0, sizeof *m);
}

int gp_decode_sync(const uint8_t *p, size_t len, gp_sync_req *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "SYNC", err);
    uint8_t *rnd = NULL;
    int rc = rd_u64(&r, &out->unix_time_ns, "unix_time_ns");
    if (rc == 0) rc = rd_blob(&r, &rnd, &out->random_len, "random");
    out->random = rnd;
    if (rc == 0) rc = rd_end(&r);
    if (rc == 0 && out->random_len < GP_SYNC_MIN_RANDOM)
        rc = terr_set(err, "SYNC: %zu random bytes, need at least %d", out->random_len,
                      GP_SYNC_MIN_RANDOM);
    if (rc < 0) gp_sync_req_free(out);
    return rc;
}

int gp_encode_error(gp_buf *b, const gp_error *m, terr *err)
{
    size_t start = b->len;
    if (put_str(b, m->message, false, "message", err) < 0) return -1;
    return check_size(b, start, "ERROR", err);
}

void gp_error_free(gp_error *m)
{
    free((void *)m->message);
    memset(m, 0, sizeof *m);
}

int gp_decode_error(const uint8_t *p, size_t len, gp_error *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "ERROR", err);
    char *msg = NULL;
    int rc = rd_str(&r, &msg, "message");
    out->message = msg;
    if (rc == 0) rc = rd_end(&r);
    if (rc < 0) gp_error_free(out);
    return rc;
}

/* ---- chunked files ---- */

bool gp_upload_id_valid(const char *id)
{
    if (!id) return false;
    size_t n = strlen(id);
    if (n == 0 || n > GP_UPLOAD_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

int gp_encode_write_chunk(gp_buf *b, const gp_write_chunk_req *m, terr *err)
{
    size_t start = b->len;
    if (put_str(b, m->path, true, "path", err) < 0 ||
        put_str(b, m->upload_id, true, "upload_id", err) < 0 || put_u64(b, m->offset, err) < 0 ||
        put_u32(b, m->mode, err) < 0 || put_u32(b, m->flags, err) < 0 ||
        put_blob(b, m->data, m->len, "data", err) < 0)
        return -1;
    return check_size(b, start, "WRITE_CHUNK", err);
}

void gp_write_chunk_req_free(gp_write_chunk_req *m)
{
    free((void *)m->path);
    free((void *)m->upload_id);
    free((void *)m->data);
    memset(m, 0, sizeof *m);
}

int gp_decode_write_chunk(const uint8_t *p, size_t len, gp_write_chunk_req *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "WRITE_CHUNK", err);
    char *path = NULL, *id = NULL;
    uint8_t *data = NULL;
    int rc = rd_str(&r, &path, "path");
    out->path = path;
    if (rc == 0) rc = rd_str(&r, &id, "upload_id");
    out->upload_id = id;
    if (rc == 0) rc = rd_u64(&r, &out->offset, "offset");
    if (rc == 0) rc = rd_u32(&r, &out->mode, "mode");
    if (rc == 0) rc = rd_u32(&r, &out->flags, "flags");
    if (rc == 0) rc = rd_blob(&r, &data, &out->len, "data");
    out->data = data;
    if (rc == 0) rc = rd_end(&r);
    if (rc == 0 && path[0] == '\0') rc = terr_set(err, "WRITE_CHUNK: path is empty");
    if (rc == 0 && !gp_upload_id_valid(id)) rc = terr_set(err, "WRITE_CHUNK: bad upload_id");
    if (rc == 0 && (out->mode & ~07777u))
        rc = terr_set(err, "WRITE_CHUNK: mode 0%o has bits beyond 07777", out->mode);
    if (rc == 0 && (out->flags & ~(GP_CHUNK_F_COMMIT | GP_CHUNK_F_ABORT)))
        rc = terr_set(err, "WRITE_CHUNK: unknown flags 0x%x", out->flags);
    if (rc < 0) gp_write_chunk_req_free(out);
    return rc;
}

int gp_encode_chunk_result(gp_buf *b, const gp_chunk_result *m, terr *err)
{
    size_t start = b->len;
    if (put_u32(b, (uint32_t)m->status, err) < 0 ||
        put_str(b, m->message, false, "message", err) < 0 || put_u64(b, m->size, err) < 0)
        return -1;
    return check_size(b, start, "CHUNK_RESULT", err);
}

void gp_chunk_result_free(gp_chunk_result *m)
{
    free((void *)m->message);
    memset(m, 0, sizeof *m);
}

int gp_decode_chunk_result(const uint8_t *p, size_t len, gp_chunk_result *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "CHUNK_RESULT", err);
    char *msg = NULL;
    int rc = rd_i32(&r, &out->status, "status");
    if (rc == 0) rc = rd_str(&r, &msg, "message");
    out->message = msg;
    if (rc == 0) rc = rd_u64(&r, &out->size, "size");
    if (rc == 0) rc = rd_end(&r);
    if (rc < 0) gp_chunk_result_free(out);
    return rc;
}

int gp_encode_read_chunk(gp_buf *b, const gp_read_chunk_req *m, terr *err)
{
    size_t start = b->len;
    if (put_str(b, m->path, true, "path", err) < 0 || put_u64(b, m->offset, err) < 0 ||
        put_u32(b, m->max_len, err) < 0 || put_u64(b, m->expect_ino, err) < 0)
        return -1;
    return check_size(b, start, "READ_CHUNK", err);
}

void gp_read_chunk_req_free(gp_read_chunk_req *m)
{
    free((void *)m->path);
    memset(m, 0, sizeof *m);
}

int gp_decode_read_chunk(const uint8_t *p, size_t len, gp_read_chunk_req *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "READ_CHUNK", err);
    char *path = NULL;
    int rc = rd_str(&r, &path, "path");
    out->path = path;
    if (rc == 0) rc = rd_u64(&r, &out->offset, "offset");
    if (rc == 0) rc = rd_u32(&r, &out->max_len, "max_len");
    if (rc == 0) rc = rd_u64(&r, &out->expect_ino, "expect_ino");
    if (rc == 0) rc = rd_end(&r);
    if (rc == 0 && path[0] == '\0') rc = terr_set(err, "READ_CHUNK: path is empty");
    if (rc == 0 && (out->max_len == 0 || out->max_len > GP_CHUNK_MAX))
        rc = terr_set(err, "READ_CHUNK: max_len %u must be 1..%u", out->max_len, GP_CHUNK_MAX);
    if (rc < 0) gp_read_chunk_req_free(out);
    return rc;
}

int gp_encode_read_chunk_result(gp_buf *b, const gp_read_chunk_result *m, terr *err)
{
    size_t start = b->len;
    if (put_u32(b, (uint32_t)m->status, err) < 0 ||
        put_str(b, m->message, false, "message", err) < 0 || put_u64(b, m->file_size, err) < 0 ||
        put_u64(b, m->ino, err) < 0 || put_blob(b, m->data, m->len, "data", err) < 0)
        return -1;
    return check_size(b, start, "READ_CHUNK_RESULT", err);
}

void gp_read_chunk_result_free(gp_read_chunk_result *m)
{
    free((void *)m->message);
    free((void *)m->data);
    memset(m, 0, sizeof *m);
}

int gp_decode_read_chunk_result(const uint8_t *p, size_t len, gp_read_chunk_result *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "READ_CHUNK_RESULT", err);
    char *msg = NULL;
    uint8_t *data = NULL;
    int rc = rd_i32(&r, &out->status, "status");
    if (rc == 0) rc = rd_str(&r, &msg, "message");
    out->message = msg;
    if (rc == 0) rc = rd_u64(&r, &out->file_size, "file_size");
    if (rc == 0) rc = rd_u64(&r, &out->ino, "ino");
    if (rc == 0) rc = rd_blob(&r, &data, &out->len, "data");
    out->data = data;
    if (rc == 0) rc = rd_end(&r);
    if (rc < 0) gp_read_chunk_result_free(out);
    return rc;
}

int gp_encode_list_dir(gp_buf *b, const gp_list_dir_req *m, terr *err)
{
    size_t start = b->len;
    if (put_str(b, m->path, true, "path", err) < 0 || put_u32(b, m->max_entries, err) < 0)
        return -1;
    return check_size(b, start, "LIST_DIR", err);
}

void gp_list_dir_req_free(gp_list_dir_req *m)
{
    free((void *)m->path);
    memset(m, 0, sizeof *m);
}

int gp_decode_list_dir(const uint8_t *p, size_t len, gp_list_dir_req *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "LIST_DIR", err);
    char *path = NULL;
    int rc = rd_str(&r, &path, "path");
    out->path = path;
    if (rc == 0) rc = rd_u32(&r, &out->max_entries, "max_entries");
    if (rc == 0) rc = rd_end(&r);
    if (rc == 0 && path[0] == '\0') rc = terr_set(err, "LIST_DIR: path is empty");
    if (rc == 0 && (out->max_entries == 0 || out->max_entries > GP_LIST_MAX_ENTRIES))
        rc = terr_set(err, "LIST_DIR: max_entries %u must be 1..%u", out->max_entries,
                      GP_LIST_MAX_ENTRIES);
    if (rc < 0) gp_list_dir_req_free(out);
    return rc;
}

int gp_encode_list_result(gp_buf *b, const gp_list_result *m, terr *err)
{
    size_t start = b->len;
    if (m->n > UINT32_MAX || (m->n && !m->entries))
        return terr_set(err, "LIST_RESULT: bad entry list");
    if (put_u32(b, (uint32_t)m->status, err) < 0 ||
        put_str(b, m->message, false, "message", err) < 0 ||
        put_u32(b, m->truncated ? 1 : 0, err) < 0 || put_u32(b, (uint32_t)m->n, err) < 0)
        return -1;
    for (size_t i = 0; i < m->n; i++) {
        const gp_dir_entry *e = &m->entries[i];
        if (put_str(b, e->name, true, "name", err) < 0 || put_u32(b, e->type, err) < 0 ||
            put_u32(b, e->mode, err) < 0 || put_u64(b, e->size, err) < 0 ||
            put_u64(b, (uint64_t)e->mtime_sec, err) < 0)
            return -1;
    }
    return check_size(b, start, "LIST_RESULT", err);
}

void gp_list_result_free(gp_list_result *m)
{
    free((void *)m->message);
    for (size_t i = 0; m->entries && i < m->n; i++) free((void *)m->entries[i].name);
    free(m->entries);
    memset(m, 0, sizeof *m);
}

int gp_decode_list_result(const uint8_t *p, size_t len, gp_list_result *out, terr *err)
{
    memset(out, 0, sizeof *out);
    reader r = rd_make(p, len, "LIST_RESULT", err);
    char *msg = NULL;
    uint32_t trunc = 0, n = 0;
    int rc = rd_i32(&r, &out->status, "status");
    if (rc == 0) rc = rd_str(&r, &msg, "message");
    out->message = msg;
    if (rc == 0) rc = rd_u32(&r, &trunc, "truncated");
    if (rc == 0) rc = rd_u32(&r, &n, "n");
    /* Each entry takes at least 28 bytes: refuse absurd counts first. */
    if (rc == 0 && n > (r.len - r.pos) / 28)
        rc = terr_set(err, "LIST_RESULT: %u entries claimed, payload too short", n);
    if (rc == 0 && !(out->entries = calloc(n ? n : 1, sizeof *out->entries)))
        rc = terr_set(err, "LIST_RESULT: out of memory");
    out->truncated = trunc != 0;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        gp_dir_entry *e = &out->entries[i];
        char *name = NULL;
        uint64_t mt = 0;
        rc = rd_str(&r, &name, "name");
        if (rc == 0) {
            e->name = name;
            out->n = i + 1;
        }
        if (rc == 0) rc = rd_u32(&r, &e->type, "type");
        if (rc == 0) rc = rd_u32(&r, &e->mode, "mode");
        if (rc == 0) rc = rd_u64(&r, &e->size, "size");
        if (rc == 0) rc = rd_u64(&r, &mt, "mtime_sec");
        e->mtime_sec = (int64_t)mt;
    }
    if (rc == 0) rc = rd_end(&r);
    if (rc < 0) gp_list_result_free(out);
    return rc;
}
