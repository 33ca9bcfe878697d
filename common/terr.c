#include "terr.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int terr_set(terr *e, const char *fmt, ...)
{
    if (!e) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int terr_wrap(terr *e, const char *fmt, ...)
{
    if (!e) return -1;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof e->msg];
    memcpy(old, e->msg, sizeof old);
    /* Truncation is fine: the message is for humans. */
    size_t n = strnlen(prefix, sizeof prefix);
    memcpy(e->msg, prefix, n);
    size_t pos = n;
    if (pos + 2 < sizeof e->msg) {
        e->msg[pos++] = ':';
        e->msg[pos++] = ' ';
    }
    size_t rest = strnlen(old, sizeof old);
    if (rest > sizeof e->msg - 1 - pos) rest = sizeof e->msg - 1 - pos;
    memcpy(e->msg + pos, old, rest);
    e->msg[pos + rest] = '\0';
    return -1;
}
