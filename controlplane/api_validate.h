/* api_validate: turns REST request bodies into checked request structs.
 *
 * Contract: pure functions (no I/O). On bad input they return -1 with a
 * message for a 400 invalid_request answer and leave nothing to free. Unknown
 * fields are refused. Strings in the result structs are borrowed from the
 * json_t body, which must outlive them; api_exec_req_free frees what the exec
 * parser allocated. Limits are the ones documented in docs/api.md. */
#ifndef TORPOR_CP_API_VALIDATE_H
#define TORPOR_CP_API_VALIDATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox_model.h"
#include "terr.h"

#include "torpor_limits.h"

/* The shared limits (common/torpor_limits.h), under the names this API
 * has always used. */
#define API_VCPUS_MIN TORPOR_VCPUS_MIN
#define API_VCPUS_MAX TORPOR_VCPUS_MAX
#define API_MEMORY_MB_MIN TORPOR_MEMORY_MB_MIN
#define API_MEMORY_MB_MAX TORPOR_MEMORY_MB_MAX
#define API_TIMEOUT_SEC_MAX TORPOR_TIMEOUT_SEC_MAX
#define API_EXEC_TIMEOUT_DEFAULT TORPOR_EXEC_TIMEOUT_DEFAULT_SEC
#define API_EXEC_TIMEOUT_MAX TORPOR_EXEC_TIMEOUT_MAX_SEC
#define API_PATH_MAX 4096

/* ^[a-z0-9][a-z0-9._-]{0,62}$: limits_template_name_valid, the rule the
 * agent applies too. */
bool api_validate_template_name(const char *name);
/* Sandbox id segments in URLs: 1..63 chars of [A-Za-z0-9._-]; anything else
 * is 404 "no such route". Deliberately wider than limits_sandbox_id_valid
 * (a first character '.', '_' or '-' is allowed here): such a segment is a
 * sandbox that does not exist (404 not_found) rather than no route, as
 * before. Takes a length, since the segment is inside the path. */
bool api_validate_sandbox_id(const char *id, size_t len);

/* env on create: at most this many entries, names ^[A-Za-z_][A-Za-z0-9_]*$
 * of at most API_ENV_NAME_MAX bytes, values without NUL, and all entries
 * together ("NAME=value") at most API_ENV_TOTAL_MAX bytes. */
#define API_ENV_COUNT_MAX 64
#define API_ENV_NAME_MAX 128
#define API_ENV_TOTAL_MAX (32 * 1024)
/* stdin of one exec (decoded); the JSON body limit bounds it too. */
#define API_EXEC_STDIN_MAX (1024 * 1024)

typedef struct api_create_req {
    char template_name[SANDBOX_TEMPLATE_MAX];
    int vcpus;
    int memory_mb;
    int timeout_sec;
    int disk_mb;
    const json_t *env; /* borrowed checked object, NULL when absent */
    bool auto_resume;
    char network[SANDBOX_NETWORK_MAX]; /* canonical JSON (api_network.h) */
} api_create_req;

/* Defaults: template "debian", vcpus 1, memory_mb 512, timeout_sec 0,
 * disk_mb 4096 (512..65536), no env. */
int api_validate_create(const json_t *body, api_create_req *out, terr *err);

typedef struct api_exec_req {
    const char *cmd;
    const char **args; /* n_args borrowed strings (array malloc'd) */
    size_t n_args;
    char **env; /* n_env malloc'd "KEY=VALUE" strings, in body order */
    size_t n_env;
    const char *cwd; /* NULL = guest default */
    int timeout_sec;
    uint8_t *stdin_data; /* malloc'd, from "stdin" (UTF-8) or "stdin_base64"; NULL = none */
    size_t stdin_len;
} api_exec_req;

int api_validate_exec(const json_t *body, api_exec_req *out, terr *err);
/* Merges a sandbox's create-time env (JSON object text, as stored) under
 * the exec's own env: entries whose name the exec sets are skipped, the
 * others are prepended to out->env. */
int api_exec_merge_env(api_exec_req *out, const char *create_env_json, terr *err);
void api_exec_req_free(api_exec_req *r);

/* {timeout_sec} required, 0..30 days. */
int api_validate_timeout(const json_t *body, int *timeout_sec, terr *err);

/* {path} for files/read (path checked by api_validate_path). */
int api_validate_file_read(const json_t *body, const char **path, terr *err);
/* {path, content_base64} for files/write; *content is malloc'd. */
int api_validate_file_write(const json_t *body, const char **path, uint8_t **content,
                            size_t *content_len, terr *err);
/* Checks a file path from any source (JSON or multipart): 1..API_PATH_MAX
 * bytes, no control characters (< 0x20, 0x7f). files/read, files/write and
 * exec's cwd all go through it. */
int api_validate_path(const char *path, size_t len, terr *err);

#endif
