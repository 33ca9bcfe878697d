/* qemu_json: pulling strings out of QMP answers, on jansson.
 *
 * QMP answers are single-line JSON objects; the driver needs a few strings
 * out of nested objects (query-status's and query-migrate's "status", an
 * error's "desc", ringbuf-read's text). qmp.c parses each line with jansson
 * to tell "return", "error" and events apart and hands the callers the
 * answer line; this is the lookup they use on it. */
#ifndef TORPOR_QEMU_JSON_H
#define TORPOR_QEMU_JSON_H

#include <stddef.h>

/* Finds the string at a path of object keys, e.g. {"return","status"}, in
 * the JSON text json and copies it into out (NUL-terminated, cut to n-1
 * bytes). Returns 0, or -1 when json does not parse, the path does not
 * exist or the value is not a string (out is then ""). */
int qjson_get_string(const char *json, const char *const *keys, size_t n_keys, char *out, size_t n);

#endif
