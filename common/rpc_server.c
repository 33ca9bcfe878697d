/* rpc_server: the gRPC server half of common/rpc.h. (Just over 600 lines:
 * the call state machine below is one unit with the completion-queue loop
 * that drives it.)
 *
 * Threads: one completion-queue thread owns accepting (RPC_SERVER_PENDING
 * request_call slots, re-posted as soon as one is used), reading the request
 * and sending error statuses. Each dispatched call then runs its handler on a
 * detached thread of its own, so a handler that blocks for seconds delays
 * nobody else; past max_concurrent_calls a call is refused with
 * RESOURCE_EXHAUSTED instead of queueing behind the slow ones.
 *
 * Lifetime of a call (struct rpc_call): REQUESTED -> RECEIVING -> (HANDLING)
 * -> SENDING -> freed. It is reference-counted because the final batch may
 * complete on the cq thread while the handler is still running after its
 * rpc_reply. The cq side holds one reference until the final batch is done,
 * the handler thread one until the handler has returned.
 *
 * Stop: no new handlers are admitted, grpc stops accepting, running handlers
 * finish and their replies go out (a pause in flight is never cut), only then
 * are the calls still waiting for a request message cancelled. */
#include "rpc_internal.h"

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "mono_time.h"

/* Accept slots kept posted: enough that a burst of calls never waits for the
 * cq thread to re-post one. */
#define RPC_SERVER_PENDING 16
#define RPC_SERVER_DEFAULT_MAX_CALLS 64

enum rpc_call_state { RPC_CALL_REQUESTED, RPC_CALL_RECEIVING, RPC_CALL_HANDLING, RPC_CALL_SENDING };

struct rpc_call {
    rpc_server *srv;
    enum rpc_call_state state;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array request_md;
    grpc_byte_buffer *recv_buf;
    grpc_byte_buffer *send_buf;
    int cancelled; /* RECV_CLOSE_ON_SERVER: client cancelled or timed out */
    atomic_int refs;
    atomic_bool finished; /* rpc_reply/rpc_fail already called */
    const rpc_method *method;
    ProtobufCMessage *request;
    grpc_status_code code;
    int64_t started_us; /* mono_us() when the call arrived */
    char method_name[128];
    char peer[256];
    bool peer_accepted; /* identity matches the expected client name (or none is expected) */
};

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t cq_thread;
    rpc_method *methods;
    bool *quick; /* per method: run on the cq thread (rpc_server_config.quick_methods) */
    size_t n_methods;
    void *app;
    int max_calls;
    int port;
    char *expected_client; /* NULL = any client the CA signed */
    int shutdown_tag;      /* its address is the tag of shutdown_and_notify */

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cond;
    bool stopping;
    bool shutdown_requested; /* shutdown_and_notify called (once) */
    bool shutdown_done;
    int handlers;  /* handler threads running */
    int finishing; /* final batches started and not yet completed */
};

static void rpc_call_unref(rpc_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    if (c->request) protobuf_c_message_free_unpacked(c->request, NULL);
    if (c->recv_buf) grpc_byte_buffer_destroy(c->recv_buf);
    if (c->send_buf) grpc_byte_buffer_destroy(c->send_buf);
    if (c->call) grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->request_md);
    free(c);
}

/* Posts one accept slot. Called at start and from the cq thread. */
static void rpc_server_post_request(rpc_server *s)
{
    rpc_call *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("event=rpc_accept_failed error=\"out of memory\"");
        return;
    }
    c->srv = s;
    c->state = RPC_CALL_REQUESTED;
    atomic_init(&c->refs, 1);
    atomic_init(&c->finished, false);
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->request_md);
    grpc_call_error e =
        grpc_server_request_call(s->server, &c->call, &c->details, &c->request_md, s->cq, s->cq, c);
    if (e != GRPC_CALL_OK) {
        log_error("event=rpc_accept_failed grpc_call_error=%d", (int)e);
        rpc_call_unref(c);
    }
}

/* Starts the final batch: status (+ message when buf is set). Takes buf. */
static void rpc_call_send(rpc_call *c, grpc_status_code code, const char *details,
                          grpc_byte_buffer *buf)
{
    rpc_server *s = c->srv;
    grpc_slice details_slice = grpc_slice_from_copied_string(details ? details : "");
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 0;
    n++;
    if (buf) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = buf;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details =
        details && *details ? &details_slice : NULL;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;

    c->send_buf = buf;
    c->code = code;
    c->state = RPC_CALL_SENDING;
    pthread_mutex_lock(&s->mu);
    s->finishing++;
    pthread_mutex_unlock(&s->mu);
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
    grpc_slice_unref(details_slice); /* grpc took its own reference */
    if (e != GRPC_CALL_OK) {
        log_error("event=rpc_send_failed method=%s grpc_call_error=%d", c->method_name, (int)e);
        pthread_mutex_lock(&s->mu);
        s->finishing--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
        rpc_call_unref(c); /* the cq side's reference: no completion will come */
    }
}

