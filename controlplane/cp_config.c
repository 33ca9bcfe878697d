#include "cp_config.h"

#include "auth_cache.h"
#include "proxy_host.h"
#include "proxy_stream.h"
#include "reconciler.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifndef TORPOR_MIGRATIONS_DIR
#define TORPOR_MIGRATIONS_DIR "migrations"
#endif

void cp_config_usage(FILE *f)
{
    fprintf(
        f,
        "usage: torpor-cp [flags]                      serve the REST API (default)\n"
        "       torpor-cp keys create --team NAME [--admin]  create a team if needed and print a new API\n"
        "                                              key (--admin: may also read /v1/hosts)\n"
        "       torpor-cp keys list --team NAME        the team's keys: id, prefix, created, last used\n"
        "                                              (recorded at most once a minute), revoked\n"
        "       torpor-cp keys revoke --prefix P | --id ID  revoke one key (401 from its next request on)\n"
        "       torpor-cp hosts add --id ID --addr ADDR [--max-memory-mb N|none]  register (or re-address)\n"
        "                                              an agent host; N caps the guest memory placed on it\n"
        "       torpor-cp hosts list                   every host: status, address, agent id, capacity, sandboxes\n"
        "       torpor-cp hosts drain --id ID          no new sandboxes on the host; its running sandboxes\n"
        "                                              are paused, then every paused one is moved to another\n"
        "                                              ready host (run it again to retry what failed)\n"
        "       torpor-cp hosts undrain --id ID        ready again\n"
        "       torpor-cp hosts remove --id ID         forget a host that holds no sandbox any more\n"
        "       torpor-cp teams set-quota --team NAME [--max-sandboxes N] [--max-memory-mb M]\n"
        "                                              limit a team's sandboxes (running + paused);\n"
        "                                              an omitted limit, or -1, is unlimited\n"
        "       torpor-cp hosts reset-identity --id ID   forget the agent identity recorded for a host\n"
        "                                              (after replacing its agent on purpose)\n"
        "\n"
        "flags (environment variable in brackets; flags win over variables):\n"
        "  --http-addr ADDR            REST listen address [TORPOR_HTTP_ADDR] (127.0.0.1:8080)\n"
        "  --database-url URL          libpq connection string or URL [TORPOR_DATABASE_URL] (required)\n"
        "  --agent-addr ADDR           agent registered as host \"default\" at start\n"
        "                              [TORPOR_AGENT_ADDR] (127.0.0.1:50051)\n"
        "  --migrations-dir DIR        SQL migrations to apply at start [TORPOR_MIGRATIONS_DIR]\n"
        "                              (%s)\n"
        "  --reconcile-interval SEC    reconciler period, fractions allowed\n"
        "                              [TORPOR_RECONCILE_INTERVAL] (5)\n"
        "  --transition-grace SEC      age after which rows stuck in pausing/resuming are resolved\n"
        "                              from the agent, and stopped/error rows whose sandbox the\n"
        "                              agent still holds are reclaimed [TORPOR_TRANSITION_GRACE]\n"
        "                              (%d; at least %d: the longest agent deadline, %d s, plus a\n"
        "                              margin, so the reconciler never settles a row a request\n"
        "                              still waits on)\n"
        "  --key-cache SEC             how long a verified API key is trusted without asking the\n"
        "                              database again, 0..%d: a revoked key stops working on this\n"
        "                              replica within that time; 0 = every request asks\n"
        "                              [TORPOR_KEY_CACHE] (%g)\n"
        "  --http-threads N            HTTP worker threads for short calls, each with its own DB\n"
        "                              connection [TORPOR_HTTP_THREADS] (8)\n"
        "  --http-long-threads N       more workers only for long calls (create, exec, pause,\n"
        "                              resume, delete, files), so they never hold the short calls'\n"
        "                              workers, each with its own DB connection: a replica uses\n"
        "                              http-threads + http-long-threads + 1 of PostgreSQL's\n"
        "                              max_connections [TORPOR_HTTP_LONG_THREADS] (16)\n"
        "  --team-long-calls N         long calls one team may have in flight on this replica;\n"
        "                              beyond: 429 too_many_requests [TORPOR_TEAM_LONG_CALLS] (8)\n"
        "  --max-connections N         open HTTP connections; more wait in the listen backlog\n"
        "                              [TORPOR_MAX_CONNECTIONS] (1024)\n"
        "  --metrics-addr ADDR|off     Prometheus metrics at http://ADDR/metrics, no key: keep it\n"
        "                              on loopback or a scrape network; port 0 = ephemeral\n"
        "                              [TORPOR_METRICS_ADDR] (127.0.0.1:9464)\n"
        "  --proxy-domain DOMAIN       also proxy a request whose Host is {port}-{id}.DOMAIN to that\n"
        "                              port of that sandbox, as /v1/sandboxes/{id}/ports/{port}/...\n"
        "                              (same auth) [TORPOR_PROXY_DOMAIN] (off)\n"
        "  --proxy-idle-timeout SEC    a proxied request (not a WebSocket) in which no byte moves\n"
        "                              either way for SEC ends: 502 before the answer's head, cut\n"
        "                              after it [TORPOR_PROXY_IDLE_TIMEOUT] (60)\n"
        "  --files-timeout SEC         deadline of each files call to an agent (a whole small\n"
        "                              file, or one chunk of a streamed one): a guest that stops\n"
        "                              reading holds a call this long [TORPOR_FILES_TIMEOUT] (%d)\n"
        "  --tls-cert PEM              client certificate for mTLS to agents [TORPOR_TLS_CERT]\n"
        "  --tls-key PEM               its private key [TORPOR_TLS_KEY]\n"
        "  --tls-ca PEM                CA that signed the agents' certificates [TORPOR_TLS_CA]\n"
        "  --agent-tls-server-name N   name to verify in agent certificates instead of the\n"
        "                              address [TORPOR_AGENT_TLS_SERVER_NAME]\n"
        "  --team NAME                 (keys create, keys list) team name\n"
        "  --id ID --addr ADDR         (hosts add) host id and agent address; (hosts reset-identity)\n"
        "                              --id only; (keys revoke) --id is a key id\n"
        "  --prefix P                  (keys revoke) the key's prefix as keys list shows it\n"
        "  --admin                     (keys create) the key may also use the admin routes\n"
        "  --max-memory-mb N|none      (hosts add) cap on the guest memory placed on the host\n"
        "                              (none: the RAM its agent reports)\n"
        "  -h, --help                  this text\n"
        "\n"
        "Without --tls-* the agent connection is plaintext, which is allowed only to loopback\n"
        "addresses. Logs go to stderr as key=value lines (TORPOR_LOG_LEVEL=debug|info|warn|error).\n",
        TORPOR_MIGRATIONS_DIR, RECONCILER_GRACE_DEFAULT_SEC, RECONCILER_GRACE_MIN_SEC,
        AGENT_DEADLINE_TRANSITION_MAX_MS / 1000, AUTH_CACHE_MAX_MS / 1000,
        AUTH_CACHE_DEFAULT_MS / 1000.0, AGENT_DEADLINE_FILES_MS / 1000);
}

