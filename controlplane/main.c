/* torpor-cp: the control plane. Parses flags, applies migrations, registers
 * the default agent host, then serves REST on N threads and runs the
 * reconciler until SIGTERM/SIGINT, with Prometheus metrics on their own
 * listener (--metrics-addr). Subcommands: keys create|list|revoke, hosts add,
 * hosts reset-identity. A bad command line exits 2 with one line on
 * stderr; any other start-up failure is one fatal() line and exit 1. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "agent_client.h"
#include "api.h"
#include "api_files.h"
#include "api_routes.h"
#include "auth.h"
#include "cp_config.h"
#include "cp_metrics.h"
#include "daemon.h"
#include "db.h"
#include "http_server.h"
#include "log.h"
#include "metrics_http.h"
#include "migrate.h"
#include "ping_route.h"
#include "team_limit.h"
#include "touch_gate.h"
#include "reconciler.h"
#include "template_copy.h"
#include "sandbox_ops.h"

static int open_migrated(const cp_config *cfg, db_conn **db, terr *err)
{
    if (db_open(cfg->database_url, db, err) != 0) return -1;
    int applied;
    if (migrate_run(*db, cfg->migrations_dir, &applied, err) != 0) {
        db_close(*db);
        *db = NULL;
        return -1;
    }
    char q[LOG_QUOTE_MAX];
    log_info("event=migrations_done applied=%d dir=\"%s\"", applied,
             log_quote(cfg->migrations_dir, q, sizeof q));
    return 0;
}

static int cmd_keys_create(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    char key[AUTH_KEY_LEN + 1], team_id[64];
    int rc = auth_key_create_role(db, cfg->team, cfg->admin, key, team_id, err);
    db_close(db);
    if (rc != 0) return -1;
    printf("%s\n", key);
    char q[LOG_QUOTE_MAX];
    log_info("event=api_key_created team=\"%s\" team_id=%s role=%s",
             log_quote(cfg->team, q, sizeof q), team_id, cfg->admin ? "admin" : "member");
    return 0;
}

static int cmd_keys_list(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    db_api_key *keys;
    size_t n;
    bool team_found;
    int rc = db_api_key_list(db, cfg->team, &keys, &n, &team_found, err);
    db_close(db);
    if (rc != 0) return -1;
    char q[LOG_QUOTE_MAX];
    if (!team_found)
        return terr_set(err, "no team named \"%s\"", log_quote(cfg->team, q, sizeof q));
    printf("%-36s  %-12s  %-20s  %-20s  %s\n", "ID", "PREFIX", "CREATED", "LAST USED", "REVOKED");
    for (size_t i = 0; i < n; i++)
        printf("%-36s  %-12s  %-20s  %-20s  %s\n", keys[i].id, keys[i].prefix, keys[i].created_at,
               *keys[i].last_used_at ? keys[i].last_used_at : "-",
               *keys[i].revoked_at ? keys[i].revoked_at : "-");
    free(keys);
    return 0;
}

static int cmd_keys_revoke(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    db_api_key k;
    int matched;
    int rc = db_api_key_revoke(db, cfg->host_id, cfg->key_prefix, &k, &matched, err);
    db_close(db);
    if (rc != 0) return -1;
    char q[LOG_QUOTE_MAX];
    const char *what = cfg->host_id ? "id" : "prefix";
    log_quote(cfg->host_id ? cfg->host_id : cfg->key_prefix, q, sizeof q);
    if (matched == 0)
        return terr_set(err, "no unrevoked key with %s \"%s\" (see keys list)", what, q);
    if (matched > 1)
        return terr_set(
            err, "%d unrevoked keys have prefix \"%s\"; revoke one with --id (see keys list)",
            matched, q);
    printf("revoked %s %s\n", k.id, k.prefix);
    log_info("event=api_key_revoked key_id=%s prefix=%s", k.id, k.prefix);
    return 0;
}

static int cmd_hosts_add(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    int rc = db_host_upsert(db, cfg->host_id, cfg->host_addr, err);
    bool found;
    if (rc == 0 && cfg->host_max_memory_mb)
        rc = db_host_set_max_memory(
            db, cfg->host_id,
            strcmp(cfg->host_max_memory_mb, "none") == 0 ? -1 : atoll(cfg->host_max_memory_mb),
            &found, err);
    db_close(db);
    if (rc == 0)
        log_info("event=host_registered host_id=%s addr=%s max_memory_mb=%s", cfg->host_id,
                 cfg->host_addr, cfg->host_max_memory_mb ? cfg->host_max_memory_mb : "unchanged");
    return rc;
}

static int cmd_hosts_list(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    db_host *hosts;
    size_t n;
    int rc = db_host_list(db, &hosts, &n, err);
    db_close(db);
    if (rc != 0) return -1;
    printf("%-16s  %-11s  %-24s  %-19s  %9s  %-19s  %9s  %5s  %9s\n", "ID", "STATUS", "ADDRESS",
           "AGENT ID", "LAST SEEN", "MEMORY USED/CAP MB", "DISK MB", "VCPUS", "SANDBOXES");
    for (size_t i = 0; i < n; i++) {
        const db_host *h = &hosts[i];
        char seen[32], mem[48];
        if (h->last_seen_age_sec < 0) snprintf(seen, sizeof seen, "never");
        else snprintf(seen, sizeof seen, "%.1fs ago", h->last_seen_age_sec);
        long long cap = h->max_memory_mb >= 0       ? h->max_memory_mb
                        : h->memory_capacity_mb > 0 ? h->memory_capacity_mb
                                                    : h->memory_total_mb;
        snprintf(mem, sizeof mem, "%lld/%lld", h->memory_used_mb, cap);
        printf("%-16s  %-11s  %-24s  %-19s  %9s  %-19s  %9lld  %5d  %9lld\n", h->id, h->status,
               h->address, *h->agent_id ? h->agent_id : "-", seen, mem, h->disk_free_mb, h->vcpus,
               h->sandboxes);
    }
    free(hosts);
    return 0;
}

static int cmd_hosts_set_state(const cp_config *cfg, const char *state, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    bool found;
    int rc = db_host_set_state(db, cfg->host_id, state, &found, err);
    db_close(db);
    if (rc != 0) return -1;
    if (!found)
        return terr_set(
            err, strcmp(state, "ready") == 0 ? "no draining host with id %s" : "no host with id %s",
            cfg->host_id);
    log_info("event=host_state_set host_id=%s state=%s", cfg->host_id, state);
    return 0;
}

static int cmd_hosts_reset_identity(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    db_host before;
    bool found;
    int rc = db_host_get(db, cfg->host_id, &before, &found, err);
    if (rc == 0 && found) rc = db_host_reset_identity(db, cfg->host_id, &found, err);
    db_close(db);
    if (rc != 0) return -1;
    if (!found) return terr_set(err, "no host with id %s", cfg->host_id);
    log_info(
        "event=host_identity_reset host_id=%s previous_agent_id=%s note=\"the reconciler records the next "
        "agent that answers at %s\"",
        cfg->host_id, *before.agent_id ? before.agent_id : "(none)", before.address);
    return 0;
}

static int cmd_teams_set_quota(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    bool found;
    int rc = db_team_set_quota(db, cfg->team, cfg->max_sandboxes, cfg->max_memory_mb, &found, err);
    db_close(db);
    if (rc != 0) return -1;
    char q[LOG_QUOTE_MAX];
    if (!found) return terr_set(err, "no team named \"%s\"", log_quote(cfg->team, q, sizeof q));
    log_info("event=team_quota_set team=\"%s\" max_sandboxes=%lld max_memory_mb=%lld",
             log_quote(cfg->team, q, sizeof q), cfg->max_sandboxes, cfg->max_memory_mb);
    return 0;
}

/* Each connection is a descriptor, and so is each worker's DB connection:
 * the soft limit is raised towards the hard one so that max_connections
 * fit (a lower hard limit is logged, not fatal: libmicrohttpd then refuses
 * connections beyond it). */
