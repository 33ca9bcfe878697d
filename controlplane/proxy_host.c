/* proxy_host: see proxy_host.h. */
#include "proxy_host.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "torpor_limits.h"

#define PROXY_DOMAIN_MAX 200

bool proxy_host_domain_valid(const char *d)
{
    size_t n = d ? strlen(d) : 0;
    if (n == 0 || n > PROXY_DOMAIN_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = d[i];
        bool edge = i == 0 || i + 1 == n || d[i - 1] == '.' || d[i + 1] == '.';
        if (c == '.' && (i == 0 || i + 1 == n || d[i + 1] == '.')) return false;
        if (c == '-' && edge) return false;
        if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '.' || c == '-'))
            return false;
    }
    return true;
}

int proxy_host_path(const char *host, const char *domain, const char *path, char *out,
                    size_t out_size)
{
    if (!host || !domain || !*domain) return 0;
    size_t hl = strcspn(host, ":"); /* without the port */
    size_t dl = strlen(domain);
    /* label.DOMAIN: at least one char, a '.', then the domain (any case). */
    if (hl < dl + 2 || host[hl - dl - 1] != '.' || strncasecmp(host + hl - dl, domain, dl) != 0)
        return 0;
    size_t ll = hl - dl - 1; /* the first label: {port}-{id} */
    if (memchr(host, '.', ll)) return -1;
    char label[96];
    if (ll >= sizeof label) return -1;
    for (size_t i = 0; i < ll; i++) label[i] = (char)tolower((unsigned char)host[i]);
    label[ll] = '\0';
    char *dash = strchr(label, '-');
    if (!dash || dash == label || dash - label > 5) return -1;
    long port = 0;
    for (const char *p = label; p < dash; p++) {
        if (!isdigit((unsigned char)*p)) return -1;
        port = port * 10 + (*p - '0');
    }
    const char *id = dash + 1;
    if (port < 1 || port > 65535 || !limits_sandbox_id_valid(id)) return -1;
    int n = snprintf(out, out_size, "/v1/sandboxes/%s/ports/%ld%s", id, port,
                     path && *path ? path : "/");
    return n > 0 && (size_t)n < out_size ? 1 : -1;
}
