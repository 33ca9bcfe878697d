/* Unit tests for how the control plane reads a failed agent call: the
 * gRPC -> REST mapping, which failures never reached the agent (and may be
 * retried), which creates have an unknown outcome, and what a
 * ListSandboxes answer says about one sandbox. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_client.h"
#include "reconciler.h"
#include "sandbox_ops.h"

static void mapping_is(grpc_status_code c, int want_http, const char *want_code)
{
    int http;
    const char *code;
    agent_status_to_http(c, &http, &code);
    assert_int_equal(http, want_http);
    assert_string_equal(code, want_code);
}

static void test_grpc_mapping(void **state)
{
    mapping_is(GRPC_STATUS_NOT_FOUND, 404, "not_found");
    mapping_is(GRPC_STATUS_FAILED_PRECONDITION, 409, "invalid_state");
    mapping_is(GRPC_STATUS_ALREADY_EXISTS, 409, "invalid_state");
    mapping_is(GRPC_STATUS_INVALID_ARGUMENT, 400, "invalid_request");
    mapping_is(GRPC_STATUS_UNAVAILABLE, 502, "agent_error");
    mapping_is(GRPC_STATUS_DEADLINE_EXCEEDED, 502, "agent_error");
    mapping_is(GRPC_STATUS_INTERNAL, 502, "agent_error");
    mapping_is(GRPC_STATUS_UNKNOWN, 502, "agent_error");
    mapping_is(GRPC_STATUS_RESOURCE_EXHAUSTED, 503, "no_capacity");

    /* Only a refused/failed connection is retried: the request never left. */
    assert_true(agent_is_connect_failure(
        GRPC_STATUS_UNAVAILABLE,
        "failed to connect to all addresses; last error: UNKNOWN: "
        "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused"));
    assert_true(agent_is_connect_failure(GRPC_STATUS_UNAVAILABLE, "Broken pipe"));
    assert_false(agent_is_connect_failure(GRPC_STATUS_UNAVAILABLE, "Socket closed"));
    assert_false(agent_is_connect_failure(GRPC_STATUS_INTERNAL, "failed to connect"));
    assert_false(agent_is_connect_failure(GRPC_STATUS_UNAVAILABLE, NULL));

    assert_true(agent_method_is_idempotent(RPC_PING_SANDBOX));
    assert_true(agent_method_is_idempotent(RPC_READ_FILE));
    assert_true(agent_method_is_idempotent(RPC_DESTROY_SANDBOX));
    assert_false(agent_method_is_idempotent(RPC_EXEC));
    assert_false(agent_method_is_idempotent(RPC_CREATE_SANDBOX));
    assert_false(agent_method_is_idempotent(RPC_PAUSE_SANDBOX));
    assert_false(agent_method_is_idempotent(RPC_RESUME_SANDBOX));
    assert_true(agent_method_is_idempotent(RPC_GET_TEMPLATE));
    assert_true(agent_method_is_idempotent(RPC_LIST_TEMPLATES));
    assert_false(agent_method_is_idempotent(
        RPC_BUILD_TEMPLATE)); /* a second build would be ALREADY_EXISTS */
}

static void test_create_outcome(void **state)
{
    /* Sent and then lost: the agent may have created it, the row stays pending. */
    assert_true(
        sandbox_ops_create_outcome_unknown(GRPC_STATUS_DEADLINE_EXCEEDED, "Deadline Exceeded"));
    assert_true(sandbox_ops_create_outcome_unknown(GRPC_STATUS_UNAVAILABLE, "Socket closed"));
    /* Never reached the agent, or a definite answer: the row goes to error. */
    assert_false(sandbox_ops_create_outcome_unknown(GRPC_STATUS_UNAVAILABLE,
                                                    "failed to connect to all addresses"));
    assert_false(sandbox_ops_create_outcome_unknown(GRPC_STATUS_UNAVAILABLE, "Broken pipe"));
    assert_false(sandbox_ops_create_outcome_unknown(GRPC_STATUS_INTERNAL, "boot failed"));
    assert_false(sandbox_ops_create_outcome_unknown(GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory"));
    assert_false(sandbox_ops_create_outcome_unknown(GRPC_STATUS_ALREADY_EXISTS, "exists"));
}

static void test_agent_view(void **state)
{
    Torpor__Hostagent__V1__SandboxInfo a = TORPOR__HOSTAGENT__V1__SANDBOX_INFO__INIT;
    Torpor__Hostagent__V1__SandboxInfo b = TORPOR__HOSTAGENT__V1__SANDBOX_INFO__INIT;
    a.sandbox_id = "sb-a";
    a.status = "running";
    b.sandbox_id = "sb-b";
    b.status = "paused";
    Torpor__Hostagent__V1__SandboxInfo r = TORPOR__HOSTAGENT__V1__SANDBOX_INFO__INIT;
    r.sandbox_id = "sb-r";
    r.status = "recovering"; /* a restarted agent still re-attaching it: held, never gone */
    Torpor__Hostagent__V1__SandboxInfo *list[] = {&a, &b, &r};
    char *autos[] = {"sb-b", "sb-c"};
    Torpor__Hostagent__V1__ListSandboxesResponse resp =
        TORPOR__HOSTAGENT__V1__LIST_SANDBOXES_RESPONSE__INIT;
    resp.sandboxes = list;
    resp.n_sandboxes = 3;
    resp.auto_paused_sandbox_ids = autos;
    resp.n_auto_paused_sandbox_ids = 2;
    bool ap;
    assert_int_equal(agent_view_of(&resp, "sb-a", &ap), AGENT_VIEW_RUNNING);
    assert_false(ap);
    assert_int_equal(agent_view_of(&resp, "sb-b", &ap), AGENT_VIEW_PAUSED);
    assert_true(ap);
    assert_int_equal(agent_view_of(&resp, "sb-c", &ap), AGENT_VIEW_ABSENT);
    assert_true(ap);
    assert_int_equal(agent_view_of(&resp, "sb-d", &ap), AGENT_VIEW_ABSENT);
    assert_false(ap);
    assert_int_equal(agent_view_of(&resp, "sb-r", &ap), AGENT_VIEW_PAUSING);
    assert_int_equal(reconciler_decide(SB_RUNNING, AGENT_VIEW_PAUSING, false, true), SB_RUNNING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_mapping),
        cmocka_unit_test(test_create_outcome),
        cmocka_unit_test(test_agent_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
