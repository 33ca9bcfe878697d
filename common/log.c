#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static enum log_level min_level(void)
{
    const char *v = getenv("TORPOR_LOG_LEVEL");
    if (!v) return LOG_INFO;
    for (int i = 0; i <= LOG_ERROR; i++)
        if (strcmp(v, level_names[i]) == 0) return (enum log_level)i;
    return LOG_INFO;
}

/* The escape of one byte (without the leading backslash) into out; returns
 * its length, 0 when c needs none. quotes: also escape '"' and '\'. */
static size_t escape_of(unsigned char c, bool quotes, char out[4])
{
    switch (c) {
    case '\n': out[0] = 'n'; return 1;
    case '\t': out[0] = 't'; return 1;
    case '\r': out[0] = 'r'; return 1;
    case '"':
    case '\\':
        if (!quotes) return 0;
        out[0] = (char)c;
        return 1;
    default:
        if (c >= 0x20 && c != 0x7f) return 0;
        snprintf(out, 4, "x%02x", c);
        return 3;
    }
}

/* Copies src into dst (cap bytes incl. NUL) escaping as escape_of says;
 * returns the length written. Stops before an escape that would not fit. */
static size_t escape_into(const char *src, size_t src_len, bool quotes, char *dst, size_t cap,
                          bool *cut)
{
    size_t o = 0;
    *cut = false;
    for (size_t i = 0; i < src_len; i++) {
        char esc[4];
        size_t n = escape_of((unsigned char)src[i], quotes, esc);
        size_t need = n ? n + 1 : 1;
        if (o + need >= cap) {
            *cut = true;
            break;
        }
        if (n) {
            dst[o++] = '\\';
            memcpy(dst + o, esc, n);
            o += n;
        } else {
            dst[o++] = src[i];
        }
    }
    dst[o] = '\0';
    return o;
}

const char *log_quote(const char *s, char *buf, size_t size)
{
    if (!buf || size < 4) return "";
    if (!s) s = "";
    size_t len = strlen(s);
    bool cut;
    escape_into(s, len, true, buf, size, &cut);
    if (cut) {
        /* Again with room for "..."; escape_into never ends mid-escape. */
        size_t n = escape_into(s, len, true, buf, size - 3, &cut);
        memcpy(buf + n, "...", 4);
    }
    return buf;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if (level < min_level()) return;
    char raw[4096];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    size_t raw_len = m < 0 ? 0 : (size_t)m;
    if (raw_len >= sizeof raw) raw_len = sizeof raw - 1;

    char line[8192];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    bool cut;
    /* Control characters only: quotes belong to the caller's format. */
    size_t len =
        (size_t)n + escape_into(raw, raw_len, false, line + n, sizeof line - (size_t)n - 1, &cut);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
