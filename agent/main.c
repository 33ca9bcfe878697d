/* torpor-agent: wires config, the QEMU driver, the journal, the lifecycle,
 * the reaper and the gRPC server together, then waits for SIGTERM/SIGINT.
 *
 * Shutdown order (docs/lifecycle.md): stop the reaper's ticks, stop the RPC
 * server (it waits for running handlers, e.g. a user's pause), let queued and
 * running auto-pauses finish (bounded by --shutdown-timeout), exit 0.
 * Running VMs are left running; the next start re-attaches them. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admission.h"
#include "agent_config.h"
#include "agent_metrics.h"
#include "agent_identity.h"
#include "clock.h"
#include "daemon.h"
#include "journal.h"
#include "lifecycle.h"
#include "log.h"
#include "metrics_http.h"
#include "net.h"
#include "vm_user.h"
#include "port_tunnel.h"
#include "qemu.h"
#include "reaper.h"
#include "rpc.h"
#include "rpc_handlers.h"
#include "template_builder.h"

/* Where the template builder finds the recipe and the guest binary: the
 * environment, else the paths of this build (agent/CMakeLists.txt). */
static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* The host part of a listen address ("10.0.0.5:50051", "[::1]:0"). */
static void listen_host(const char *addr, char *host, size_t n)
{
    const char *end = addr[0] == '[' ? strchr(addr, ']') : strrchr(addr, ':');
    const char *start = addr[0] == '[' ? addr + 1 : addr;
    size_t len = end ? (size_t)(end - start) : strlen(start);
    snprintf(host, n, "%.*s", (int)len, start);
}

