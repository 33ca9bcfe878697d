/* Unit tests for controlplane/sandbox_ops: the outcomes of each operation
 * against a real PostgreSQL (a throwaway cluster through scripts/lib/pg.sh,
 * migrated) and a fake agent (the agent's gRPC handlers over the test
 * driver, on 127.0.0.1:0): the happy path, conflicts, idempotent delete,
 * unknown sandboxes, another team's sandbox, a resume the agent can no
 * longer honour (the row ends stopped), a refused template (no row left), an
 * agent that cannot be reached (no_capacity, no row, the host's failures
 * counted until it reads unreachable), calls to a sandbox of an unreachable
 * host (host_unreachable at once), the memory cap and draining. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_fixture.h"
#include "admission.h"
#include "agent_client.h"
#include "auth.h"
#include "db.h"
#include "migrate.h"
#include "mono_time.h"
#include "rpc.h"
#include "rpc_handlers.h"
#include "ping_route.h"
#include "sandbox_ops.h"

typedef struct ops_fx {
    agent_fx *fx;
    agent_rpc app;
    rpc_server *server;
    char pg_dir[128];
    char agent_addr[64];
    db_conn *db;
    agent_pool *agents;
    char team_a[64], team_b[64];
    sbop_ctx ctx;
} ops_fx;

/* Runs `bash scripts/lib/pg.sh VERB DIR`; returns its last stdout line. */
static int pg(const char *verb, const char *dir, char *out, size_t size)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "bash %s/scripts/lib/pg.sh %s %s", TORPOR_SOURCE_DIR, verb, dir);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    if (out && size) out[0] = '\0';
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        if (out && *line) snprintf(out, size, "%s", line);
    }
    return pclose(p) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    ops_fx *o = calloc(1, sizeof *o);
    o->fx = fx_new();
    o->app = (agent_rpc){.lc = o->fx->lc,
                         .journal = o->fx->journal,
                         .host_ip = "127.0.0.1",
                         .agent_id = "ag-0123456789abcdef"};
    rpc_server_config scfg = {.listen_addr = "127.0.0.1:0", .app = &o->app};
    scfg.methods = agent_rpc_methods(&scfg.n_methods);
    terr e;
    if (rpc_server_start(&scfg, &o->server, &e) != 0) fail_msg("rpc_server_start: %s", e.msg);
    snprintf(o->agent_addr, sizeof o->agent_addr, "127.0.0.1:%d", rpc_server_port(o->server));

    char tmpl[] = "/tmp/torpor-ops-XXXXXX";
    if (!mkdtemp(tmpl)) fail_msg("mkdtemp");
    chmod(tmpl, 0755); /* the postgres user must reach pg/ */
    snprintf(o->pg_dir, sizeof o->pg_dir, "%s/pg", tmpl);
    char url[512];
    if (pg("start", o->pg_dir, url, sizeof url) != 0 || !*url) fail_msg("PostgreSQL did not start");
    int applied;
    if (db_open(url, &o->db, &e) != 0 ||
        migrate_run(o->db, TORPOR_SOURCE_DIR "/migrations", &applied, &e) != 0)
        fail_msg("db: %s", e.msg);
    if (db_host_upsert(o->db, "h1", o->agent_addr, &e) != 0) fail_msg("host: %s", e.msg);
    char key[AUTH_KEY_LEN + 1];
    if (auth_key_create(o->db, "team-a", key, o->team_a, &e) != 0 ||
        auth_key_create(o->db, "team-b", key, o->team_b, &e) != 0)
        fail_msg("teams: %s", e.msg);
    rpc_tls_config tls = {0};
    if (agent_pool_open(&tls, &o->agents, &e) != 0) fail_msg("agent pool: %s", e.msg);
    o->ctx = (sbop_ctx){.db = o->db, .agents = o->agents, .team_id = o->team_a};
    *state = o;
    return 0;
}

static int teardown(void **state)
{
    ops_fx *o = *state;
    agent_pool_close(o->agents);
    db_close(o->db);
    pg("stop", o->pg_dir, NULL, 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %.*s", (int)(strrchr(o->pg_dir, '/') - o->pg_dir), o->pg_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", o->pg_dir);
    rpc_server_stop(o->server);
    fx_free(o->fx);
    free(o);
    return 0;
}

