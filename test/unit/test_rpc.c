/* test_rpc: the gRPC glue (common/rpc.h) against a real grpc server and
 * client on 127.0.0.1, plaintext and mutual TLS with certificates made by
 * scripts/gen-certs at test time.
 *
 * Timing: nothing asserts on wall-clock speed. Concurrency is shown by
 * ordering (a fast call completes while a slow handler is provably still
 * blocked on a gate the test has not opened yet); waits poll a condition
 * with a generous deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hostagent.pb-c.h"
#include "ids.h"
#include "rpc.h"

#ifndef TORPOR_SOURCE_DIR
#error "TORPOR_SOURCE_DIR must be defined (test/CMakeLists.txt)"
#endif

#define M_ECHO "/torpor.test.v1.Test/Echo"
#define M_SLOW "/torpor.test.v1.Test/Slow"
#define M_NOREPLY "/torpor.test.v1.Test/NoReply"
#define M_TWICE "/torpor.test.v1.Test/Twice"

/* How long the slow handler blocks when nobody opens its gate: the tests
 * that need it still blocked (a fast call beside it, a deadline, a stop
 * that gives up) must finish their part within this on a loaded machine. */
#define SLOW_MS 5000
/* Upper bound for polling waits: far beyond any legitimate delay. */
#define WAIT_MS 20000

/* ------------------------------------------------------------ the app */

typedef struct test_app {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int slow_started;
    int slow_done;
    bool gate_open;
    char peer[256];
    long ping_tid, echo_tid; /* the thread that ran the last ping / echo handler */
} test_app;

static void app_init(test_app *a)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cond, NULL);
}

static void app_destroy(test_app *a)
{
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cond);
}

static struct timespec abs_after_ms(int ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

static void app_open_gate(test_app *a)
{
    pthread_mutex_lock(&a->mu);
    a->gate_open = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->mu);
}

/* Waits until *counter >= want; false on timeout. */
static bool app_wait_count(test_app *a, const int *counter, int want)
{
    struct timespec until = abs_after_ms(WAIT_MS);
    pthread_mutex_lock(&a->mu);
    int rc = 0;
    while (*counter < want && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&a->cond, &a->mu, &until);
    bool ok = *counter >= want;
    pthread_mutex_unlock(&a->mu);
    return ok;
}

static int app_get(test_app *a, const int *counter)
{
    pthread_mutex_lock(&a->mu);
    int v = *counter;
    pthread_mutex_unlock(&a->mu);
    return v;
}

/* PingSandbox: "missing" -> NOT_FOUND, "paused" -> FAILED_PRECONDITION,
 * otherwise last_active_at_unix = length of the id. Records the peer. */
static void h_ping(void *app, rpc_call *call, const ProtobufCMessage *msg)
{
    test_app *a = app;
    const Torpor__Hostagent__V1__PingSandboxRequest *req = (const void *)msg;
    pthread_mutex_lock(&a->mu);
    snprintf(a->peer, sizeof a->peer, "%s", rpc_call_peer_identity(call));
    a->ping_tid = syscall(SYS_gettid);
    pthread_mutex_unlock(&a->mu);
    if (strcmp(req->sandbox_id, "missing") == 0) {
        rpc_fail(call, GRPC_STATUS_NOT_FOUND, "sandbox %s not found", req->sandbox_id);
        return;
    }
    if (strcmp(req->sandbox_id, "paused") == 0) {
        rpc_fail(call, GRPC_STATUS_FAILED_PRECONDITION, "sandbox %s is paused, not running",
                 req->sandbox_id);
        return;
    }
    Torpor__Hostagent__V1__PingSandboxResponse resp =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_RESPONSE__INIT;
    resp.last_active_at_unix = (int64_t)strlen(req->sandbox_id);
    rpc_reply(call, &resp.base);
}

/* Echo: WriteFileRequest.content -> ReadFileResponse.content. */
static void h_echo(void *app, rpc_call *call, const ProtobufCMessage *msg)
{
    test_app *a = app;
    pthread_mutex_lock(&a->mu);
    a->echo_tid = syscall(SYS_gettid);
    pthread_mutex_unlock(&a->mu);
    const Torpor__Hostagent__V1__WriteFileRequest *req = (const void *)msg;
    Torpor__Hostagent__V1__ReadFileResponse resp = TORPOR__HOSTAGENT__V1__READ_FILE_RESPONSE__INIT;
    resp.content = req->content;
    rpc_reply(call, &resp.base);
}

/* Slow: blocks until the gate opens or SLOW_MS pass, then marks done. */
static void h_slow(void *app, rpc_call *call, const ProtobufCMessage *msg)
{
    test_app *a = app;
    struct timespec until = abs_after_ms(SLOW_MS);
    pthread_mutex_lock(&a->mu);
    a->slow_started++;
    pthread_cond_broadcast(&a->cond);
    int rc = 0;
    while (!a->gate_open && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&a->cond, &a->mu, &until);
    a->slow_done++;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->mu);
    Torpor__Hostagent__V1__PingSandboxResponse resp =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_RESPONSE__INIT;
    resp.last_active_at_unix = 7;
    rpc_reply(call, &resp.base);
}

static void h_noreply(void *app, rpc_call *call, const ProtobufCMessage *msg) { (void)call; }

