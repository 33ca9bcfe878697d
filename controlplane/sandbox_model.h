/* sandbox_model: the control plane's view of one sandbox row and its JSON.
 *
 * Contract: statuses are the eight of the sandboxes.status CHECK constraint;
 * conversions between names and the enum never accept anything else. Times
 * are microseconds since the epoch, 0 meaning NULL (never set). The JSON is
 * the REST "Sandbox" object of docs/api.md. */
#ifndef TORPOR_CP_SANDBOX_MODEL_H
#define TORPOR_CP_SANDBOX_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "terr.h"

typedef enum sb_status {
    SB_PENDING = 0,
    SB_RUNNING,
    SB_PAUSING,
    SB_PAUSED,
    SB_RESUMING,
    SB_STOPPED,
    SB_ERROR,
    SB_MOVING, /* paused, its files being copied to another host */
    SB_STATUS_COUNT
} sb_status;

#define SB_STATUS_BIT(s) (1u << (s))
/* What GET /v1/sandboxes shows without a filter: all but stopped and error. */
#define SB_STATUS_MASK_ACTIVE                                                            \
    (SB_STATUS_BIT(SB_PENDING) | SB_STATUS_BIT(SB_RUNNING) | SB_STATUS_BIT(SB_PAUSING) | \
     SB_STATUS_BIT(SB_PAUSED) | SB_STATUS_BIT(SB_RESUMING) | SB_STATUS_BIT(SB_MOVING))

const char *sb_status_name(sb_status s);
/* -1 for an unknown name. */
int sb_status_parse(const char *name, sb_status *out);

/* "paused" or "paused,running" -> bit mask; unknown or empty names are an error. */
int sb_status_parse_filter(const char *list, unsigned *mask, terr *err);

#define SANDBOX_ID_MAX 64
#define SANDBOX_TEMPLATE_MAX 64
/* The canonical JSON text of a network policy (64 + 64 entries). */
#define SANDBOX_NETWORK_MAX 12288

typedef struct sandbox_row {
    char id[SANDBOX_ID_MAX];
    char team_id[64];
    char host_id[64];
    sb_status status;
    char template_name[SANDBOX_TEMPLATE_MAX];
    int vcpus;
    int memory_mb;
    int timeout_sec;
    int disk_mb; /* root disk size (templates with one) */
    /* Input only (db_sandbox_insert): the create-time env as a JSON object
     * text, borrowed; NULL = {}. Rows read back leave it NULL (the env is
     * read on its own by db_sandbox_env, for exec). */
    const char *env_json;
    int64_t created_at_us;
    int64_t started_at_us;     /* 0 = null */
    int64_t last_active_at_us; /* 0 = null */
    int64_t last_updated_us;
    char host_status[16]; /* its host's status (db_host.status); "" = unknown */
    bool auto_resume;
    char access_token_hash[65];        /* for the insert only; never read back */
    char network[SANDBOX_NETWORK_MAX]; /* canonical JSON {"egress","allow","deny"}; "" = default */
} sandbox_row;

/* New reference to the REST Sandbox object (NULL on OOM or bad time).
 * host_status is included when known; expires_at = last_active_at +
 * timeout_sec for a running sandbox with a timeout, else null. */
json_t *sandbox_row_to_json(const sandbox_row *row, terr *err);

#endif
