/* agent_config: torpor-agent's settings from flags and environment.
 *
 * Contract: defaults, then environment variables, then flags (a flag wins
 * over its variable). agent_config_parse never exits or prints: it returns
 * AGENT_CONFIG_OK, AGENT_CONFIG_HELP (--help given) or AGENT_CONFIG_ERROR
 * with err set (main prints usage and exits 2). String fields point into
 * argv/environ or static defaults. */
#ifndef TORPOR_AGENT_CONFIG_H
#define TORPOR_AGENT_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "terr.h"

typedef enum {
    AGENT_CONFIG_OK = 0,
    AGENT_CONFIG_HELP = 1,
    AGENT_CONFIG_ERROR = -1
} agent_config_result;

#define AGENT_VM_USER_DEFAULT "torpor-vm"

typedef struct agent_config {
    const char *listen;       /* --listen, TORPOR_AGENT_LISTEN, 127.0.0.1:50051 */
    const char *state_dir;    /* --state-dir, TORPOR_STATE_DIR, /var/lib/torpor */
    const char *image_dir;    /* --image-dir, TORPOR_IMAGE_DIR, /usr/share/torpor/image */
    const char *accel;        /* --accel, TORPOR_ACCEL, auto (auto|kvm|tcg) */
    int reaper_interval_ms;   /* --reaper-interval SEC (fractional ok), TORPOR_REAPER_INTERVAL, 2 */
    int pause_workers;        /* --pause-workers, TORPOR_PAUSE_WORKERS, 2 */
    int shutdown_timeout_ms;  /* --shutdown-timeout SEC, TORPOR_SHUTDOWN_TIMEOUT, 120 */
    const char *tls_cert;     /* --tls-cert, TORPOR_TLS_CERT */
    const char *tls_key;      /* --tls-key, TORPOR_TLS_KEY */
    const char *tls_ca;       /* --tls-ca, TORPOR_TLS_CA */
    const char *metrics_addr; /* --metrics-addr, TORPOR_AGENT_METRICS_ADDR, 127.0.0.1:9465; "off" */
    double memory_overcommit; /* --memory-overcommit, TORPOR_MEMORY_OVERCOMMIT, 1.5; 0 = off */
    /* --vm-user NAME|none, TORPOR_VM_USER; default AGENT_VM_USER_DEFAULT when
     * the agent runs as root, else none. NULL (none) = QEMU runs as the
     * agent's user. */
    const char *vm_user;
    bool vm_user_is_default; /* the default was taken: the agent may create that user */
    int template_cache;      /* --template-cache, TORPOR_TEMPLATE_CACHE, 8; -1 = unlimited */
    int disk_reserve_mb;     /* --disk-reserve-mb, TORPOR_DISK_RESERVE_MB, 1024; -1 = off */
    const char
        *tls_client_name; /* --tls-client-name, TORPOR_TLS_CLIENT_NAME; NULL = any the CA signed */
    bool network;         /* --network on|off, TORPOR_NETWORK, on (docs/network.md) */
    const char
        *dns_upstream; /* --dns-upstream auto|off|ADDR[:PORT],..., TORPOR_DNS_UPSTREAM, auto */
} agent_config;

agent_config_result agent_config_parse(int argc, char **argv, agent_config *cfg, terr *err);
void agent_config_usage(FILE *out, const char *prog);

#endif