static void h_twice(void *app, rpc_call *call, const ProtobufCMessage *msg)
{
    Torpor__Hostagent__V1__PingSandboxResponse resp =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_RESPONSE__INIT;
    resp.last_active_at_unix = 1;
    rpc_reply(call, &resp.base);
    resp.last_active_at_unix = 2;
    rpc_reply(call, &resp.base);                      /* ignored, logged */
    rpc_fail(call, GRPC_STATUS_INTERNAL, "too late"); /* ignored, logged */
}

static const rpc_method test_methods[] = {
    {RPC_PING_SANDBOX, &torpor__hostagent__v1__ping_sandbox_request__descriptor, h_ping},
    {M_ECHO, &torpor__hostagent__v1__write_file_request__descriptor, h_echo},
    {M_SLOW, &torpor__hostagent__v1__ping_sandbox_request__descriptor, h_slow},
    {M_NOREPLY, &torpor__hostagent__v1__ping_sandbox_request__descriptor, h_noreply},
    {M_TWICE, &torpor__hostagent__v1__ping_sandbox_request__descriptor, h_twice},
};

/* ------------------------------------------------------------ fixtures */

typedef struct certs {
    char good[256];  /* CA 1: ca, agent, cp */
    char other[256]; /* CA 2: a CA the server does not trust */
} certs;

typedef struct fixture {
    test_app app;
    rpc_server *srv;
    rpc_client *cli;
    char target[64];
} fixture;

/* rpc_server_config.quick_methods of the next start_server (setup_quick). */
static const char *const *g_quick_methods;

static int start_server(fixture *f, const rpc_tls_config *tls, int max_calls)
{
    app_init(&f->app);
    rpc_server_config cfg = {
        .listen_addr = "127.0.0.1:0",
        .methods = test_methods,
        .n_methods = sizeof test_methods / sizeof test_methods[0],
        .app = &f->app,
        .max_concurrent_calls = max_calls,
        .quick_methods = g_quick_methods,
    };
    if (tls) cfg.tls = *tls;
    terr err = {{0}};
    if (rpc_server_start(&cfg, &f->srv, &err) != 0) {
        fprintf(stderr, "rpc_server_start: %s\n", err.msg);
        return -1;
    }
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", rpc_server_port(f->srv));
    return 0;
}

