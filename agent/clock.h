/* clock: the agent's injectable time source.
 *
 * Contract: agent_clock_now_ms() returns milliseconds since the Unix epoch.
 * The system clock is steady: it reads CLOCK_MONOTONIC plus an offset taken
 * once at init, so a wall-clock step (NTP, operator) never makes the reaper
 * pause a sandbox early or late, while the values still read as Unix times
 * for SandboxInfo. The manual clock only moves when told to; unit tests use
 * it to put a sandbox exactly at its expiry boundary. Both are thread-safe. */
#ifndef TORPOR_AGENT_CLOCK_H
#define TORPOR_AGENT_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct agent_clock {
    int64_t (*now_ms)(const struct agent_clock *c);
    int64_t offset_ms;         /* system clock: realtime - monotonic at init */
    _Atomic int64_t manual_ms; /* manual clock: the current time */
} agent_clock;

void agent_clock_init_system(agent_clock *c);
void agent_clock_init_manual(agent_clock *c, int64_t start_ms);
/* Manual clock only. */
void agent_clock_advance_ms(agent_clock *c, int64_t delta_ms);

int64_t agent_clock_now_ms(const agent_clock *c);

#endif
