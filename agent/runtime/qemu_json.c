/* qemu_json: strict scanner for QMP's single-line JSON (see qemu_json.h). */
#include "qemu_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QJSON_MAX_DEPTH 32

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return p;
}

/* Returns the byte after the closing quote of the string starting at p
 * (which must be '"'), or NULL if it is malformed or unterminated. */
static const char *skip_string(const char *p)
{
    if (*p != '"') return NULL;
    p++;
    while (*p && *p != '"') {
        if (*p == '\\') {
            p++;
            if (!*p) return NULL;
        }
        p++;
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *skip_value(const char *p, int depth);

static const char *skip_container(const char *p, int depth, char open, char close)
{
    if (depth > QJSON_MAX_DEPTH || *p != open) return NULL;
    p = skip_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
        if (open == '{') {
            p = skip_string(p);
            if (!p) return NULL;
            p = skip_ws(p);
            if (*p != ':') return NULL;
            p = skip_ws(p + 1);
        }
        p = skip_value(p, depth + 1);
        if (!p) return NULL;
        p = skip_ws(p);
        if (*p == ',') {
            p = skip_ws(p + 1);
            continue;
        }
        return *p == close ? p + 1 : NULL;
    }
}

static const char *skip_value(const char *p, int depth)
{
    p = skip_ws(p);
    switch (*p) {
    case '"': return skip_string(p);
    case '{': return skip_container(p, depth, '{', '}');
    case '[': return skip_container(p, depth, '[', ']');
    default: break;
    }
    /* number / true / false / null: a run of literal characters */
    const char *s = p;
    while (*p && strchr("+-.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", *p))
        p++;
    return p == s ? NULL : p;
}

/* Compares the JSON string at p (quoted, no escapes expected in QMP keys)
 * with key. */
static bool key_equals(const char *p, const char *end, const char *key)
{
    size_t klen = strlen(key);
    return (size_t)(end - p) == klen + 2 && memcmp(p + 1, key, klen) == 0;
}

static const char *find_in_object(const char *p, const char *key)
{
    p = skip_ws(p);
    if (*p != '{') return NULL;
    p = skip_ws(p + 1);
    if (*p == '}') return NULL;
    for (;;) {
        const char *ks = p;
        const char *ke = skip_string(p);
        if (!ke) return NULL;
        p = skip_ws(ke);
        if (*p != ':') return NULL;
        p = skip_ws(p + 1);
        if (key_equals(ks, ke, key)) return p;
        p = skip_value(p, 1);
        if (!p) return NULL;
        p = skip_ws(p);
        if (*p != ',') return NULL;
        p = skip_ws(p + 1);
    }
}

int qjson_find(const char *json, const char *const *keys, size_t n_keys, const char **val,
               size_t *len)
{
    if (!json) return -1;
    /* Validate the whole document once so later lookups cannot run off. */
    const char *end = skip_value(json, 0);
    if (!end) return -1;
    const char *p = json;
    for (size_t i = 0; i < n_keys; i++) {
        p = find_in_object(p, keys[i]);
        if (!p) return -1;
    }
    p = skip_ws(p);
    const char *e = skip_value(p, 0);
    if (!e) return -1;
    *val = p;
    *len = (size_t)(e - p);
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int qjson_get_string(const char *json, const char *const *keys, size_t n_keys, char *out,
                     size_t n)
{
    const char *v;
    size_t len;
    if (n == 0 || qjson_find(json, keys, n_keys, &v, &len) < 0 || len < 2 || v[0] != '"')
        return -1;
    size_t o = 0;
    for (size_t i = 1; i + 1 < len && o + 1 < n; i++) {
        char c = v[i];
        if (c == '\\' && i + 2 < len) {
            c = v[++i];
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u':
                if (i + 4 < len && v[i + 1] == '0' && v[i + 2] == '0' && hexval(v[i + 3]) >= 0 &&
                    hexval(v[i + 4]) >= 0) {
                    c = (char)(hexval(v[i + 3]) * 16 + hexval(v[i + 4]));
                    i += 4;
                } else {
                    c = '?';
                    i += (i + 4 < len) ? 4 : 0;
                }
                break;
            default: break; /* \" \\ \/ */
            }
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

int qjson_get_int(const char *json, const char *const *keys, size_t n_keys, int64_t *out)
{
    const char *v;
    size_t len;
    if (qjson_find(json, keys, n_keys, &v, &len) < 0 || len == 0 || len > 24) return -1;
    char buf[32];
    memcpy(buf, v, len);
    buf[len] = '\0';
    char *end;
    long long x = strtoll(buf, &end, 10);
    if (*end != '\0') return -1;
    *out = x;
    return 0;
}

bool qjson_has(const char *json, const char *key)
{
    const char *v;
    size_t len;
    const char *keys[1] = {key};
    return qjson_find(json, keys, 1, &v, &len) == 0;
}

int qjson_quote(const char *s, char *out, size_t n)
{
    size_t o = 0;
#define PUT(ch)                    \
    do {                           \
        if (o + 1 >= n) return -1; \
        out[o++] = (ch);           \
    } while (0)
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            PUT('\\');
            PUT((char)*p);
        } else if (*p < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            for (char *e = esc; *e; e++) PUT(*e);
        } else {
            PUT((char)*p);
        }
    }
    PUT('"');
#undef PUT
    out[o] = '\0';
    return 0;
}