static void raise_fd_limit(int max_connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = (rlim_t)max_connections + 512;
    if (rl.rlim_cur >= want) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want)
        log_warn("event=fd_limit_low limit=%llu max_connections=%d",
                 (unsigned long long)rl.rlim_cur, max_connections);
}

static int cmd_hosts_remove(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    long long live;
    bool found;
    int rc = db_host_remove(db, cfg->host_id, &live, &found, err);
    db_close(db);
    if (rc != 0) return -1;
    if (!found) return terr_set(err, "no host with id %s", cfg->host_id);
    if (live > 0)
        return terr_set(
            err,
            "host %s still holds %lld sandbox(es); drain it first (torpor-cp hosts drain --id %s)",
            cfg->host_id, live, cfg->host_id);
    printf("removed %s\n", cfg->host_id);
    log_info("event=host_removed host_id=%s", cfg->host_id);
    return 0;
}

/* After the host is draining: pauses its running sandboxes, then moves every
 * paused one to another ready host. Failures are reported per sandbox and
 * make the command fail at the end (running it again retries them). */
static int cmd_hosts_drain(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    rpc_tls_config tls = {.cert_path = cfg->tls_cert,
                          .key_path = cfg->tls_key,
                          .ca_path = cfg->tls_ca,
                          .server_name_override = cfg->agent_tls_server_name};
    agent_pool *agents;
    if (agent_pool_open(&tls, &agents, err) != 0) {
        db_close(db);
        return -1;
    }
    sbop_ctx c = {.db = db, .agents = agents, .team_id = NULL};
    int failed = 0, moved = 0, paused = 0;
    char q[LOG_QUOTE_MAX];
    sandbox_row *rows;
    size_t n;
    for (int phase = 0; phase < 2; phase++) {
        sb_status want = phase == 0 ? SB_RUNNING : SB_PAUSED;
        if (db_sandbox_list_host(db, cfg->host_id, SB_STATUS_BIT(want), &rows, &n, err) != 0) {
            failed++;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            sbop_result res;
            if (phase == 0) sandbox_ops_pause(&c, rows[i].id, &res);
            else sandbox_ops_move(&c, rows[i].id, NULL, &res);
            if (res.outcome == SBOP_OK) {
                if (phase == 0) paused++;
                else moved++;
                printf("%s %s%s%s\n", phase == 0 ? "paused" : "moved", rows[i].id,
                       phase ? " to " : "", phase ? res.row.host_id : "");
            } else {
                failed++;
                fprintf(stderr, "torpor-cp: %s %s: %s\n", phase == 0 ? "pause" : "move", rows[i].id,
                        res.err.msg);
                log_warn("event=drain_step_failed host_id=%s sandbox_id=%s step=%s error=\"%s\"",
                         cfg->host_id, rows[i].id, phase == 0 ? "pause" : "move",
                         log_quote(res.err.msg, q, sizeof q));
            }
            fflush(stdout);
        }
        free(rows);
    }
    agent_pool_close(agents);
    db_close(db);
    log_info("event=host_drained host_id=%s paused=%d moved=%d failed=%d", cfg->host_id, paused,
             moved, failed);
    if (failed)
        return terr_set(err,
                        "%d sandbox(es) of host %s were not moved (see above); run the drain again",
                        failed, cfg->host_id);
    return 0;
}

