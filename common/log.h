/* log: structured, one-line-per-event logging to stderr.
 *
 * Every line is `ts=<RFC3339 ms> level=<lvl> <key=value ...>`. Callers write
 * the key=value part themselves, e.g.
 *     log_info("event=pause_done sandbox_id=%s duration_ms=%lld", id, ms);
 * Lines about a sandbox always carry sandbox_id=. Thread-safe (one write(2)
 * per line). The minimum level comes from TORPOR_LOG_LEVEL (debug, info,
 * warn, error; default info). */
#ifndef TORPOR_LOG_H
#define TORPOR_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
