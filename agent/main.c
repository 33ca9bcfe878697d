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

#include "agent_config.h"
#include "agent_identity.h"
#include "clock.h"
#include "journal.h"
#include "lifecycle.h"
#include "log.h"
#include "qemu.h"
#include "reaper.h"
#include "rpc.h"
#include "rpc_handlers.h"

static int run(const agent_config *cfg, const sigset_t *sigs)
{
    terr err = {{0}};
    agent_clock clock; /* main.c owns the process-wide state */
    agent_clock_init_system(&clock);

    /* First, before anything touches the state dir: a malformed id file is
     * a start-up error (see agent_identity.h). */
    char agent_id[AGENT_ID_LEN + 1];
    bool id_created;
    if (agent_identity_load(cfg->state_dir, agent_id, &id_created, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=agent_start_failed stage=identity error=\"%s\"", log_quote(err.msg, q, sizeof q));
        return 1;
    }
    if (id_created)
        log_info("event=agent_identity_created agent_id=%s state_dir=%s", agent_id, cfg->state_dir);

    qemu_accel accel;
    if (runtime_qemu_parse_accel(cfg->accel, &accel) != 0) {
        log_error("event=agent_start_failed error=\"bad accel %s\"", cfg->accel);
        return 1;
    }
    runtime_qemu_config qcfg = {.state_dir = cfg->state_dir, .image_dir = cfg->image_dir, .accel = accel};
    runtime_driver *driver = NULL;
    if (runtime_qemu_open(&qcfg, &driver, &err) != 0) {
        log_error("event=agent_start_failed stage=runtime error=\"%s\"", err.msg);
        return 1;
    }

    char journal_path[4096];
    snprintf(journal_path, sizeof journal_path, "%s/agent/auto_paused.journal", cfg->state_dir);
    journal *jnl = NULL;
    if (journal_open(journal_path, &jnl, &err) != 0) {
        log_error("event=agent_start_failed stage=journal error=\"%s\"", err.msg);
        driver->ops->close(driver);
        return 1;
    }

    lifecycle *lc = NULL;
    lifecycle_config lcfg = {.driver = driver, .journal = jnl, .clock = &clock};
    if (lifecycle_open(&lcfg, &lc, &err) != 0) {
        log_error("event=agent_start_failed stage=recover error=\"%s\"", err.msg);
        journal_close(jnl);
        driver->ops->close(driver);
        return 1;
    }

    reaper *rp = NULL;
    reaper_config rcfg = {.lc = lc, .interval_ms = cfg->reaper_interval_ms,
                          .pause_workers = cfg->pause_workers};
    if (reaper_new(&rcfg, &rp, &err) != 0 || reaper_start(rp, &err) != 0) {
        log_error("event=agent_start_failed stage=reaper error=\"%s\"", err.msg);
        if (rp) reaper_stop(rp, 0, NULL);
        lifecycle_close(lc);
        journal_close(jnl);
        driver->ops->close(driver);
        return 1;
    }

    agent_rpc app = {.lc = lc, .journal = jnl, .host_ip = "", .agent_id = agent_id};
    rpc_server_config scfg = {.listen_addr = cfg->listen,
                              .tls = {.cert_path = cfg->tls_cert, .key_path = cfg->tls_key,
                                      .ca_path = cfg->tls_ca},
                              .app = &app};
    scfg.methods = agent_rpc_methods(&scfg.n_methods);
    rpc_server *server = NULL;
    if (rpc_server_start(&scfg, &server, &err) != 0) {
        log_error("event=agent_start_failed stage=rpc listen=%s error=\"%s\"", cfg->listen, err.msg);
        reaper_stop(rp, cfg->shutdown_timeout_ms, NULL);
        lifecycle_close(lc);
        journal_close(jnl);
        driver->ops->close(driver);
        return 1;
    }
    log_info("event=agent_ready listen=%s port=%d state_dir=%s runtime=%s tls=%s agent_id=%s", cfg->listen,
             rpc_server_port(server), cfg->state_dir, driver->ops->name, cfg->tls_cert ? "mutual" : "off",
             agent_id);

    int sig = 0;
    sigwait(sigs, &sig);
    log_info("event=agent_stopping signal=%s pending_pauses=%d", sig == SIGINT ? "SIGINT" : "SIGTERM",
             reaper_pending(rp));

    reaper_halt(rp);          /* no new auto-pauses */
    rpc_server_stop(server);  /* no new RPCs; waits for running handlers */
    if (reaper_stop(rp, cfg->shutdown_timeout_ms, &err) != 0) {
        /* A pause still runs: its VM and snapshot dir are left for recover()
         * on the next start, which drops half-written snapshots. */
        log_error("event=agent_stop_timeout error=\"%s\"", err.msg);
        return 1;
    }
    lifecycle_close(lc);
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
    case AGENT_CONFIG_HELP:
        agent_config_usage(stdout, argv[0]);
        return 0;
    case AGENT_CONFIG_ERROR:
        fprintf(stderr, "torpor-agent: %s\n\n", err.msg);
        agent_config_usage(stderr, argv[0]);
        return 2;
    case AGENT_CONFIG_OK:
        break;
    }
    /* Block the stop signals before any thread exists, so that every thread
     * (grpc's included) inherits the mask and only sigwait sees them. */
    sigset_t sigs;
    /* A shell starts background jobs with SIGINT ignored, and an ignored
     * signal is discarded even while blocked: restore the default first. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN); /* a guest/QMP socket closing is an error, not a kill */
    return run(&cfg, &sigs);
}
