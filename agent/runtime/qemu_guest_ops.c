/* qemu_guest_ops: exec / read_file / write_file through torpor-guest.
 * Each call takes its own reference on the VM's guest channel, so a pause
 * or destroy (which closes the channel) makes it fail promptly instead of
 * hanging, and never frees memory under it. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guest_protocol.h"
#include "log.h"
#include "mono_time.h"
#include "qemu_internal.h"

/* Margin on top of an exec's own timeout for the guest to kill the command
 * and send its answer. */
#define EXEC_ANSWER_MARGIN_MS 15000
#define FILE_CALL_MS 120000
/* How long before the RPC's own deadline a guest call gives up. */
#define CALLER_DEADLINE_MARGIN_MS 1000

/* Caller holds conn_mu. */
static void note_failed(qemu_vm *v, const char *why)
{
    v->conn_failed_ms = mono_ms();
    snprintf(v->conn_failed_why.msg, sizeof v->conn_failed_why.msg, "%s", why);
}

void qemu_vm_note_connect_failed(qemu_vm *v, const char *why)
{
    pthread_mutex_lock(&v->conn_mu);
    note_failed(v, why);
    pthread_mutex_unlock(&v->conn_mu);
}

/* A running VM without a guest channel is one re-attached by recover()
 * while its guest did not answer: connect now (one caller at a time; the
 * others wait and then use that channel). Within QEMU_RECONNECT_BACKOFF_MS
 * of a failed attempt (ours, a queued caller's or recover's) a caller fails
 * at once instead of trying again: an exec that waits holds off the reaper
 * and, queued behind others, would wait for all of their attempts. The new
 * channel is installed only if no pause/destroy started meanwhile. */
static int reconnect(qemu_vm *v, terr *err)
{
    pthread_mutex_lock(&v->conn_mu);
    pthread_mutex_lock(&v->mu);
    bool need = v->state == QVM_RUNNING && !v->busy && !v->ch;
    pthread_mutex_unlock(&v->mu);
    long long since = mono_ms() - v->conn_failed_ms;
    if (need && v->conn_failed_ms > 0 && since < QEMU_RECONNECT_BACKOFF_MS) {
        terr_set(err, "sandbox %s: guest not connected (last attempt %lld s ago failed: %s)",
                 v->base.sandbox_id, since / 1000, v->conn_failed_why.msg);
        pthread_mutex_unlock(&v->conn_mu);
        return -1;
    }
    pthread_mutex_lock(&v->mu);
    need = v->state == QVM_RUNNING && !v->busy && !v->ch;
    /* Our own pidfd: a destroy may close the VM's while we connect. */
    int pidfd = need ? fcntl(v->inst.proc.pidfd, F_DUPFD_CLOEXEC, 0) : -1;
    pthread_mutex_unlock(&v->mu);
    int rc = 0;
    if (need) {
        guest_channel *ch = NULL;
        if (guest_channel_open(v->dirfd, QEMU_GUEST_SOCK, v->base.sandbox_id, pidfd,
                               QEMU_GUEST_CALL_MS, &ch, err) < 0 ||
            guest_channel_sync(ch, QEMU_GUEST_CALL_MS, err) < 0) {
            note_failed(v, err ? err->msg : "guest did not answer");
            rc = terr_wrap(err, "sandbox %s: guest not connected", v->base.sandbox_id);
            guest_channel_unref(ch);
            ch = NULL;
        } else {
            v->conn_failed_ms = 0;
        }
        pthread_mutex_lock(&v->mu);
        if (ch && v->state == QVM_RUNNING && !v->busy && !v->ch) {
            v->ch = ch;
            ch = NULL;
            log_info("event=guest_reconnected sandbox_id=%s", v->base.sandbox_id);
        }
        pthread_mutex_unlock(&v->mu);
        if (ch) {
            guest_channel_close(ch, "sandbox is pausing or gone");
            guest_channel_unref(ch);
        }
        if (pidfd >= 0) close(pidfd);
    }
    pthread_mutex_unlock(&v->conn_mu);
    return rc;
}

/* Takes the channel for one call; the call counts as activity for the idle
 * trim (qemu_trim.c) from now until put_channel(). */
