#include "metrics_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "rpc.h"
#include "tcp_listen.h"

struct metrics_http {
    struct MHD_Daemon *mhd;
    metrics_registry *reg;
    int fd;
    int port;
};

bool metrics_http_addr_off(const char *addr) { return addr && strcmp(addr, "off") == 0; }

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 405) MHD_add_response_header(r, "Allow", "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    metrics_http *h = cls;
    static int first_call_marker;
    if (*con_cls == NULL) { /* headers only: wait for (and discard) any body */
        *con_cls = &first_call_marker;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    static const char text[] = "text/plain; charset=utf-8";
    static char not_found[] = "not found (the metrics are at /metrics)\n",
                not_allowed[] = "method not allowed\n", unavailable[] = "metrics unavailable\n";
    if (strcmp(url, "/metrics") != 0)
        return reply(conn, 404, text, not_found, sizeof not_found - 1, MHD_RESPMEM_PERSISTENT);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, 405, text, not_allowed, sizeof not_allowed - 1, MHD_RESPMEM_PERSISTENT);
    char *body;
    size_t len;
    terr err;
    if (metrics_render(h->reg, &body, &len, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=metrics_render_failed error=\"%s\"", log_quote(err.msg, q, sizeof q));
        return reply(conn, 500, text, unavailable, sizeof unavailable - 1, MHD_RESPMEM_PERSISTENT);
    }
    return reply(conn, 200, "text/plain; version=0.0.4; charset=utf-8", body, len,
                 MHD_RESPMEM_MUST_FREE);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[LOG_QUOTE_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    log_write(LOG_DEBUG, "event=metrics_http_wire message=\"%s\"", log_quote(msg, q, sizeof q));
}

int metrics_http_start(const char *addr, metrics_registry *reg, metrics_http **out, terr *err)
{
    *out = NULL;
    if (!addr || !*addr || metrics_http_addr_off(addr))
        return terr_set(err, "metrics listener is off");
    if (!reg) return terr_set(err, "metrics: no registry");
    metrics_http *h = calloc(1, sizeof *h);
    if (!h) return terr_set(err, "out of memory");
    h->reg = reg;
    if (tcp_listen("metrics", addr, 64, &h->fd, &h->port, err) != 0) {
        free(h);
        return -1;
    }
    h->mhd = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_access, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, /* first, or MHD says so */
        MHD_OPTION_LISTEN_SOCKET, h->fd, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
        MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_END);
    if (!h->mhd) {
        close(h->fd);
        free(h);
        return terr_set(err, "MHD_start_daemon on metrics address %s failed", addr);
    }
    if (!rpc_addr_is_loopback(addr)) {
        char q[LOG_QUOTE_MAX];
        log_warn(
            "event=metrics_not_loopback addr=\"%s\" note=\"GET /metrics needs no key: expose it only "
            "to the scrape network\"",
            log_quote(addr, q, sizeof q));
    }
    *out = h;
    return 0;
}

int metrics_http_port(const metrics_http *h) { return h ? h->port : 0; }

void metrics_http_stop(metrics_http *h)
{
    if (!h) return;
    MHD_stop_daemon(h->mhd); /* closes the listening socket it was given */
    free(h);
}
