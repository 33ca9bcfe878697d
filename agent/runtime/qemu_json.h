/* qemu_json: the little JSON reading the QEMU driver needs for QMP replies.
 *
 * QMP answers are single-line JSON objects. The driver only ever needs to
 * know whether a reply is "return", "error" or "event", and to pull a few
 * strings/numbers out of nested objects (query-migrate's "status"). This is
 * a bounds-checked scanner over a NUL-terminated string: structurally
 * malformed input (unbalanced brackets, unterminated strings, nesting deeper
 * than 32) makes a lookup fail, never read out of bounds; it does not
 * validate number or literal syntax, which it never interprets except in
 * qjson_get_int. (The agent core does
 * not link jansson, and QMP needs far less than a full parser.) */
#ifndef TORPOR_QEMU_JSON_H
#define TORPOR_QEMU_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Finds the value at a path of object keys, e.g. {"return","status"}.
 * On success *val points at the value's first byte inside json and *len is
 * its length (a string value includes its quotes). Returns 0 or -1. */
int qjson_find(const char *json, const char *const *keys, size_t n_keys, const char **val,
               size_t *len);

/* Same lookup, decoding a string value into out (NUL-terminated, truncated
 * to n-1 bytes; escapes decoded, \u00XX kept, other \u escapes become '?'). */
int qjson_get_string(const char *json, const char *const *keys, size_t n_keys, char *out,
                     size_t n);

/* Same lookup for an integer value. */
int qjson_get_int(const char *json, const char *const *keys, size_t n_keys, int64_t *out);

/* True if the top-level object has the key. */
bool qjson_has(const char *json, const char *key);

/* Writes s as a JSON string literal (with quotes) into out; -1 if it does
 * not fit in n bytes. */
int qjson_quote(const char *s, char *out, size_t n);

#endif