/* Ends the call once; a second attempt is a handler bug, logged loudly. */
static bool rpc_call_claim(rpc_call *c, const char *what)
{
    bool expected = false;
    if (atomic_compare_exchange_strong(&c->finished, &expected, true)) return true;
    log_error(
        "event=rpc_handler_bug method=%s error=\"%s after the call was already answered; ignored\"",
        c->method_name, what);
    return false;
}

void rpc_reply(rpc_call *call, const ProtobufCMessage *response)
{
    if (!call) return;
    if (!rpc_call_claim(call, "rpc_reply")) return;
    if (!response) {
        log_error("event=rpc_handler_bug method=%s error=\"rpc_reply with a NULL response\"",
                  call->method_name);
        rpc_call_send(call, GRPC_STATUS_INTERNAL, "handler produced no response", NULL);
        return;
    }
    size_t n = protobuf_c_message_get_packed_size(response);
    if (n > RPC_MAX_MESSAGE_BYTES) {
        rpc_call_send(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "response larger than the 64 MiB message limit", NULL);
        return;
    }
    grpc_slice slice = grpc_slice_malloc(n);
    protobuf_c_message_pack(response, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *buf = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice); /* the byte buffer holds its own reference */
    rpc_call_send(call, GRPC_STATUS_OK, NULL, buf);
}

void rpc_fail(rpc_call *call, grpc_status_code code, const char *fmt, ...)
{
    if (!call) return;
    if (!rpc_call_claim(call, "rpc_fail")) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code == GRPC_STATUS_OK) {
        log_error("event=rpc_handler_bug method=%s error=\"rpc_fail with status OK\"",
                  call->method_name);
        code = GRPC_STATUS_INTERNAL;
    }
    rpc_call_send(call, code, msg, NULL);
}

long long rpc_call_deadline_mono_ms(const rpc_call *call)
{
    if (!call) return 0;
    gpr_timespec d = call->details.deadline;
    if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0) return 0;
    gpr_timespec now = gpr_now(d.clock_type);
    gpr_timespec left = gpr_time_sub(d, now);
    long long ms = (long long)left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return mono_ms() + ms;
}

const char *rpc_call_peer_identity(const rpc_call *call) { return call ? call->peer : ""; }

static void *rpc_handler_thread(void *arg)
{
    rpc_call *c = arg;
    rpc_server *s = c->srv;
    c->method->handler(s->app, c, c->request);
    if (!atomic_load(&c->finished)) {
        log_error(
            "event=rpc_handler_bug method=%s error=\"handler returned without rpc_reply or rpc_fail; "
            "answering INTERNAL\"",
            c->method_name);
        if (rpc_call_claim(c, "implicit reply"))
            rpc_call_send(c, GRPC_STATUS_INTERNAL, "handler ended without a reply", NULL);
    }
    rpc_call_unref(c);
    pthread_mutex_lock(&s->mu);
    s->handlers--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Answers a call from the cq thread without running a handler. */
static void rpc_call_refuse(rpc_call *c, grpc_status_code code, const char *msg)
{
    atomic_store(&c->finished, true);
    rpc_call_send(c, code, msg, NULL);
}

static const rpc_method *rpc_server_find(const rpc_server *s, grpc_slice method)
{
    for (size_t i = 0; i < s->n_methods; i++)
        if (grpc_slice_str_cmp(method, s->methods[i].path) == 0) return &s->methods[i];
    return NULL;
}

static void rpc_call_read_peer(rpc_server *s, rpc_call *c)
{
    c->peer[0] = '\0';
    c->peer_accepted = s->expected_client == NULL;
    grpc_auth_context *ac = grpc_call_auth_context(c->call);
    if (!ac) return;
    grpc_auth_property_iterator it = grpc_auth_context_peer_identity(ac);
    const grpc_auth_property *p;
    while ((p = grpc_auth_property_iterator_next(&it)) != NULL) {
        if (!p->value) continue;
        if (!c->peer[0]) snprintf(c->peer, sizeof c->peer, "%.*s", (int)p->value_length, p->value);
        if (s->expected_client && strlen(s->expected_client) == p->value_length &&
            memcmp(s->expected_client, p->value, p->value_length) == 0)
            c->peer_accepted = true;
    }
    grpc_auth_context_release(ac);
}

static void rpc_server_on_requested(rpc_server *s, rpc_call *c, int success)
{
    if (!success) { /* the server is shutting down: the slot comes back unused */
        rpc_call_unref(c);
        return;
    }
    pthread_mutex_lock(&s->mu);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (!stopping) rpc_server_post_request(s);

    c->started_us = mono_us();
    size_t ml = GRPC_SLICE_LENGTH(c->details.method);
    if (ml >= sizeof c->method_name) ml = sizeof c->method_name - 1;
    memcpy(c->method_name, GRPC_SLICE_START_PTR(c->details.method), ml);
    c->method_name[ml] = '\0';
    /* The path is the client's text and every log line about the call
     * carries it unquoted (method=...): anything but the characters of a
     * real method path becomes '?', so it cannot forge key=value pairs
     * (the handler lookup uses the slice itself). */
    for (char *p = c->method_name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '/' || *p == '.' || *p == '_' || *p == '-'))
            *p = '?';

    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    c->state = RPC_CALL_RECEIVING;
    grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, c, NULL);
    if (e != GRPC_CALL_OK) {
        log_error("event=rpc_recv_failed method=%s grpc_call_error=%d", c->method_name, (int)e);
        rpc_call_unref(c);
    }
}

