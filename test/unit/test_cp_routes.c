/* Unit tests for the control plane's pure decisions: REST routing, gRPC ->
 * HTTP error mapping, the reconciler's state table, multipart parsing and
 * the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "agent_client.h"
#include "api_routes.h"
#include "api_sandboxes.h"
#include "cp_config.h"
#include "multipart.h"
#include "reconciler.h"

static void route_is(const char *path, api_route want, const char *want_id)
{
    char id[SANDBOX_ID_MAX];
    api_route got = api_route_match(path, id);
    if (got != want) fail_msg("%s: route %d, want %d", path, (int)got, (int)want);
    assert_string_equal(id, want_id);
}

static void test_routes(void **state)
{
    route_is("/healthz", API_ROUTE_HEALTHZ, "");
    route_is("/v1/sandboxes", API_ROUTE_SANDBOXES, "");
    route_is("/v1/sandboxes/sb-12ab", API_ROUTE_SANDBOX, "sb-12ab");
    route_is("/v1/sandboxes/sb-1/pause", API_ROUTE_PAUSE, "sb-1");
    route_is("/v1/sandboxes/sb-1/resume", API_ROUTE_RESUME, "sb-1");
    route_is("/v1/sandboxes/sb-1/ping", API_ROUTE_PING, "sb-1");
    route_is("/v1/sandboxes/sb-1/timeout", API_ROUTE_TIMEOUT, "sb-1");
    route_is("/v1/sandboxes/sb-1/exec", API_ROUTE_EXEC, "sb-1");
    route_is("/v1/sandboxes/sb-1/files/write", API_ROUTE_FILES_WRITE, "sb-1");
    route_is("/v1/sandboxes/sb-1/files/read", API_ROUTE_FILES_READ, "sb-1");

    route_is("/", API_ROUTE_NONE, "");
    route_is("/v1/sandboxes/", API_ROUTE_NONE, "");
    route_is("/v1/sandboxesx", API_ROUTE_NONE, "");
    route_is("/v1/sandboxes/sb-1/", API_ROUTE_NONE, "");
    route_is("/v1/sandboxes/sb-1/files", API_ROUTE_NONE, "");
    route_is("/v1/sandboxes/sb-1/pause/x", API_ROUTE_NONE, "");
    route_is("/v1/sandboxes/sb%201", API_ROUTE_NONE, "");
    route_is("/v1/sandboxes/..", API_ROUTE_SANDBOX, ".."); /* harmless: no such sandbox -> 404 */
    route_is("/v1/sandboxes/../x", API_ROUTE_NONE, "");
    route_is("/healthz/", API_ROUTE_NONE, "");
    char longp[200] = "/v1/sandboxes/";
    memset(longp + strlen(longp), 'a', 100);
    route_is(longp, API_ROUTE_NONE, "");
    char id[SANDBOX_ID_MAX];
    assert_int_equal(api_route_match(NULL, id), API_ROUTE_NONE);
}

