/* HostAgentService over the wire: the real rpc glue on 127.0.0.1:0, the
 * agent's handlers, lifecycle and journal, and the test driver. Checks the
 * status codes a control plane sees, ListSandboxes acks, and that a slow
 * pause does not hold up Ping or ListSandboxes; and the agent identity
 * (agent_identity.h) that ListSandboxes reports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_fixture.h"
#include "agent_identity.h"
#include "guest_protocol.h"
#include "hostagent.pb-c.h"
#include "rpc.h"
#include "rpc_handlers.h"

#define DEADLINE_MS 10000
#define TEST_AGENT_ID "ag-0123456789abcdef"

typedef struct rpc_fx {
    agent_fx *fx;
    agent_rpc app;
    rpc_server *server;
    rpc_client *client;
} rpc_fx;

static int setup(void **state)
{
    rpc_fx *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->fx = fx_new();
    r->app = (agent_rpc){.lc = r->fx->lc,
                         .journal = r->fx->journal,
                         .host_ip = "127.0.0.1",
                         .agent_id = TEST_AGENT_ID};
    rpc_server_config scfg = {.listen_addr = "127.0.0.1:0", .app = &r->app};
    scfg.methods = agent_rpc_methods(&scfg.n_methods);
    terr e;
    if (rpc_server_start(&scfg, &r->server, &e) != 0) fail_msg("rpc_server_start: %s", e.msg);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(r->server));
    rpc_client_config ccfg = {.target = target};
    if (rpc_client_open(&ccfg, &r->client, &e) != 0) fail_msg("rpc_client_open: %s", e.msg);
    *state = r;
    return 0;
}

static int teardown(void **state)
{
    rpc_fx *r = *state;
    rpc_client_close(r->client);
    rpc_server_stop(r->server);
    fx_free(r->fx);
    free(r);
    return 0;
}

/* Calls method; returns the status; *resp (if OK) must be freed by caller. */
static grpc_status_code call(rpc_fx *r, const char *method, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, terr *e)
{
    ProtobufCMessage *out = NULL;
    grpc_status_code st = rpc_client_call(r->client, method, req, rd, &out, DEADLINE_MS, e);
    if (resp) *resp = out;
    else if (out) protobuf_c_message_free_unpacked(out, NULL);
    return st;
}

static grpc_status_code create(rpc_fx *r, const char *id, int vcpus, int timeout_sec, terr *e)
{
    Torpor__Hostagent__V1__CreateSandboxRequest req =
        TORPOR__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__INIT;
    req.sandbox_id = (char *)id;
    req.template_ = "minimal";
    req.vcpus = vcpus;
    req.memory_mb = 128;
    req.timeout_sec = timeout_sec;
    return call(r, RPC_CREATE_SANDBOX, &req.base,
                &torpor__hostagent__v1__create_sandbox_response__descriptor, NULL, e);
}

static grpc_status_code ping(rpc_fx *r, const char *id, terr *e)
{
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    req.sandbox_id = (char *)id;
    return call(r, RPC_PING_SANDBOX, &req.base,
                &torpor__hostagent__v1__ping_sandbox_response__descriptor, NULL, e);
}

static grpc_status_code by_id(rpc_fx *r, const char *method, const ProtobufCMessageDescriptor *reqd,
                              const ProtobufCMessageDescriptor *respd, const char *id, terr *e)
{
    /* Pause/Resume/Destroy requests all start with field 1 = sandbox_id. */
    Torpor__Hostagent__V1__PauseSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PAUSE_SANDBOX_REQUEST__INIT;
    req.base.descriptor = reqd;
    req.sandbox_id = (char *)id;
    return call(r, method, &req.base, respd, NULL, e);
}

#define PAUSE(r, id, e)                                                                    \
    by_id(r, RPC_PAUSE_SANDBOX, &torpor__hostagent__v1__pause_sandbox_request__descriptor, \
          &torpor__hostagent__v1__pause_sandbox_response__descriptor, id, e)
#define DESTROY(r, id, e)                                                                      \
    by_id(r, RPC_DESTROY_SANDBOX, &torpor__hostagent__v1__destroy_sandbox_request__descriptor, \
          &torpor__hostagent__v1__destroy_sandbox_response__descriptor, id, e)