static void rpc_server_on_received(rpc_server *s, rpc_call *c, int success)
{
    char msg[512];
    rpc_call_read_peer(s, c);
    if (!c->peer_accepted) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=rpc_peer_refused method=%s peer=\"%s\"", c->method_name,
                 log_quote(c->peer, q, sizeof q));
        snprintf(msg, sizeof msg, "client certificate \"%.200s\" is not the expected control plane",
                 c->peer);
        rpc_call_refuse(c, GRPC_STATUS_UNAUTHENTICATED, msg);
        return;
    }
    c->method = rpc_server_find(s, c->details.method);
    if (!c->method) {
        snprintf(msg, sizeof msg, "unknown method %s", c->method_name);
        rpc_call_refuse(c, GRPC_STATUS_UNIMPLEMENTED, msg);
        return;
    }
    if (!success || !c->recv_buf) {
        rpc_call_refuse(c, GRPC_STATUS_INVALID_ARGUMENT, "request message missing");
        return;
    }
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, c->recv_buf)) {
        rpc_call_refuse(c, GRPC_STATUS_INVALID_ARGUMENT,
                        "request message cannot be read (compressed?)");
        return;
    }
    grpc_slice body = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    c->request = protobuf_c_message_unpack(c->method->request_descriptor, NULL,
                                           GRPC_SLICE_LENGTH(body), GRPC_SLICE_START_PTR(body));
    grpc_slice_unref(body);
    grpc_byte_buffer_destroy(c->recv_buf);
    c->recv_buf = NULL;
    if (!c->request) {
        snprintf(msg, sizeof msg, "request does not parse as %s",
                 c->method->request_descriptor->name);
        rpc_call_refuse(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }

    pthread_mutex_lock(&s->mu);
    grpc_status_code refuse = GRPC_STATUS_OK;
    if (s->stopping) refuse = GRPC_STATUS_UNAVAILABLE;
    else if (s->handlers >= s->max_calls) refuse = GRPC_STATUS_RESOURCE_EXHAUSTED;
    else s->handlers++;
    int limit = s->max_calls;
    pthread_mutex_unlock(&s->mu);
    if (refuse == GRPC_STATUS_UNAVAILABLE) {
        rpc_call_refuse(c, refuse, "server is shutting down");
        return;
    }
    if (refuse == GRPC_STATUS_RESOURCE_EXHAUSTED) {
        log_warn("event=rpc_overloaded method=%s max_concurrent_calls=%d", c->method_name, limit);
        snprintf(msg, sizeof msg, "too many concurrent calls (limit %d)", limit);
        rpc_call_refuse(c, refuse, msg);
        return;
    }

    c->state = RPC_CALL_HANDLING;
    atomic_fetch_add(&c->refs, 1); /* the handler thread's reference */
    if (s->quick[c->method - s->methods]) {
        rpc_handler_thread(c); /* here, on the cq thread: it never blocks */
        return;
    }
    pthread_t t;
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&t, &attr, rpc_handler_thread, c);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        atomic_fetch_sub(&c->refs, 1);
        pthread_mutex_lock(&s->mu);
        s->handlers--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
        log_error("event=rpc_thread_failed method=%s error=\"%s\"", c->method_name, strerror(rc));
        rpc_call_refuse(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot start a handler thread");
    }
}

