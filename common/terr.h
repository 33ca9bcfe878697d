/* terr: the error message a failing function leaves for its caller.
 *
 * Contract: every function that can fail returns 0 on success and -1 (or a
 * negative/enum code) on failure, and on failure fills the caller's `terr`
 * (if non-NULL) with one human-readable sentence. Callers either handle the
 * error or pass it up; nothing is printed and ignored. */
#ifndef TORPOR_TERR_H
#define TORPOR_TERR_H

#include <stddef.h>

typedef struct terr {
    char msg[512];
} terr;

/* Formats into e->msg (if e is non-NULL) and returns -1, so that
 * `return terr_set(err, "open %s: %s", path, strerror(errno));` reads well. */
int terr_set(terr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the existing message: "ctx: old message". Returns -1. */
int terr_wrap(terr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
