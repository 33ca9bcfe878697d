/* Unit tests for controlplane/template_copy and the placement rule of custom
 * templates (db_host_pick_template, db_template_copy_claim), against a real
 * PostgreSQL (scripts/lib/pg.sh, migrated) and two agents' gRPC handlers on
 * 127.0.0.1:0, each with its own template builder (a stand-in recipe, no
 * mmdebstrap) and image dir: a template ready on h1 is copied to h2 once,
 * byte-identical under the same digest; creates are placed only on hosts
 * whose row holds the template's exact digest, so a drained builder no
 * longer blocks them once the copy is there (nor does its removal); a failed
 * copy leaves nothing on
 * the target and is retried only after its backoff; a copy is claimed by one
 * caller at a time. */
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

#include "agent_client.h"
#include "agent_fixture.h"
#include "auth.h"
#include "db.h"
#include "db_templates.h"
#include "migrate.h"
#include "mono_time.h"
#include "rpc.h"
#include "rpc_handlers.h"
#include "template_builder.h"
#include "template_copy.h"

static const char *RECIPE =
    "#!/bin/bash\n"
    "set -e\n"
    "out=$1\n"
    "d=$(dirname \"$out\")/.content-$(basename \"$out\")\n"
    "mkdir -p \"$d\"\n"
    "echo kernel > \"$d/vmlinux\"; echo initrd > \"$d/initramfs.cpio.gz\"\n"
    "truncate -s 2M \"$d/rootfs.img\"\n"
    "printf 'root disk' | dd of=\"$d/rootfs.img\" bs=1 seek=1200000 conv=notrunc 2>/dev/null\n"
    "sha256sum \"$d/rootfs.img\" | cut -d' ' -f1 > \"$d/rootfs.sha256\"\n"
    "ln -sfn \"$d\" \"$out\"\n";

typedef struct host_fx {
    agent_fx *fx;
    template_builder *tb;
    agent_rpc app;
    rpc_server *server;
    char images[160];
} host_fx;

typedef struct cfx {
    char root[64];
    char pg_dir[128];
    host_fx h[2];
    db_conn *db;
    agent_pool *agents;
    char team[64];
    template_row tpl;
} cfx;

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

static void sql(cfx *c, const char *q)
{
    terr e;
    if (db_exec_simple(c->db, q, &e) != 0) fail_msg("%s: %s", q, e.msg);
}

static void start_host(cfx *c, int i, const char *script, bool with_builder)
{
    host_fx *h = &c->h[i];
    h->fx = fx_new();
    char root[64];
    snprintf(root, sizeof root, "%s", c->root);
    snprintf(h->images, sizeof h->images, "%s/images-%d", root, i);
    assert_int_equal(mkdir(h->images, 0755), 0);
    terr e;
    if (with_builder) {
        tb_config cfg = {.state_dir = h->fx->dir,
                         .image_dir = h->images,
                         .recipe_script = script,
                         .guest_binary = "/bin/true"};
        if (tb_open(&cfg, &h->tb, &e) != 0) fail_msg("tb_open: %s", e.msg);
    }
    h->app = (agent_rpc){.lc = h->fx->lc,
                         .journal = h->fx->journal,
                         .host_ip = "127.0.0.1",
                         .agent_id = i == 0 ? "ag-0000000000000001" : "ag-0000000000000002",
                         .templates = h->tb,
                         .state_dir = h->fx->dir,
                         .image_dir = h->images};
    rpc_server_config scfg = {.listen_addr = "127.0.0.1:0", .app = &h->app};
    scfg.methods = agent_rpc_methods(&scfg.n_methods);
    if (rpc_server_start(&scfg, &h->server, &e) != 0) fail_msg("rpc_server_start: %s", e.msg);
    char addr[64], id[8];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rpc_server_port(h->server));
    snprintf(id, sizeof id, "h%d", i + 1);
    if (db_host_upsert(c->db, id, addr, &e) != 0) fail_msg("host: %s", e.msg);
}

static void stop_host(host_fx *h)
{
    rpc_server_stop(h->server);
    if (h->tb) tb_close(h->tb);
    fx_free(h->fx);
}

