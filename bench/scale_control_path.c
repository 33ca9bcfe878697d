/* scale_control_path: the control path at N sandboxes per agent (issue 11),
 * with the test driver (no QEMU): per host an agent core (lifecycle, reaper
 * without its thread, journal) on the scripted driver behind the real gRPC
 * handlers on 127.0.0.1, and one torpor-cp reconciler against a throwaway
 * PostgreSQL (scripts/lib/pg.sh) holding a running row per sandbox.
 *
 * Prints: create time and agent memory per sandbox record (RSS growth / N,
 * test driver entries included), the reaper tick with nothing to expire
 * (median, p99, max over 50 ticks), one tick in which 100 sandboxes expire
 * at once (the claim only: the pauses run on the pause workers), and a
 * ping's latency (lifecycle_ping) while those 100 pause; ListSandboxes over
 * gRPC (median of 5); one reconcile pass over all hosts (median of 3, one
 * replica). Figures only.
 *
 *   build/bench/scale_control_path [--sandboxes 10000] [--hosts 1]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "agent_fixture.h"
#include "auth.h"
#include "db.h"
#include "migrate.h"
#include "mono_time.h"
#include "reconciler.h"
#include "rpc.h"
#include "rpc_handlers.h"

#define MAX_HOSTS 4

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    if (f) fclose(f);
    return kib;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void stats(const char *what, double *v, int n, const char *unit)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    printf("%-44s median %9.2f %s  p99 %9.2f %s  max %9.2f %s  (n=%d)\n", what, v[n / 2], unit,
           v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], unit, v[n - 1], unit, n);
}

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

static void die(const char *what, const terr *e)
{
    fprintf(stderr, "scale_control_path: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

int main(int argc, char **argv)
{
    int n = 10000, n_hosts = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--sandboxes")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--hosts")) n_hosts = atoi(argv[i + 1]);
    }
    if (n < 200 || n_hosts < 1 || n_hosts > MAX_HOSTS)
        die("usage: --sandboxes N (>= 200) --hosts 1..4", NULL);
    terr e;
    agent_fx *fx[MAX_HOSTS];
    agent_rpc app[MAX_HOSTS];
    rpc_server *srv[MAX_HOSTS];
    char addr[MAX_HOSTS][64], agent_id[MAX_HOSTS][32];

    long rss0 = rss_kib();
    double t0 = now_us();
    for (int h = 0; h < n_hosts; h++) {
        fx[h] = fx_new_sized(n + 16);
        for (int i = 0; i < n; i++) {
            char id[32];
            snprintf(id, sizeof id, "sb-%02x%014x", h, i);
            /* 100 with a 60 s timeout (expired below), the rest an hour */
            if (fx_create(fx[h], id, i < 100 ? 60 : 3600) != AGENT_OK) die("create", NULL);
        }
    }
    double create_s = (now_us() - t0) / 1e6;
    long rss1 = rss_kib();
    printf(
        "%d host(s) x %d sandboxes created in %.2f s; agent memory per sandbox record: %.0f bytes "
        "(RSS growth / records, test driver entries included)\n",
        n_hosts, n, create_s, (double)(rss1 - rss0) * 1024.0 / ((double)n * n_hosts));

    /* Reaper tick, nothing expiring. */
    double ticks[50];
    for (int i = 0; i < 50; i++) {
        double a = now_us();
        reaper_tick(fx[0]->reaper);
        ticks[i] = (now_us() - a) / 1000.0;
    }
    stats("reaper tick, nothing expires", ticks, 50, "ms");

    /* 100 expire at once: one tick claims them; ping while they pause. */
    agent_clock_advance_ms(&fx[0]->clock, 61 * 1000);
    double a = now_us();
    reaper_tick(fx[0]->reaper);
    printf("%-44s %9.2f ms\n", "reaper tick claiming 100 expired", (now_us() - a) / 1000.0);
    double pings[400];
    int np = 0;
    while (np < 400) {
        char id[32];
        snprintf(id, sizeof id, "sb-%02x%014x", 0, 100 + np);
        int64_t last;
        double b = now_us();
        if (lifecycle_ping(fx[0]->lc, id, &last, &e) != AGENT_OK) die("ping", &e);
        pings[np++] = (now_us() - b) / 1000.0;
    }
    stats("ping while 100 pause (lifecycle_ping)", pings, np, "ms");

    /* The agents behind gRPC. */
    for (int h = 0; h < n_hosts; h++) {
        snprintf(agent_id[h], sizeof agent_id[h], "ag-%016x", 0xbe00 + h);
        app[h] = (agent_rpc){.lc = fx[h]->lc,
                             .journal = fx[h]->journal,
                             .host_ip = "127.0.0.1",
                             .agent_id = agent_id[h]};
        rpc_server_config scfg = {.listen_addr = "127.0.0.1:0", .app = &app[h]};
        scfg.methods = agent_rpc_methods(&scfg.n_methods);
        if (rpc_server_start(&scfg, &srv[h], &e) != 0) die("rpc_server_start", &e);
        snprintf(addr[h], sizeof addr[h], "127.0.0.1:%d", rpc_server_port(srv[h]));
    }
    rpc_tls_config tls = {0};
    agent_pool *agents;
    if (agent_pool_open(&tls, &agents, &e) != 0) die("agent pool", &e);
    db_host h0 = {0};
    snprintf(h0.id, sizeof h0.id, "h0");
    snprintf(h0.address, sizeof h0.address, "%s", addr[0]);
    rpc_client *c0;
    if (agent_pool_get(agents, &h0, &c0, &e) != 0) die("client", &e);
    double lists[5];
    for (int i = 0; i < 5; i++) {
        Torpor__Hostagent__V1__ListSandboxesResponse *resp;
        double b = now_us();
        if (agent_list(c0, NULL, 0, &resp, &e) != GRPC_STATUS_OK) die("ListSandboxes", &e);
        lists[i] = (now_us() - b) / 1000.0;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    stats("ListSandboxes over gRPC (loopback)", lists, 5, "ms");

    /* PostgreSQL with a running row per sandbox. */
    char tmpl[] = "/tmp/torpor-scale-XXXXXX";
    if (!mkdtemp(tmpl)) die("mkdtemp", NULL);
    chmod(tmpl, 0755);
    char pg_dir[128], url[512];
    snprintf(pg_dir, sizeof pg_dir, "%s/pg", tmpl);
    if (pg("start", pg_dir, url, sizeof url) != 0 || !*url) die("PostgreSQL did not start", NULL);
    db_conn *db;
    int applied;
    if (db_open(url, &db, &e) != 0 ||
        migrate_run(db, TORPOR_SOURCE_DIR "/migrations", &applied, &e) != 0)
        die("db", &e);
    char team[64], key[AUTH_KEY_LEN + 1];
    if (auth_key_create(db, "bench", key, team, &e) != 0) die("team", &e);
    for (int h = 0; h < n_hosts; h++) {
        char hid[16], sql[1024];
        snprintf(hid, sizeof hid, "h%d", h);
        if (db_host_upsert(db, hid, addr[h], &e) != 0) die("host", &e);
        snprintf(
            sql, sizeof sql,
            "INSERT INTO sandboxes (id, team_id, host_id, status, template, vcpus, memory_mb, started_at, "
            "last_active_at, last_updated) SELECT 'sb-' || lpad(to_hex(%d), 2, '0') || lpad(to_hex(g), 14, '0'), "
            "'%s'::uuid, '%s', CASE WHEN g < 100 THEN 'paused' ELSE 'running' END, 'minimal', 1, 128, "
            "now(), now(), now() - interval '1 hour' FROM generate_series(0, %d) g",
            h, team, hid, n - 1);
        if (db_exec_simple(db, sql, &e) != 0) die("rows", &e);
    }
    db_exec_simple(db, "ANALYZE", &e);
    reconciler_config rcfg = {.database_url = url,
                              .agents = agents,
                              .interval_sec = 3600,
                              .grace_sec = RECONCILER_GRACE_DEFAULT_SEC};
    reconciler *r;
    if (reconciler_start(&rcfg, &r, &e) != 0) die("reconciler", &e);
    sleep(3 + n_hosts); /* its first pass (at start) is done by then */
    double passes[3];
    for (int i = 0; i < 3; i++) {
        double b = now_us();
        if (reconciler_run_once(r, &e) != 0) die("reconcile pass", &e);
        passes[i] = (now_us() - b) / 1000.0;
    }
    char what[80];
    snprintf(what, sizeof what, "reconcile pass, %d host(s) x %d rows", n_hosts, n);
    stats(what, passes, 3, "ms");
    printf("per host: %.1f ms\n", passes[1] / n_hosts);

    reconciler_stop(r);
    db_close(db);
    pg("stop", pg_dir, NULL, 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpl);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpl);
    agent_pool_close(agents);
    for (int h = 0; h < n_hosts; h++) {
        rpc_server_stop(srv[h]);
        fx_free(fx[h]);
    }
    return 0;
}