static int open_client(fixture *f, const rpc_tls_config *tls, rpc_client **out)
{
    rpc_client_config cfg = {.target = f->target};
    if (tls) cfg.tls = *tls;
    terr err = {{0}};
    if (rpc_client_open(&cfg, out, &err) != 0) {
        fprintf(stderr, "rpc_client_open: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int setup_plain(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || start_server(f, NULL, 0) != 0 || open_client(f, NULL, &f->cli) != 0) return -1;
    *state = f;
    return 0;
}

static int setup_quick_ping(void **state)
{
    static const char *const quick[] = {RPC_PING_SANDBOX, NULL};
    g_quick_methods = quick;
    int rc = setup_plain(state);
    g_quick_methods = NULL;
    return rc;
}

static int setup_one_slot(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || start_server(f, NULL, 1) != 0 || open_client(f, NULL, &f->cli) != 0) return -1;
    *state = f;
    return 0;
}

static int teardown_fixture(void **state)
{
    fixture *f = *state;
    if (!f) return 0;
    app_open_gate(&f->app);
    rpc_server_stop(f->srv);
    rpc_client_close(f->cli);
    app_destroy(&f->app);
    free(f);
    return 0;
}

/* ------------------------------------------------------------ helpers */

static grpc_status_code ping(rpc_client *c, const char *id, int64_t *out, terr *err)
{
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    req.sandbox_id = (char *)id;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = rpc_client_call(c, RPC_PING_SANDBOX, &req.base,
                                          &torpor__hostagent__v1__ping_sandbox_response__descriptor,
                                          &resp, 5000, err);
    if (st == GRPC_STATUS_OK) {
        assert_non_null(resp);
        if (out) *out = ((Torpor__Hostagent__V1__PingSandboxResponse *)resp)->last_active_at_unix;
        protobuf_c_message_free_unpacked(resp, NULL);
    } else {
        assert_null(resp);
    }
    return st;
}

/* A slow call on its own thread; records its completion order. */
typedef struct slow_call {
    rpc_client *cli;
    int deadline_ms;
    atomic_int *order;
    int my_order;
    grpc_status_code status;
    int64_t value;
    terr err;
    pthread_t thread;
} slow_call;

static void *slow_call_thread(void *arg)
{
    slow_call *s = arg;
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    req.sandbox_id = "slow";
    ProtobufCMessage *resp = NULL;
    s->status = rpc_client_call(s->cli, M_SLOW, &req.base,
                                &torpor__hostagent__v1__ping_sandbox_response__descriptor, &resp,
                                s->deadline_ms, &s->err);
    if (s->order) s->my_order = atomic_fetch_add(s->order, 1);
    if (resp) {
        s->value = ((Torpor__Hostagent__V1__PingSandboxResponse *)resp)->last_active_at_unix;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return NULL;
}

static void slow_call_start(slow_call *s, rpc_client *cli, int deadline_ms, atomic_int *order)
{
    memset(s, 0, sizeof *s);
    s->cli = cli;
    s->deadline_ms = deadline_ms;
    s->order = order;
    s->status = GRPC_STATUS_UNKNOWN;
    assert_int_equal(pthread_create(&s->thread, NULL, slow_call_thread, s), 0);
}

/* A unary call through grpc directly, to send what rpc_client never sends:
 * raw bytes, no message at all, or TLS without a client certificate. */
static grpc_status_code raw_call(const char *target, grpc_channel_credentials *creds,
                                 const char *method, const void *bytes, size_t len,
                                 bool send_message, char *details, size_t dsize)
{
    grpc_init();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(5000, GPR_TIMESPAN));
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline, NULL);
    grpc_slice_unref(m);
    grpc_slice body = grpc_slice_from_copied_buffer(bytes, len);
    grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_metadata_array imd, tmd;
    grpc_metadata_array_init(&imd);
    grpc_metadata_array_init(&tmd);
    grpc_byte_buffer *resp = NULL;
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice det = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (send_message) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = req;
    }
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &imd;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &resp;
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.trailing_metadata = &tmd;
    ops[n].data.recv_status_on_client.status = &st;
    ops[n++].data.recv_status_on_client.status_details = &det;
    assert_int_equal(grpc_call_start_batch(call, ops, n, call, NULL), GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    assert_int_equal(ev.type, GRPC_OP_COMPLETE);
    snprintf(details, dsize, "%.*s", (int)GRPC_SLICE_LENGTH(det),
             (const char *)GRPC_SLICE_START_PTR(det));
    grpc_slice_unref(det);
    grpc_metadata_array_destroy(&imd);
    grpc_metadata_array_destroy(&tmd);
    grpc_byte_buffer_destroy(req);
    if (resp) grpc_byte_buffer_destroy(resp);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return st;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static const size_t cap = 1 << 16;
    char *buf = calloc(1, cap);
    assert_non_null(buf);
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* ------------------------------------------------------------ plaintext */

static void test_round_trip(void **state)
{
    fixture *f = *state;
    terr err = {{0}};
    int64_t v = -1;
    assert_int_equal(ping(f->cli, "sb-0123456789abcdef", &v, &err), GRPC_STATUS_OK);
    assert_int_equal(v, 19);
    /* Plaintext: no verified identity. */
    assert_string_equal(f->app.peer, "");
}

static long app_tid(test_app *a, const long *tid)
{
    pthread_mutex_lock(&a->mu);
    long v = *tid;
    pthread_mutex_unlock(&a->mu);
    return v;
}

static grpc_status_code echo(rpc_client *c, terr *err)
{
    Torpor__Hostagent__V1__WriteFileRequest req = TORPOR__HOSTAGENT__V1__WRITE_FILE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st =
        rpc_client_call(c, M_ECHO, &req.base,
                        &torpor__hostagent__v1__read_file_response__descriptor, &resp, 5000, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return st;
}

static void test_quick_method_runs_on_one_thread_others_on_their_own(void **state)
{
    /* A quick method's handler runs on the server's cq thread: every call
     * on the same thread. Any other method gets a thread per call (new
     * thread ids: Linux does not hand out a just-freed tid again at once). */
    fixture *f = *state;
    terr err;
    int64_t v;
    assert_int_equal(ping(f->cli, "sb-1", &v, &err), GRPC_STATUS_OK);
    long first = app_tid(&f->app, &f->app.ping_tid);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ping(f->cli, "sb-1", &v, &err), GRPC_STATUS_OK);
        assert_int_equal(v, 4);
        assert_true(app_tid(&f->app, &f->app.ping_tid) == first);
    }
    assert_int_equal(ping(f->cli, "missing", NULL, &err), GRPC_STATUS_NOT_FOUND);
    assert_true(app_tid(&f->app, &f->app.ping_tid) == first);
    assert_int_equal(echo(f->cli, &err), GRPC_STATUS_OK);
    long e1 = app_tid(&f->app, &f->app.echo_tid);
    assert_int_equal(echo(f->cli, &err), GRPC_STATUS_OK);
    long e2 = app_tid(&f->app, &f->app.echo_tid);
    assert_true(e1 != first && e2 != first && e1 != e2);
}

static void test_status_and_message_propagate(void **state)
{
    fixture *f = *state;
    terr err = {{0}};
    assert_int_equal(ping(f->cli, "missing", NULL, &err), GRPC_STATUS_NOT_FOUND);
    assert_string_equal(err.msg, "sandbox missing not found");
    assert_int_equal(ping(f->cli, "paused", NULL, &err), GRPC_STATUS_FAILED_PRECONDITION);
    assert_string_equal(err.msg, "sandbox paused is paused, not running");
}

static void test_unknown_method(void **state)
{
    fixture *f = *state;
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    ProtobufCMessage *resp = (ProtobufCMessage *)&req; /* must be reset to NULL */
    terr err = {{0}};
    grpc_status_code st = rpc_client_call(f->cli, RPC_HOSTAGENT_PREFIX "NoSuchMethod", &req.base,
                                          &torpor__hostagent__v1__ping_sandbox_response__descriptor,
                                          &resp, 5000, &err);
    assert_int_equal(st, GRPC_STATUS_UNIMPLEMENTED);
    assert_null(resp);
    assert_non_null(strstr(err.msg, "NoSuchMethod"));
}

/* A method path is the client's text and lands unquoted in log lines
 * (method=...): the server keeps only method-path characters of it. */