static int parse_seconds(const char *name, const char *v, double *out, terr *err)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) || d <= 0 || d > 86400)
        return terr_set(err, "%s must be a number of seconds in (0, 86400] (got \"%s\")", name, v);
    *out = d;
    return 0;
}

static int parse_int(const char *name, const char *v, long max, int *out, terr *err)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < 1 || n > max)
        return terr_set(err, "%s must be an integer in 1..%ld (got \"%s\")", name, max, v);
    *out = (int)n;
    return 0;
}

typedef struct flag_def {
    const char *flag;
    const char *env;
    enum { F_STR, F_SECONDS, F_KEY_CACHE, F_THREADS, F_COUNT, F_LIMIT } kind;
    size_t offset;
} flag_def;

#define OFF(field) offsetof(cp_config, field)
static const flag_def flags[] = {
    {"--http-addr", "TORPOR_HTTP_ADDR", F_STR, OFF(http_addr)},
    {"--database-url", "TORPOR_DATABASE_URL", F_STR, OFF(database_url)},
    {"--agent-addr", "TORPOR_AGENT_ADDR", F_STR, OFF(agent_addr)},
    {"--migrations-dir", "TORPOR_MIGRATIONS_DIR", F_STR, OFF(migrations_dir)},
    {"--reconcile-interval", "TORPOR_RECONCILE_INTERVAL", F_SECONDS, OFF(reconcile_interval_sec)},
    {"--transition-grace", "TORPOR_TRANSITION_GRACE", F_SECONDS, OFF(transition_grace_sec)},
    {"--key-cache", "TORPOR_KEY_CACHE", F_KEY_CACHE, OFF(key_cache_sec)},
    {"--http-threads", "TORPOR_HTTP_THREADS", F_THREADS, OFF(http_threads)},
    {"--http-long-threads", "TORPOR_HTTP_LONG_THREADS", F_THREADS, OFF(http_long_threads)},
    {"--team-long-calls", "TORPOR_TEAM_LONG_CALLS", F_THREADS, OFF(team_long_calls)},
    {"--max-connections", "TORPOR_MAX_CONNECTIONS", F_COUNT, OFF(max_connections)},
    {"--tls-cert", "TORPOR_TLS_CERT", F_STR, OFF(tls_cert)},
    {"--tls-key", "TORPOR_TLS_KEY", F_STR, OFF(tls_key)},
    {"--tls-ca", "TORPOR_TLS_CA", F_STR, OFF(tls_ca)},
    {"--agent-tls-server-name", "TORPOR_AGENT_TLS_SERVER_NAME", F_STR, OFF(agent_tls_server_name)},
    {"--metrics-addr", "TORPOR_METRICS_ADDR", F_STR, OFF(metrics_addr)},
    {"--proxy-domain", "TORPOR_PROXY_DOMAIN", F_STR, OFF(proxy_domain)},
    {"--proxy-idle-timeout", "TORPOR_PROXY_IDLE_TIMEOUT", F_SECONDS, OFF(proxy_idle_timeout_sec)},
    {"--files-timeout", "TORPOR_FILES_TIMEOUT", F_SECONDS, OFF(files_timeout_sec)},
    {"--team", NULL, F_STR, OFF(team)},
    {"--max-sandboxes", NULL, F_LIMIT, OFF(max_sandboxes)},
    {"--id", NULL, F_STR, OFF(host_id)},
    {"--addr", NULL, F_STR, OFF(host_addr)},
    {"--prefix", NULL, F_STR, OFF(key_prefix)},
    {"--max-memory-mb", NULL, F_STR, OFF(max_memory_mb_arg)}, /* teams set-quota or hosts add */
};
#define N_FLAGS (sizeof flags / sizeof flags[0])