static void test_methods(void **state)
{
    assert_int_equal(api_route_methods(API_ROUTE_HEALTHZ), API_GET);
    assert_int_equal(api_route_methods(API_ROUTE_SANDBOXES), API_GET | API_POST);
    assert_int_equal(api_route_methods(API_ROUTE_SANDBOX), API_GET | API_DELETE);
    assert_int_equal(api_route_methods(API_ROUTE_EXEC), API_POST);
    assert_int_equal(api_route_methods(API_ROUTE_NONE), 0);
    assert_string_equal(api_route_allow_header(API_ROUTE_SANDBOX), "GET, DELETE");
    assert_string_equal(api_route_allow_header(API_ROUTE_PING), "POST");
}

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

    /* Only a refused/failed connection is retried: the request never left. */
    assert_true(agent_is_connect_failure(GRPC_STATUS_UNAVAILABLE,
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
}

static void decide_is(sb_status db, agent_view view, bool auto_paused, bool past_grace, sb_status want)
{
    sb_status got = reconciler_decide(db, view, auto_paused, past_grace);
    if (got != want)
        fail_msg("db=%s view=%d auto=%d grace=%d: got %s want %s", sb_status_name(db), (int)view, auto_paused,
                 past_grace, sb_status_name(got), sb_status_name(want));
}

static void test_reconciler_decide(void **state)
{
    /* running rows */
    decide_is(SB_RUNNING, AGENT_VIEW_RUNNING, false, false, SB_RUNNING);
    decide_is(SB_RUNNING, AGENT_VIEW_RUNNING, true, false, SB_RUNNING); /* stale notice */
    decide_is(SB_RUNNING, AGENT_VIEW_PAUSING, false, false, SB_RUNNING); /* reaper mid-pause */
    decide_is(SB_RUNNING, AGENT_VIEW_PAUSED, true, false, SB_PAUSED);
    decide_is(SB_RUNNING, AGENT_VIEW_PAUSED, false, false, SB_PAUSED);
    decide_is(SB_RUNNING, AGENT_VIEW_ABSENT, true, false, SB_PAUSED);
    decide_is(SB_RUNNING, AGENT_VIEW_ABSENT, false, false, SB_STOPPED);
    /* transitional rows wait for the grace period */
    decide_is(SB_PAUSING, AGENT_VIEW_ABSENT, false, false, SB_PAUSING);
    decide_is(SB_PAUSING, AGENT_VIEW_PAUSED, false, true, SB_PAUSED);
    decide_is(SB_PAUSING, AGENT_VIEW_RUNNING, false, true, SB_RUNNING);
    decide_is(SB_PAUSING, AGENT_VIEW_ABSENT, false, true, SB_STOPPED);
    decide_is(SB_PAUSING, AGENT_VIEW_ABSENT, true, true, SB_PAUSED);
    decide_is(SB_PAUSING, AGENT_VIEW_PAUSING, false, true, SB_PAUSING);
    decide_is(SB_RESUMING, AGENT_VIEW_RUNNING, false, false, SB_RESUMING);
    decide_is(SB_RESUMING, AGENT_VIEW_RUNNING, false, true, SB_RUNNING);
    decide_is(SB_RESUMING, AGENT_VIEW_PAUSED, false, true, SB_PAUSED);
    decide_is(SB_RESUMING, AGENT_VIEW_RESUMING, false, true, SB_RESUMING);
    /* A failed resume that lost the snapshot: the agent no longer holds it,
     * so the row is stopped, never paused (a stale notice changes nothing). */
    decide_is(SB_RESUMING, AGENT_VIEW_ABSENT, false, true, SB_STOPPED);
    decide_is(SB_RESUMING, AGENT_VIEW_ABSENT, true, true, SB_STOPPED);
    decide_is(SB_RESUMING, AGENT_VIEW_ABSENT, false, false, SB_RESUMING);
    decide_is(SB_PENDING, AGENT_VIEW_ABSENT, false, false, SB_PENDING);
    decide_is(SB_PENDING, AGENT_VIEW_ABSENT, false, true, SB_ERROR);
    decide_is(SB_PENDING, AGENT_VIEW_RUNNING, false, true, SB_RUNNING);
    /* The create landed and the reaper auto-paused it: paused, not stuck. */
    decide_is(SB_PENDING, AGENT_VIEW_PAUSED, false, true, SB_PAUSED);
    decide_is(SB_PENDING, AGENT_VIEW_PAUSED, true, true, SB_PAUSED);
    decide_is(SB_PENDING, AGENT_VIEW_ABSENT, true, true, SB_PAUSED);
    decide_is(SB_PENDING, AGENT_VIEW_PAUSED, true, false, SB_PENDING); /* the create may still answer */
    decide_is(SB_PENDING, AGENT_VIEW_PAUSING, false, true, SB_PENDING);
    /* paused rows: stopped once the agent's answers agree it is gone */
    decide_is(SB_PAUSED, AGENT_VIEW_ABSENT, false, false, SB_PAUSED);
    decide_is(SB_PAUSED, AGENT_VIEW_ABSENT, false, true, SB_STOPPED);
    decide_is(SB_PAUSED, AGENT_VIEW_ABSENT, true, true, SB_STOPPED);
    decide_is(SB_PAUSED, AGENT_VIEW_PAUSED, false, true, SB_PAUSED);
    decide_is(SB_PAUSED, AGENT_VIEW_PAUSED, true, true, SB_PAUSED);
    decide_is(SB_PAUSED, AGENT_VIEW_RUNNING, false, true, SB_PAUSED);
    decide_is(SB_PAUSED, AGENT_VIEW_RESUMING, false, true, SB_PAUSED);
    /* stopped and error rows never change */
    decide_is(SB_STOPPED, AGENT_VIEW_RUNNING, false, true, SB_STOPPED);
    decide_is(SB_ERROR, AGENT_VIEW_RUNNING, false, true, SB_ERROR);
    decide_is(SB_STOPPED, AGENT_VIEW_ABSENT, false, true, SB_STOPPED);
}

static void test_orphan_rule(void **state)
{
    const double grace = 180;
    /* No row on this host: someone else's sandbox (another control plane's
     * database, another host id at the same address), never destroyed. */
    assert_false(reconciler_is_orphan(-1, 0, grace, false));
    assert_false(reconciler_is_orphan(-1, 0, grace, true));
    assert_false(reconciler_is_orphan(-1, 1e6, grace, true));
    /* stopped/error rows: after the grace, or on the second pass */
    assert_false(reconciler_is_orphan(SB_STOPPED, 5, grace, false));
    assert_true(reconciler_is_orphan(SB_STOPPED, 5, grace, true));
    assert_true(reconciler_is_orphan(SB_STOPPED, 181, grace, false));
    assert_false(reconciler_is_orphan(SB_ERROR, 179, grace, false));
    assert_true(reconciler_is_orphan(SB_ERROR, 180, grace, false));
    /* live rows are never orphans, however old */
    const sb_status live[] = {SB_PENDING, SB_RUNNING, SB_PAUSING, SB_PAUSED, SB_RESUMING};
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        assert_false(reconciler_is_orphan(live[i], 1e6, grace, true));
        assert_false(reconciler_is_orphan(live[i], 1e6, grace, false));
    }
}