static Torpor__Hostagent__V1__ListSandboxesResponse *list(rpc_fx *r, const char **acks,
                                                          size_t n_acks)
{
    Torpor__Hostagent__V1__ListSandboxesRequest req =
        TORPOR__HOSTAGENT__V1__LIST_SANDBOXES_REQUEST__INIT;
    req.ack_auto_paused_sandbox_ids = (char **)acks;
    req.n_ack_auto_paused_sandbox_ids = n_acks;
    ProtobufCMessage *resp = NULL;
    terr e;
    assert_int_equal(call(r, RPC_LIST_SANDBOXES, &req.base,
                          &torpor__hostagent__v1__list_sandboxes_response__descriptor, &resp, &e),
                     GRPC_STATUS_OK);
    return (Torpor__Hostagent__V1__ListSandboxesResponse *)resp;
}

/* disk_mb: 0 (default) or 512..65536; anything else is INVALID_ARGUMENT. */
static void test_create_refuses_bad_disk_mb(void **state)
{
    rpc_fx *r = *state;
    terr e;
    Torpor__Hostagent__V1__CreateSandboxRequest creq =
        TORPOR__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__INIT;
    creq.sandbox_id = "sb-disk";
    creq.template_ = "minimal";
    creq.vcpus = 1;
    creq.memory_mb = 128;
    int bad[] = {100, 511, 65537, -1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        creq.disk_mb = bad[i];
        assert_int_equal(call(r, RPC_CREATE_SANDBOX, &creq.base,
                              &torpor__hostagent__v1__create_sandbox_response__descriptor, NULL,
                              &e),
                         GRPC_STATUS_INVALID_ARGUMENT);
        assert_non_null(strstr(e.msg, "disk_mb"));
    }
    creq.disk_mb = 512;
    assert_int_equal(call(r, RPC_CREATE_SANDBOX, &creq.base,
                          &torpor__hostagent__v1__create_sandbox_response__descriptor, NULL, &e),
                     GRPC_STATUS_OK);
}

/* The chunked file RPCs check their fields before anything reaches the
 * sandbox (INVALID_ARGUMENT), answer NOT_FOUND for an unknown sandbox, and a
 * runtime without a guest protocol (the test driver) is FAILED_PRECONDITION,
 * never a crash. */