static int set_value(cp_config *c, const flag_def *f, const char *name, const char *v, terr *err)
{
    char *base = (char *)c + f->offset;
    switch (f->kind) {
    case F_STR:
        if (!*v) return terr_set(err, "%s must not be empty", name);
        *(const char **)base = v;
        return 0;
    case F_SECONDS: return parse_seconds(name, v, (double *)base, err);
    case F_KEY_CACHE: {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(d) || d < 0 || d > AUTH_CACHE_MAX_MS / 1000.0)
            return terr_set(err, "%s must be a number of seconds in [0, %d] (got \"%s\")", name,
                            AUTH_CACHE_MAX_MS / 1000, v);
        *(double *)base = d;
        return 0;
    }
    case F_THREADS: return parse_int(name, v, 256, (int *)base, err);
    case F_COUNT: return parse_int(name, v, 1000000, (int *)base, err);
    case F_LIMIT: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end || n < -1 || n > (1LL << 40))
            return terr_set(err, "%s: a number >= 0, or -1 for unlimited, got \"%s\"", name, v);
        *(long long *)base = n;
        return 0;
    }
    }
    return terr_set(err, "internal: bad flag kind");
}

int cp_config_parse(int argc, char **argv, cp_config *out, terr *err)
{
    memset(out, 0, sizeof *out);
    out->http_addr = "127.0.0.1:8080";
    out->agent_addr = "127.0.0.1:50051";
    out->migrations_dir = TORPOR_MIGRATIONS_DIR;
    out->reconcile_interval_sec = 5;
    out->transition_grace_sec = RECONCILER_GRACE_DEFAULT_SEC;
    out->http_threads = 8;
    out->key_cache_sec = AUTH_CACHE_DEFAULT_MS / 1000.0;
    out->metrics_addr = "127.0.0.1:9464";
    out->max_sandboxes = -1;
    out->max_memory_mb = -1;
    out->http_long_threads = 16;
    out->team_long_calls = 8;
    out->max_connections = 1024;
    out->proxy_idle_timeout_sec = PROXY_IDLE_DEFAULT_MS / 1000.0;
    out->files_timeout_sec = AGENT_DEADLINE_FILES_MS / 1000.0;

    for (size_t i = 0; i < N_FLAGS; i++) {
        const char *v = flags[i].env ? getenv(flags[i].env) : NULL;
        if (v && *v && set_value(out, &flags[i], flags[i].env, v, err) != 0) return -1;
    }

    /* getopt_long over the flags table: option i has val FLAG_VAL0 + i. */
    enum { FLAG_VAL0 = 256 };
    struct option longopts[N_FLAGS + 3];
    for (size_t i = 0; i < N_FLAGS; i++)
        longopts[i] =
            (struct option){flags[i].flag + 2, required_argument, NULL, FLAG_VAL0 + (int)i};
    longopts[N_FLAGS] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[N_FLAGS + 1] = (struct option){"admin", no_argument, NULL, 'a'};
    longopts[N_FLAGS + 2] = (struct option){0};
    optind = 0; /* GNU: a full re-initialisation, so parsing twice works */
    opterr = 0; /* errors are ours, through err */
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            out->command = CP_CMD_HELP;
            return 0;
        }
        if (opt == 'a') {
            out->admin = true;
            continue;
        }
        if (opt == ':') return terr_set(err, "%s needs a value", argv[optind - 1]);
        if (opt == '?' || opt < FLAG_VAL0 || opt >= FLAG_VAL0 + (int)N_FLAGS)
            return terr_set(err, "unknown flag \"%s\" (see --help)", argv[optind - 1]);
        const flag_def *f = &flags[opt - FLAG_VAL0];
        if (set_value(out, f, f->flag, optarg, err) != 0) return -1;
    }
    const char *words[3] = {NULL, NULL, NULL};
    int n_words = 0;
    for (int i = optind; i < argc; i++) {
        if (n_words == 2) return terr_set(err, "unexpected argument \"%s\"", argv[i]);
        words[n_words++] = argv[i];
    }

    if (n_words == 0) {
        out->command = CP_CMD_SERVE;
    } else if (n_words == 2 && strcmp(words[0], "keys") == 0 && strcmp(words[1], "create") == 0) {
        out->command = CP_CMD_KEYS_CREATE;
        if (!out->team) return terr_set(err, "keys create needs --team NAME");
    } else if (n_words == 2 && strcmp(words[0], "keys") == 0 && strcmp(words[1], "list") == 0) {
        out->command = CP_CMD_KEYS_LIST;
        if (!out->team) return terr_set(err, "keys list needs --team NAME");
    } else if (n_words == 2 && strcmp(words[0], "keys") == 0 && strcmp(words[1], "revoke") == 0) {
        out->command = CP_CMD_KEYS_REVOKE;
        if (!out->key_prefix == !out->host_id)
            return terr_set(err, "keys revoke needs --prefix P or --id ID (one of them)");
    } else if (n_words == 2 && strcmp(words[0], "hosts") == 0 && strcmp(words[1], "add") == 0) {
        out->command = CP_CMD_HOSTS_ADD;
        if (!out->host_id || !out->host_addr)
            return terr_set(err, "hosts add needs --id ID and --addr ADDR");
    } else if (n_words == 2 && strcmp(words[0], "teams") == 0 &&
               strcmp(words[1], "set-quota") == 0) {
        out->command = CP_CMD_TEAMS_SET_QUOTA;
        if (!out->team) return terr_set(err, "teams set-quota needs --team NAME");
    } else if (n_words == 2 && strcmp(words[0], "hosts") == 0 &&
               strcmp(words[1], "reset-identity") == 0) {
        out->command = CP_CMD_HOSTS_RESET_IDENTITY;
        if (!out->host_id) return terr_set(err, "hosts reset-identity needs --id ID");
    } else if (n_words == 2 && strcmp(words[0], "hosts") == 0 && strcmp(words[1], "list") == 0) {
        out->command = CP_CMD_HOSTS_LIST;
    } else if (n_words == 2 && strcmp(words[0], "hosts") == 0 &&
               (strcmp(words[1], "drain") == 0 || strcmp(words[1], "undrain") == 0 ||
                strcmp(words[1], "remove") == 0)) {
        out->command = words[1][0] == 'd'   ? CP_CMD_HOSTS_DRAIN
                       : words[1][0] == 'u' ? CP_CMD_HOSTS_UNDRAIN
                                            : CP_CMD_HOSTS_REMOVE;
        if (!out->host_id) return terr_set(err, "hosts %s needs --id ID", words[1]);
    } else if (n_words == 1 && strcmp(words[0], "routes") == 0) {
        out->command = CP_CMD_ROUTES;
    } else {
        return terr_set(err, "unknown command \"%s%s%s\" (see --help)", words[0],
                        n_words > 1 ? " " : "", n_words > 1 ? words[1] : "");
    }

    /* A shorter grace lets the reconciler settle a pausing/resuming row
     * while a request thread still waits for the agent. */
    if (out->transition_grace_sec < RECONCILER_GRACE_MIN_SEC)
        return terr_set(
            err,
            "--transition-grace must be at least %d s (the longest agent deadline, %d s, plus a "
            "margin; got %g)",
            RECONCILER_GRACE_MIN_SEC, AGENT_DEADLINE_TRANSITION_MAX_MS / 1000,
            out->transition_grace_sec);
    if (strcmp(out->metrics_addr, "off") != 0 && !strchr(out->metrics_addr, ':'))
        return terr_set(err, "--metrics-addr: want HOST:PORT or off (got \"%s\")",
                        out->metrics_addr);
    if (out->proxy_domain && !proxy_host_domain_valid(out->proxy_domain))
        return terr_set(err,
                        "--proxy-domain: want a DNS name in lowercase letters, digits, '-' and "
                        "'.' (got \"%s\")",
                        out->proxy_domain);
    int n_tls = !!out->tls_cert + !!out->tls_key + !!out->tls_ca;
    if (n_tls != 0 && n_tls != 3)
        return terr_set(err, "--tls-cert, --tls-key and --tls-ca go together (mutual TLS)");
    if (out->admin && out->command != CP_CMD_KEYS_CREATE)
        return terr_set(err, "--admin goes with keys create only");
    if (out->max_memory_mb_arg) {
        /* Two meanings: a team's quota (teams set-quota, -1 = unlimited) or
         * a host's memory cap (hosts add, none = no cap). */
        const char *a = out->max_memory_mb_arg;
        if (out->command == CP_CMD_TEAMS_SET_QUOTA) {
            static const flag_def quota = {"--max-memory-mb", NULL, F_LIMIT, OFF(max_memory_mb)};
            if (set_value(out, &quota, quota.flag, a, err) != 0) return -1;
        } else if (out->command == CP_CMD_HOSTS_ADD) {
            char *end;
            errno = 0;
            long long v = strtoll(a, &end, 10);
            if (strcmp(a, "none") != 0 && (errno || end == a || *end || v < 0 || v > (1LL << 40)))
                return terr_set(
                    err, "--max-memory-mb must be a number of MiB >= 0 or none (got \"%s\")", a);
            out->host_max_memory_mb = a;
        } else {
            return terr_set(err, "--max-memory-mb goes with hosts add or teams set-quota only");
        }
    }
    if (!out->database_url && out->command != CP_CMD_ROUTES)
        return terr_set(err, "no database: set --database-url or TORPOR_DATABASE_URL");
    return 0;
}
