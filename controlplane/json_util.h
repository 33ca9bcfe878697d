/* json_util: strict JSON helpers for request validation and responses.
 *
 * Contract: request bodies must be one JSON object (duplicate keys and NUL
 * characters are rejected); integer fields must be JSON integers (1.5, "3",
 * true and null are refused, never coerced); every failure leaves a message
 * fit to show a REST client. Base64 is standard RFC 4648 with padding. */
#ifndef TORPOR_CP_JSON_UTIL_H
#define TORPOR_CP_JSON_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "terr.h"

/* Parses buf as one JSON object. len 0 (an empty body) gives an empty object
 * when empty_ok, else an error. *out is a new reference. */
int json_util_parse_object(const char *buf, size_t len, bool empty_ok, json_t **out, terr *err);

/* Fails naming the first key of obj that is not in the NULL-terminated list. */
int json_util_check_keys(const json_t *obj, const char *const *allowed, terr *err);

/* Optional integer field in [min, max]; *present tells whether it was there.
 * A present field of another type, or out of range, is an error. */
int json_util_get_int(const json_t *obj, const char *key, long long min, long long max,
                      bool *present, long long *out, terr *err);

/* String field; absent -> error when required, else *out = NULL. The string
 * is borrowed from obj. max_len 0 = no limit. Empty strings are refused when
 * non_empty. */
int json_util_get_string(const json_t *obj, const char *key, bool required, bool non_empty,
                         size_t max_len, const char **out, terr *err);

bool json_util_is_utf8(const uint8_t *buf, size_t len);

/* Returns a malloc'd NUL-terminated base64 string (NULL only on OOM). */
char *json_util_base64_encode(const uint8_t *buf, size_t len);
/* Decodes strict padded base64 (whitespace not allowed) into a malloc'd
 * buffer; *out may be non-NULL even when *out_len is 0. */
int json_util_base64_decode(const char *s, size_t len, uint8_t **out, size_t *out_len, terr *err);

#endif