static void rpc_server_on_sent(rpc_server *s, rpc_call *c, int success)
{
    log_debug("event=rpc_done method=%s code=%s peer=\"%s\" cancelled=%d duration_ms=%.3f",
              c->method_name, rpc_status_name(c->code), c->peer, c->cancelled || !success,
              (double)(mono_us() - c->started_us) / 1e3);
    pthread_mutex_lock(&s->mu);
    s->finishing--;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    rpc_call_unref(c);
}

static void *rpc_server_cq_thread(void *arg)
{
    rpc_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        if (ev.tag == &s->shutdown_tag) {
            pthread_mutex_lock(&s->mu);
            s->shutdown_done = true;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        rpc_call *c = ev.tag;
        switch (c->state) {
        case RPC_CALL_REQUESTED: rpc_server_on_requested(s, c, ev.success); break;
        case RPC_CALL_RECEIVING: rpc_server_on_received(s, c, ev.success); break;
        case RPC_CALL_SENDING: rpc_server_on_sent(s, c, ev.success); break;
        case RPC_CALL_HANDLING: /* no batch is outstanding in this state */
            log_error("event=rpc_internal_bug method=%s error=\"completion while handling\"",
                      c->method_name);
            break;
        }
    }
    return NULL;
}

static void rpc_server_free(rpc_server *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s->methods);
    free(s->quick);
    free(s->expected_client);
    free(s);
}

static int rpc_server_check_config(const rpc_server_config *cfg, terr *err)
{
    if (!cfg->listen_addr || !*cfg->listen_addr)
        return terr_set(err, "rpc server: listen address is empty");
    if (cfg->n_methods > 0 && !cfg->methods) return terr_set(err, "rpc server: methods is NULL");
    if (cfg->tls.expected_client_name && (!cfg->tls.cert_path || !*cfg->tls.expected_client_name))
        return terr_set(err, "rpc server: an expected client name needs TLS and must not be empty");
    if (cfg->max_concurrent_calls < 0)
        return terr_set(err, "rpc server: max_concurrent_calls must be >= 0 (got %d)",
                        cfg->max_concurrent_calls);
    for (size_t i = 0; i < cfg->n_methods; i++) {
        const rpc_method *m = &cfg->methods[i];
        if (!m->path || m->path[0] != '/' || !m->request_descriptor || !m->handler)
            return terr_set(err,
                            "rpc server: method %zu is incomplete (path must start with '/', "
                            "descriptor and handler are required)",
                            i);
    }
    bool tls;
    if (rpc_tls_mode(&cfg->tls, &tls, err) < 0) return -1;
    if (!tls && !rpc_addr_is_loopback(cfg->listen_addr))
        return terr_set(err,
                        "rpc server: refusing plaintext gRPC on non-loopback address %s; "
                        "give --tls-cert, --tls-key and --tls-ca (mutual TLS)",
                        cfg->listen_addr);
    return 0;
}

