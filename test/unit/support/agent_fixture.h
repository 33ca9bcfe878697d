/* agent_fixture: one agent core (manual clock + test driver + journal +
 * lifecycle + reaper without its thread) on a temporary state dir, for the
 * agent's unit tests. fx_restart closes the reaper, lifecycle and journal and
 * reopens them on the same state dir and driver: an agent restart. */
#ifndef TORPOR_AGENT_FIXTURE_H
#define TORPOR_AGENT_FIXTURE_H

#include <stdbool.h>
#include <sys/resource.h>

#include "clock.h"
#include "journal.h"
#include "lifecycle.h"
#include "reaper.h"
#include "test_driver.h"

#define FX_T0_MS 1700000000000LL

typedef struct agent_fx {
    char dir[128];
    char journal_path[256];
    agent_clock clock;
    test_driver *td;
    journal *journal;
    lifecycle *lc;
    reaper *reaper;           /* NULL once a test stopped it */
    reaper_hook_fn hook;      /* set before fx_open/fx_restart */
    reaper_hook_fn hook_dead; /* the dead-VM seam, same rule */
    void *hook_ctx;
    const struct admission_config *admission; /* set before fx_restart; NULL = no limits */
    bool async_recover; /* set before fx_restart: lifecycle_config.async_recover */
} agent_fx;

agent_fx *fx_new(void);          /* aborts on failure: a broken fixture is a bug */
agent_fx *fx_new_sized(int max); /* a test driver with room for max sandboxes */
void fx_free(agent_fx *fx);      /* stops everything, removes the dir */
void fx_restart(agent_fx *fx);

/* create with template "minimal", 1 vcpu, 128 MiB */
agent_code fx_create(agent_fx *fx, const char *id, int timeout_sec);
/* -1 when the sandbox is unknown, else its sandbox_status */
int fx_status(agent_fx *fx, const char *id);
/* Polls (1 ms steps) until the status is want (-1 = gone) or timeout. */
bool fx_wait_status(agent_fx *fx, const char *id, int want, int timeout_ms);
int64_t fx_last_active(agent_fx *fx, const char *id);

/* Caps the size of files this process may write (soft RLIMIT_FSIZE, so it
 * can be lifted again; SIGXFSZ ignored, so a write past it fails with EFBIG
 * like on a full disk). Returns the previous soft limit. */
rlim_t fx_limit_file_size(rlim_t max);

#endif
