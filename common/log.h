/* log: structured, one-line-per-event logging to stderr.
 *
 * Every line is `ts=<RFC3339 ms> level=<lvl> <key=value ...>`. Callers write
 * the key=value part themselves, e.g.
 *     log_info("event=pause_done sandbox_id=%s duration_ms=%lld", id, ms);
 * Lines about a sandbox always carry sandbox_id=. Thread-safe (one write(2)
 * per line). The minimum level comes from TORPOR_LOG_LEVEL (debug, info,
 * warn, error; default info).
 *
 * One event is always one line: log_write escapes control characters
 * (< 0x20 and 0x7f, e.g. a newline inside a user-supplied path) as \n, \t,
 * \r or \xNN, so no value can forge another log line. Values that come from
 * users or other processes (paths, commands, error texts quoting them) and
 * are written inside "..." must also go through log_quote, so a '"' in them
 * cannot end the value early and forge key=value pairs. */
#ifndef TORPOR_LOG_H
#define TORPOR_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

/* Writes s into buf (size bytes, size >= 4) escaped for use between double
 * quotes in a log line: '"' -> \", '\' -> \\, control characters -> \n, \t,
 * \r or \xNN. A value that does not fit is cut and ends in "...". s NULL is
 * written as "". Returns buf. */
const char *log_quote(const char *s, char *buf, size_t size);

/* Buffer size for log_quote that fits typical error messages. */
#define LOG_QUOTE_MAX 1024

#endif