static guest_channel *take_channel(qemu_vm *v, terr *err)
{
    pthread_mutex_lock(&v->mu);
    if (v->state == QVM_RUNNING && !v->busy && !v->ch) {
        pthread_mutex_unlock(&v->mu);
        if (reconnect(v, err) < 0) return NULL;
        pthread_mutex_lock(&v->mu);
    }
    guest_channel *ch = NULL;
    if (v->state != QVM_RUNNING) terr_set(err, "sandbox %s is not running", v->base.sandbox_id);
    else if (!v->ch || v->busy)
        terr_set(err, "sandbox %s is being paused or destroyed", v->base.sandbox_id);
    else {
        ch = v->ch;
        guest_channel_ref(ch);
        v->calls++;
        v->last_call_ms = mono_ms();
        v->trimmed = false;
    }
    pthread_mutex_unlock(&v->mu);
    return ch;
}

static void put_channel(qemu_vm *v, guest_channel *ch)
{
    guest_channel_unref(ch);
    pthread_mutex_lock(&v->mu);
    v->calls--;
    v->last_call_ms = mono_ms();
    pthread_mutex_unlock(&v->mu);
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n, terr *err)
{
    uint8_t *c = malloc(n ? n : 1);
    if (!c) {
        terr_set(err, "out of memory for %zu bytes", n);
        return NULL;
    }
    if (n) memcpy(c, p, n);
    return c;
}

/* The caller's deadline (runtime_call_deadline) wins when it is nearer than
 * *timeout_ms: a guest call answers (with an error) a little before its
 * caller gives up, never after, so it never holds the channel for a caller
 * that is gone. -1 when that deadline has passed already. */
static int within_caller_deadline(qemu_vm *v, const char *what, int *timeout_ms, terr *err)
{
    long long dl = runtime_call_deadline();
    if (dl <= 0) return 0;
    long long left = dl - mono_ms() - CALLER_DEADLINE_MARGIN_MS;
    if (left < *timeout_ms) *timeout_ms = left > 0 ? (int)left : 0;
    if (*timeout_ms <= 0)
        return terr_set(err, "%s in %s: the caller's deadline has passed", what,
                        v->base.sandbox_id);
    return 0;
}

/* One request/answer with the guest: takes the channel, sends the encoded
 * request b (freed here in every case), waits up to timeout_ms (or the
 * caller's deadline) for an answer of resp_type and returns its payload in
 * *p and *n (malloc'd). what names the operation in errors. */
static int guest_roundtrip(qemu_vm *v, const char *what, gp_buf *b, uint8_t req_type,
                           uint8_t resp_type, int timeout_ms, uint8_t **p, size_t *n, terr *err)
{
    if (within_caller_deadline(v, what, &timeout_ms, err) < 0) {
        gp_buf_free(b);
        return -1;
    }
    guest_channel *ch = take_channel(v, err);
    if (!ch) {
        gp_buf_free(b);
        return -1;
    }
    int r = guest_channel_call(ch, req_type, b->data, b->len, resp_type, timeout_ms, p, n, err);
    put_channel(v, ch);
    gp_buf_free(b);
    if (r < 0) return terr_wrap(err, "%s in %s", what, v->base.sandbox_id);
    return 0;
}

int qemu_op_exec(runtime_driver *d, runtime_vm *vm, const runtime_exec_request *req,
                 runtime_exec_result *res, terr *err)
{
    memset(res, 0, sizeof *res);
    if (!req || !req->cmd || !*req->cmd) return terr_set(err, "exec: cmd is required");
    if (req->n_args && !req->args) return terr_set(err, "exec: args missing");
    if (req->n_env && !req->env) return terr_set(err, "exec: env missing");
    qemu_vm *v = qemu_vm_of(vm);
    gp_exec_req m = {
        .cmd = req->cmd,
        .args = req->args,
        .n_args = req->n_args,
        .env = req->env,
        .n_env = req->n_env,
        .cwd = req->cwd,
        .timeout_sec = req->timeout_sec,
        .stdin_data = req->stdin_data,
        .stdin_len = req->stdin_len,
    };
    gp_buf b = {0};
    if (gp_encode_exec(&b, &m, err) < 0) {
        gp_buf_free(&b);
        return terr_wrap(err, "exec");
    }
    long long timeout_ms =
        (req->timeout_sec > 0 ? (long long)req->timeout_sec : 3600) * 1000 + EXEC_ANSWER_MARGIN_MS;
    if (timeout_ms > 0x7fffffff) timeout_ms = 0x7fffffff;
    uint8_t *p;
    size_t n;
    if (guest_roundtrip(v, "exec", &b, GP_EXEC, GP_EXEC_RESULT, (int)timeout_ms, &p, &n, err) < 0)
        return -1;
    gp_exec_result gr;
    int r = gp_decode_exec_result(p, n, &gr, err);
    free(p);
    if (r < 0) return terr_wrap(err, "exec result");
    /* The output cap holds here too, not only in an honest guest. */
    if (gr.out_len > GP_EXEC_OUTPUT_CAP) {
        gr.out_len = GP_EXEC_OUTPUT_CAP;
        gr.stdout_truncated = true;
    }
    if (gr.err_len > GP_EXEC_OUTPUT_CAP) {
        gr.err_len = GP_EXEC_OUTPUT_CAP;
        gr.stderr_truncated = true;
    }
    res->out = dup_bytes(gr.out, gr.out_len, err);
    res->err = dup_bytes(gr.err, gr.err_len, err);
    res->out_len = gr.out_len;
    res->err_len = gr.err_len;
    res->exit_code = gr.exit_code;
    res->timed_out = gr.timed_out;
    res->out_truncated = gr.stdout_truncated;
    res->err_truncated = gr.stderr_truncated;
    gp_exec_result_free(&gr);
    if (!res->out || !res->err) {
        runtime_exec_result_free(res);
        return -1;
    }
    return 0;
}

