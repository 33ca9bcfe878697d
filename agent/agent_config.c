#include "agent_config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net_dns.h"
#include "rpc.h"

enum {
    OPT_LISTEN = 1000,
    OPT_STATE_DIR,
    OPT_IMAGE_DIR,
    OPT_ACCEL,
    OPT_REAPER_INTERVAL,
    OPT_PAUSE_WORKERS,
    OPT_SHUTDOWN_TIMEOUT,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CA,
    OPT_TLS_CLIENT_NAME,
    OPT_OVERCOMMIT,
    OPT_DISK_RESERVE,
    OPT_TEMPLATE_CACHE,
    OPT_VM_USER,
    OPT_METRICS_ADDR,
    OPT_NETWORK,
    OPT_DNS_UPSTREAM,
    OPT_HELP,
};

void agent_config_usage(FILE *out, const char *prog)
{
    fprintf(
        out,
        "usage: %s [flags]\n"
        "\n"
        "torpor-agent: runs sandboxes (QEMU VMs) on this host, serves HostAgentService\n"
        "over gRPC, and pauses sandboxes idle for their timeout_sec.\n"
        "\n"
        "flags (each also settable by the environment variable shown; a flag wins):\n"
        "  --listen ADDR            gRPC listen address, port 0 = ephemeral\n"
        "                           (TORPOR_AGENT_LISTEN, default 127.0.0.1:50051).\n"
        "                           Non-loopback addresses require --tls-*.\n"
        "  --state-dir DIR          sandboxes, snapshots, journal (TORPOR_STATE_DIR,\n"
        "                           default /var/lib/torpor)\n"
        "  --image-dir DIR          guest templates, one folder each (TORPOR_IMAGE_DIR,\n"
        "                           default " TORPOR_DATADIR "/image)\n"
        "  --accel auto|kvm|tcg     QEMU accelerator (TORPOR_ACCEL, default auto:\n"
        "                           KVM only if it really runs a guest)\n"
        "  --reaper-interval SEC    seconds between TTL reaper scans, fractions allowed\n"
        "                           (TORPOR_REAPER_INTERVAL, default 2)\n"
        "  --pause-workers N        auto-pauses running at once, 1..256\n"
        "                           (TORPOR_PAUSE_WORKERS, default 2)\n"
        "  --shutdown-timeout SEC   how long SIGTERM waits for in-flight pauses\n"
        "                           (TORPOR_SHUTDOWN_TIMEOUT, default 120)\n"
        "  --tls-cert PATH          PEM certificate of this agent (TORPOR_TLS_CERT)\n"
        "  --tls-key PATH           PEM private key (TORPOR_TLS_KEY)\n"
        "  --tls-ca PATH            PEM CA that signs control-plane client certificates;\n"
        "                           with all three set, mutual TLS is required (TORPOR_TLS_CA)\n"
        "  --metrics-addr ADDR|off  Prometheus metrics at http://ADDR/metrics, no key: keep it\n"
        "                           on loopback or a scrape network; port 0 = ephemeral\n"
        "                           (TORPOR_AGENT_METRICS_ADDR, default 127.0.0.1:9465)\n"
        "  --tls-client-name NAME   serve only clients whose certificate names NAME (a SAN\n"
        "                           entry, else the CN), not any the CA signed\n"
        "                           (TORPOR_TLS_CLIENT_NAME; needs --tls-*)\n"
        "  --memory-overcommit X    admit a create/resume only while the guest RAM of\n"
        "                           running sandboxes stays within MemTotal x X; 0 = no\n"
        "                           check (TORPOR_MEMORY_OVERCOMMIT, default 1.5)\n"
        "  --disk-reserve-mb N      admit a create/resume only while the state dir's file\n"
        "                           system keeps N MiB free beyond the new VM's RAM file;\n"
        "                           -1 = no check (TORPOR_DISK_RESERVE_MB, default 1024)\n"
        "  --template-cache N       template snapshots kept (distinct template x shape),\n"
        "                           least recently used evicted; -1 = unlimited\n"
        "                           (TORPOR_TEMPLATE_CACHE, default 8)\n"
        "  --vm-user NAME|none      run every QEMU as this unprivileged user (its sandbox\n"
        "                           directory and RAM file 0700/0600, owned by it); none =\n"
        "                           as the agent's own user (for debugging) (TORPOR_VM_USER,\n"
        "                           default torpor-vm when run as root, created if\n"
        "                           missing; else none)\n"
        "  --network on|off         give each sandbox a network (own namespace, TAP,\n"
        "                           nftables egress policy; docs/network.md) (TORPOR_NETWORK,\n"
        "                           default on)\n"
        "  --dns-upstream LIST      resolvers the sandboxes' DNS forwarder (10.0.0.1 in each\n"
        "                           guest) asks: auto = the IPv4 nameservers of\n"
        "                           /etc/resolv.conf outside 127.0.0.0/8; off = no DNS;\n"
        "                           else IPv4 ADDR[:PORT],... (TORPOR_DNS_UPSTREAM, default auto)\n"
        "  --help                   this text\n"
        "\n"
        "other environment: TORPOR_LOG_LEVEL=debug|info|warn|error (default info).\n"
        "SIGTERM/SIGINT: stop the reaper and RPCs, finish in-flight pauses, exit 0;\n"
        "running VMs keep running and are re-attached by the next start.\n"
        "exit codes: 0 clean shutdown, 1 runtime failure, 2 usage error.\n",
        prog);
}