static int setup_with(void **state, bool h2_builder)
{
    cfx *c = calloc(1, sizeof *c);
    snprintf(c->root, sizeof c->root, "/tmp/torpor-tcopy-XXXXXX");
    assert_non_null(mkdtemp(c->root));
    chmod(c->root, 0755); /* the postgres user must reach pg/ */
    char script[128];
    snprintf(script, sizeof script, "%s/recipe.sh", c->root);
    FILE *s = fopen(script, "w");
    assert_non_null(s);
    fputs(RECIPE, s);
    fclose(s);
    snprintf(c->pg_dir, sizeof c->pg_dir, "%s/pg", c->root);
    char url[512];
    terr e;
    int applied;
    if (pg("start", c->pg_dir, url, sizeof url) != 0 || !*url) fail_msg("PostgreSQL did not start");
    if (db_open(url, &c->db, &e) != 0 ||
        migrate_run(c->db, TORPOR_SOURCE_DIR "/migrations", &applied, &e) != 0)
        fail_msg("db: %s", e.msg);
    start_host(c, 0, script, true);
    start_host(c, 1, script, h2_builder);
    char key[AUTH_KEY_LEN + 1];
    if (auth_key_create(c->db, "team-a", key, c->team, &e) != 0) fail_msg("team: %s", e.msg);
    rpc_tls_config tls = {0};
    if (agent_pool_open(&tls, &c->agents, &e) != 0) fail_msg("agent pool: %s", e.msg);
    /* A template built on h1, settled ready as template_ops does. */
    template_row *t = &c->tpl;
    snprintf(t->id, sizeof t->id, "tpl-00000000000000aa");
    snprintf(t->team_id, sizeof t->team_id, "%s", c->team);
    snprintf(t->name, sizeof t->name, "mine");
    snprintf(t->base, sizeof t->base, "debian");
    snprintf(t->host_id, sizeof t->host_id, "h1");
    bool dup;
    if (db_template_insert(c->db, t, NULL, &dup, &e) != 0 || dup) fail_msg("insert: %s", e.msg);
    tb_info info;
    assert_int_equal(tb_build(c->h[0].tb, t->id, "debian", NULL, 0, NULL, &info, &e), AGENT_OK);
    int64_t end = mono_ms() + 20000;
    do {
        assert_int_equal(tb_get(c->h[0].tb, t->id, 0, &info, NULL, NULL, &e), AGENT_OK);
        if (info.status != TB_BUILDING) break;
        usleep(50 * 1000);
    } while (mono_ms() < end);
    assert_int_equal(info.status, TB_READY);
    bool changed;
    if (db_template_settle(c->db, t->id, "h1", TPL_READY, info.digest, info.size_bytes, "",
                           &changed, &e) != 0 ||
        !changed)
        fail_msg("settle: %s", e.msg);
    snprintf(t->digest, sizeof t->digest, "%s", info.digest);
    *state = c;
    return 0;
}

static int setup(void **state) { return setup_with(state, true); }
static int setup_h2_cannot_import(void **state) { return setup_with(state, false); }

static int teardown(void **state)
{
    cfx *c = *state;
    agent_pool_close(c->agents);
    db_close(c->db);
    pg("stop", c->pg_dir, NULL, 0);
    stop_host(&c->h[0]);
    stop_host(&c->h[1]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", c->root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", c->root);
    free(c);
    return 0;
}

/* The host db_host_pick_template chooses for the template ("" = none). */
static const char *placed(cfx *c, const char *digest)
{
    static char id[64];
    db_host h;
    bool found;
    terr e;
    if (db_host_pick_template(c->db, 128, c->tpl.id, digest, NULL, 0, &h, &found, &e) != 0)
        fail_msg("pick: %s", e.msg);
    snprintf(id, sizeof id, "%s", found ? h.id : "");
    return id;
}

static template_host_row row_of(cfx *c, const char *host, bool *found)
{
    template_host_row *v, out;
    memset(&out, 0, sizeof out);
    size_t n;
    terr e;
    if (db_template_hosts(c->db, c->tpl.id, &v, &n, &e) != 0) fail_msg("hosts: %s", e.msg);
    *found = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].host_id, host) == 0) {
            out = v[i];
            *found = true;
        }
    free(v);
    return out;
}

static void test_ready_template_is_copied_once_with_its_digest(void **state)
{
    cfx *c = *state;
    terr e;
    assert_int_equal(template_copy_run_once(c->db, c->agents, NULL, NULL, &e), 1);
    bool found;
    template_host_row r = row_of(c, "h2", &found);
    assert_true(found);
    assert_string_equal(r.status, "ready");
    assert_string_equal(r.digest, c->tpl.digest);
    assert_false(r.builder);
    /* h2's agent holds it under the same name, same digest, built nowhere. */
    tb_info info;
    assert_int_equal(tb_get(c->h[1].tb, c->tpl.id, 0, &info, NULL, NULL, &e), AGENT_OK);
    assert_int_equal(info.status, TB_READY);
    assert_string_equal(info.digest, c->tpl.digest);
    /* Nothing more is due: one copy per host. */
    assert_int_equal(template_copy_run_once(c->db, c->agents, NULL, NULL, &e), 0);
}

static void test_creates_go_only_where_the_exact_digest_is(void **state)
{
    cfx *c = *state;
    terr e;
    /* Only the builder holds it. */
    assert_string_equal(placed(c, c->tpl.digest), "h1");
    /* A draining builder: nowhere, until the copy is there. */
    bool found;
    assert_int_equal(db_host_set_state(c->db, "h1", "draining", &found, &e), 0);
    assert_string_equal(placed(c, c->tpl.digest), "");
    /* The copier does not copy to a draining host, but from it. */
    assert_int_equal(template_copy_run_once(c->db, c->agents, NULL, NULL, &e), 1);
    assert_string_equal(placed(c, c->tpl.digest), "h2");
    /* A host whose row holds another digest is never chosen. */
    char q[256];
    snprintf(q, sizeof q, "UPDATE template_hosts SET digest = 'other' WHERE host_id = 'h2'");
    sql(c, q);
    assert_string_equal(placed(c, c->tpl.digest), "");
    /* An unreachable host neither. */
    sql(c, "UPDATE template_hosts SET digest = (SELECT digest FROM templates LIMIT 1)");
    assert_string_equal(placed(c, c->tpl.digest), "h2");
    sql(c, "UPDATE hosts SET failures = 5 WHERE id = 'h2'");
    assert_string_equal(placed(c, c->tpl.digest), "");
}