static void cmd_serve(const cp_config *cfg, const sigset_t *sigs)
{
    terr err;
    db_conn *db;
    if (open_migrated(cfg, &db, &err) != 0) fatal("stage=migrate %s", err.msg);
    if (db_host_upsert(db, "default", cfg->agent_addr, &err) != 0)
        fatal("stage=default_host %s", err.msg);
    db_close(db);

    rpc_tls_config tls = {.cert_path = cfg->tls_cert,
                          .key_path = cfg->tls_key,
                          .ca_path = cfg->tls_ca,
                          .server_name_override = cfg->agent_tls_server_name};
    agent_set_files_deadline_ms((int)(cfg->files_timeout_sec * 1000.0));
    agent_pool *agents;
    if (agent_pool_open(&tls, &agents, &err) != 0) fatal("stage=agent_pool %s", err.msg);
    /* The reconciler first: /readyz reports what it sees of each host. */
    reconciler_config rc_cfg = {.database_url = cfg->database_url,
                                .agents = agents,
                                .interval_sec = cfg->reconcile_interval_sec,
                                .grace_sec = cfg->transition_grace_sec};
    reconciler *rec;
    if (reconciler_start(&rc_cfg, &rec, &err) != 0) fatal("stage=reconciler %s", err.msg);
    /* Template images to the hosts that lack them, every reconcile interval. */
    template_copier_config tc_cfg = {.database_url = cfg->database_url,
                                     .agents = agents,
                                     .interval_sec = cfg->reconcile_interval_sec};
    template_copier *copier;
    if (template_copier_start(&tc_cfg, &copier, &err) != 0)
        fatal("stage=template_copier %s", err.msg);
    team_limit *long_calls;
    if (team_limit_new(cfg->team_long_calls, &long_calls, &err) != 0)
        fatal("stage=limits %s", err.msg);
    auth_cache *keys;
    touch_gate *touches;
    ping_route *routes;
    if (auth_cache_new((int)(cfg->key_cache_sec * 1000 + 0.5), &keys, &err) != 0 ||
        touch_gate_new(&touches, &err) != 0 || ping_route_new(&routes, &err) != 0)
        fatal("stage=caches %s", err.msg);
    raise_fd_limit(cfg->max_connections);
    /* Before the REST listener: a taken metrics port fails the start
     * before any request is served. */
    metrics_http *mh = NULL;
    if (!metrics_http_addr_off(cfg->metrics_addr)) {
        if (cp_metrics_watch(cfg->database_url, &err) != 0 ||
            metrics_http_start(cfg->metrics_addr, metrics_default(), &mh, &err) != 0)
            fatal("stage=metrics addr=%s %s", cfg->metrics_addr, err.msg);
    }
    api_ctx ctx = {.cfg = cfg,
                   .agents = agents,
                   .rec = rec,
                   .long_calls = long_calls,
                   .keys = keys,
                   .touches = touches,
                   .routes = routes};
    http_server_config hc = {
        .listen_addr = cfg->http_addr,
        .n_threads = cfg->http_threads,
        .n_long_threads = cfg->http_long_threads,
        .max_connections = (unsigned)cfg->max_connections,
        .max_body = API_FILES_BODY_LIMIT,
        .app = &ctx,
        .worker_init = api_worker_init,
        .worker_free = api_worker_free,
        .on_headers = api_on_headers,
        .handler = api_handle,
        .vet = api_vet,
        .on_done = api_done,
    };
    http_server *http;
    if (http_server_start(&hc, &http, &err) != 0) fatal("stage=http %s", err.msg);
    log_info(
        "event=cp_ready http=%s port=%d agent=%s threads=%d long_threads=%d team_long_calls=%d "
        "max_connections=%d reconcile_interval=%g key_cache=%g metrics_addr=%s metrics_port=%d",
        cfg->http_addr, http_server_port(http), cfg->agent_addr, cfg->http_threads,
        cfg->http_long_threads, cfg->team_long_calls, cfg->max_connections,
        cfg->reconcile_interval_sec, cfg->key_cache_sec, cfg->metrics_addr, metrics_http_port(mh));

    int sig = daemon_wait_signal(sigs);
    log_info("event=cp_stopping signal=%d", sig);
    metrics_http_stop(mh);
    http_server_stop(http);
    template_copier_stop(copier);
    reconciler_stop(rec);
    team_limit_free(long_calls);
    auth_cache_free(keys);
    touch_gate_free(touches);
    ping_route_free(routes);
    agent_pool_close(agents);
    log_info("event=cp_stopped");
}

