#include "agent_fixture.h"

#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const terr *e)
{
    fprintf(stderr, "fixture: %s: %s\n", what, e ? e->msg : "");
    abort();
}

static void fx_open(agent_fx *fx)
{
    terr e;
    if (journal_open(fx->journal_path, &fx->journal, &e) != 0) die("journal_open", &e);
    lifecycle_config lcfg = {.driver = test_driver_runtime(fx->td),
                             .journal = fx->journal,
                             .clock = &fx->clock,
                             .admission = fx->admission,
                             .async_recover = fx->async_recover};
    if (lifecycle_open(&lcfg, &fx->lc, &e) != 0) die("lifecycle_open", &e);
    reaper_config rcfg = {.lc = fx->lc,
                          .interval_ms = 2000,
                          .pause_workers = 2,
                          .before_claim = fx->hook,
                          .before_claim_dead = fx->hook_dead,
                          .hook_ctx = fx->hook_ctx};
    if (reaper_new(&rcfg, &fx->reaper, &e) != 0) die("reaper_new", &e);
}

static void fx_close(agent_fx *fx)
{
    terr e;
    if (fx->reaper && reaper_stop(fx->reaper, 30000, &e) != 0) die("reaper_stop", &e);
    fx->reaper = NULL;
    lifecycle_close(fx->lc);
    fx->lc = NULL;
    journal_close(fx->journal);
    fx->journal = NULL;
}

agent_fx *fx_new(void) { return fx_new_sized(64); }

agent_fx *fx_new_sized(int max)
{
    agent_fx *fx = calloc(1, sizeof *fx);
    if (!fx) abort();
    snprintf(fx->dir, sizeof fx->dir, "/tmp/torpor-agent-test-XXXXXX");
    if (!mkdtemp(fx->dir)) die("mkdtemp", NULL);
    snprintf(fx->journal_path, sizeof fx->journal_path, "%s/agent/auto_paused.journal", fx->dir);
    agent_clock_init_manual(&fx->clock, FX_T0_MS);
    fx->td = test_driver_new_sized(max);
    fx_open(fx);
    return fx;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

void fx_free(agent_fx *fx)
{
    if (!fx) return;
    fx_close(fx);
    test_driver_free(fx->td);
    nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
}

void fx_restart(agent_fx *fx)
{
    fx_close(fx);
    fx_open(fx);
}

agent_code fx_create(agent_fx *fx, const char *id, int timeout_sec)
{
    runtime_spec spec = {.vcpus = 1, .memory_mb = 128, .timeout_sec = timeout_sec};
    snprintf(spec.sandbox_id, sizeof spec.sandbox_id, "%s", id);
    snprintf(spec.template_name, sizeof spec.template_name, "minimal");
    terr e;
    return lifecycle_create(fx->lc, &spec, NULL, &e);
}

int fx_status(agent_fx *fx, const char *id)
{
    lifecycle_info info;
    terr e;
    if (lifecycle_get(fx->lc, id, &info, &e) != AGENT_OK) return -1;
    return (int)info.status;
}

bool fx_wait_status(agent_fx *fx, const char *id, int want, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited++) {
        if (fx_status(fx, id) == want) return true;
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    return fx_status(fx, id) == want;
}

int64_t fx_last_active(agent_fx *fx, const char *id)
{
    lifecycle_info info;
    terr e;
    if (lifecycle_get(fx->lc, id, &info, &e) != AGENT_OK) return -1;
    return info.last_active_ms;
}

rlim_t fx_limit_file_size(rlim_t max)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) != 0) die("getrlimit", NULL);
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = max;
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) die("setrlimit", NULL);
    return old;
}
