#include "json_util.h"

#include <stdlib.h>
#include <string.h>

int json_util_parse_object(const char *buf, size_t len, bool empty_ok, json_t **out, terr *err)
{
    *out = NULL;
    if (len == 0) {
        if (!empty_ok) return terr_set(err, "request body is empty; a JSON object is required");
        *out = json_object();
        return *out ? 0 : terr_set(err, "out of memory");
    }
    json_error_t jerr;
    json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        return terr_set(err, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                        jerr.text);
    if (!json_is_object(v)) {
        json_decref(v);
        return terr_set(err, "request body must be a JSON object");
    }
    *out = v;
    return 0;
}

int json_util_check_keys(const json_t *obj, const char *const *allowed, terr *err)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        (void)val;
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            if (strcmp(allowed[i], key) == 0) ok = true;
        if (!ok) return terr_set(err, "unknown field \"%s\"", key);
    }
    return 0;
}

int json_util_get_int(const json_t *obj, const char *key, long long min, long long max,
                      bool *present, long long *out, terr *err)
{
    json_t *v = json_object_get(obj, key);
    *present = v != NULL;
    if (!v) return 0;
    if (!json_is_integer(v)) return terr_set(err, "field \"%s\" must be an integer", key);
    long long n = json_integer_value(v);
    if (n < min || n > max)
        return terr_set(err, "field \"%s\" must be between %lld and %lld (got %lld)", key, min, max,
                        n);
    *out = n;
    return 0;
}

int json_util_get_string(const json_t *obj, const char *key, bool required, bool non_empty,
                         size_t max_len, const char **out, terr *err)
{
    *out = NULL;
    json_t *v = json_object_get(obj, key);
    if (!v) return required ? terr_set(err, "field \"%s\" is required", key) : 0;
    if (!json_is_string(v)) return terr_set(err, "field \"%s\" must be a string", key);
    size_t n = json_string_length(v);
    if (non_empty && n == 0) return terr_set(err, "field \"%s\" must not be empty", key);
    if (max_len && n > max_len)
        return terr_set(err, "field \"%s\" is longer than %zu bytes", key, max_len);
    *out = json_string_value(v);
    return 0;
}

bool json_util_is_utf8(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n) return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        /* Overlong forms, surrogates and values past U+10FFFF are invalid. */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *json_util_base64_encode(const uint8_t *buf, size_t len)
{
    size_t out_len = 4 * ((len + 2) / 3);
    char *out = malloc(out_len + 1);
    if (!out) return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)buf[i] << 16 | (uint32_t)buf[i + 1] << 8 | buf[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)buf[i] << 16;
        if (i + 1 < len) v |= (uint32_t)buf[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int json_util_base64_decode(const char *s, size_t len, uint8_t **out, size_t *out_len, terr *err)
{
    *out = NULL;
    *out_len = 0;
    if (len % 4 != 0) return terr_set(err, "base64 length %zu is not a multiple of 4", len);
    uint8_t *buf = malloc(len / 4 * 3 + 1);
    if (!buf) return terr_set(err, "out of memory decoding %zu bytes of base64", len);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = s[i + k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad) goto bad; /* data after '=' */
            v[k] = b64_value(c);
            if (v[k] < 0) goto bad;
        }
        uint32_t n =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        buf[o++] = (uint8_t)(n >> 16);
        if (pad < 2) buf[o++] = (uint8_t)(n >> 8);
        if (pad < 1) buf[o++] = (uint8_t)n;
    }
    *out = buf;
    *out_len = o;
    return 0;
bad:
    free(buf);
    return terr_set(err, "invalid base64");
}
