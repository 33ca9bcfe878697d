/* rpc_client: the blocking unary client half of common/rpc.h.
 *
 * One channel per rpc_client (grpc channels are thread-safe and multiplex
 * calls); each call gets its own completion queue, so any number of threads
 * can call at once without sharing a poller. A call is one batch of six ops
 * and is bounded by its deadline: grpc ends it with DEADLINE_EXCEEDED, and if
 * the completion were ever late anyway the call is cancelled, so the caller
 * never waits much past deadline_ms.
 *
 * A watcher thread keeps the channel's connectivity state watched between
 * calls. Without it nothing polls the channel while no call runs, so a
 * connection the agent closed (agent restarted) goes unnoticed and the next
 * call fails with "Socket closed" instead of reconnecting. */
#include "rpc_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Extra wait past the deadline before the client gives up on grpc itself. */
#define RPC_CLIENT_GRACE_MS 1000

/* How long one connectivity watch lasts before the watcher re-arms it; also
 * bounds how long rpc_client_close waits for the watcher to notice. */
#define RPC_CLIENT_WATCH_MS 200

struct rpc_client {
    grpc_channel *channel;
    char *target;
    grpc_completion_queue *watch_cq;
    pthread_t watcher;
    atomic_bool closing;
};

static void rpc_client_drain_cq(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(cq);
}

static void *rpc_client_watch_main(void *arg)
{
    rpc_client *c = arg;
    while (!atomic_load(&c->closing)) {
        /* try_to_connect=0: watching must not dial an agent nobody calls. */
        grpc_connectivity_state st = grpc_channel_check_connectivity_state(c->channel, 0);
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_millis(RPC_CLIENT_WATCH_MS, GPR_TIMESPAN));
        grpc_channel_watch_connectivity_state(c->channel, st, until, c->watch_cq, c);
        grpc_completion_queue_next(c->watch_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    return NULL;
}

int rpc_client_open(const rpc_client_config *cfg, rpc_client **out, terr *err)
{
    if (!cfg || !out) return terr_set(err, "rpc client: config and out are required");
    *out = NULL;
    if (!cfg->target || !*cfg->target) return terr_set(err, "rpc client: target address is empty");
    bool tls;
    if (rpc_tls_mode(&cfg->tls, &tls, err) < 0) return -1;
    if (!tls && cfg->tls.server_name_override)
        return terr_set(
            err,
            "rpc client: a TLS server name (%s) was given without --tls-cert, --tls-key and --tls-ca",
            cfg->tls.server_name_override);
    if (!tls && !rpc_addr_is_loopback(cfg->target))
        return terr_set(err,
                        "rpc client: refusing plaintext gRPC to non-loopback address %s; "
                        "give --tls-cert, --tls-key and --tls-ca (mutual TLS)",
                        cfg->target);

    grpc_init();
    grpc_channel_credentials *creds = NULL;
    if (rpc_tls_channel_creds(&cfg->tls, &creds, err) < 0) {
        grpc_shutdown();
        return -1;
    }
    rpc_client *c = calloc(1, sizeof *c);
    char *target = strdup(cfg->target);
    if (!c || !target) {
        free(c);
        free(target);
        grpc_channel_credentials_release(creds);
        grpc_shutdown();
        return terr_set(err, "rpc client: out of memory");
    }
    c->target = target;

    grpc_arg args[6];
    size_t n = 0;
    /* An agent that restarts must be reachable again within a second, not
     * after grpc's default back-off (up to 120 s between attempts): the
     * initial and max back-off space the attempts. Despite its name, grpc
     * (subchannel.cc) takes MIN_RECONNECT_BACKOFF as the least time one
     * attempt is given to connect (TCP + TLS + HTTP/2 handshake): at 100 ms
     * every attempt that took longer (a loaded host, TLS, a real network)
     * was cut off and calls failed UNAVAILABLE "tcp handshaker shutdown".
     * It keeps grpc's default; a refused connection still fails at once. */
    static const struct {
        const char *key;
        int value;
    } backoff[] = {
        {GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100},
        {GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20000},
        {GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000},
    };
    for (size_t i = 0; i < sizeof backoff / sizeof backoff[0]; i++) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = (char *)backoff[i].key;
        args[n].value.integer = backoff[i].value;
        n++;
    }
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n].value.integer = RPC_MAX_MESSAGE_BYTES;
    n++;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[n].value.integer = RPC_MAX_MESSAGE_BYTES;
    n++;
    if (tls && cfg->tls.server_name_override && *cfg->tls.server_name_override) {
        /* Dial by IP, verify the certificate against a DNS name. */
        args[n].type = GRPC_ARG_STRING;
        args[n].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        args[n].value.string = (char *)cfg->tls.server_name_override;
        n++;
    }
    grpc_channel_args chargs = {.num_args = n, .args = args};
    c->channel = grpc_channel_create(cfg->target, creds, &chargs);
    grpc_channel_credentials_release(creds); /* the channel keeps its own reference */
    if (!c->channel) {
        free(c->target);
        free(c);
        grpc_shutdown();
        return terr_set(err, "rpc client: cannot create a channel to %s", cfg->target);
    }
    c->watch_cq = grpc_completion_queue_create_for_next(NULL);
    atomic_init(&c->closing, false);
    int rc = pthread_create(&c->watcher, NULL, rpc_client_watch_main, c);
    if (rc != 0) {
        rpc_client_drain_cq(c->watch_cq);
        grpc_channel_destroy(c->channel);
        free(c->target);
        free(c);
        grpc_shutdown();
        return terr_set(err, "rpc client: cannot start the connection watcher: %s", strerror(rc));
    }
    *out = c;
    return 0;
}