/* torpor-cp routes: "METHOD PATTERN" per row of the route table ("*" for a
 * row that serves any method), in table order; test_openapi_spec compares
 * it with docs/openapi.yaml. */
static void cmd_routes(void)
{
    for (size_t i = 0; i < api_route_count; i++)
        printf("%s %s\n", api_route_table[i].method ? api_route_table[i].method : "*",
               api_route_table[i].pattern);
}

int main(int argc, char **argv)
{
    /* Before any thread exists, so that every thread inherits the mask. */
    sigset_t sigs;
    daemon_signals_block(&sigs);
    cp_config cfg;
    terr err;
    if (cp_config_parse(argc, argv, &cfg, &err) != 0) {
        fprintf(stderr, "torpor-cp: %s\n", err.msg);
        return 2;
    }
    switch (cfg.command) {
    case CP_CMD_HELP: cp_config_usage(stdout); return 0;
    case CP_CMD_ROUTES: cmd_routes(); return 0;
    case CP_CMD_KEYS_CREATE:
        if (cmd_keys_create(&cfg, &err) != 0) fatal("command=keys_create %s", err.msg);
        return 0;
    case CP_CMD_KEYS_LIST:
        if (cmd_keys_list(&cfg, &err) != 0) fatal("command=keys_list %s", err.msg);
        return 0;
    case CP_CMD_KEYS_REVOKE:
        if (cmd_keys_revoke(&cfg, &err) != 0) fatal("command=keys_revoke %s", err.msg);
        return 0;
    case CP_CMD_HOSTS_ADD:
        if (cmd_hosts_add(&cfg, &err) != 0) fatal("command=hosts_add %s", err.msg);
        return 0;
    case CP_CMD_TEAMS_SET_QUOTA:
        if (cmd_teams_set_quota(&cfg, &err) != 0) fatal("command=teams_set_quota %s", err.msg);
        return 0;
    case CP_CMD_HOSTS_RESET_IDENTITY:
        if (cmd_hosts_reset_identity(&cfg, &err) != 0)
            fatal("command=hosts_reset_identity %s", err.msg);
        return 0;
    case CP_CMD_HOSTS_LIST:
        if (cmd_hosts_list(&cfg, &err) != 0) fatal("command=hosts_list %s", err.msg);
        return 0;
    case CP_CMD_HOSTS_DRAIN:
        if (cmd_hosts_set_state(&cfg, "draining", &err) != 0 || cmd_hosts_drain(&cfg, &err) != 0)
            fatal("command=hosts_drain %s", err.msg);
        return 0;
    case CP_CMD_HOSTS_REMOVE:
        if (cmd_hosts_remove(&cfg, &err) != 0) fatal("command=hosts_remove %s", err.msg);
        return 0;
    case CP_CMD_HOSTS_UNDRAIN:
        if (cmd_hosts_set_state(&cfg, "ready", &err) != 0)
            fatal("command=hosts_undrain %s", err.msg);
        return 0;
    default: cmd_serve(&cfg, &sigs); return 0;
    }
}