int qemu_op_read_file(runtime_driver *d, runtime_vm *vm, const char *path, uint8_t **data,
                      size_t *len, terr *err)
{
    *data = NULL;
    *len = 0;
    if (!path || !*path) return terr_set(err, "read_file: path is required");
    gp_read_file_req m = {.path = path};
    gp_buf b = {0};
    if (gp_encode_read_file(&b, &m, err) < 0) {
        gp_buf_free(&b);
        return terr_wrap(err, "read_file");
    }
    uint8_t *p;
    size_t n;
    if (guest_roundtrip(qemu_vm_of(vm), "read_file", &b, GP_READ_FILE, GP_READ_RESULT, FILE_CALL_MS,
                        &p, &n, err) < 0)
        return -1;
    gp_read_result rr;
    int r = gp_decode_read_result(p, n, &rr, err);
    free(p);
    if (r < 0) return terr_wrap(err, "read_file result");
    if (rr.status == 0 && rr.len > GP_FILE_MAX) {
        terr_set(err, "read_file %s: the guest answered %zu bytes, more than the %u allowed", path,
                 (size_t)rr.len, GP_FILE_MAX);
        gp_read_result_free(&rr);
        return -1;
    }
    if (rr.status != 0) {
        terr_set(err, "read_file %s: %s", path, rr.message[0] ? rr.message : strerror(rr.status));
        gp_read_result_free(&rr);
        return -1;
    }
    *data = dup_bytes(rr.data, rr.len, err);
    *len = rr.len;
    gp_read_result_free(&rr);
    return *data ? 0 : -1;
}

int qemu_op_write_file(runtime_driver *d, runtime_vm *vm, const char *path, const uint8_t *data,
                       size_t len, unsigned mode, terr *err)
{
    if (!path || !*path) return terr_set(err, "write_file: path is required");
    if (len && !data) return terr_set(err, "write_file: data missing");
    gp_write_file_req m = {.path = path, .mode = mode ? mode : 0644, .content = data, .len = len};
    gp_buf b = {0};
    if (gp_encode_write_file(&b, &m, err) < 0) {
        gp_buf_free(&b);
        return terr_wrap(err, "write_file");
    }
    uint8_t *p;
    size_t n;
    if (guest_roundtrip(qemu_vm_of(vm), "write_file", &b, GP_WRITE_FILE, GP_WRITE_RESULT,
                        FILE_CALL_MS, &p, &n, err) < 0)
        return -1;
    gp_status_result st;
    int r = gp_decode_status_result(p, n, &st, err);
    free(p);
    if (r < 0) return terr_wrap(err, "write_file result");
    if (st.status != 0)
        r = terr_set(err, "write_file %s: %s", path,
                     st.message[0] ? st.message : strerror(st.status));
    gp_status_result_free(&st);
    return r;
}

int qemu_op_guest_call(runtime_driver *d, runtime_vm *vm, const char *what, uint8_t req_type,
                       const void *payload, size_t len, uint8_t resp_type, int timeout_ms,
                       uint8_t **resp, size_t *resp_len, terr *err)
{
    (void)d;
    *resp = NULL;
    *resp_len = 0;
    qemu_vm *v = qemu_vm_of(vm);
    if (within_caller_deadline(v, what, &timeout_ms, err) < 0) return -1;
    guest_channel *ch = take_channel(v, err);
    if (!ch) return -1;
    int r =
        guest_channel_call(ch, req_type, payload, len, resp_type, timeout_ms, resp, resp_len, err);
    put_channel(v, ch);
    if (r < 0) return terr_wrap(err, "%s in %s", what, v->base.sandbox_id);
    return 0;
}