static void test_unknown_method_name_is_sanitised(void **state)
{
    fixture *f = *state;
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    terr err = {{0}};
    grpc_status_code st = rpc_client_call(
        f->cli, RPC_HOSTAGENT_PREFIX "No\"Such method=x", &req.base,
        &torpor__hostagent__v1__ping_sandbox_response__descriptor, &resp, 5000, &err);
    assert_int_equal(st, GRPC_STATUS_UNIMPLEMENTED);
    assert_null(resp);
    assert_non_null(strstr(err.msg, "No?Such?method?x"));
}

static void test_garbage_payload(void **state)
{
    fixture *f = *state;
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    char details[256];
    /* Field 1, length-delimited, claims 5 bytes but carries 2. */
    static const unsigned char bad[] = {0x0a, 0x05, 'a', 'b'};
    assert_int_equal(raw_call(f->target, creds, RPC_PING_SANDBOX, bad, sizeof bad, true, details,
                              sizeof details),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(details, "PingSandboxRequest"));
    /* No request message at all. */
    assert_int_equal(
        raw_call(f->target, creds, RPC_PING_SANDBOX, "", 0, false, details, sizeof details),
        GRPC_STATUS_INVALID_ARGUMENT);
    /* An empty message is a valid proto3 message with defaults. */
    assert_int_equal(
        raw_call(f->target, creds, RPC_PING_SANDBOX, "", 0, true, details, sizeof details),
        GRPC_STATUS_OK);
    grpc_channel_credentials_release(creds);
}

static void test_large_message_both_ways(void **state)
{
    fixture *f = *state;
    /* Beyond grpc's 4 MiB default: the 64 MiB limit applies both ways. */
    size_t n = 6u * 1024 * 1024;
    uint8_t *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++) data[i] = (uint8_t)(i * 31u + 7u);
    Torpor__Hostagent__V1__WriteFileRequest req = TORPOR__HOSTAGENT__V1__WRITE_FILE_REQUEST__INIT;
    req.content.data = data;
    req.content.len = n;
    ProtobufCMessage *resp = NULL;
    terr err = {{0}};
    grpc_status_code st =
        rpc_client_call(f->cli, M_ECHO, &req.base,
                        &torpor__hostagent__v1__read_file_response__descriptor, &resp, 20000, &err);
    assert_int_equal(st, GRPC_STATUS_OK);
    Torpor__Hostagent__V1__ReadFileResponse *r = (void *)resp;
    assert_int_equal(r->content.len, n);
    assert_memory_equal(r->content.data, data, n);
    protobuf_c_message_free_unpacked(resp, NULL);
    free(data);
}

static void test_slow_call_does_not_delay_fast_call(void **state)
{
    fixture *f = *state;
    atomic_int order;
    atomic_init(&order, 0);
    slow_call s;
    slow_call_start(&s, f->cli, 10000, &order);
    assert_true(app_wait_count(&f->app, &f->app.slow_started, 1));

    /* The slow handler is blocked on a gate that only this thread opens, so
     * the fast call can complete only if it runs beside it. */
    terr err = {{0}};
    assert_int_equal(ping(f->cli, "fast", NULL, &err), GRPC_STATUS_OK);
    int fast_order = atomic_fetch_add(&order, 1);
    assert_int_equal(app_get(&f->app, &f->app.slow_done), 0);

    app_open_gate(&f->app);
    pthread_join(s.thread, NULL);
    assert_int_equal(s.status, GRPC_STATUS_OK);
    assert_int_equal(s.value, 7);
    assert_true(fast_order < s.my_order);
}

static void test_deadline_exceeded(void **state)
{
    fixture *f = *state;
    slow_call s;
    slow_call_start(&s, f->cli, 200, NULL);
    pthread_join(s.thread, NULL);
    assert_int_equal(s.status, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_true(s.err.msg[0] != '\0');
    print_message("deadline: %s\n", s.err.msg);
    /* The handler was still blocked: the client did not wait for it. */
    assert_int_equal(app_get(&f->app, &f->app.slow_done), 0);
    app_open_gate(&f->app);
    assert_true(app_wait_count(&f->app, &f->app.slow_done, 1));
    /* The server is still healthy after replying to a call the client dropped. */
    terr err = {{0}};
    assert_int_equal(ping(f->cli, "after", NULL, &err), GRPC_STATUS_OK);
}

static void test_handler_without_reply_is_internal(void **state)
{
    fixture *f = *state;
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    terr err = {{0}};
    assert_int_equal(rpc_client_call(f->cli, M_NOREPLY, &req.base,
                                     &torpor__hostagent__v1__ping_sandbox_response__descriptor,
                                     &resp, 5000, &err),
                     GRPC_STATUS_INTERNAL);
    assert_null(resp);
    assert_non_null(strstr(err.msg, "without a reply"));
}

static void test_second_reply_is_ignored(void **state)
{
    fixture *f = *state;
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    terr err = {{0}};
    assert_int_equal(rpc_client_call(f->cli, M_TWICE, &req.base,
                                     &torpor__hostagent__v1__ping_sandbox_response__descriptor,
                                     &resp, 5000, &err),
                     GRPC_STATUS_OK);
    assert_int_equal(((Torpor__Hostagent__V1__PingSandboxResponse *)resp)->last_active_at_unix, 1);
    protobuf_c_message_free_unpacked(resp, NULL);
}

static void test_bad_call_arguments(void **state)
{
    fixture *f = *state;
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    terr err = {{0}};
    assert_int_equal(rpc_client_call(f->cli, RPC_PING_SANDBOX, &req.base,
                                     &torpor__hostagent__v1__ping_sandbox_response__descriptor,
                                     &resp, 0, &err),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "deadline"));
    assert_int_equal(rpc_client_call(NULL, RPC_PING_SANDBOX, &req.base,
                                     &torpor__hostagent__v1__ping_sandbox_response__descriptor,
                                     &resp, 100, &err),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_null(resp);
}

static void test_overload_is_resource_exhausted(void **state)
{
    fixture *f = *state; /* max_concurrent_calls = 1 */
    slow_call s;
    slow_call_start(&s, f->cli, 10000, NULL);
    assert_true(app_wait_count(&f->app, &f->app.slow_started, 1));
    terr err = {{0}};
    assert_int_equal(ping(f->cli, "second", NULL, &err), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err.msg, "limit 1"));
    app_open_gate(&f->app);
    pthread_join(s.thread, NULL);
    assert_int_equal(s.status, GRPC_STATUS_OK);
    /* The slot is free again. It is the handler thread's until it has
     * returned, a moment after its reply reached us: a call sent at once
     * can still find it taken, so poll (bounded) until one gets through. */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    grpc_status_code st;
    while ((st = ping(f->cli, "third", NULL, &err)) == GRPC_STATUS_RESOURCE_EXHAUSTED) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > WAIT_MS / 1000) break;
        struct timespec nap = {0, 10 * 1000000L};
        nanosleep(&nap, NULL);
    }
    assert_int_equal(st, GRPC_STATUS_OK);
}