static void test_file_chunk_rpcs_check_fields(void **state)
{
    rpc_fx *r = *state;
    terr e;
    assert_int_equal(create(r, "sb-f", 1, 0, &e), GRPC_STATUS_OK);
    Torpor__Hostagent__V1__WriteFileChunkRequest w =
        TORPOR__HOSTAGENT__V1__WRITE_FILE_CHUNK_REQUEST__INIT;
    const ProtobufCMessageDescriptor *wd =
        &torpor__hostagent__v1__write_file_chunk_response__descriptor;
    w.sandbox_id = "sb-f";
    w.path = "/tmp/x";
    w.upload_id = "../evil";
    assert_int_equal(call(r, RPC_WRITE_FILE_CHUNK, &w.base, wd, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    w.upload_id = "abc";
    w.path = "tmp/relative";
    assert_int_equal(call(r, RPC_WRITE_FILE_CHUNK, &w.base, wd, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    w.path = "/tmp/a\nb";
    assert_int_equal(call(r, RPC_WRITE_FILE_CHUNK, &w.base, wd, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    w.path = "/tmp/x";
    w.commit = w.abort = true;
    assert_int_equal(call(r, RPC_WRITE_FILE_CHUNK, &w.base, wd, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    w.commit = w.abort = false;
    uint8_t *big = calloc(1, GP_CHUNK_MAX + 1);
    w.data.data = big;
    w.data.len = GP_CHUNK_MAX + 1;
    assert_int_equal(call(r, RPC_WRITE_FILE_CHUNK, &w.base, wd, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    free(big);
    w.data.data = (uint8_t *)"x";
    w.data.len = 1;
    w.sandbox_id = "sb-nope";
    assert_int_equal(call(r, RPC_WRITE_FILE_CHUNK, &w.base, wd, NULL, &e), GRPC_STATUS_NOT_FOUND);
    w.sandbox_id = "sb-f";
    assert_int_equal(call(r, RPC_WRITE_FILE_CHUNK, &w.base, wd, NULL, &e),
                     GRPC_STATUS_FAILED_PRECONDITION);

    Torpor__Hostagent__V1__ReadFileChunkRequest rq =
        TORPOR__HOSTAGENT__V1__READ_FILE_CHUNK_REQUEST__INIT;
    const ProtobufCMessageDescriptor *rd =
        &torpor__hostagent__v1__read_file_chunk_response__descriptor;
    rq.sandbox_id = "sb-f";
    rq.path = "/tmp/x";
    rq.length = 0;
    assert_int_equal(call(r, RPC_READ_FILE_CHUNK, &rq.base, rd, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    rq.length = GP_CHUNK_MAX + 1;
    assert_int_equal(call(r, RPC_READ_FILE_CHUNK, &rq.base, rd, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);

    Torpor__Hostagent__V1__ListDirRequest lq = TORPOR__HOSTAGENT__V1__LIST_DIR_REQUEST__INIT;
    const ProtobufCMessageDescriptor *ld = &torpor__hostagent__v1__list_dir_response__descriptor;
    lq.sandbox_id = "sb-f";
    lq.path = "/";
    lq.max_entries = 0;
    assert_int_equal(call(r, RPC_LIST_DIR, &lq.base, ld, NULL, &e), GRPC_STATUS_INVALID_ARGUMENT);
    lq.max_entries = GP_LIST_MAX_ENTRIES + 1;
    assert_int_equal(call(r, RPC_LIST_DIR, &lq.base, ld, NULL, &e), GRPC_STATUS_INVALID_ARGUMENT);
    lq.max_entries = 10;
    assert_int_equal(call(r, RPC_LIST_DIR, &lq.base, ld, NULL, &e),
                     GRPC_STATUS_FAILED_PRECONDITION);
}

static void test_status_codes(void **state)
{
    rpc_fx *r = *state;
    terr e;
    assert_int_equal(ping(r, "sb-none", &e), GRPC_STATUS_NOT_FOUND);
    assert_non_null(strstr(e.msg, "not found"));
    assert_int_equal(DESTROY(r, "sb-none", &e), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(PAUSE(r, "sb-none", &e), GRPC_STATUS_NOT_FOUND);
    /* 64 characters: refused, never truncated into a valid id */
    assert_int_equal(
        create(r, "x123456789012345678901234567890123456789012345678901234567890123", 1, 0, &e),
        GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(create(r, "../etc", 1, 0, &e), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(create(r, "", 1, 0, &e), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(create(r, "sb-1", 0, 0, &e), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(create(r, "sb-1", 1, -5, &e), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(ping(r, "bad/id", &e), GRPC_STATUS_INVALID_ARGUMENT);

    Torpor__Hostagent__V1__CreateSandboxRequest creq =
        TORPOR__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__INIT;
    creq.sandbox_id = "sb-1";
    creq.template_ = "minimal";
    creq.vcpus = 2;
    creq.memory_mb = 256;
    creq.timeout_sec = 30;
    ProtobufCMessage *out;
    assert_int_equal(call(r, RPC_CREATE_SANDBOX, &creq.base,
                          &torpor__hostagent__v1__create_sandbox_response__descriptor, &out, &e),
                     GRPC_STATUS_OK);
    Torpor__Hostagent__V1__CreateSandboxResponse *cresp = (void *)out;
    assert_non_null(cresp->sandbox);
    assert_string_equal(cresp->sandbox->sandbox_id, "sb-1");
    assert_string_equal(cresp->sandbox->status, "running");
    assert_string_equal(cresp->sandbox->template_, "minimal");
    assert_int_equal(cresp->sandbox->vcpus, 2);
    assert_int_equal(cresp->sandbox->timeout_sec, 30);
    assert_int_equal(cresp->sandbox->last_active_at_unix, FX_T0_MS / 1000);
    protobuf_c_message_free_unpacked(out, NULL);

    assert_int_equal(create(r, "sb-1", 1, 0, &e), GRPC_STATUS_ALREADY_EXISTS);
    creq.sandbox_id = "sb-2";
    creq.template_ = "nosuch";
    assert_int_equal(call(r, RPC_CREATE_SANDBOX, &creq.base,
                          &torpor__hostagent__v1__create_sandbox_response__descriptor, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(e.msg, "unknown template"));

    assert_int_equal(ping(r, "sb-1", &e), GRPC_STATUS_OK);
    assert_int_equal(PAUSE(r, "sb-1", &e), GRPC_STATUS_OK);
    assert_int_equal(ping(r, "sb-1", &e), GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(PAUSE(r, "sb-1", &e), GRPC_STATUS_FAILED_PRECONDITION);

    Torpor__Hostagent__V1__ExecRequest xreq = TORPOR__HOSTAGENT__V1__EXEC_REQUEST__INIT;
    xreq.sandbox_id = "sb-1";
    xreq.cmd = "echo hi";
    assert_int_equal(
        call(r, RPC_EXEC, &xreq.base, &torpor__hostagent__v1__exec_response__descriptor, NULL, &e),
        GRPC_STATUS_FAILED_PRECONDITION);

    Torpor__Hostagent__V1__ResumeSandboxRequest rreq =
        TORPOR__HOSTAGENT__V1__RESUME_SANDBOX_REQUEST__INIT;
    rreq.sandbox_id = "sb-1";
    rreq.timeout_sec = 3;
    assert_int_equal(call(r, RPC_RESUME_SANDBOX, &rreq.base,
                          &torpor__hostagent__v1__resume_sandbox_response__descriptor, &out, &e),
                     GRPC_STATUS_OK);
    Torpor__Hostagent__V1__ResumeSandboxResponse *rresp = (void *)out;
    assert_string_equal(rresp->sandbox->status, "running");
    assert_int_equal(rresp->sandbox->timeout_sec, 3);
    protobuf_c_message_free_unpacked(out, NULL);
    assert_int_equal(call(r, RPC_RESUME_SANDBOX, &rreq.base,
                          &torpor__hostagent__v1__resume_sandbox_response__descriptor, NULL, &e),
                     GRPC_STATUS_FAILED_PRECONDITION);

    assert_int_equal(
        call(r, RPC_EXEC, &xreq.base, &torpor__hostagent__v1__exec_response__descriptor, &out, &e),
        GRPC_STATUS_OK);
    Torpor__Hostagent__V1__ExecResponse *xresp = (void *)out;
    assert_int_equal(xresp->stdout.len, 8);
    assert_memory_equal(xresp->stdout.data, "echo hi\n", 8);
    assert_int_equal(xresp->exit_code, 0);
    protobuf_c_message_free_unpacked(out, NULL);
    xreq.cmd = "";
    assert_int_equal(
        call(r, RPC_EXEC, &xreq.base, &torpor__hostagent__v1__exec_response__descriptor, NULL, &e),
        GRPC_STATUS_INVALID_ARGUMENT);

    Torpor__Hostagent__V1__WriteFileRequest wreq = TORPOR__HOSTAGENT__V1__WRITE_FILE_REQUEST__INIT;
    wreq.sandbox_id = "sb-1";
    wreq.path = "/tmp/x";
    wreq.content.data = (uint8_t *)"\0bin\xff";
    wreq.content.len = 5;
    assert_int_equal(call(r, RPC_WRITE_FILE, &wreq.base,
                          &torpor__hostagent__v1__write_file_response__descriptor, NULL, &e),
                     GRPC_STATUS_OK);
    Torpor__Hostagent__V1__ReadFileRequest fr = TORPOR__HOSTAGENT__V1__READ_FILE_REQUEST__INIT;
    fr.sandbox_id = "sb-1";
    fr.path = "/tmp/x";
    assert_int_equal(call(r, RPC_READ_FILE, &fr.base,
                          &torpor__hostagent__v1__read_file_response__descriptor, &out, &e),
                     GRPC_STATUS_OK);
    Torpor__Hostagent__V1__ReadFileResponse *fresp = (void *)out;
    assert_int_equal(fresp->content.len, 5);
    assert_memory_equal(fresp->content.data, "\0bin\xff", 5);
    protobuf_c_message_free_unpacked(out, NULL);

    Torpor__Hostagent__V1__SetSandboxTimeoutRequest treq =
        TORPOR__HOSTAGENT__V1__SET_SANDBOX_TIMEOUT_REQUEST__INIT;
    treq.sandbox_id = "sb-1";
    treq.timeout_sec = -1;
    assert_int_equal(call(r, RPC_SET_TIMEOUT, &treq.base,
                          &torpor__hostagent__v1__set_sandbox_timeout_response__descriptor, NULL,
                          &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    treq.timeout_sec = 60;
    assert_int_equal(call(r, RPC_SET_TIMEOUT, &treq.base,
                          &torpor__hostagent__v1__set_sandbox_timeout_response__descriptor, NULL,
                          &e),
                     GRPC_STATUS_OK);

    assert_int_equal(DESTROY(r, "sb-1", &e), GRPC_STATUS_OK);
    assert_int_equal(DESTROY(r, "sb-1", &e), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(ping(r, "sb-1", &e), GRPC_STATUS_NOT_FOUND);
}

/* One template-name rule for both services (torpor_limits.h): the agent
 * refuses a name the control plane would refuse, uppercase included, before
 * the driver sees it. */
static void test_create_refuses_uppercase_template(void **state)
{
    rpc_fx *r = *state;
    terr e;
    Torpor__Hostagent__V1__CreateSandboxRequest req =
        TORPOR__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__INIT;
    req.sandbox_id = "sb-up";
    req.template_ = "Minimal";
    req.vcpus = 1;
    req.memory_mb = 128;
    assert_int_equal(call(r, RPC_CREATE_SANDBOX, &req.base,
                          &torpor__hostagent__v1__create_sandbox_response__descriptor, NULL, &e),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(e.msg, "invalid template"));
    assert_int_equal(test_driver_calls(r->fx->td, TD_CREATE, "sb-up"), 0);
    req.template_ = "minimal";
    assert_int_equal(call(r, RPC_CREATE_SANDBOX, &req.base,
                          &torpor__hostagent__v1__create_sandbox_response__descriptor, NULL, &e),
                     GRPC_STATUS_OK);
}

static void test_list_reports_auto_paused_until_acked(void **state)
{
    rpc_fx *r = *state;
    terr e;
    assert_int_equal(create(r, "sb-idle", 1, 3, &e), GRPC_STATUS_OK);
    assert_int_equal(create(r, "sb-busy", 1, 0, &e), GRPC_STATUS_OK);
    agent_clock_advance_ms(&r->fx->clock, 3000);
    reaper_tick(r->fx->reaper);
    assert_true(fx_wait_status(r->fx, "sb-idle", SANDBOX_PAUSED, DEADLINE_MS));

    for (int round = 0; round < 2; round++) { /* a lost answer is answered again */
        Torpor__Hostagent__V1__ListSandboxesResponse *l = list(r, NULL, 0);
        assert_int_equal(l->n_sandboxes, 2);
        for (size_t i = 0; i < l->n_sandboxes; i++) {
            const char *want =
                strcmp(l->sandboxes[i]->sandbox_id, "sb-idle") == 0 ? "paused" : "running";
            assert_string_equal(l->sandboxes[i]->status, want);
        }
        assert_int_equal(l->n_auto_paused_sandbox_ids, 1);
        assert_string_equal(l->auto_paused_sandbox_ids[0], "sb-idle");
        assert_string_equal(l->agent_id, TEST_AGENT_ID); /* in every answer */
        protobuf_c_message_free_unpacked(&l->base, NULL);
    }
    const char *acks[] = {"sb-idle", "sb-unknown", "../junk"};
    Torpor__Hostagent__V1__ListSandboxesResponse *l = list(r, acks, 3);
    assert_int_equal(l->n_auto_paused_sandbox_ids, 0);
    assert_int_equal(l->n_sandboxes, 2); /* still held, paused on disk */
    protobuf_c_message_free_unpacked(&l->base, NULL);
}

/* An ack the journal cannot record must not take ListSandboxes down: the
 * host would never be reconciled while its disk is full. */
static void test_list_answers_when_acks_cannot_be_written(void **state)
{
    rpc_fx *r = *state;
    terr e;
    assert_int_equal(create(r, "sb-idle", 1, 3, &e), GRPC_STATUS_OK);
    assert_int_equal(create(r, "sb-busy", 1, 0, &e), GRPC_STATUS_OK);
    agent_clock_advance_ms(&r->fx->clock, 3000);
    reaper_tick(r->fx->reaper);
    assert_true(fx_wait_status(r->fx, "sb-idle", SANDBOX_PAUSED, DEADLINE_MS));

    struct stat st;
    assert_int_equal(stat(r->fx->journal_path, &st), 0);
    assert_true(st.st_size > 0);
    rlim_t old = fx_limit_file_size((rlim_t)st.st_size);
    const char *acks[] = {"sb-idle"};
    Torpor__Hostagent__V1__ListSandboxesResponse *l = list(r, acks, 1);
    fx_limit_file_size(old);
    assert_int_equal(l->n_sandboxes, 2);
    /* the ack was not recorded: the notice is still reported */
    assert_int_equal(l->n_auto_paused_sandbox_ids, 1);
    assert_string_equal(l->auto_paused_sandbox_ids[0], "sb-idle");
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* once the journal can be written again, the same ack goes through */
    l = list(r, acks, 1);
    assert_int_equal(l->n_auto_paused_sandbox_ids, 0);
    assert_int_equal(l->n_sandboxes, 2);
    protobuf_c_message_free_unpacked(&l->base, NULL);
}

typedef struct pause_arg {
    rpc_fx *r;
    grpc_status_code st;
} pause_arg;

static void *pause_thread(void *p)
{
    pause_arg *a = p;
    terr e;
    a->st = PAUSE(a->r, "sb-slow", &e);
    return NULL;
}

static void test_slow_pause_does_not_block_ping(void **state)
{
    rpc_fx *r = *state;
    terr e;
    assert_int_equal(create(r, "sb-slow", 1, 0, &e), GRPC_STATUS_OK);
    assert_int_equal(create(r, "sb-other", 1, 0, &e), GRPC_STATUS_OK);
    test_driver_gate_close(r->fx->td, TD_PAUSE, "sb-slow");
    pause_arg a = {.r = r};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pause_thread, &a), 0);
    assert_true(test_driver_wait_blocked(r->fx->td, TD_PAUSE, "sb-slow", 1, DEADLINE_MS));
    /* while the Pause RPC is parked inside the driver: */
    assert_int_equal(ping(r, "sb-other", &e), GRPC_STATUS_OK);
    assert_int_equal(ping(r, "sb-slow", &e), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(e.msg, "pausing"));
    Torpor__Hostagent__V1__ListSandboxesResponse *l = list(r, NULL, 0);
    assert_int_equal(l->n_sandboxes, 2);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    test_driver_gate_open(r->fx->td, TD_PAUSE, "sb-slow");
    pthread_join(t, NULL);
    assert_int_equal(a.st, GRPC_STATUS_OK);
    assert_int_equal(fx_status(r->fx, "sb-slow"), SANDBOX_PAUSED);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void remove_state(const char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/agent/agent_id", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/agent", dir);
    rmdir(p);
    rmdir(dir);
}

/* The same state dir always gives the same id (an agent restart), a new
 * one a new id, and a damaged file is an error, never silently replaced. */
static void test_agent_identity_persists(void **state)
{
    char a[] = "/tmp/torpor-idtest-XXXXXX", b[] = "/tmp/torpor-idtest-XXXXXX";
    assert_non_null(mkdtemp(a));
    assert_non_null(mkdtemp(b));
    char id1[AGENT_ID_LEN + 1], id2[AGENT_ID_LEN + 1], id3[AGENT_ID_LEN + 1];
    bool created;
    terr e;
    assert_int_equal(agent_identity_load(a, id1, &created, &e), 0);
    assert_true(created);
    assert_true(agent_identity_valid(id1));
    assert_int_equal(strlen(id1), AGENT_ID_LEN);
    assert_int_equal(agent_identity_load(a, id2, &created, &e), 0); /* restart */
    assert_false(created);
    assert_string_equal(id1, id2);
    assert_int_equal(agent_identity_load(b, id3, &created, &e), 0); /* new empty state dir */
    assert_true(created);
    assert_string_not_equal(id1, id3);

    char path[512];
    snprintf(path, sizeof path, "%s/agent/agent_id", a);
    const char *bad[] = {"",
                         "\n",
                         "ag-0123",
                         "ag-0123456789ABCDEF\n",
                         "xx-0123456789abcdef",
                         "ag-0123456789abcdef0",
                         "ag-0123456789abcdef\n\n",
                         "ag-0123456789abcdeg"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i]);
        e.msg[0] = '\0';
        if (agent_identity_load(a, id2, &created, &e) != -1)
            fail_msg("accepted malformed id \"%s\"", bad[i]);
        assert_non_null(strstr(e.msg, path));
    }
    write_file(path, "ag-00112233445566ff"); /* no newline is fine */
    assert_int_equal(agent_identity_load(a, id2, &created, &e), 0);
    assert_false(created);
    assert_string_equal(id2, "ag-00112233445566ff");

    assert_false(agent_identity_valid(NULL));
    assert_false(agent_identity_valid("ag-"));
    assert_int_equal(agent_identity_load("", id2, NULL, &e), -1);
    remove_state(a);
    remove_state(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_status_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_refuses_uppercase_template, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_refuses_bad_disk_mb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_chunk_rpcs_check_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_reports_auto_paused_until_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_answers_when_acks_cannot_be_written, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_slow_pause_does_not_block_ping, setup, teardown),
        cmocka_unit_test(test_agent_identity_persists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