void rpc_client_close(rpc_client *c)
{
    if (!c) return;
    atomic_store(&c->closing, true);
    pthread_join(c->watcher, NULL); /* the current watch ends within RPC_CLIENT_WATCH_MS */
    rpc_client_drain_cq(c->watch_cq);
    grpc_channel_destroy(c->channel);
    free(c->target);
    free(c);
    grpc_shutdown();
}

grpc_status_code rpc_client_call(rpc_client *c, const char *method_path,
                                 const ProtobufCMessage *request,
                                 const ProtobufCMessageDescriptor *response_descriptor,
                                 ProtobufCMessage **response, int deadline_ms, terr *err)
{
    if (response) *response = NULL;
    if (!c || !method_path || !request || !response_descriptor || !response) {
        terr_set(
            err,
            "rpc call: client, method, request, response descriptor and response are required");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (deadline_ms <= 0) {
        terr_set(err, "rpc call %s: deadline_ms must be > 0 (got %d)", method_path, deadline_ms);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    size_t req_len = protobuf_c_message_get_packed_size(request);
    if (req_len > RPC_MAX_MESSAGE_BYTES) {
        terr_set(err, "rpc call %s: request of %zu bytes exceeds the 64 MiB message limit",
                 method_path, req_len);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }

    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice method = grpc_slice_from_copied_string(method_path);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               method, NULL, deadline, NULL);
    grpc_slice_unref(method);
    if (!call) {
        rpc_client_drain_cq(cq);
        terr_set(err, "rpc call %s: cannot create the call", method_path);
        return GRPC_STATUS_INTERNAL;
    }

    grpc_slice req_slice = grpc_slice_malloc(req_len);
    protobuf_c_message_pack(request, GRPC_SLICE_START_PTR(req_slice));
    grpc_byte_buffer *req_buf = grpc_raw_byte_buffer_create(&req_slice, 1);
    grpc_slice_unref(req_slice);

    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_byte_buffer *resp_buf = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req_buf;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &resp_buf;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;

    grpc_call_error e = grpc_call_start_batch(call, ops, 6, call, NULL);
    if (e != GRPC_CALL_OK) {
        status = GRPC_STATUS_INTERNAL;
        terr_set(err, "rpc call %s: grpc_call_start_batch failed (%d)", method_path, (int)e);
    } else {
        gpr_timespec wait_until =
            gpr_time_add(deadline, gpr_time_from_millis(RPC_CLIENT_GRACE_MS, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(cq, wait_until, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            /* grpc should have ended the call at its deadline; make sure. */
            grpc_call_cancel_with_status(call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                         "client deadline passed", NULL);
            ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        }
        if (status != GRPC_STATUS_OK) {
            size_t dl = GRPC_SLICE_LENGTH(details);
            if (dl > 0) terr_set(err, "%.*s", (int)dl, (const char *)GRPC_SLICE_START_PTR(details));
            else if (error_string) terr_set(err, "%s: %s", rpc_status_name(status), error_string);
            else terr_set(err, "%s", rpc_status_name(status));
        } else if (!resp_buf) {
            status = GRPC_STATUS_INTERNAL;
            terr_set(err, "rpc call %s: server answered OK without a response message",
                     method_path);
        } else {
            grpc_byte_buffer_reader reader;
            if (!grpc_byte_buffer_reader_init(&reader, resp_buf)) {
                status = GRPC_STATUS_INTERNAL;
                terr_set(err, "rpc call %s: response cannot be read", method_path);
            } else {
                grpc_slice body = grpc_byte_buffer_reader_readall(&reader);
                grpc_byte_buffer_reader_destroy(&reader);
                *response = protobuf_c_message_unpack(
                    response_descriptor, NULL, GRPC_SLICE_LENGTH(body), GRPC_SLICE_START_PTR(body));
                grpc_slice_unref(body);
                if (!*response) {
                    status = GRPC_STATUS_INTERNAL;
                    terr_set(err, "rpc call %s: response does not parse as %s", method_path,
                             response_descriptor->name);
                }
            }
        }
    }

    if (error_string) gpr_free((void *)error_string);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_byte_buffer_destroy(req_buf);
    if (resp_buf) grpc_byte_buffer_destroy(resp_buf);
    grpc_call_unref(call);
    rpc_client_drain_cq(cq);
    return status;
}