static void test_stop_waits_for_running_handler(void **state)
{
    fixture f;
    memset(&f, 0, sizeof f);
    assert_int_equal(start_server(&f, NULL, 0), 0);
    assert_int_equal(open_client(&f, NULL, &f.cli), 0);
    slow_call s;
    slow_call_start(&s, f.cli, 10000, NULL);
    assert_true(app_wait_count(&f.app, &f.app.slow_started, 1));

    /* Nobody opens the gate: the handler runs its full SLOW_MS. */
    rpc_server_stop(f.srv);
    assert_int_equal(app_get(&f.app, &f.app.slow_done), 1);

    pthread_join(s.thread, NULL);
    assert_int_equal(s.status, GRPC_STATUS_OK); /* its reply still went out */
    assert_int_equal(s.value, 7);

    /* A stopped server answers nothing. */
    terr err = {{0}};
    assert_int_equal(ping(f.cli, "late", NULL, &err), GRPC_STATUS_UNAVAILABLE);
    rpc_client_close(f.cli);
    app_destroy(&f.app);
}

static void test_stop_within_gives_up_on_a_stuck_handler(void **state)
{
    fixture f;
    memset(&f, 0, sizeof f);
    assert_int_equal(start_server(&f, NULL, 0), 0);
    assert_int_equal(open_client(&f, NULL, &f.cli), 0);
    slow_call s;
    slow_call_start(&s, f.cli, 10000, NULL);
    assert_true(app_wait_count(&f.app, &f.app.slow_started, 1));

    terr err = {{0}};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(rpc_server_stop_within(f.srv, 200, &err), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 150 && ms < SLOW_MS - 1000); /* not until the handler ended */
    assert_non_null(strstr(err.msg, "still running"));
    assert_int_equal(app_get(&f.app, &f.app.slow_done), 0);

    app_open_gate(&f.app);
    assert_int_equal(rpc_server_stop_within(f.srv, 10000, &err), 0);
    pthread_join(s.thread, NULL);
    rpc_client_close(f.cli);
    app_destroy(&f.app);
}

/* ------------------------------------------------------------ address rules */