static void test_create_outcome(void **state)
{
    /* Sent and then lost: the agent may have created it, the row stays pending. */
    assert_true(api_create_outcome_unknown(GRPC_STATUS_DEADLINE_EXCEEDED, "Deadline Exceeded"));
    assert_true(api_create_outcome_unknown(GRPC_STATUS_UNAVAILABLE, "Socket closed"));
    /* Never reached the agent, or a definite answer: the row goes to error. */
    assert_false(api_create_outcome_unknown(GRPC_STATUS_UNAVAILABLE, "failed to connect to all addresses"));
    assert_false(api_create_outcome_unknown(GRPC_STATUS_UNAVAILABLE, "Broken pipe"));
    assert_false(api_create_outcome_unknown(GRPC_STATUS_INTERNAL, "boot failed"));
    assert_false(api_create_outcome_unknown(GRPC_STATUS_RESOURCE_EXHAUSTED, "no memory"));
    assert_false(api_create_outcome_unknown(GRPC_STATUS_ALREADY_EXISTS, "exists"));
}

static void test_agent_view(void **state)
{
    Torpor__Hostagent__V1__SandboxInfo a = TORPOR__HOSTAGENT__V1__SANDBOX_INFO__INIT;
    Torpor__Hostagent__V1__SandboxInfo b = TORPOR__HOSTAGENT__V1__SANDBOX_INFO__INIT;
    a.sandbox_id = "sb-a";
    a.status = "running";
    b.sandbox_id = "sb-b";
    b.status = "paused";
    Torpor__Hostagent__V1__SandboxInfo *list[] = {&a, &b};
    char *autos[] = {"sb-b", "sb-c"};
    Torpor__Hostagent__V1__ListSandboxesResponse resp = TORPOR__HOSTAGENT__V1__LIST_SANDBOXES_RESPONSE__INIT;
    resp.sandboxes = list;
    resp.n_sandboxes = 2;
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
}

static void test_multipart(void **state)
{
    char boundary[80];
    assert_true(multipart_is_form_data("multipart/form-data; boundary=XyZ"));
    assert_true(multipart_is_form_data("Multipart/Form-Data;boundary=\"a b\""));
    assert_false(multipart_is_form_data("application/json"));
    assert_false(multipart_is_form_data(NULL));
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=XyZ", boundary, sizeof boundary, NULL), 0);
    assert_string_equal(boundary, "XyZ");
    assert_int_equal(multipart_boundary("multipart/form-data; boundary=\"a b\"; x=y", boundary, sizeof boundary, NULL), 0);
    assert_string_equal(boundary, "a b");
    assert_int_equal(multipart_boundary("multipart/form-data", boundary, sizeof boundary, NULL), -1);

    static const char body[] = "--XyZ\r\n"
                               "Content-Disposition: form-data; name=\"path\"\r\n\r\n"
                               "/tmp/f\r\n"
                               "--XyZ\r\n"
                               "Content-Disposition: form-data; name=\"file\"; filename=\"path\"\r\n"
                               "Content-Type: application/octet-stream\r\n\r\n"
                               "a\0b\r\n--X\r\n"
                               "--XyZ--\r\n";
    const char *data;
    size_t n;
    bool found;
    assert_int_equal(multipart_field(body, sizeof body - 1, "XyZ", "path", &data, &n, &found, NULL), 0);
    assert_true(found);
    assert_int_equal(n, 6);
    assert_memory_equal(data, "/tmp/f", 6);
    assert_int_equal(multipart_field(body, sizeof body - 1, "XyZ", "file", &data, &n, &found, NULL), 0);
    assert_true(found);
    assert_int_equal(n, 8); /* "\r\n--X" inside the content is not the delimiter */
    assert_memory_equal(data, "a\0b\r\n--X", 8);
    assert_int_equal(multipart_field(body, sizeof body - 1, "XyZ", "other", &data, &n, &found, NULL), 0);
    assert_false(found);

    /* Truncated bodies are errors, never overreads. */
    for (size_t cut = 0; cut < sizeof body - 10; cut++) {
        terr err;
        int rc = multipart_field(body, cut, "XyZ", "file", &data, &n, &found, &err);
        if (rc == 0) assert_true(!found || data + n <= body + cut);
    }
    assert_int_equal(multipart_field("garbage", 7, "XyZ", "file", &data, &n, &found, NULL), -1);
}