static void test_failed_copy_leaves_nothing_and_waits_its_backoff(void **state)
{
    cfx *c = *state; /* h2's agent cannot import (no template builder) */
    terr e;
    assert_int_equal(template_copy_run_once(c->db, c->agents, NULL, NULL, &e), 1);
    bool found;
    template_host_row r = row_of(c, "h2", &found);
    assert_true(found);
    assert_string_equal(r.status, "error");
    assert_int_equal(r.attempts, 1);
    assert_true(strlen(r.error) > 0);
    char link[256];
    struct stat st;
    snprintf(link, sizeof link, "%s/%s", c->h[1].images, c->tpl.id);
    assert_true(lstat(link, &st) != 0);
    assert_string_equal(placed(c, c->tpl.digest), "h1");
    /* Not again before the backoff ... */
    assert_int_equal(template_copy_run_once(c->db, c->agents, NULL, NULL, &e), 0);
    /* ... and again after it (failing again: attempts 2). */
    sql(c, "UPDATE template_hosts SET updated_at = now() - interval '1 hour' WHERE host_id = 'h2'");
    assert_int_equal(template_copy_run_once(c->db, c->agents, NULL, NULL, &e), 1);
    r = row_of(c, "h2", &found);
    assert_int_equal(r.attempts, 2);
    /* The builder's row is never claimed, whatever its state. */
    sql(c, "UPDATE template_hosts SET status = 'error', updated_at = now() - interval '1 hour'");
    sql(c, "DELETE FROM template_hosts WHERE host_id = 'h2'");
    sql(c, "UPDATE hosts SET state = 'draining' WHERE id = 'h2'");
    assert_int_equal(template_copy_run_once(c->db, c->agents, NULL, NULL, &e), 0);
}

static void test_one_claim_per_template_and_host(void **state)
{
    cfx *c = *state;
    terr e;
    template_copy_claim a, b;
    bool found;
    assert_int_equal(db_template_copy_claim(c->db, NULL, NULL, 900, &a, &found, &e), 0);
    assert_true(found);
    assert_string_equal(a.host_id, "h2");
    assert_string_equal(a.digest, c->tpl.digest);
    assert_int_equal(db_template_copy_claim(c->db, NULL, NULL, 900, &b, &found, &e), 0);
    assert_false(found);
    /* A copy not settled within the stale limit is taken over. */
    sql(c,
        "UPDATE template_hosts SET updated_at = now() - interval '20 minutes' WHERE host_id = 'h2'");
    assert_int_equal(db_template_copy_claim(c->db, NULL, NULL, 900, &b, &found, &e), 0);
    assert_true(found);
    /* A live copy's heartbeat keeps it from being taken over. */
    sql(c,
        "UPDATE template_hosts SET updated_at = now() - interval '20 minutes' WHERE host_id = 'h2'");
    assert_int_equal(db_template_copy_heartbeat(c->db, b.template_id, b.host_id, &e), 0);
    template_copy_claim x;
    assert_int_equal(db_template_copy_claim(c->db, NULL, NULL, 900, &x, &found, &e), 0);
    assert_false(found);
    /* The row settles once: whoever settles second changes nothing. */
    bool changed;
    assert_int_equal(
        db_template_copy_settle(c->db, a.template_id, a.host_id, false, "x", &changed, &e), 0);
    assert_true(changed);
    assert_int_equal(
        db_template_copy_settle(c->db, b.template_id, b.host_id, true, "", &changed, &e), 0);
    assert_false(changed);
}

static void test_a_removed_build_host_leaves_the_copies_serving(void **state)
{
    cfx *c = *state;
    terr e;
    assert_int_equal(template_copy_run_once(c->db, c->agents, NULL, NULL, &e), 1);
    long long live;
    bool found;
    if (db_host_remove(c->db, "h1", &live, &found, &e) != 0) fail_msg("remove: %s", e.msg);
    assert_true(found);
    assert_int_equal(live, 0);
    row_of(c, "h1", &found);
    assert_false(found);
    assert_string_equal(placed(c, c->tpl.digest), "h2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ready_template_is_copied_once_with_its_digest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_creates_go_only_where_the_exact_digest_is, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_copy_leaves_nothing_and_waits_its_backoff,
                                        setup_h2_cannot_import, teardown),
        cmocka_unit_test_setup_teardown(test_one_claim_per_template_and_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_removed_build_host_leaves_the_copies_serving, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
