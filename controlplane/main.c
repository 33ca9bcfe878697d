/* torpor-cp: the control plane. Parses flags, applies migrations, registers
 * the default agent host, then serves REST on N threads and runs the
 * reconciler until SIGTERM/SIGINT. Subcommands: keys create, hosts add,
 * hosts reset-identity. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_client.h"
#include "api.h"
#include "api_routes.h"
#include "auth.h"
#include "cp_config.h"
#include "db.h"
#include "http_server.h"
#include "log.h"
#include "migrate.h"
#include "reconciler.h"

static int open_migrated(const cp_config *cfg, db_conn **db, terr *err)
{
    if (db_open(cfg->database_url, db, err) != 0) return -1;
    int applied;
    if (migrate_run(*db, cfg->migrations_dir, &applied, err) != 0) {
        db_close(*db);
        *db = NULL;
        return -1;
    }
    log_info("event=migrations_done applied=%d dir=%s", applied, cfg->migrations_dir);
    return 0;
}

static int cmd_keys_create(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    char key[AUTH_KEY_LEN + 1], team_id[64];
    int rc = auth_key_create(db, cfg->team, key, team_id, err);
    db_close(db);
    if (rc != 0) return -1;
    printf("%s\n", key);
    log_info("event=api_key_created team=%s team_id=%s", cfg->team, team_id);
    return 0;
}

static int cmd_hosts_add(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    int rc = db_host_upsert(db, cfg->host_id, cfg->host_addr, err);
    db_close(db);
    if (rc == 0) log_info("event=host_registered host_id=%s addr=%s", cfg->host_id, cfg->host_addr);
    return rc;
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
    log_info("event=host_identity_reset host_id=%s previous_agent_id=%s note=\"the reconciler records the next "
             "agent that answers at %s\"",
             cfg->host_id, *before.agent_id ? before.agent_id : "(none)", before.address);
    return 0;
}

static int cmd_serve(const cp_config *cfg, terr *err)
{
    db_conn *db;
    if (open_migrated(cfg, &db, err) != 0) return -1;
    int rc = db_host_upsert(db, "default", cfg->agent_addr, err);
    db_close(db);
    if (rc != 0) return -1;

    /* Block the signals in every thread; this one waits for them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    rpc_tls_config tls = {.cert_path = cfg->tls_cert, .key_path = cfg->tls_key, .ca_path = cfg->tls_ca,
                          .server_name_override = cfg->agent_tls_server_name};
    agent_pool *agents;
    if (agent_pool_open(&tls, &agents, err) != 0) return -1;
    api_ctx ctx = {.cfg = cfg, .agents = agents};
    http_server_config hc = {
        .listen_addr = cfg->http_addr,
        .n_threads = cfg->http_threads,
        .max_body = API_FILES_BODY_LIMIT,
        .app = &ctx,
        .worker_init = api_worker_init,
        .worker_free = api_worker_free,
        .on_headers = api_on_headers,
        .handler = api_handle,
    };
    http_server *http;
    if (http_server_start(&hc, &http, err) != 0) {
        agent_pool_close(agents);
        return -1;
    }
    reconciler_config rc_cfg = {.database_url = cfg->database_url, .agents = agents,
                                .interval_sec = cfg->reconcile_interval_sec,
                                .grace_sec = cfg->transition_grace_sec};
    reconciler *rec;
    if (reconciler_start(&rc_cfg, &rec, err) != 0) {
        http_server_stop(http);
        agent_pool_close(agents);
        return -1;
    }
    log_info("event=cp_ready http=%s port=%d agent=%s threads=%d reconcile_interval=%g", cfg->http_addr,
             http_server_port(http), cfg->agent_addr, cfg->http_threads, cfg->reconcile_interval_sec);

    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("event=cp_stopping signal=%d", sig);
    http_server_stop(http);
    reconciler_stop(rec);
    agent_pool_close(agents);
    log_info("event=cp_stopped");
    return 0;
}

int main(int argc, char **argv)
{
    cp_config cfg;
    terr err;
    if (cp_config_parse(argc, argv, &cfg, &err) != 0) {
        fprintf(stderr, "torpor-cp: %s\n", err.msg);
        return 2;
    }
    int rc;
    switch (cfg.command) {
    case CP_CMD_HELP: cp_config_usage(stdout); return 0;
    case CP_CMD_KEYS_CREATE: rc = cmd_keys_create(&cfg, &err); break;
    case CP_CMD_HOSTS_ADD: rc = cmd_hosts_add(&cfg, &err); break;
    case CP_CMD_HOSTS_RESET_IDENTITY: rc = cmd_hosts_reset_identity(&cfg, &err); break;
    default: rc = cmd_serve(&cfg, &err); break;
    }
    if (rc != 0) {
        log_error("event=cp_failed error=\"%s\"", err.msg);
        return 1;
    }
    return 0;
}