static void test_loopback_detection(void **state)
{
    static const char *const yes[] = {"127.0.0.1:50051",
                                      "127.1.2.3:1",
                                      "127.0.0.1",
                                      "localhost:8080",
                                      "LOCALHOST",
                                      "[::1]:50051",
                                      "::1",
                                      "[::1]",
                                      "ipv4:127.0.0.1:5",
                                      "dns:///localhost:50051",
                                      "[::ffff:127.0.0.1]:9"};
    static const char *const no[] = {"0.0.0.0:50051",
                                     "10.0.0.5:50051",
                                     "192.168.1.1",
                                     "[::]:50051",
                                     "::",
                                     "example.com:443",
                                     "localhost.evil.com:1",
                                     "127.0.0.1:abc",
                                     "127.0.0.1:",
                                     "[::1",
                                     "[]:1",
                                     ":50051",
                                     "",
                                     "unix:/tmp/sock",
                                     "128.0.0.1:1",
                                     "127.0.0.1:123456"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!rpc_addr_is_loopback(yes[i])) fail_msg("expected loopback: %s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (rpc_addr_is_loopback(no[i])) fail_msg("expected not loopback: %s", no[i]);
    assert_false(rpc_addr_is_loopback(NULL));
}

static void test_plaintext_refused_off_loopback(void **state)
{
    terr err = {{0}};
    rpc_client *c = (rpc_client *)&err;
    rpc_client_config cc = {.target = "192.0.2.1:50051"}; /* TEST-NET: never contacted */
    assert_int_equal(rpc_client_open(&cc, &c, &err), -1);
    assert_null(c);
    assert_non_null(strstr(err.msg, "non-loopback"));

    rpc_server *s = (rpc_server *)&err;
    rpc_server_config sc = {.listen_addr = "0.0.0.0:0", .methods = test_methods, .n_methods = 1};
    assert_int_equal(rpc_server_start(&sc, &s, &err), -1);
    assert_null(s);
    assert_non_null(strstr(err.msg, "non-loopback"));
    assert_non_null(strstr(err.msg, "--tls-cert"));

    /* A server name to verify makes no sense without TLS. */
    rpc_client_config nc = {.target = "127.0.0.1:1",
                            .tls = {.server_name_override = "torpor-agent"}};
    assert_int_equal(rpc_client_open(&nc, &c, &err), -1);
    assert_non_null(strstr(err.msg, "server name"));
}

static void test_bad_server_config(void **state)
{
    terr err = {{0}};
    rpc_server *s = NULL;
    rpc_server_config sc = {.listen_addr = "127.0.0.1:0", .methods = test_methods, .n_methods = 1};
    sc.tls.cert_path = "/nonexistent/agent.pem"; /* key and CA missing */
    assert_int_equal(rpc_server_start(&sc, &s, &err), -1);
    assert_non_null(strstr(err.msg, "together"));

    rpc_method broken = {"NoSlash", &torpor__hostagent__v1__ping_sandbox_request__descriptor,
                         h_ping};
    rpc_server_config bc = {.listen_addr = "127.0.0.1:0", .methods = &broken, .n_methods = 1};
    assert_int_equal(rpc_server_start(&bc, &s, &err), -1);
    assert_null(s);

    /* The same port twice: the second bind fails with a clear error. */
    fixture f;
    memset(&f, 0, sizeof f);
    assert_int_equal(start_server(&f, NULL, 0), 0);
    rpc_server_config dup = {.listen_addr = f.target, .methods = test_methods, .n_methods = 1};
    assert_int_equal(rpc_server_start(&dup, &s, &err), -1);
    assert_non_null(strstr(err.msg, "cannot listen"));
    rpc_server_stop(f.srv);
    app_destroy(&f.app);
}

/* ------------------------------------------------------------ mutual TLS */

static certs g_certs; /* written once by the group setup, read by the TLS tests */

static int run_gen_certs(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/scripts/gen-certs' '%s' 2>/dev/null", TORPOR_SOURCE_DIR, dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_setup(void **state)
{
    snprintf(g_certs.good, sizeof g_certs.good, "/tmp/test_rpc_ca1.XXXXXX");
    snprintf(g_certs.other, sizeof g_certs.other, "/tmp/test_rpc_ca2.XXXXXX");
    if (!mkdtemp(g_certs.good) || !mkdtemp(g_certs.other)) return -1;
    if (run_gen_certs(g_certs.good) != 0 || run_gen_certs(g_certs.other) != 0) {
        fprintf(stderr, "scripts/gen-certs failed\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", g_certs.good, g_certs.other);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct tls_paths {
    char cert[300], key[300], ca[300];
} tls_paths;

static rpc_tls_config tls_cfg(tls_paths *p, const char *dir, const char *name, const char *ca_dir)
{
    snprintf(p->cert, sizeof p->cert, "%s/%s.pem", dir, name);
    snprintf(p->key, sizeof p->key, "%s/%s.key", dir, name);
    snprintf(p->ca, sizeof p->ca, "%s/ca.pem", ca_dir);
    rpc_tls_config t = {.cert_path = p->cert, .key_path = p->key, .ca_path = p->ca};
    return t;
}

static int setup_tls(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tls_paths sp, cp;
    rpc_tls_config st = tls_cfg(&sp, g_certs.good, "agent", g_certs.good);
    rpc_tls_config ct = tls_cfg(&cp, g_certs.good, "cp", g_certs.good);
    if (!f || start_server(f, &st, 0) != 0 || open_client(f, &ct, &f->cli) != 0) return -1;
    *state = f;
    return 0;
}

static void test_tls_good_client_and_identity(void **state)
{
    fixture *f = *state;
    terr err = {{0}};
    int64_t v = 0;
    assert_int_equal(ping(f->cli, "sb-tls", &v, &err), GRPC_STATUS_OK);
    assert_int_equal(v, 6);
    assert_string_equal(f->app.peer, "torpor-cp");
}

static void test_tls_server_name_override(void **state)
{
    fixture *f = *state;
    tls_paths cp;
    rpc_tls_config ct = tls_cfg(&cp, g_certs.good, "cp", g_certs.good);
    terr err = {{0}};

    ct.server_name_override = "torpor-agent"; /* a SAN of the agent cert */
    rpc_client *c = NULL;
    assert_int_equal(open_client(f, &ct, &c), 0);
    assert_int_equal(ping(c, "x", NULL, &err), GRPC_STATUS_OK);
    rpc_client_close(c);

    ct.server_name_override = "someone-else";
    assert_int_equal(open_client(f, &ct, &c), 0);
    assert_int_equal(ping(c, "x", NULL, &err), GRPC_STATUS_UNAVAILABLE);
    rpc_client_close(c);
}

static void test_tls_plaintext_client_refused(void **state)
{
    fixture *f = *state;
    rpc_client *c = NULL;
    assert_int_equal(open_client(f, NULL, &c), 0);
    terr err = {{0}};
    assert_int_equal(ping(c, "x", NULL, &err), GRPC_STATUS_UNAVAILABLE);
    assert_true(err.msg[0] != '\0');
    print_message("plaintext client refused: %s\n", err.msg);
    rpc_client_close(c);
}

static void test_tls_client_without_cert_refused(void **state)
{
    fixture *f = *state;
    char ca_path[300];
    snprintf(ca_path, sizeof ca_path, "%s/ca.pem", g_certs.good);
    char *ca = read_text(ca_path);
    grpc_init();
    /* Trusts the server's CA (so the server side is fine) but has no certificate. */
    grpc_channel_credentials *creds = grpc_ssl_credentials_create(ca, NULL, NULL, NULL);
    char details[256];
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    req.sandbox_id = "nocert";
    uint8_t buf[64];
    size_t n = protobuf_c_message_pack(&req.base, buf);
    assert_int_equal(
        raw_call(f->target, creds, RPC_PING_SANDBOX, buf, n, true, details, sizeof details),
        GRPC_STATUS_UNAVAILABLE);
    grpc_channel_credentials_release(creds);
    grpc_shutdown();
    free(ca);
    assert_string_equal(f->app.peer, ""); /* the handler never ran */
}

static void test_tls_client_from_other_ca_refused(void **state)
{
    fixture *f = *state;
    /* Trusts the right CA, but its own certificate was signed by another. */
    tls_paths cp;
    rpc_tls_config ct = tls_cfg(&cp, g_certs.other, "cp", g_certs.good);
    rpc_client *c = NULL;
    assert_int_equal(open_client(f, &ct, &c), 0);
    terr err = {{0}};
    assert_int_equal(ping(c, "x", NULL, &err), GRPC_STATUS_UNAVAILABLE);
    rpc_client_close(c);
    assert_string_equal(f->app.peer, "");
}

/* Without --tls-client-name, an agent's own certificate (serverAuth only,
 * as scripts/gen-certs issues it) still cannot call an agent: OpenSSL checks
 * a client certificate's purpose, so one agent cannot drive another. */
static void test_tls_agent_certificate_refused_as_a_client(void **state)
{
    fixture *f = *state;
    tls_paths ap;
    rpc_tls_config at = tls_cfg(&ap, g_certs.good, "agent", g_certs.good);
    rpc_client *c = NULL;
    assert_int_equal(open_client(f, &at, &c), 0);
    terr err = {{0}};
    assert_int_equal(ping(c, "x", NULL, &err), GRPC_STATUS_UNAVAILABLE);
    rpc_client_close(c);
    assert_string_equal(f->app.peer, ""); /* the handler never ran */
}

/* A client certificate for `name`, signed by CA 1 (what any tenant of the
 * same PKI could hold): written as <good>/<name>.pem and .key. */
static int issue_client_cert(const char *name)
{
    char cmd[2048];
    snprintf(
        cmd, sizeof cmd,
        "cd '%s' && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '%s.key' 2>/dev/null && "
        "openssl req -new -key '%s.key' -subj '/CN=%s' -out '%s.csr' 2>/dev/null && "
        "printf 'extendedKeyUsage=clientAuth\nsubjectAltName=DNS:%s\n' > '%s.ext' && "
        "openssl x509 -req -in '%s.csr' -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 "
        "-extfile '%s.ext' -out '%s.pem' 2>/dev/null",
        g_certs.good, name, name, name, name, name, name, name, name, name);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup_tls_named(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tls_paths sp, cp;
    rpc_tls_config st = tls_cfg(&sp, g_certs.good, "agent", g_certs.good);
    st.expected_client_name = "torpor-cp";
    rpc_tls_config ct = tls_cfg(&cp, g_certs.good, "cp", g_certs.good);
    if (!f || start_server(f, &st, 0) != 0 || open_client(f, &ct, &f->cli) != 0) return -1;
    *state = f;
    return 0;
}

static void test_tls_expected_client_name_is_served(void **state)
{
    fixture *f = *state;
    terr err = {{0}};
    int64_t v = 0;
    assert_int_equal(ping(f->cli, "sb-named", &v, &err), GRPC_STATUS_OK);
    assert_string_equal(f->app.peer, "torpor-cp");
}

static void test_tls_same_ca_other_name_refused(void **state)
{
    fixture *f = *state;
    assert_int_equal(issue_client_cert("intruder"), 0);
    tls_paths cp;
    rpc_tls_config ct = tls_cfg(&cp, g_certs.good, "intruder", g_certs.good);
    rpc_client *c = NULL;
    assert_int_equal(open_client(f, &ct, &c), 0);
    terr err = {{0}};
    assert_int_equal(ping(c, "x", NULL, &err), GRPC_STATUS_UNAUTHENTICATED);
    assert_non_null(strstr(err.msg, "intruder"));
    rpc_client_close(c);
    assert_string_equal(f->app.peer, ""); /* the handler never ran */
}

static void test_tls_client_rejects_unknown_server(void **state)
{
    fixture *f = *state;
    /* A valid client cert of CA 1, but it trusts only CA 2: the agent's
     * certificate does not verify, so the client refuses the server. */
    tls_paths cp;
    rpc_tls_config ct = tls_cfg(&cp, g_certs.good, "cp", g_certs.other);
    rpc_client *c = NULL;
    assert_int_equal(open_client(f, &ct, &c), 0);
    terr err = {{0}};
    assert_int_equal(ping(c, "x", NULL, &err), GRPC_STATUS_UNAVAILABLE);
    rpc_client_close(c);
}

static void test_tls_file_errors(void **state)
{
    terr err = {{0}};
    rpc_server *s = NULL;
    tls_paths p;
    rpc_server_config sc = {.listen_addr = "127.0.0.1:0", .methods = test_methods, .n_methods = 1};

    sc.tls = tls_cfg(&p, g_certs.good, "agent", g_certs.good);
    snprintf(p.cert, sizeof p.cert, "%s/nope.pem", g_certs.good);
    assert_int_equal(rpc_server_start(&sc, &s, &err), -1);
    assert_non_null(strstr(err.msg, "nope.pem"));

    sc.tls = tls_cfg(&p, g_certs.good, "agent", g_certs.good);
    snprintf(p.key, sizeof p.key, "%s/cp.key", g_certs.good); /* another cert's key */
    assert_int_equal(rpc_server_start(&sc, &s, &err), -1);
    assert_non_null(strstr(err.msg, "does not match"));

    sc.tls = tls_cfg(&p, g_certs.good, "agent", g_certs.good);
    snprintf(p.ca, sizeof p.ca, "%s/agent.key", g_certs.good); /* not a certificate */
    assert_int_equal(rpc_server_start(&sc, &s, &err), -1);
    assert_non_null(strstr(err.msg, "no PEM CA certificate"));
    assert_null(s);

    /* TLS makes a non-loopback client allowed (nothing is dialled until a call). */
    rpc_client_config cc = {.target = "192.0.2.1:50051"};
    cc.tls = tls_cfg(&p, g_certs.good, "cp", g_certs.good);
    rpc_client *c = NULL;
    assert_int_equal(rpc_client_open(&cc, &c, &err), 0);
    rpc_client_close(c);
}

/* ------------------------------------------------------------ ids */

static void test_ids(void **state)
{
    terr err = {{0}};
    char a[33], b[33];
    assert_int_equal(ids_random_hex(a, 16, &err), 0);
    assert_int_equal(ids_random_hex(b, 16, &err), 0);
    assert_int_equal(strlen(a), 32);
    assert_int_equal(strspn(a, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
    assert_int_equal(ids_random_hex(a, 0, &err), -1);
    assert_int_equal(ids_random_hex(NULL, 4, &err), -1);

    char h[65];
    assert_int_equal(ids_sha256_hex("abc", 3, h), 0);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(ids_sha256_hex(NULL, 0, h), 0);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(ids_sha256_hex(NULL, 1, h), -1);
}

int main(void)
{
    const struct CMUnitTest plain[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup_plain, teardown_fixture),
        cmocka_unit_test_setup_teardown(test_quick_method_runs_on_one_thread_others_on_their_own,
                                        setup_quick_ping, teardown_fixture),
        cmocka_unit_test_setup_teardown(test_status_and_message_propagate, setup_plain,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_unknown_method, setup_plain, teardown_fixture),
        cmocka_unit_test_setup_teardown(test_unknown_method_name_is_sanitised, setup_plain,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_garbage_payload, setup_plain, teardown_fixture),
        cmocka_unit_test_setup_teardown(test_large_message_both_ways, setup_plain,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_slow_call_does_not_delay_fast_call, setup_plain,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_deadline_exceeded, setup_plain, teardown_fixture),
        cmocka_unit_test_setup_teardown(test_handler_without_reply_is_internal, setup_plain,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_second_reply_is_ignored, setup_plain,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_bad_call_arguments, setup_plain, teardown_fixture),
        cmocka_unit_test_setup_teardown(test_overload_is_resource_exhausted, setup_one_slot,
                                        teardown_fixture),
        cmocka_unit_test(test_stop_waits_for_running_handler),
        cmocka_unit_test(test_stop_within_gives_up_on_a_stuck_handler),
        cmocka_unit_test(test_loopback_detection),
        cmocka_unit_test(test_plaintext_refused_off_loopback),
        cmocka_unit_test(test_bad_server_config),
        cmocka_unit_test(test_ids),
    };
    const struct CMUnitTest tls[] = {
        cmocka_unit_test_setup_teardown(test_tls_good_client_and_identity, setup_tls,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_tls_server_name_override, setup_tls, teardown_fixture),
        cmocka_unit_test_setup_teardown(test_tls_plaintext_client_refused, setup_tls,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_tls_client_without_cert_refused, setup_tls,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_tls_client_from_other_ca_refused, setup_tls,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_tls_agent_certificate_refused_as_a_client, setup_tls,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_tls_client_rejects_unknown_server, setup_tls,
                                        teardown_fixture),
        cmocka_unit_test(test_tls_file_errors),
        cmocka_unit_test_setup_teardown(test_tls_expected_client_name_is_served, setup_tls_named,
                                        teardown_fixture),
        cmocka_unit_test_setup_teardown(test_tls_same_ca_other_name_refused, setup_tls_named,
                                        teardown_fixture),
    };
    int failed = cmocka_run_group_tests_name("rpc", plain, NULL, NULL);
    failed += cmocka_run_group_tests_name("rpc_tls", tls, group_setup, group_teardown);
    return failed ? 1 : 0;
}