/* Seconds (fractional) -> ms within [min_ms, max_ms]. */
static int parse_seconds(const char *name, const char *s, int min_ms, int max_ms, int *out,
                         terr *err)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v))
        return terr_set(err, "%s: not a number of seconds: \"%s\"", name, s);
    double ms = v * 1000.0;
    if (ms < min_ms || ms > max_ms)
        return terr_set(err, "%s: %s s is out of range %.3f..%d s", name, s, min_ms / 1000.0,
                        max_ms / 1000);
    *out = (int)(ms + 0.5);
    return 0;
}

static int parse_int(const char *name, const char *s, int min, int max, int *out, terr *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return terr_set(err, "%s: not an integer: \"%s\"", name, s);
    if (v < min || v > max)
        return terr_set(err, "%s: %ld is out of range %d..%d", name, v, min, max);
    *out = (int)v;
    return 0;
}

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

static int check_accel(const char *s, terr *err)
{
    if (strcmp(s, "auto") == 0 || strcmp(s, "kvm") == 0 || strcmp(s, "tcg") == 0) return 0;
    return terr_set(err, "--accel: must be auto, kvm or tcg, got \"%s\"", s);
}

agent_config_result agent_config_parse(int argc, char **argv, agent_config *cfg, terr *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = env_or("TORPOR_AGENT_LISTEN", "127.0.0.1:50051");
    cfg->state_dir = env_or("TORPOR_STATE_DIR", "/var/lib/torpor");
    cfg->image_dir = env_or("TORPOR_IMAGE_DIR", TORPOR_DATADIR "/image");
    cfg->accel = env_or("TORPOR_ACCEL", "auto");
    cfg->tls_cert = env_or("TORPOR_TLS_CERT", NULL);
    cfg->tls_key = env_or("TORPOR_TLS_KEY", NULL);
    cfg->tls_ca = env_or("TORPOR_TLS_CA", NULL);
    cfg->metrics_addr = env_or("TORPOR_AGENT_METRICS_ADDR", "127.0.0.1:9465");
    cfg->tls_client_name = env_or("TORPOR_TLS_CLIENT_NAME", NULL);
    const char *vm_user = env_or("TORPOR_VM_USER", NULL);
    const char *interval = env_or("TORPOR_REAPER_INTERVAL", "2");
    const char *workers = env_or("TORPOR_PAUSE_WORKERS", "2");
    const char *shutdown = env_or("TORPOR_SHUTDOWN_TIMEOUT", "120");
    const char *overcommit = env_or("TORPOR_MEMORY_OVERCOMMIT", "1.5");
    const char *reserve = env_or("TORPOR_DISK_RESERVE_MB", "1024");
    const char *tcache = env_or("TORPOR_TEMPLATE_CACHE", "8");
    const char *network = env_or("TORPOR_NETWORK", "on");
    cfg->dns_upstream = env_or("TORPOR_DNS_UPSTREAM", "auto");

    static const struct option opts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"image-dir", required_argument, NULL, OPT_IMAGE_DIR},
        {"accel", required_argument, NULL, OPT_ACCEL},
        {"reaper-interval", required_argument, NULL, OPT_REAPER_INTERVAL},
        {"pause-workers", required_argument, NULL, OPT_PAUSE_WORKERS},
        {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-ca", required_argument, NULL, OPT_TLS_CA},
        {"metrics-addr", required_argument, NULL, OPT_METRICS_ADDR},
        {"tls-client-name", required_argument, NULL, OPT_TLS_CLIENT_NAME},
        {"memory-overcommit", required_argument, NULL, OPT_OVERCOMMIT},
        {"disk-reserve-mb", required_argument, NULL, OPT_DISK_RESERVE},
        {"template-cache", required_argument, NULL, OPT_TEMPLATE_CACHE},
        {"vm-user", required_argument, NULL, OPT_VM_USER},
        {"network", required_argument, NULL, OPT_NETWORK},
        {"dns-upstream", required_argument, NULL, OPT_DNS_UPSTREAM},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    optind = 0; /* glibc: full re-initialisation, so parse can run more than once */
    opterr = 0; /* we report errors ourselves, through err */
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN: cfg->listen = optarg; break;
        case OPT_STATE_DIR: cfg->state_dir = optarg; break;
        case OPT_IMAGE_DIR: cfg->image_dir = optarg; break;
        case OPT_ACCEL: cfg->accel = optarg; break;
        case OPT_REAPER_INTERVAL: interval = optarg; break;
        case OPT_PAUSE_WORKERS: workers = optarg; break;
        case OPT_SHUTDOWN_TIMEOUT: shutdown = optarg; break;
        case OPT_TLS_CERT: cfg->tls_cert = optarg; break;
        case OPT_TLS_KEY: cfg->tls_key = optarg; break;
        case OPT_TLS_CA: cfg->tls_ca = optarg; break;
        case OPT_METRICS_ADDR: cfg->metrics_addr = optarg; break;
        case OPT_TLS_CLIENT_NAME: cfg->tls_client_name = optarg; break;
        case OPT_OVERCOMMIT: overcommit = optarg; break;
        case OPT_DISK_RESERVE: reserve = optarg; break;
        case OPT_TEMPLATE_CACHE: tcache = optarg; break;
        case OPT_VM_USER: vm_user = optarg; break;
        case OPT_NETWORK: network = optarg; break;
        case OPT_DNS_UPSTREAM: cfg->dns_upstream = optarg; break;
        case OPT_HELP: return AGENT_CONFIG_HELP;
        case ':': terr_set(err, "%s needs a value", argv[optind - 1]); return AGENT_CONFIG_ERROR;
        default: terr_set(err, "unknown flag %s", argv[optind - 1]); return AGENT_CONFIG_ERROR;
        }
    }
    if (optind < argc) {
        terr_set(err, "unexpected argument \"%s\"", argv[optind]);
        return AGENT_CONFIG_ERROR;
    }
    if (!cfg->listen[0]) {
        terr_set(err, "--listen: empty address");
        return AGENT_CONFIG_ERROR;
    }
    if (strcmp(cfg->metrics_addr, "off") != 0 && !strchr(cfg->metrics_addr, ':')) {
        terr_set(err, "--metrics-addr: want HOST:PORT or off, got \"%s\"", cfg->metrics_addr);
        return AGENT_CONFIG_ERROR;
    }
    if (!cfg->state_dir[0] || !cfg->image_dir[0]) {
        terr_set(err, "--state-dir and --image-dir must not be empty");
        return AGENT_CONFIG_ERROR;
    }
    if (check_accel(cfg->accel, err) != 0 ||
        parse_seconds("--reaper-interval", interval, 10, 3600 * 1000, &cfg->reaper_interval_ms,
                      err) != 0 ||
        parse_int("--pause-workers", workers, 1, 256, &cfg->pause_workers, err) != 0 ||
        parse_seconds("--shutdown-timeout", shutdown, 0, 24 * 3600 * 1000,
                      &cfg->shutdown_timeout_ms, err) != 0)
        return AGENT_CONFIG_ERROR;
    char *end;
    errno = 0;
    cfg->memory_overcommit = strtod(overcommit, &end);
    if (errno || end == overcommit || *end || !isfinite(cfg->memory_overcommit) ||
        cfg->memory_overcommit < 0 || cfg->memory_overcommit > 100) {
        terr_set(err, "--memory-overcommit: a factor 0..100 (0 = no check), got \"%s\"",
                 overcommit);
        return AGENT_CONFIG_ERROR;
    }
    if (parse_int("--disk-reserve-mb", reserve, -1, 1 << 30, &cfg->disk_reserve_mb, err) != 0 ||
        parse_int("--template-cache", tcache, -1, 1 << 20, &cfg->template_cache, err) != 0)
        return AGENT_CONFIG_ERROR;
    if (cfg->template_cache == 0) {
        terr_set(err, "--template-cache: at least 1, or -1 for unlimited");
        return AGENT_CONFIG_ERROR;
    }
    if (!vm_user) {
        cfg->vm_user_is_default = geteuid() == 0;
        cfg->vm_user = cfg->vm_user_is_default ? AGENT_VM_USER_DEFAULT : NULL;
    } else if (!vm_user[0]) {
        terr_set(err, "--vm-user: empty name (none runs QEMU as the agent's user)");
        return AGENT_CONFIG_ERROR;
    } else {
        cfg->vm_user = strcmp(vm_user, "none") ? vm_user : NULL;
    }
    if (!strcmp(network, "on")) cfg->network = true;
    else if (!strcmp(network, "off")) cfg->network = false;
    else {
        terr_set(err, "--network: \"on\" or \"off\", not \"%s\"", network);
        return AGENT_CONFIG_ERROR;
    }
    if (strcmp(cfg->dns_upstream, "auto") != 0 && strcmp(cfg->dns_upstream, "off") != 0) {
        net_rule ups[NET_DNS_UPSTREAMS];
        size_t n_ups;
        if (net_dns_parse_upstreams(cfg->dns_upstream, ups, NET_DNS_UPSTREAMS, &n_ups, err) < 0)
            return AGENT_CONFIG_ERROR;
    }
    int n_tls = !!cfg->tls_cert + !!cfg->tls_key + !!cfg->tls_ca;
    if (n_tls != 0 && n_tls != 3) {
        terr_set(err, "--tls-cert, --tls-key and --tls-ca go together (mutual TLS)");
        return AGENT_CONFIG_ERROR;
    }
    if (cfg->tls_client_name && (n_tls == 0 || !cfg->tls_client_name[0])) {
        terr_set(err,
                 "--tls-client-name needs --tls-cert, --tls-key and --tls-ca and a non-empty name");
        return AGENT_CONFIG_ERROR;
    }
    if (n_tls == 0 && !rpc_addr_is_loopback(cfg->listen)) {
        terr_set(err,
                 "--listen %s is not loopback: plaintext gRPC is refused there; "
                 "give --tls-cert, --tls-key and --tls-ca (mutual TLS)",
                 cfg->listen);
        return AGENT_CONFIG_ERROR;
    }
    return AGENT_CONFIG_OK;
}