static void test_config(void **state)
{
    cp_config c;
    terr err;
    char *ok[] = {"torpor-cp", "--database-url", "host=/tmp", "--reconcile-interval=0.25", "--http-threads", "3"};
    assert_int_equal(cp_config_parse(6, ok, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_SERVE);
    assert_true(c.reconcile_interval_sec == 0.25);
    assert_int_equal(c.http_threads, 3);
    assert_string_equal(c.database_url, "host=/tmp");
    /* The grace outlasts every transition's agent deadline by default. */
    assert_true(c.transition_grace_sec * 1000 > AGENT_DEADLINE_TRANSITION_MAX_MS);
    assert_true(c.transition_grace_sec * 1000 > AGENT_DEADLINE_RESUME_MS);

    char *keys[] = {"torpor-cp", "keys", "create", "--team", "t1", "--database-url=x"};
    assert_int_equal(cp_config_parse(6, keys, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_KEYS_CREATE);
    assert_string_equal(c.team, "t1");

    char grace_min[32], grace_below[32];
    snprintf(grace_min, sizeof grace_min, "%d", RECONCILER_GRACE_MIN_SEC);
    snprintf(grace_below, sizeof grace_below, "%g", RECONCILER_GRACE_MIN_SEC - 0.5);
    assert_true(RECONCILER_GRACE_MIN_SEC * 1000 > AGENT_DEADLINE_TRANSITION_MAX_MS);
    char *grace_ok[] = {"torpor-cp", "--database-url", "x", "--transition-grace", grace_min};
    assert_int_equal(cp_config_parse(5, grace_ok, &c, &err), 0);
    assert_true(c.transition_grace_sec == RECONCILER_GRACE_MIN_SEC);
    char *grace_short[] = {"torpor-cp", "--database-url", "x", "--transition-grace", grace_below};
    assert_int_equal(cp_config_parse(5, grace_short, &c, &err), -1);
    assert_non_null(strstr(err.msg, "--transition-grace"));

    char *reset[] = {"torpor-cp", "hosts", "reset-identity", "--id", "h1", "--database-url=x"};
    assert_int_equal(cp_config_parse(6, reset, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_HOSTS_RESET_IDENTITY);
    assert_string_equal(c.host_id, "h1");

    char *help[] = {"torpor-cp", "--help"};
    assert_int_equal(cp_config_parse(2, help, &c, &err), 0);
    assert_int_equal(c.command, CP_CMD_HELP);

    char *bad1[] = {"torpor-cp", "--database-url", "x", "--reconcile-interval", "0"};
    char *bad2[] = {"torpor-cp", "--database-url", "x", "--bogus"};
    char *bad3[] = {"torpor-cp", "--database-url", "x", "keys", "create"};
    char *bad4[] = {"torpor-cp", "--database-url", "x", "--tls-cert", "c"};
    char *bad5[] = {"torpor-cp", "--database-url"};
    char *bad6[] = {"torpor-cp", "--database-url", "x", "--http-threads", "0"};
    /* A grace shorter than the longest agent deadline + margin is refused. */
    char *bad7[] = {"torpor-cp", "--database-url", "x", "--transition-grace", "10"};
    char *bad8[] = {"torpor-cp", "--database-url", "x", "hosts", "reset-identity"};
    char **bads[] = {bad1, bad2, bad3, bad4, bad5, bad6, bad7, bad8};
    int argcs[] = {5, 4, 5, 5, 2, 5, 5, 5};
    for (int i = 0; i < 8; i++) {
        err.msg[0] = '\0';
        assert_int_equal(cp_config_parse(argcs[i], bads[i], &c, &err), -1);
        assert_true(strlen(err.msg) > 0);
    }
}

int main(void)
{
    unsetenv("TORPOR_DATABASE_URL");
    unsetenv("TORPOR_TLS_CERT");
    unsetenv("TORPOR_TLS_KEY");
    unsetenv("TORPOR_TLS_CA");
    unsetenv("TORPOR_RECONCILE_INTERVAL");
    unsetenv("TORPOR_HTTP_THREADS");
    unsetenv("TORPOR_TRANSITION_GRACE");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),     cmocka_unit_test(test_methods),
        cmocka_unit_test(test_grpc_mapping), cmocka_unit_test(test_reconciler_decide),
        cmocka_unit_test(test_agent_view), cmocka_unit_test(test_multipart),
        cmocka_unit_test(test_config),     cmocka_unit_test(test_orphan_rule),
        cmocka_unit_test(test_create_outcome),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
