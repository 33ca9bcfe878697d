#include "clock.h"

#include <time.h>

#include "mono_time.h"

static int64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t system_now(const agent_clock *c) { return mono_ms() + c->offset_ms; }

static int64_t manual_now(const agent_clock *c) { return atomic_load(&c->manual_ms); }

void agent_clock_init_system(agent_clock *c)
{
    c->now_ms = system_now;
    c->offset_ms = realtime_ms() - mono_ms();
    atomic_init(&c->manual_ms, 0);
}

void agent_clock_init_manual(agent_clock *c, int64_t start_ms)
{
    c->now_ms = manual_now;
    c->offset_ms = 0;
    atomic_init(&c->manual_ms, start_ms);
}

void agent_clock_advance_ms(agent_clock *c, int64_t delta_ms)
{
    atomic_fetch_add(&c->manual_ms, delta_ms);
}

int64_t agent_clock_now_ms(const agent_clock *c) { return c->now_ms(c); }