static int run(const agent_config *cfg, const sigset_t *sigs)
{
    terr err = {{0}};
    agent_clock clock; /* main.c owns the process-wide state */
    agent_clock_init_system(&clock);

    /* First, before anything touches the state dir: a malformed id file is
     * a start-up error (see agent_identity.h). */
    char agent_id[AGENT_ID_LEN + 1];
    bool id_created;
    if (agent_identity_load(cfg->state_dir, agent_id, &id_created, &err) != 0)
        fatal("stage=identity %s", err.msg);
    if (id_created) {
        char q[LOG_QUOTE_MAX];
        log_info("event=agent_identity_created agent_id=%s state_dir=\"%s\"", agent_id,
                 log_quote(cfg->state_dir, q, sizeof q));
    }

    /* A start-up failure below exits at once (fatal): nothing has run yet,
     * VMs left by a previous agent keep running, and the next start
     * re-attaches them. */
    qemu_accel accel;
    if (runtime_qemu_parse_accel(cfg->accel, &accel) != 0)
        fatal("stage=config bad accel %s", cfg->accel);
    runtime_qemu_config qcfg = {.state_dir = cfg->state_dir,
                                .image_dir = cfg->image_dir,
                                .accel = accel,
                                .template_cache_max = cfg->template_cache,
                                .vm_user = cfg->vm_user};
    /* QEMU runs unprivileged by default (docs/security.md): the default
     * user is created when missing. */
    if (cfg->vm_user && cfg->vm_user_is_default && vm_user_ensure(cfg->vm_user, &err) < 0)
        fatal("stage=vm_user %s (or run with --vm-user none)", err.msg);
    runtime_driver *driver = NULL;
    if (runtime_qemu_open(&qcfg, &driver, &err) != 0) fatal("stage=runtime %s", err.msg);

    char journal_path[4096];
    snprintf(journal_path, sizeof journal_path, "%s/agent/auto_paused.journal", cfg->state_dir);
    journal *jnl = NULL;
    if (journal_open(journal_path, &jnl, &err) != 0) fatal("stage=journal %s", err.msg);

    agent_net *net = NULL;
    if (cfg->network && net_open(cfg->state_dir, cfg->dns_upstream, &net, &err) != 0)
        fatal("stage=network %s", err.msg);

    lifecycle *lc = NULL;
    admission_config adm = {.overcommit = cfg->memory_overcommit,
                            .disk_reserve_mb = cfg->disk_reserve_mb,
                            .disk_path = cfg->state_dir};
    if (adm.overcommit > 0 && (adm.host_memory_mb = admission_host_memory_mb(&err)) < 0)
        fatal("stage=admission %s", err.msg);
    log_info("event=admission_limits host_memory_mb=%lld memory_overcommit=%g disk_reserve_mb=%d",
             (long long)adm.host_memory_mb, cfg->memory_overcommit, cfg->disk_reserve_mb);
    lifecycle_config lcfg = {.driver = driver,
                             .journal = jnl,
                             .clock = &clock,
                             .admission = &adm,
                             .async_recover = true,
                             .net = net};
    if (lifecycle_open(&lcfg, &lc, &err) != 0) fatal("stage=recover %s", err.msg);

    reaper *rp = NULL;
    reaper_config rcfg = {
        .lc = lc, .interval_ms = cfg->reaper_interval_ms, .pause_workers = cfg->pause_workers};
    if (reaper_new(&rcfg, &rp, &err) != 0 || reaper_start(rp, &err) != 0)
        fatal("stage=reaper %s", err.msg);

    metrics_http *mh = NULL;
    if (!metrics_http_addr_off(cfg->metrics_addr)) {
        if (agent_metrics_watch(lc, jnl, rp, &err) != 0 ||
            metrics_http_start(cfg->metrics_addr, metrics_default(), &mh, &err) != 0)
            fatal("stage=metrics addr=%s %s", cfg->metrics_addr, err.msg);
    }

    template_builder *tb = NULL;
    tb_config tbcfg = {.state_dir = cfg->state_dir,
                       .image_dir = cfg->image_dir,
                       .recipe_script =
                           env_or("TORPOR_TEMPLATE_RECIPE", TORPOR_TEMPLATE_RECIPE_DEFAULT),
                       .guest_binary = env_or("TORPOR_GUEST_BINARY", TORPOR_GUEST_BINARY_DEFAULT),
                       .time_limit_sec = atoi(env_or("TORPOR_TEMPLATE_BUILD_TIMEOUT", "0")),
                       .driver = driver};
    if (tb_open(&tbcfg, &tb, &err) != 0) fatal("stage=templates %s", err.msg);

    /* The port tunnel: mutual TLS with the gRPC certificates, on the gRPC
     * listen host; plaintext only beside a loopback gRPC address. */
    port_tunnel *tunnel = NULL;
    tunnel_tls *tunnel_tls_ctx = NULL;
    if (net && (cfg->tls_cert || rpc_addr_is_loopback(cfg->listen))) {
        char host[256] = "127.0.0.1";
        if (cfg->tls_cert) {
            if (tunnel_tls_server(cfg->tls_cert, cfg->tls_key, cfg->tls_ca, cfg->tls_client_name,
                                  &tunnel_tls_ctx, &err) != 0)
                fatal("stage=tunnel %s", err.msg);
            listen_host(cfg->listen, host, sizeof host);
        }
        if (tunnel_start(host, tunnel_tls_ctx, lc, net, &tunnel, &err) != 0)
            fatal("stage=tunnel listen=%s %s", host, err.msg);
        log_info("event=tunnel_ready port=%d tls=%s", tunnel_port(tunnel),
                 tunnel_tls_ctx ? "mutual" : "off");
    }
    agent_rpc app = {.lc = lc,
                     .journal = jnl,
                     .host_ip = "",
                     .agent_id = agent_id,
                     .templates = tb,
                     .state_dir = cfg->state_dir,
                     .image_dir = cfg->image_dir,
                     .tunnel = tunnel,
                     .memory_capacity_mb =
                         adm.overcommit > 0 ? (int64_t)(adm.host_memory_mb * adm.overcommit) : 0};
    rpc_server_config scfg = {.listen_addr = cfg->listen,
                              .tls = {.cert_path = cfg->tls_cert,
                                      .key_path = cfg->tls_key,
                                      .ca_path = cfg->tls_ca,
                                      .expected_client_name = cfg->tls_client_name},
                              .app = &app};
    scfg.methods = agent_rpc_methods(&scfg.n_methods);
    scfg.quick_methods = agent_rpc_quick_methods();
    rpc_server *server = NULL;
    if (rpc_server_start(&scfg, &server, &err) != 0)
        fatal("stage=rpc listen=%s %s", cfg->listen, err.msg);
    char qs[LOG_QUOTE_MAX];
    log_info("event=agent_ready listen=%s port=%d state_dir=\"%s\" runtime=%s tls=%s agent_id=%s "
             "metrics_addr=%s metrics_port=%d",
             cfg->listen, rpc_server_port(server), log_quote(cfg->state_dir, qs, sizeof qs),
             driver->ops->name,
             cfg->tls_cert ? (cfg->tls_client_name ? "mutual_named" : "mutual") : "off", agent_id,
             cfg->metrics_addr, metrics_http_port(mh));

    int sig = daemon_wait_signal(sigs);
    log_info("event=agent_stopping signal=%s pending_pauses=%d",
             sig == SIGINT ? "SIGINT" : "SIGTERM", reaper_pending(rp));

    metrics_http_stop(mh); /* its collector reads the table, journal, reaper */
    reaper_halt(rp);       /* no new auto-pauses */
    /* No new RPCs; waits for running handlers, boundedly: a guest call
     * honours its own deadline, but an exec may last an hour. */
    if (rpc_server_stop_within(server, cfg->shutdown_timeout_ms, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=agent_stop_timeout stage=rpc error=\"%s\"",
                  log_quote(err.msg, q, sizeof q));
        return 1;
    }
    if (reaper_stop(rp, cfg->shutdown_timeout_ms, &err) != 0) {
        /* A pause still runs: its VM and snapshot dir are left for recover()
         * on the next start, which drops half-written snapshots. */
        char q[LOG_QUOTE_MAX];
        log_error("event=agent_stop_timeout error=\"%s\"", log_quote(err.msg, q, sizeof q));
        return 1;
    }
    tb_close(tb);        /* a running build is killed and ends in error */
    tunnel_stop(tunnel); /* frees tunnel_tls_ctx */
    lifecycle_close(lc);
    net_close(net);
    journal_close(jnl);
    driver->ops->close(driver);
    log_info("event=agent_stopped");
    return 0;
}

int main(int argc, char **argv)
{
    agent_config cfg;
    terr err = {{0}};
    switch (agent_config_parse(argc, argv, &cfg, &err)) {
    case AGENT_CONFIG_HELP: agent_config_usage(stdout, argv[0]); return 0;
    case AGENT_CONFIG_ERROR:
        fprintf(stderr, "torpor-agent: %s\n\n", err.msg);
        agent_config_usage(stderr, argv[0]);
        return 2;
    case AGENT_CONFIG_OK: break;
    }
    /* Before any thread exists, so that every thread (grpc's included)
     * inherits the mask and only daemon_wait_signal sees SIGTERM/SIGINT. */
    sigset_t sigs;
    daemon_signals_block(&sigs);
    return run(&cfg, &sigs);
}
