/* libFuzzer target: the guest protocol decoder (common/guest_protocol.c),
 * what the agent runs on every byte a (hostile) guest sends. The input is a
 * frame: a 16-byte header and a payload; the header is decoded, then the
 * payload by the header's type, and the payload by every decoder too (the
 * header check would otherwise keep most inputs from the decoders). What
 * decodes must encode again and decode to the same lengths. */
#include "fuzz_check.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "guest_protocol.h"

static void exec_req(const uint8_t *p, size_t n)
{
    gp_exec_req m;
    terr err;
    if (gp_decode_exec(p, n, &m, &err) != 0) return;
    gp_buf b = {0};
    if (gp_encode_exec(&b, &m, &err) == 0) {
        gp_exec_req again;
        int rc = gp_decode_exec(b.data, b.len, &again, &err);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(again.n_args == m.n_args && again.n_env == m.n_env &&
                   again.stdin_len == m.stdin_len);
        gp_exec_req_free(&again);
    }
    gp_buf_free(&b);
    gp_exec_req_free(&m);
}

static void exec_result(const uint8_t *p, size_t n)
{
    gp_exec_result m;
    terr err;
    if (gp_decode_exec_result(p, n, &m, &err) != 0) return;
    gp_buf b = {0};
    if (gp_encode_exec_result(&b, &m, &err) == 0) {
        gp_exec_result again;
        int rc = gp_decode_exec_result(b.data, b.len, &again, &err);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(again.out_len == m.out_len && again.err_len == m.err_len &&
                   again.exit_code == m.exit_code);
        gp_exec_result_free(&again);
    }
    gp_buf_free(&b);
    gp_exec_result_free(&m);
}

static void all_decoders(const uint8_t *p, size_t n)
{
    terr err;
    gp_pong pong;
    gp_read_file_req rf;
    gp_read_result rr;
    gp_write_file_req wf;
    gp_status_result sr;
    gp_sync_req sy;
    gp_error er;
    (void)gp_decode_empty(p, n, &err);
    (void)gp_decode_pong(p, n, &pong, &err);
    exec_req(p, n);
    exec_result(p, n);
    if (gp_decode_read_file(p, n, &rf, &err) == 0) gp_read_file_req_free(&rf);
    if (gp_decode_read_result(p, n, &rr, &err) == 0) gp_read_result_free(&rr);
    if (gp_decode_write_file(p, n, &wf, &err) == 0) gp_write_file_req_free(&wf);
    if (gp_decode_status_result(p, n, &sr, &err) == 0) gp_status_result_free(&sr);
    if (gp_decode_sync(p, n, &sy, &err) == 0) gp_sync_req_free(&sy);
    if (gp_decode_error(p, n, &er, &err) == 0) gp_error_free(&er);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= GP_HEADER_SIZE) {
        gp_header h;
        terr err;
        if (gp_header_decode(data, &h, &err) == 0) {
            FUZZ_CHECK(h.type >= GP_TYPE_MIN && h.type <= GP_TYPE_MAX);
            (void)gp_type_name(h.type);
        }
        all_decoders(data + GP_HEADER_SIZE, size - GP_HEADER_SIZE);
    }
    all_decoders(data, size);
    return 0;
}