int rpc_server_start(const rpc_server_config *cfg, rpc_server **out, terr *err)
{
    if (!cfg || !out) return terr_set(err, "rpc server: config and out are required");
    *out = NULL;
    if (rpc_server_check_config(cfg, err) < 0) return -1;

    grpc_init();
    grpc_server_credentials *creds = NULL;
    if (rpc_tls_server_creds(&cfg->tls, &creds, err) < 0) {
        grpc_shutdown();
        return -1;
    }

    rpc_server *s = calloc(1, sizeof *s);
    if (s && cfg->n_methods > 0) s->methods = calloc(cfg->n_methods, sizeof *s->methods);
    if (!s || (cfg->n_methods > 0 && !s->methods)) {
        if (s) free(s);
        grpc_server_credentials_release(creds);
        grpc_shutdown();
        return terr_set(err, "rpc server: out of memory");
    }
    if (cfg->n_methods > 0) memcpy(s->methods, cfg->methods, cfg->n_methods * sizeof *s->methods);
    s->quick = calloc(cfg->n_methods ? cfg->n_methods : 1, sizeof *s->quick);
    if (!s->quick) {
        free(s->methods);
        free(s);
        grpc_server_credentials_release(creds);
        grpc_shutdown();
        return terr_set(err, "rpc server: out of memory");
    }
    for (size_t i = 0; i < cfg->n_methods; i++)
        for (const char *const *q = cfg->quick_methods; q && *q; q++)
            if (strcmp(*q, cfg->methods[i].path) == 0) s->quick[i] = true;
    s->n_methods = cfg->n_methods;
    s->app = cfg->app;
    if (cfg->tls.expected_client_name &&
        !(s->expected_client = strdup(cfg->tls.expected_client_name))) {
        rpc_server_free(s);
        return terr_set(err, "rpc server: out of memory");
    }
    s->max_calls =
        cfg->max_concurrent_calls > 0 ? cfg->max_concurrent_calls : RPC_SERVER_DEFAULT_MAX_CALLS;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);

    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = RPC_MAX_MESSAGE_BYTES;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = RPC_MAX_MESSAGE_BYTES;
    /* grpc sets SO_REUSEPORT by default: a second agent on the same port
     * would then bind "successfully" and take half the connections. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = 0;
    grpc_channel_args chargs = {.num_args = 3, .args = args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);

    /* The cq thread runs before the port is bound so that every failure
     * below can unwind through the normal cq shutdown. */
    int rc = pthread_create(&s->cq_thread, NULL, rpc_server_cq_thread, s);
    if (rc != 0) {
        grpc_server_credentials_release(creds);
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {}
        grpc_completion_queue_destroy(s->cq);
        rpc_server_free(s);
        grpc_shutdown();
        return terr_set(err, "rpc server: cannot start the completion-queue thread: %s",
                        strerror(rc));
    }

    s->port = grpc_server_add_http2_port(s->server, cfg->listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0) {
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        pthread_join(s->cq_thread, NULL);
        grpc_completion_queue_destroy(s->cq);
        rpc_server_free(s);
        grpc_shutdown();
        return terr_set(err, "rpc server: cannot listen on %s (address in use or invalid)",
                        cfg->listen_addr);
    }
    grpc_server_start(s->server);
    for (int i = 0; i < RPC_SERVER_PENDING; i++) rpc_server_post_request(s);
    bool tls = cfg->tls.cert_path != NULL;
    log_info("event=rpc_server_started addr=%s port=%d tls=%s methods=%zu max_concurrent_calls=%d",
             cfg->listen_addr, s->port, tls ? "mutual" : "off", s->n_methods, s->max_calls);
    *out = s;
    return 0;
}

int rpc_server_port(const rpc_server *s) { return s ? s->port : 0; }

/* timeout_ms < 0: no bound. */
static int rpc_server_stop_impl(rpc_server *s, int timeout_ms, terr *err)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    bool first = !s->shutdown_requested;
    s->shutdown_requested = true;
    pthread_mutex_unlock(&s->mu);
    /* Stop accepting; calls already running continue. A second stop after
     * a timed-out one only waits again. */
    if (first) grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);

    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_ms >= 0) {
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s->mu);
    while (s->handlers > 0 || s->finishing > 0) {
        if (timeout_ms < 0) pthread_cond_wait(&s->cond, &s->mu);
        else if (pthread_cond_timedwait(&s->cond, &s->mu, &until) == ETIMEDOUT) {
            int left = s->handlers;
            pthread_mutex_unlock(&s->mu);
            log_warn("event=rpc_server_stop_timeout handlers=%d timeout_ms=%d", left, timeout_ms);
            return terr_set(err, "rpc server: %d call(s) still running after %d ms", left,
                            timeout_ms);
        }
    }
    pthread_mutex_unlock(&s->mu);

    /* Only calls still waiting for their request message remain: they never
     * reached a handler, so cancelling them loses no work. */
    grpc_server_cancel_all_calls(s->server);
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_done) pthread_cond_wait(&s->cond, &s->mu);
    pthread_mutex_unlock(&s->mu);

    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    pthread_join(s->cq_thread, NULL);
    grpc_completion_queue_destroy(s->cq);
    int port = s->port;
    rpc_server_free(s);
    grpc_shutdown();
    log_info("event=rpc_server_stopped port=%d", port);
    return 0;
}

void rpc_server_stop(rpc_server *s)
{
    if (s) rpc_server_stop_impl(s, -1, NULL);
}

int rpc_server_stop_within(rpc_server *s, int timeout_ms, terr *err)
{
    return s ? rpc_server_stop_impl(s, timeout_ms < 0 ? 0 : timeout_ms, err) : 0;
}