static sandbox_row spec_of(const char *template_name)
{
    sandbox_row s = {.vcpus = 1, .memory_mb = 128, .timeout_sec = 0};
    snprintf(s.template_name, sizeof s.template_name, "%s", template_name);
    return s;
}

/* The row of id as the database holds it now (any team). */
static sandbox_row db_row(ops_fx *o, const char *id, bool *found)
{
    sandbox_row row;
    terr e;
    if (db_sandbox_get(o->db, NULL, id, &row, found, &e) != 0)
        fail_msg("db_sandbox_get: %s", e.msg);
    return row;
}

#define assert_outcome(res, want)                                                                 \
    do {                                                                                          \
        if ((res).outcome != (want))                                                              \
            fail_msg("outcome %d, want %d (%s)", (int)(res).outcome, (int)(want), (res).err.msg); \
    } while (0)

static void test_lifecycle_outcomes(void **state)
{
    ops_fx *o = *state;
    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    assert_int_equal(res.row.status, SB_RUNNING);
    char id[SANDBOX_ID_MAX];
    snprintf(id, sizeof id, "%s", res.row.id);

    sandbox_ops_ping(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    sandbox_ops_pause(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    assert_int_equal(res.row.status, SB_PAUSED);

    /* Operations the state does not allow are conflicts, changing nothing. */
    sandbox_ops_pause(&o->ctx, id, &res);
    assert_outcome(res, SBOP_CONFLICT);
    assert_string_equal(res.err.msg, "sandbox is not running (status: paused)");
    sandbox_ops_ping(&o->ctx, id, &res);
    assert_outcome(res, SBOP_CONFLICT);
    rpc_client *c;
    sandbox_ops_open_running(&o->ctx, id, &c, &res);
    assert_outcome(res, SBOP_CONFLICT);

    /* A paused sandbox's timeout is only written down. */
    sandbox_ops_set_timeout(&o->ctx, id, 90, &res);
    assert_outcome(res, SBOP_OK);
    assert_int_equal(res.row.timeout_sec, 90);
    sandbox_ops_resume(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    assert_int_equal(res.row.status, SB_RUNNING);
    assert_int_equal(res.row.timeout_sec, 90);
    sandbox_ops_resume(&o->ctx, id, &res);
    assert_outcome(res, SBOP_CONFLICT);
    assert_string_equal(res.err.msg, "sandbox is not paused (status: running)");

    sandbox_ops_delete(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    bool found;
    assert_int_equal(db_row(o, id, &found).status, SB_STOPPED);
    sandbox_ops_delete(&o->ctx, id, &res); /* idempotent */
    assert_outcome(res, SBOP_OK);
    sandbox_ops_set_timeout(&o->ctx, id, 10, &res);
    assert_outcome(res, SBOP_CONFLICT);
}

static void test_ping_through_a_route_gives_the_answers_of_the_full_way(void **state)
{
    ops_fx *o = *state;
    ping_route *routes;
    terr e;
    assert_int_equal(ping_route_new(&routes, &e), 0);
    sbop_ctx c = o->ctx;
    c.routes = routes;
    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&c, &spec, &res);
    assert_outcome(res, SBOP_OK);
    char id[SANDBOX_ID_MAX];
    snprintf(id, sizeof id, "%s", res.row.id);
    sandbox_ops_ping(&c, id, &res); /* the full way; the route is kept */
    assert_outcome(res, SBOP_OK);
    db_host h;
    assert_true(ping_route_get(routes, o->team_a, id, mono_ms(), &h));
    assert_string_equal(h.id, "h1");
    sandbox_ops_ping(&c, id, &res); /* through the route */
    assert_outcome(res, SBOP_OK);

    /* Paused behind the route's back: the agent refuses, the full way answers. */
    sandbox_ops_pause(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    assert_true(ping_route_get(routes, o->team_a, id, mono_ms(), &h));
    sandbox_ops_ping(&c, id, &res);
    assert_outcome(res, SBOP_CONFLICT);
    assert_string_equal(res.err.msg, "sandbox is not running (status: paused)");
    assert_false(ping_route_get(routes, o->team_a, id, mono_ms(), &h));

    /* Another team never uses team A's route. */
    sandbox_ops_resume(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    sandbox_ops_ping(&c, id, &res);
    assert_outcome(res, SBOP_OK);
    sbop_ctx cb = c;
    cb.team_id = o->team_b;
    sandbox_ops_ping(&cb, id, &res);
    assert_outcome(res, SBOP_NOT_FOUND);

    /* Destroyed: the agent no longer has it, the row says stopped. */
    sandbox_ops_delete(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    sandbox_ops_ping(&c, id, &res);
    assert_outcome(res, SBOP_CONFLICT);
    ping_route_free(routes);
}

static void test_reconciler_change_holds_only_for_the_row_as_read(void **state)
{
    ops_fx *o = *state;
    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    char id[SANDBOX_ID_MAX];
    snprintf(id, sizeof id, "%s", res.row.id);
    terr e;
    db_pass_row *rows;
    size_t n;
    assert_int_equal(
        db_sandbox_rows_for_host(o->db, "h1", SB_STATUS_BIT(SB_RUNNING), &rows, &n, &e), 0);
    int64_t read_us = -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].id, id) == 0) read_us = rows[i].last_updated_us;
    free(rows);
    assert_true(read_us > 0);
    /* A request writes the row after the pass read it. */
    sandbox_ops_set_timeout(&o->ctx, id, 77, &res);
    assert_outcome(res, SBOP_OK);
    bool changed = true, found;
    assert_int_equal(db_sandbox_transition_unchanged(o->db, id, SB_STATUS_BIT(SB_RUNNING), read_us,
                                                     SB_STOPPED, 0, NULL, &changed, &e),
                     0);
    assert_false(changed);
    assert_int_equal(db_row(o, id, &found).status, SB_RUNNING);
    /* Read again: now the change holds. */
    assert_int_equal(
        db_sandbox_rows_for_host(o->db, "h1", SB_STATUS_BIT(SB_RUNNING), &rows, &n, &e), 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].id, id) == 0) read_us = rows[i].last_updated_us;
    free(rows);
    assert_int_equal(db_sandbox_transition_unchanged(o->db, id, SB_STATUS_BIT(SB_RUNNING), read_us,
                                                     SB_STOPPED, 0, NULL, &changed, &e),
                     0);
    assert_true(changed);
    assert_int_equal(db_row(o, id, &found).status, SB_STOPPED);
    sandbox_ops_delete(&o->ctx, id, &res);
}

static void test_unknown_or_foreign_sandbox_is_not_found(void **state)
{
    ops_fx *o = *state;
    sbop_result res;
    sandbox_ops_pause(&o->ctx, "sb-nope", &res);
    assert_outcome(res, SBOP_NOT_FOUND);
    assert_string_equal(res.err.msg, "sandbox sb-nope not found");

    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    char id[SANDBOX_ID_MAX];
    snprintf(id, sizeof id, "%s", res.row.id);
    sbop_ctx other = o->ctx;
    other.team_id = o->team_b;
    sandbox_ops_delete(&other, id, &res);
    assert_outcome(res, SBOP_NOT_FOUND);
    bool found;
    assert_int_equal(db_row(o, id, &found).status, SB_RUNNING);
    sandbox_ops_delete(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
}

/* The agent lost the paused sandbox: the resume fails NOT_FOUND and the row
 * must not stay paused (nothing could ever resume it): it is stopped. */
static void test_resume_of_a_sandbox_the_agent_lost_stops_the_row(void **state)
{
    ops_fx *o = *state;
    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    char id[SANDBOX_ID_MAX];
    snprintf(id, sizeof id, "%s", res.row.id);
    sandbox_ops_pause(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    rpc_client *c;
    db_host host = {0};
    snprintf(host.id, sizeof host.id, "h1");
    snprintf(host.address, sizeof host.address, "%s", o->agent_addr);
    terr e;
    assert_int_equal(agent_pool_get(o->agents, &host, &c, &e), 0);
    assert_int_equal(agent_destroy(c, id, &e), GRPC_STATUS_OK);

    sandbox_ops_resume(&o->ctx, id, &res);
    assert_outcome(res, SBOP_AGENT_FAILED);
    assert_int_equal(res.grpc, GRPC_STATUS_NOT_FOUND);
    bool found;
    assert_int_equal(db_row(o, id, &found).status, SB_STOPPED);
}

/* A template the agent refuses: the agent's INVALID_ARGUMENT, and the row
 * the create wrote is gone again. */
static void test_refused_create_leaves_no_row(void **state)
{
    ops_fx *o = *state;
    sbop_result res;
    sandbox_row spec = spec_of("no-such-template");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_AGENT_FAILED);
    assert_int_equal(res.grpc, GRPC_STATUS_INVALID_ARGUMENT);
    bool found;
    db_row(o, res.row.id, &found);
    assert_false(found);
}

/* The only host's agent cannot be reached: its health probe fails, so the
 * create is never sent, writes no row and is no_capacity; the failed probe is
 * counted, and from the second one on the host reads unreachable. */
static void test_create_with_an_unreachable_agent_is_no_capacity_and_writes_no_row(void **state)
{
    ops_fx *o = *state;
    terr e;
    if (db_host_upsert(o->db, "h1", "127.0.0.1:1", &e) != 0) fail_msg("host: %s", e.msg);
    sandbox_row *rows;
    size_t n0, n;
    if (db_sandbox_list(o->db, o->team_a, ~0u, &rows, &n0, &e) != 0) fail_msg("list: %s", e.msg);
    free(rows);
    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_NO_CAPACITY);
    if (db_sandbox_list(o->db, o->team_a, ~0u, &rows, &n, &e) != 0) fail_msg("list: %s", e.msg);
    free(rows);
    assert_int_equal(n, n0);
    db_host h;
    bool found;
    if (db_host_get(o->db, "h1", &h, &found, &e) != 0 || !found) fail_msg("host: %s", e.msg);
    assert_int_equal(h.failures, 1);
    assert_string_equal(h.status, "ready");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_NO_CAPACITY);
    if (db_host_get(o->db, "h1", &h, &found, &e) != 0 || !found) fail_msg("host: %s", e.msg);
    assert_string_equal(h.status, "unreachable");
    /* Back at its agent's address: the next answer makes it ready again. */
    if (db_host_upsert(o->db, "h1", o->agent_addr, &e) != 0) fail_msg("host: %s", e.msg);
    char before[16], after[16];
    if (db_host_record_answer(o->db, "h1", NULL, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    assert_string_equal(before, "unreachable");
    assert_string_equal(after, "ready");
}

/* Several control planes: one that cannot reach a host (its own TLS or
 * network settings) must not mark it unreachable while another replica
 * heard it within fresh_sec; once nobody has, failures count again. */
static void test_a_failed_probe_counts_only_when_nobody_heard_the_host_recently(void **state)
{
    ops_fx *o = *state;
    terr e;
    char before[16], after[16];
    if (db_host_record_answer(o->db, "h1", NULL, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    for (int i = 0; i < 2 * DB_HOST_UNREACHABLE_FAILURES; i++)
        if (db_host_record_failure(o->db, "h1", 3600, before, after, &e) != 0)
            fail_msg("failure: %s", e.msg);
    assert_string_equal(after, "ready");
    db_host h;
    bool found;
    if (db_host_get(o->db, "h1", &h, &found, &e) != 0 || !found) fail_msg("host: %s", e.msg);
    assert_int_equal(h.failures, 0);
    /* Heard longer ago than fresh_sec (here: 0 s): each failure counts. */
    for (int i = 0; i < DB_HOST_UNREACHABLE_FAILURES; i++)
        if (db_host_record_failure(o->db, "h1", 0, before, after, &e) != 0)
            fail_msg("failure: %s", e.msg);
    assert_string_equal(after, "unreachable");
    if (db_host_record_answer(o->db, "h1", NULL, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    assert_string_equal(after, "ready");
}

/* A sandbox whose host reads unreachable: every call answers
 * host_unreachable without asking the agent, and the row keeps its status
 * (and shows the host's status). */
static void test_calls_to_a_sandbox_on_an_unreachable_host_fail_at_once(void **state)
{
    ops_fx *o = *state;
    terr e;
    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    assert_string_equal(res.row.host_status, "ready");
    char id[SANDBOX_ID_MAX];
    snprintf(id, sizeof id, "%s", res.row.id);
    char before[16], after[16];
    for (int i = 0; i < DB_HOST_UNREACHABLE_FAILURES; i++)
        if (db_host_record_failure(o->db, "h1", 0, before, after, &e) != 0)
            fail_msg("failure: %s", e.msg);
    assert_string_equal(after, "unreachable");
    sandbox_ops_ping(&o->ctx, id, &res);
    assert_outcome(res, SBOP_HOST_UNREACHABLE);
    sandbox_ops_pause(&o->ctx, id, &res);
    assert_outcome(res, SBOP_HOST_UNREACHABLE);
    sandbox_ops_delete(&o->ctx, id, &res);
    assert_outcome(res, SBOP_HOST_UNREACHABLE);
    bool found;
    sandbox_row row = db_row(o, id, &found);
    assert_true(found);
    assert_int_equal(row.status, SB_RUNNING);
    assert_string_equal(row.host_status, "unreachable");
    if (db_host_record_answer(o->db, "h1", NULL, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    sandbox_ops_ping(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    sandbox_ops_delete(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
}

/* The scheduler honours the host's memory cap (rows not stopped count) and
 * places nothing on a draining host. */
static void test_create_honours_the_memory_cap_and_draining(void **state)
{
    ops_fx *o = *state;
    terr e;
    bool found;
    if (db_host_set_max_memory(o->db, "h1", 300, &found, &e) != 0 || !found)
        fail_msg("cap: %s", e.msg);
    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    char first[SANDBOX_ID_MAX];
    snprintf(first, sizeof first, "%s", res.row.id);
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    char second[SANDBOX_ID_MAX];
    snprintf(second, sizeof second, "%s", res.row.id);
    sandbox_ops_create(&o->ctx, &spec, &res); /* 3 x 128 > 300 */
    assert_outcome(res, SBOP_NO_CAPACITY);
    sandbox_ops_delete(&o->ctx, second, &res);
    assert_outcome(res, SBOP_OK);
    if (db_host_set_state(o->db, "h1", "draining", &found, &e) != 0 || !found)
        fail_msg("drain: %s", e.msg);
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_NO_CAPACITY);
    char before[16], after[16];
    if (db_host_record_answer(o->db, "h1", NULL, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    assert_string_equal(after, "draining"); /* an answer does not end a drain */
    if (db_host_set_state(o->db, "h1", "ready", &found, &e) != 0 || !found)
        fail_msg("undrain: %s", e.msg);
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    char third[SANDBOX_ID_MAX];
    snprintf(third, sizeof third, "%s", res.row.id);
    sandbox_ops_delete(&o->ctx, first, &res);
    sandbox_ops_delete(&o->ctx, third, &res);
    if (db_host_set_max_memory(o->db, "h1", -1, &found, &e) != 0) fail_msg("cap: %s", e.msg);
    /* A host reporting too little free disk for the RAM file + margin is
     * skipped (the create's own probe refreshes the figure, so the pick is
     * checked directly). */
    db_host_info small = {
        .memory_total_mb = 8192, .disk_free_mb = 128 + DB_HOST_DISK_MARGIN_MB - 1, .vcpus = 2};
    db_host_info roomy = {
        .memory_total_mb = 8192, .disk_free_mb = 128 + DB_HOST_DISK_MARGIN_MB, .vcpus = 2};
    db_host h;
    if (db_host_record_answer(o->db, "h1", &small, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    if (db_host_pick(o->db, 128, "minimal", NULL, 0, &h, &found, &e) != 0)
        fail_msg("pick: %s", e.msg);
    assert_false(found);
    if (db_host_record_answer(o->db, "h1", &roomy, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    if (db_host_pick(o->db, 128, "minimal", NULL, 0, &h, &found, &e) != 0)
        fail_msg("pick: %s", e.msg);
    assert_true(found);
    assert_string_equal(h.id, "h1");
}

/* The scheduler fills a host up to what its agent admits (RAM x the agent's
 * overcommit, reported as memory_capacity_mb), not only up to its RAM; an
 * operator cap still wins. */
static void test_pick_fills_a_host_up_to_its_agents_admission_limit(void **state)
{
    ops_fx *o = *state;
    terr e;
    bool found;
    char before[16], after[16];
    db_host h;
    db_host_info ram_only = {.memory_total_mb = 1000, .disk_free_mb = 100000, .vcpus = 2};
    if (db_host_record_answer(o->db, "h1", &ram_only, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    if (db_host_pick(o->db, 1200, "minimal", NULL, 0, &h, &found, &e) != 0)
        fail_msg("pick: %s", e.msg);
    assert_false(found); /* no admission limit reported: the RAM is the cap */
    db_host_info overcommit = ram_only;
    overcommit.memory_capacity_mb = 1500;
    if (db_host_record_answer(o->db, "h1", &overcommit, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    if (db_host_pick(o->db, 1200, "minimal", NULL, 0, &h, &found, &e) != 0)
        fail_msg("pick: %s", e.msg);
    assert_true(found);
    assert_int_equal(h.memory_capacity_mb, 1500);
    if (db_host_pick(o->db, 1600, "minimal", NULL, 0, &h, &found, &e) != 0)
        fail_msg("pick: %s", e.msg);
    assert_false(found);
    if (db_host_set_max_memory(o->db, "h1", 1100, &found, &e) != 0 || !found)
        fail_msg("cap: %s", e.msg);
    if (db_host_pick(o->db, 1200, "minimal", NULL, 0, &h, &found, &e) != 0)
        fail_msg("pick: %s", e.msg);
    assert_false(found);
    if (db_host_set_max_memory(o->db, "h1", -1, &found, &e) != 0) fail_msg("cap: %s", e.msg);
    /* An answer without info keeps the reported limit. */
    if (db_host_record_answer(o->db, "h1", NULL, before, after, &e) != 0)
        fail_msg("answer: %s", e.msg);
    if (db_host_get(o->db, "h1", &h, &found, &e) != 0 || !found) fail_msg("host: %s", e.msg);
    assert_int_equal(h.memory_capacity_mb, 1500);
}

/* A moving sandbox: every other operation is a conflict and changes
 * nothing; a move of a sandbox that is not paused is a conflict too. */
static void test_a_moving_sandbox_refuses_other_operations(void **state)
{
    ops_fx *o = *state;
    terr e;
    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    char id[SANDBOX_ID_MAX];
    snprintf(id, sizeof id, "%s", res.row.id);
    sandbox_ops_move(&o->ctx, id, NULL, &res);
    assert_outcome(res, SBOP_CONFLICT); /* running */
    sandbox_ops_pause(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
    bool changed;
    if (db_sandbox_transition(o->db, id, SB_STATUS_BIT(SB_PAUSED), SB_MOVING, 0, NULL, NULL,
                              &changed, &e) != 0 ||
        !changed)
        fail_msg("to moving: %s", e.msg);
    sandbox_ops_resume(&o->ctx, id, &res);
    assert_outcome(res, SBOP_CONFLICT);
    sandbox_ops_delete(&o->ctx, id, &res);
    assert_outcome(res, SBOP_CONFLICT);
    sandbox_ops_set_timeout(&o->ctx, id, 5, &res);
    assert_outcome(res, SBOP_CONFLICT);
    sandbox_ops_ping(&o->ctx, id, &res);
    assert_outcome(res, SBOP_CONFLICT);
    sandbox_ops_move(&o->ctx, id, NULL, &res);
    assert_outcome(res, SBOP_CONFLICT);
    bool found;
    sandbox_row row = db_row(o, id, &found);
    assert_true(found);
    assert_int_equal(row.status, SB_MOVING);
    if (db_sandbox_transition(o->db, id, SB_STATUS_BIT(SB_MOVING), SB_PAUSED, 0, NULL, NULL,
                              &changed, &e) != 0)
        fail_msg("back: %s", e.msg);
    sandbox_ops_delete(&o->ctx, id, &res);
    assert_outcome(res, SBOP_OK);
}

/* Admission control: a full host answers RESOURCE_EXHAUSTED and created
 * nothing; the create goes to the next host; with every host full the
 * outcome is RESOURCE_EXHAUSTED (REST 503 no_capacity) and no row is left. */
static void test_create_skips_a_full_host_and_fails_when_all_are_full(void **state)
{
    ops_fx *o = *state;
    terr e;
    admission_config full = {.host_memory_mb = 1000, .overcommit = 0.1, .disk_reserve_mb = -1};
    o->fx->admission = &full;
    fx_restart(o->fx);
    o->app.lc = o->fx->lc;

    sbop_result res;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_AGENT_FAILED);
    assert_int_equal(res.grpc, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(res.err.msg, "no capacity"));
    bool found;
    db_row(o, res.row.id, &found);
    assert_false(found);

    /* A second host with room. */
    agent_fx *fx2 = fx_new();
    agent_rpc app2 = {.lc = fx2->lc,
                      .journal = fx2->journal,
                      .host_ip = "127.0.0.1",
                      .agent_id = "ag-2222222222222222"};
    rpc_server_config scfg = {.listen_addr = "127.0.0.1:0", .app = &app2};
    scfg.methods = agent_rpc_methods(&scfg.n_methods);
    rpc_server *srv2 = NULL;
    if (rpc_server_start(&scfg, &srv2, &e) != 0) fail_msg("rpc_server_start: %s", e.msg);
    char addr2[64];
    snprintf(addr2, sizeof addr2, "127.0.0.1:%d", rpc_server_port(srv2));
    if (db_host_upsert(o->db, "h2", addr2, &e) != 0) fail_msg("host: %s", e.msg);

    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    assert_string_equal(res.row.host_id, "h2");
    assert_int_equal(res.row.status, SB_RUNNING);

    sbop_result dres;
    sandbox_ops_delete(&o->ctx, res.row.id, &dres);
    assert_outcome(dres, SBOP_OK);
    if (db_host_upsert(o->db, "h2", "127.0.0.1:1", &e) != 0) fail_msg("host: %s", e.msg);
    rpc_server_stop(srv2);
    fx_free(fx2);
    o->fx->admission = NULL;
    fx_restart(o->fx);
    o->app.lc = o->fx->lc;
}

/* The team quota (running + paused, sandboxes and memory): beyond it the
 * create is SBOP_QUOTA_EXCEEDED (REST 429) with no row and no agent call;
 * another team is not affected; -1 lifts it. */
static void test_create_beyond_the_team_quota_is_refused(void **state)
{
    ops_fx *o = *state;
    terr e;
    bool found;
    if (db_team_set_quota(o->db, "team-a", 1, 200, &found, &e) != 0 || !found)
        fail_msg("quota: %s", e.msg);
    sbop_result res, res2;
    sandbox_row spec = spec_of("minimal");
    sandbox_ops_create(&o->ctx, &spec, &res);
    assert_outcome(res, SBOP_OK);
    sbop_result pres;
    sandbox_ops_pause(&o->ctx, res.row.id, &pres);
    assert_outcome(pres, SBOP_OK); /* paused still counts */
    sandbox_ops_create(&o->ctx, &spec, &res2);
    assert_outcome(res2, SBOP_QUOTA_EXCEEDED);
    assert_non_null(strstr(res2.err.msg, "at most 1"));

    /* Memory: 128 in use + 128 > 200. */
    if (db_team_set_quota(o->db, "team-a", 5, 200, &found, &e) != 0) fail_msg("quota: %s", e.msg);
    sandbox_ops_create(&o->ctx, &spec, &res2);
    assert_outcome(res2, SBOP_QUOTA_EXCEEDED);
    assert_non_null(strstr(res2.err.msg, "MiB"));

    /* Team b has no quota. */
    sbop_ctx cb = o->ctx;
    cb.team_id = o->team_b;
    sandbox_ops_create(&cb, &spec, &res2);
    assert_outcome(res2, SBOP_OK);
    sandbox_ops_delete(&cb, res2.row.id, &pres);

    if (db_team_set_quota(o->db, "team-a", -1, -1, &found, &e) != 0) fail_msg("quota: %s", e.msg);
    sandbox_ops_create(&o->ctx, &spec, &res2);
    assert_outcome(res2, SBOP_OK);
    sandbox_ops_delete(&o->ctx, res2.row.id, &pres);
    sandbox_ops_delete(&o->ctx, res.row.id, &pres);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle_outcomes),
        cmocka_unit_test(test_ping_through_a_route_gives_the_answers_of_the_full_way),
        cmocka_unit_test(test_reconciler_change_holds_only_for_the_row_as_read),
        cmocka_unit_test(test_unknown_or_foreign_sandbox_is_not_found),
        cmocka_unit_test(test_resume_of_a_sandbox_the_agent_lost_stops_the_row),
        cmocka_unit_test(test_refused_create_leaves_no_row),
        cmocka_unit_test(test_create_beyond_the_team_quota_is_refused),
        cmocka_unit_test(test_create_skips_a_full_host_and_fails_when_all_are_full),
        cmocka_unit_test(test_create_honours_the_memory_cap_and_draining),
        cmocka_unit_test(test_pick_fills_a_host_up_to_its_agents_admission_limit),
        cmocka_unit_test(test_a_moving_sandbox_refuses_other_operations),
        cmocka_unit_test(test_a_failed_probe_counts_only_when_nobody_heard_the_host_recently),
        cmocka_unit_test(test_calls_to_a_sandbox_on_an_unreachable_host_fail_at_once),
        cmocka_unit_test(test_create_with_an_unreachable_agent_is_no_capacity_and_writes_no_row),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
