/* mono_time: the one monotonic clock of every Torpor program.
 *
 * mono_ms: milliseconds on CLOCK_MONOTONIC (never jumps with the wall
 * clock), for durations and deadlines; mono_us: the same clock in
 * microseconds, for durations that need the finer grain. mono_deadline: the absolute
 * CLOCK_MONOTONIC time `after_ms` from now, for pthread_cond_timedwait on a
 * condition variable whose clock attribute is CLOCK_MONOTONIC.
 * All are async-signal-safe and never fail. */
#ifndef TORPOR_MONO_TIME_H
#define TORPOR_MONO_TIME_H

#include <stdint.h>
#include <time.h>

int64_t mono_ms(void);
int64_t mono_us(void);
struct timespec mono_deadline(int64_t after_ms);

#endif
