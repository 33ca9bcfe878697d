/* cp_config: torpor-cp's command line and environment.
 *
 * Contract: cp_config_parse fills *out from defaults, then environment
 * variables, then flags (flags win), parsed with getopt_long: "--flag v"
 * or "--flag=v", subcommand words anywhere among them. Strings point into argv or the
 * environment (they live as long as the process). Bad or missing values
 * fail with a message naming the flag; so does a --transition-grace below
 * RECONCILER_GRACE_MIN_SEC. --help sets command CP_CMD_HELP. The word
 * "routes" (CP_CMD_ROUTES: print the REST route table, for tests; not in the
 * usage) needs no database.
 * cp_config_usage prints every flag, its variable and default. */
#ifndef TORPOR_CP_CONFIG_H
#define TORPOR_CP_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "terr.h"

typedef enum cp_command {
    CP_CMD_SERVE = 0,
    CP_CMD_KEYS_CREATE,
    CP_CMD_KEYS_LIST,
    CP_CMD_KEYS_REVOKE,
    CP_CMD_HOSTS_ADD,
    CP_CMD_HOSTS_RESET_IDENTITY,
    CP_CMD_TEAMS_SET_QUOTA,
    CP_CMD_HOSTS_LIST,
    CP_CMD_HOSTS_DRAIN,
    CP_CMD_HOSTS_UNDRAIN,
    CP_CMD_HOSTS_REMOVE,
    CP_CMD_ROUTES,
    CP_CMD_HELP,
} cp_command;

typedef struct cp_config {
    cp_command command;
    const char *http_addr;
    const char *database_url;
    const char *agent_addr;
    const char *migrations_dir;
    double reconcile_interval_sec;
    double transition_grace_sec; /* pausing/resuming rows older than this are resolved */
    double key_cache_sec; /* a verified API key is trusted this long without a lookup (0..5) */
    int http_threads;
    int http_long_threads; /* workers for long calls only */
    int team_long_calls;   /* long calls in flight per team */
    int max_connections;   /* open HTTP connections */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca;
    const char *agent_tls_server_name;
    const char *metrics_addr;      /* "off" = no metrics listener */
    const char *proxy_domain;      /* host-based port proxy {port}-{id}.DOMAIN; NULL = off */
    double proxy_idle_timeout_sec; /* a proxied request with no byte either way this long ends */
    double files_timeout_sec;      /* deadline of each files call to an agent */
    const char *team;              /* keys create / list, teams set-quota --team */
    long long
        max_sandboxes; /* teams set-quota --max-sandboxes; -1 = unlimited (also when omitted) */
    long long
        max_memory_mb;   /* teams set-quota --max-memory-mb; -1 = unlimited (also when omitted) */
    const char *host_id; /* hosts add / reset-identity --id; keys revoke --id (a key id) */
    const char *key_prefix;         /* keys revoke --prefix */
    const char *host_addr;          /* hosts add --addr */
    bool admin;                     /* keys create --admin */
    const char *host_max_memory_mb; /* hosts add --max-memory-mb N|none (NULL: unchanged) */
    const char *max_memory_mb_arg;  /* --max-memory-mb as given; parsed into one of the two above */
} cp_config;

int cp_config_parse(int argc, char **argv, cp_config *out, terr *err);
void cp_config_usage(FILE *f);

#endif
