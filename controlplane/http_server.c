/* http_server.c: over 600 lines on purpose: it is one concern, the path of
 * a request from libmicrohttpd's callbacks through the worker pool and back
 * (header decision, body intake, suspend/resume, replies, stop), and every
 * part works on the private http_request below; split, they would need that
 * struct in a shared internal header for no gain in clarity. The contract is
 * in http_server.h. */
#include "http_server.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "tcp_listen.h"
#include "mono_time.h"

/* Requests waiting for a worker beyond this are refused with 503 at once:
 * under overload a client learns it now instead of timing out, and memory
 * stays bounded. */
#define HTTP_MAX_QUEUED 4096
/* A body announced over its limit by at most this much is read and
 * discarded before the 413 (see on_headers); a larger one is refused at
 * once and the connection closed. */
#define HTTP_DRAIN_MAX (4u * 1024 * 1024)
/* A stop waits this long for replies to slow readers. */
#define HTTP_STOP_GRACE_MS 5000

/* One open connection, for the deadlines libmicrohttpd does not keep (an
 * absolute one for the headers, a minimum body rate). Made and freed by the
 * connection notifications on the I/O thread; deadline and the list are
 * guarded by http_server.conn_mu, which the sweeper holds while it shuts a
 * connection's socket down. libmicrohttpd closes the socket only after the
 * CLOSED notification, which unlinks the entry under that lock, so the
 * sweeper never touches a closed (or reused) descriptor. */
typedef struct http_conn {
    int fd;
    int64_t deadline_ms; /* 0: none (a worker holds the request, or a reply is being sent) */
    const char *phase;   /* "headers" or "body", for the log */
    uint64_t window_bytes;
    struct http_conn *prev, *next;
} http_conn;

typedef struct http_header {
    char *name, *value;
    struct http_header *next;
} http_header;

/* One request from its first line to its completion. Made by the URI log
 * callback, freed by the completion callback; while a worker holds it the
 * connection is suspended, so libmicrohttpd neither frees nor touches it. */
struct http_request {
    http_server *s;
    struct MHD_Connection *conn;
    char *uri; /* raw target; path = uri up to '?' */
    char *path;
    const char *query;  /* into uri, "" if none */
    const char *method; /* libmicrohttpd's */
    bool http10;
    bool headers_seen; /* on_headers ran */
    bool vet;          /* on_headers asked for cfg->vet on a worker before the body */
    bool vetting;      /* that job is queued or running (connection suspended) */
    bool vet_long;     /* the vet job is long-running too (http_request_vet_first_long) */
    bool vetted;       /* it has run: status != 0 means refused */
    bool discard;      /* refused before the body: drain it, then send the reply */
    bool in_handler;   /* handed to a worker for the handler */
    bool queued;       /* handed to a worker (counted in s->n_live) */
    bool done;         /* the worker has finished; the reply is recorded */
    bool long_running;
    /* Streamed body paused by its consumer, or streamed reply by its
     * producer (guarded by http_server.mu; never both at once). */
    bool body_paused;   /* connection suspended until http_request_resume_body */
    bool resume_wanted; /* the consumer resumed before the pause took hold */
    bool was_paused;    /* I/O thread: restart the body-rate deadline on the next piece */
    http_request *paused_next;
    size_t body_limit;
    char *body;
    size_t body_len, body_cap;
    bool body_over;                    /* over the limit: dropped as it arrives, then 413 */
    unsigned long long body_announced; /* its Content-Length, 0 if chunked */
    http_body_fn stream_fn;
    void *stream_cls;
    void *user;
    void *data; /* http_request_set_data */
    void (*data_free)(void *data);
    http_conn *hc; /* its connection's deadlines */
    /* The reply. */
    int status; /* 0 = none yet */
    char *content_type;
    char *reply_body;
    size_t reply_len;
    http_header *headers;
    http_stream_fn reply_fn;
    void *reply_cls;
    void (*reply_done)(void *cls);
    int64_t reply_size;
    http_upgrade_fn upgrade_fn;
    void *upgrade_cls;
    http_request *next; /* queue link */
};

typedef struct http_worker {
    http_server *server;
    bool long_only; /* serves only long-running requests */
    void *worker;
    pthread_t thread;
    bool started;
} http_worker;

struct http_server {
    http_server_config cfg;
    int port;
    int listen_fd;
    struct MHD_Daemon *mhd;
    /* Guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond;      /* a job was queued, a long one ended, or stopping */
    pthread_cond_t long_cond; /* the same, for the long-only workers */
    pthread_cond_t live_cond; /* n_live dropped */
    http_request *quick, *quick_tail, *slow, *slow_tail;
    http_request *paused; /* streamed bodies paused by their consumer */
    size_t n_queued;
    int n_long_running, max_long_running;
    int n_live; /* queued requests not yet completed on the wire */
    bool stopping;
    /* Fixed after start. */
    http_worker *workers;
    int n_workers;
    int n_quick_workers; /* workers[0..n_quick_workers) quick; the rest long-only */
    /* Connection deadlines (see http_conn). */
    pthread_mutex_t conn_mu;
    pthread_cond_t sweep_cond;
    http_conn *conns;
    bool sweep_stop, sweep_started;
    pthread_t sweeper;
};

/* The request whose on_headers or handler runs on this thread, so that the
 * reply helpers can check they are called where they may be. */
static _Thread_local http_request *http_current;

/* ------------------------------------------------------------ connection deadlines */

/* Sets hc's deadline after_ms from now (0: none). */
static void conn_deadline(http_server *s, http_conn *hc, int64_t after_ms, const char *phase)
{
    if (!hc) return;
    pthread_mutex_lock(&s->conn_mu);
    hc->deadline_ms = after_ms ? mono_ms() + after_ms : 0;
    hc->phase = phase;
    hc->window_bytes = 0;
    pthread_mutex_unlock(&s->conn_mu);
}

/* n body bytes arrived: a full window's worth moves the deadline on. */
static void conn_body_bytes(http_server *s, http_conn *hc, size_t n)
{
    if (!hc) return;
    pthread_mutex_lock(&s->conn_mu);
    hc->window_bytes += n;
    if (hc->window_bytes >= HTTP_BODY_MIN_BYTES && hc->deadline_ms) {
        hc->deadline_ms = mono_ms() + HTTP_BODY_WINDOW_MS;
        hc->window_bytes = 0;
    }
    pthread_mutex_unlock(&s->conn_mu);
}

/* I/O thread: a connection opened or closed. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        http_conn *hc = calloc(1, sizeof *hc);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!hc || !ci) { /* untracked: only libmicrohttpd's idle timeout applies */
            free(hc);
            return;
        }
        hc->fd = ci->connect_fd;
        hc->deadline_ms = mono_ms() + HTTP_HEADERS_TIMEOUT_MS;
        hc->phase = "headers";
        pthread_mutex_lock(&s->conn_mu);
        hc->next = s->conns;
        if (s->conns) s->conns->prev = hc;
        s->conns = hc;
        pthread_mutex_unlock(&s->conn_mu);
        *socket_context = hc;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        http_conn *hc = *socket_context;
        *socket_context = NULL;
        if (!hc) return;
        pthread_mutex_lock(&s->conn_mu);
        if (hc->prev) hc->prev->next = hc->next;
        else s->conns = hc->next;
        if (hc->next) hc->next->prev = hc->prev;
        pthread_mutex_unlock(&s->conn_mu);
        free(hc);
    }
}

/* Closes connections past their deadline: shutdown() of the socket, which
 * libmicrohttpd then sees as the client's end and closes on its thread. */
static void *sweeper_main(void *arg)
{
    http_server *s = arg;
    pthread_mutex_lock(&s->conn_mu);
    while (!s->sweep_stop) {
        struct timespec ts = mono_deadline(500);
        pthread_cond_timedwait(&s->sweep_cond, &s->conn_mu, &ts);
        int64_t now = mono_ms();
        for (http_conn *hc = s->conns; hc; hc = hc->next) {
            if (!hc->deadline_ms || now < hc->deadline_ms) continue;
            hc->deadline_ms = 0;
            shutdown(hc->fd, SHUT_RDWR);
            log_write(LOG_INFO, "event=http_slow_client phase=%s fd=%d", hc->phase, hc->fd);
        }
    }
    pthread_mutex_unlock(&s->conn_mu);
    return NULL;
}

/* ------------------------------------------------------------ request */

static void request_free(http_request *r)
{
    free(r->uri);
    free(r->path);
    free(r->body);
    free(r->content_type);
    free(r->reply_body);
    while (r->headers) {
        http_header *h = r->headers;
        r->headers = h->next;
        free(h->name);
        free(h->value);
        free(h);
    }
    if (r->reply_done) r->reply_done(r->reply_cls);
    if (r->data_free) r->data_free(r->data);
    free(r);
}

/* I/O thread, on the request line: the request object, with the raw target
 * (libmicrohttpd hands the access handler a decoded path). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    http_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->s = cls;
    r->conn = conn;
    r->uri = strdup(uri ? uri : "");
    const char *q = r->uri ? strchr(r->uri, '?') : NULL;
    r->path = r->uri ? strndup(r->uri, q ? (size_t)(q - r->uri) : strlen(r->uri)) : NULL;
    r->query = q ? q + 1 : "";
    if (!r->uri || !r->path) {
        request_free(r);
        return NULL;
    }
    return r;
}

/* I/O thread: the request is over (sent, failed or the client left). */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    http_request *r = *con_cls;
    *con_cls = NULL;
    if (!r) return;
    /* Keep-alive: the next request's headers within the idle time plus the
     * headers time (an upgraded socket is its route's, not ours). */
    if (!r->upgrade_fn)
        conn_deadline(s, r->hc, HTTP_IDLE_TIMEOUT_SEC * 1000 + HTTP_HEADERS_TIMEOUT_MS, "headers");
    if (r->headers_seen && s->cfg.on_done) s->cfg.on_done(s->cfg.app, r);
    if (r->queued) {
        pthread_mutex_lock(&s->mu);
        s->n_live--;
        pthread_cond_broadcast(&s->live_cond);
        pthread_mutex_unlock(&s->mu);
    }
    request_free(r);
}

/* I/O thread: the next piece of a streamed reply. A producer with nothing
 * yet pauses it (HTTP_STREAM_PAUSE): the connection is suspended (so the
 * reader is not called again in a busy loop) until http_reply_stream_resume,
 * as a paused body is (on_stream). */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    http_request *r = cls;
    http_server *s = r->s;
    for (;;) {
        ssize_t n = r->reply_fn(r->reply_cls, pos, buf, max);
        if (n == HTTP_STREAM_END) return MHD_CONTENT_READER_END_OF_STREAM;
        if (n != HTTP_STREAM_PAUSE) return n < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : n;
        pthread_mutex_lock(&s->mu);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (r->resume_wanted) { /* more came already: ask again now */
            r->resume_wanted = false;
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        r->body_paused = true;
        r->paused_next = s->paused;
        s->paused = r;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&s->mu);
        return 0; /* legal with the connection suspended: no busy loop */
    }
}

typedef struct upgrade_call {
    http_upgrade_fn fn;
    void *cls;
} upgrade_call;

/* I/O thread: the 101 is out; the socket is the route's now. */
static void on_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra_in,
                        size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    upgrade_call *u = cls;
    u->fn(u->cls, sock, extra_in, extra_in_size, (http_upgraded *)urh);
}

void http_upgraded_close(http_upgraded *h)
{
    MHD_upgrade_action((struct MHD_UpgradeResponseHandle *)h, MHD_UPGRADE_ACTION_CLOSE);
}

/* I/O thread: hands the recorded reply to libmicrohttpd. */
static enum MHD_Result send_reply(http_request *r)
{
    struct MHD_Response *resp;
    conn_deadline(r->s, r->hc, 0, "reply"); /* a slow reader meets the idle timeout only */
    if (r->upgrade_fn) {
        /* The call outlives the request (whose completion may come first),
         * so it gets its own closure, freed with the response. */
        upgrade_call *u = malloc(sizeof *u);
        if (!u) return MHD_NO;
        *u = (upgrade_call){.fn = r->upgrade_fn, .cls = r->upgrade_cls};
        resp = MHD_create_response_for_upgrade(on_upgraded, u);
        if (!resp) {
            free(u);
            return MHD_NO;
        }
        r->reply_done = free; /* with the request: MHD is done with the response by then */
        r->reply_cls = u;
    } else if (r->reply_fn) {
        /* The request outlives the response (completion comes after the
         * last byte), so it is the reader's closure. */
        resp = MHD_create_response_from_callback(r->reply_size < 0 ? MHD_SIZE_UNKNOWN
                                                                   : (uint64_t)r->reply_size,
                                                 32 * 1024, stream_reader, r, NULL);
    } else {
        resp = MHD_create_response_from_buffer(r->reply_len, r->reply_body ? r->reply_body : "",
                                               r->reply_body ? MHD_RESPMEM_MUST_FREE
                                                             : MHD_RESPMEM_PERSISTENT);
        if (resp) r->reply_body = NULL;
    }
    if (!resp) return MHD_NO;
    if (r->content_type) MHD_add_response_header(resp, "Content-Type", r->content_type);
    for (http_header *h = r->headers; h; h = h->next)
        MHD_add_response_header(resp, h->name, h->value);
    if (r->http10) MHD_set_response_options(resp, MHD_RF_HTTP_1_0_SERVER, MHD_RO_END);
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* I/O thread: a JSON error for a request no worker will see. */
static enum MHD_Result reply_now(http_request *r, int status, const char *code, const char *msg);

static enum MHD_Result reply_over_limit(http_request *r)
{
    /* No handler sees it, so the layer logs it, as the API logs the rest. */
    char q[LOG_QUOTE_MAX], qm[64];
    log_write(
        LOG_INFO,
        "event=http_request method=\"%s\" path=\"%s\" status=413 body_limit=%zu announced=%llu",
        log_quote(r->method, qm, sizeof qm), log_quote(r->path, q, sizeof q), r->body_limit,
        r->body_announced);
    char msg[160];
    if (r->body_announced)
        snprintf(msg, sizeof msg, "request body of %llu bytes is over the %zu-byte limit",
                 r->body_announced, r->body_limit);
    else snprintf(msg, sizeof msg, "request body is over the %zu-byte limit", r->body_limit);
    return reply_now(r, 413, "too_large", msg);
}

static enum MHD_Result reply_now(http_request *r, int status, const char *code, const char *msg)
{
    http_current = r;
    http_reply_error(r, status, code, "%s", msg);
    http_current = NULL;
    return send_reply(r);
}

static enum MHD_Result queue_job(http_server *s, http_request *r);

/* I/O thread: the body limit against the announced Content-Length. */
static enum MHD_Result check_limit(http_request *r)
{
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && !r->stream_fn) {
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > r->body_limit) {
            const char *expect =
                MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
            bool waits = expect && strcasecmp(expect, "100-continue") == 0;
            r->body_over = true;
            r->body_announced = n;
            /* Refused now, unread. A client that waits for "100 Continue"
             * sends nothing more; one that sends a modest excess anyway is
             * drained first (discarded, never stored), since closing on
             * unread bytes resets the connection before it reads the 413. */
            if (waits || n - r->body_limit > HTTP_DRAIN_MAX) return reply_over_limit(r);
        }
    }
    return MHD_YES;
}

static bool no_body(http_request *r);

/* I/O thread: the headers are in. */
static enum MHD_Result on_headers(http_server *s, http_request *r)
{
    r->headers_seen = true;
    r->body_limit = s->cfg.max_body;
    if (s->cfg.on_headers) {
        http_current = r;
        s->cfg.on_headers(s->cfg.app, r);
        http_current = NULL;
        /* An early reply (/healthz, 401, 404, 405...) to a request without
         * a body goes out once the request is complete (the next on_access
         * call): queued now, libmicrohttpd would close the connection, and
         * every such request would cost a new one. With a body it goes now
         * (and the connection closes: the body is not read). */
        if (r->status) return no_body(r) ? MHD_YES : send_reply(r);
    }
    if (r->vet && s->cfg.vet) { /* the limit comes after the vet, as a key check before a 413 */
        r->vetting = true;
        return queue_job(s, r);
    }
    return check_limit(r);
}

/* I/O thread: a piece of the body. */
static enum MHD_Result on_body(http_request *r, const char *data, size_t len)
{
    if (r->body_over) {
        /* Dropped bytes are bounded too: a chunked body far over the limit
         * closes the connection (without the 413 it would get at its end). */
        r->body_len += len;
        return r->body_len > r->body_limit && r->body_len - r->body_limit > HTTP_DRAIN_MAX
                   ? MHD_NO
                   : MHD_YES;
    }
    if (len > r->body_limit - r->body_len) { /* chunked: no Content-Length to refuse up front */
        r->body_over = true;
        free(r->body);
        r->body = NULL;
        r->body_len += len; /* from here on: the count of bytes received */
        r->body_cap = 0;
        return MHD_YES;
    }
    if (r->body_len + len > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + len) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) return MHD_NO;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    return MHD_YES;
}

/* I/O thread: a piece of a streamed body. The consumer takes it whole, or
 * pauses: the piece stays unread (*size unchanged) and the connection is
 * suspended, so nothing more is read and TCP holds the client back, until
 * http_request_resume_body; libmicrohttpd then offers the piece again. */
static enum MHD_Result on_stream(http_server *s, http_request *r, const char *data, size_t *size)
{
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stopping) return MHD_NO;
        int rc = r->stream_fn(r->stream_cls, r, data, *size);
        if (rc < 0) return MHD_NO;
        if (rc != HTTP_BODY_PAUSE) {
            if (r->was_paused) {
                r->was_paused = false;
                conn_deadline(s, r->hc, HTTP_BODY_WINDOW_MS, "body");
            }
            conn_body_bytes(s, r->hc, *size);
            *size = 0;
            return MHD_YES;
        }
        conn_deadline(s, r->hc, 0, "paused"); /* the consumer is slow, not the client */
        pthread_mutex_lock(&s->mu);
        if (r->resume_wanted) { /* room again already: offer the piece again now */
            r->resume_wanted = false;
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        r->body_paused = true;
        r->was_paused = true;
        r->paused_next = s->paused;
        s->paused = r;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&s->mu);
        return MHD_YES;
    }
}

/* Under s->mu: takes r off the paused list and resumes its connection. */
static void unpause_locked(http_server *s, http_request *r)
{
    for (http_request **p = &s->paused; *p; p = &(*p)->paused_next)
        if (*p == r) {
            *p = r->paused_next;
            break;
        }
    r->paused_next = NULL;
    r->body_paused = false;
    MHD_resume_connection(r->conn);
}

void http_reply_stream_resume(http_request *r) { http_request_resume_body(r); }

void http_request_resume_body(http_request *r)
{
    http_server *s = r->s;
    pthread_mutex_lock(&s->mu);
    if (r->body_paused) unpause_locked(s, r);
    else r->resume_wanted = true;
    pthread_mutex_unlock(&s->mu);
}

/* I/O thread: hands r to a worker (for cfg->vet when r->vetting, else the
 * handler) with its connection suspended; replies 503 when it cannot. */
static enum MHD_Result queue_job(http_server *s, http_request *r)
{
    pthread_mutex_lock(&s->mu);
    /* Workers exit only once stopping is set and the queues are empty, both
     * checked under mu, so a job queued before stopping is always run. */
    bool stopping = s->stopping;
    bool full = s->n_queued >= HTTP_MAX_QUEUED;
    if (!stopping && !full) {
        /* Suspended before a worker can see it, so its resume always
         * follows the suspend. */
        MHD_suspend_connection(r->conn);
        conn_deadline(s, r->hc, 0, "worker");
        if (!r->queued) s->n_live++;
        r->queued = true;
        if (!r->vetting) r->in_handler = true;
        s->n_queued++;
        bool slow = r->long_running && (!r->vetting || r->vet_long);
        http_request **head = slow ? &s->slow : &s->quick;
        http_request **tail = slow ? &s->slow_tail : &s->quick_tail;
        if (*tail) (*tail)->next = r;
        else *head = r;
        *tail = r;
        /* A quick job: one waiter on cond (every one of them may take it;
         * waking them all cost ~14 context switches per request). A slow
         * one: all of both pools, since the one woken might not be allowed
         * to take it (the long-call limit, a pooled quick worker). */
        if (slow) {
            pthread_cond_broadcast(&s->cond);
            pthread_cond_broadcast(&s->long_cond);
        } else {
            pthread_cond_signal(&s->cond);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (stopping || full) {
        r->vetting = false;
        return reply_now(r, 503, "unavailable",
                         stopping ? "server is shutting down" : "server is busy; retry later");
    }
    return MHD_YES;
}

/* I/O thread: the whole request is in; queue it for a worker. */
static enum MHD_Result dispatch(http_server *s, http_request *r)
{
    if (r->discard) return send_reply(r); /* refused by vet, body drained */
    if (r->body_over) return reply_over_limit(r);
    return queue_job(s, r);
}

/* I/O thread: the vet job came back (the connection is resumed, the body
 * not read yet). A refusal is sent now when nothing or too much is coming,
 * else after draining what the client sends unasked (see on_headers). */
static enum MHD_Result after_vet(http_request *r)
{
    r->vetting = false;
    r->vetted = true;
    if (!r->status) return check_limit(r); /* accepted: on to the limit and the body */
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *expect =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
    if (!cl || n == 0 || n > HTTP_DRAIN_MAX || (expect && strcasecmp(expect, "100-continue") == 0))
        return send_reply(r);
    r->discard = true;
    return MHD_YES;
}

/* True when the request announces no body at all. */
static bool no_body(http_request *r)
{
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return !te && (!cl || strtoull(cl, NULL, 10) == 0);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    http_server *s = cls;
    http_request *r = *con_cls;
    if (!r) return MHD_NO; /* on_uri ran out of memory: close */
    if (!r->headers_seen) {
        r->conn = conn;
        r->method = method;
        r->http10 = strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->hc = ci ? ci->socket_context : NULL;
        /* The headers are in: from now on the body's minimum rate. */
        conn_deadline(s, r->hc, no_body(r) ? 0 : HTTP_BODY_WINDOW_MS, "body");
        return on_headers(s, r);
    }
    if (r->vetting) { /* resumed (or woken early) while the vet job runs */
        if (!r->done) return MHD_YES;
        r->done = false;
        enum MHD_Result rc = after_vet(r);
        /* Accepted, or refused and drained: the body's rate applies again. */
        if (rc == MHD_YES && (r->discard || !r->status) && !no_body(r))
            conn_deadline(s, r->hc, HTTP_BODY_WINDOW_MS, "body");
        if (rc != MHD_YES || r->status) return rc;
        if (!*upload_data_size) return no_body(r) ? dispatch(s, r) : MHD_YES;
    }
    if (*upload_data_size && r->stream_fn && !r->discard)
        return on_stream(s, r, upload_data, upload_data_size);
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        conn_body_bytes(s, r->hc, n);
        if (r->discard) return MHD_YES;
        return on_body(r, upload_data, n);
    }
    if (r->in_handler) return r->done ? send_reply(r) : MHD_YES; /* done: resumed by its worker */
    if (r->status) return send_reply(r); /* an early reply deferred by on_headers */
    return dispatch(s, r);
}

/* ------------------------------------------------------------ workers */

/* Takes the next job (quick ones first; a long one only while fewer than
 * max_long_running run), or NULL once stopping with nothing left. */
static http_request *next_job(http_server *s, const http_worker *w, bool *is_long)
{
    pthread_mutex_lock(&s->mu);
    http_request *r = NULL;
    /* With a long-call pool, its workers take only long jobs and the others
     * never do. */
    bool pooled = s->n_quick_workers < s->n_workers;
    for (;;) {
        if (s->quick && !w->long_only) {
            r = s->quick;
            s->quick = r->next;
            if (!s->quick) s->quick_tail = NULL;
            *is_long = false;
            break;
        }
        if (s->slow && s->n_long_running < s->max_long_running && (w->long_only || !pooled)) {
            r = s->slow;
            s->slow = r->next;
            if (!s->slow) s->slow_tail = NULL;
            s->n_long_running++;
            *is_long = true;
            break;
        }
        /* Stopping: exit once nothing is left that this worker may take. */
        bool mine_left = w->long_only ? s->slow != NULL : s->quick || (!pooled && s->slow);
        if (s->stopping && !mine_left) break;
        pthread_cond_wait(w->long_only ? &s->long_cond : &s->cond, &s->mu);
    }
    if (r) {
        s->n_queued--;
        r->next = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

static void *worker_main(void *arg)
{
    http_worker *w = arg;
    http_server *s = w->server;
    bool is_long;
    http_request *r;
    while ((r = next_job(s, w, &is_long))) {
        http_current = r;
        if (r->vetting) {
            s->cfg.vet(s->cfg.app, w->worker, r);
            http_current = NULL;
            pthread_mutex_lock(&s->mu);
            r->done = true;
            if (is_long) { /* a long vet's slot, as after a handler */
                s->n_long_running--;
                if (s->slow) {
                    pthread_cond_broadcast(&s->cond);
                    pthread_cond_broadcast(&s->long_cond);
                }
            }
            pthread_mutex_unlock(&s->mu);
            MHD_resume_connection(r->conn);
            continue;
        }
        s->cfg.handler(s->cfg.app, w->worker, r);
        http_current = NULL;
        if (r->status == 0) {
            char q[LOG_QUOTE_MAX], qm[64];
            log_write(LOG_ERROR, "event=http_no_reply method=\"%s\" path=\"%s\"",
                      log_quote(r->method, qm, sizeof qm), log_quote(r->path, q, sizeof q));
            http_current = r;
            http_reply_error(r, 500, "internal_error", "handler sent no reply");
            http_current = NULL;
        }
        pthread_mutex_lock(&s->mu);
        r->done = true;
        if (is_long) {
            s->n_long_running--;
            if (s->slow) {
                pthread_cond_broadcast(&s->cond);
                pthread_cond_broadcast(&s->long_cond);
            }
        }
        pthread_mutex_unlock(&s->mu);
        /* From here on the I/O thread owns r again. */
        MHD_resume_connection(r->conn);
    }
    return NULL;
}

/* ------------------------------------------------------------ start / stop */

/* libmicrohttpd's own messages (a client that reset its connection, ...):
 * one log line each, the text quoted. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[LOG_QUOTE_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    log_write(LOG_INFO, "event=http_wire message=\"%s\"", log_quote(msg, q, sizeof q));
}

int http_server_start(const http_server_config *cfg, http_server **out, terr *err)
{
    *out = NULL;
    if (cfg->n_threads < 1 || cfg->n_threads > 1024)
        return terr_set(err, "http threads must be 1..1024 (got %d)", cfg->n_threads);
    if (cfg->n_long_threads < 0 || cfg->n_long_threads > 1024)
        return terr_set(err, "http long-call threads must be 0..1024 (got %d)",
                        cfg->n_long_threads);
    http_server *s = calloc(1, sizeof *s);
    if (!s) return terr_set(err, "out of memory");
    s->cfg = *cfg;
    s->listen_fd = -1;
    s->max_long_running = cfg->n_long_threads > 0 ? cfg->n_long_threads
                          : cfg->n_threads > 1    ? cfg->n_threads - 1
                                                  : 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->sweep_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&s->cond, NULL);
    pthread_cond_init(&s->long_cond, NULL);
    pthread_cond_init(&s->live_cond, NULL);
    if (tcp_listen("listen", cfg->listen_addr, 1024, &s->listen_fd, &s->port, err) != 0) goto fail;
    int total = cfg->n_threads + cfg->n_long_threads;
    s->workers = calloc((size_t)total, sizeof *s->workers);
    if (!s->workers) {
        terr_set(err, "out of memory");
        goto fail;
    }
    s->n_workers = total;
    s->n_quick_workers = cfg->n_threads;
    for (int i = 0; i < s->n_workers; i++) {
        http_worker *w = &s->workers[i];
        w->server = s;
        w->long_only = i >= cfg->n_threads;
        w->worker = cfg->worker_init(cfg->app, i, err);
        if (!w->worker) {
            terr_wrap(err, "http worker %d", i);
            goto fail;
        }
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            terr_set(err, "pthread_create failed");
            goto fail;
        }
        w->started = true;
    }
    /* One I/O thread on epoll; ITC so workers can resume connections and a
     * stop can quiesce; upgrade for the WebSocket/proxy routes to come. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        s, /* first, or MHD says so */
        MHD_OPTION_LISTEN_SOCKET, s->listen_fd, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_CONNECTION_TIMEOUT,
        HTTP_IDLE_TIMEOUT_SEC, MHD_OPTION_CONNECTION_LIMIT,
        cfg->max_connections ? cfg->max_connections : HTTP_MAX_CONNECTIONS_DEFAULT, MHD_OPTION_END);
    if (!s->mhd) {
        terr_set(err, "MHD_start_daemon on %s failed", cfg->listen_addr);
        goto fail;
    }
    if (pthread_create(&s->sweeper, NULL, sweeper_main, s) != 0) {
        terr_set(err, "pthread_create failed");
        goto fail;
    }
    s->sweep_started = true;
    *out = s;
    return 0;
fail:
    http_server_stop(s);
    return -1;
}

int http_server_port(const http_server *s) { return s->port; }

void http_server_stop(http_server *s)
{
    if (!s) return;
    /* 1. Stop accepting; from now on new requests on open connections get
     *    503 and the workers exit once the queues are empty. */
    if (s->mhd) {
        int fd = MHD_quiesce_daemon(s->mhd);
        if (fd >= 0) close(fd);
        s->listen_fd = -1;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_cond_broadcast(&s->long_cond);
    /* Paused bodies and replies: resumed, so that their connections close
     * (on_stream and stream_reader refuse once stopping); libmicrohttpd must not be stopped with a
     * connection still suspended. */
    while (s->paused) unpause_locked(s, s->paused);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
    /* 2. The I/O thread sends the last replies; a client that stops reading
     *    must not hold up the stop forever. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += HTTP_STOP_GRACE_MS / 1000;
    pthread_mutex_lock(&s->mu);
    while (s->n_live > 0 && s->mhd)
        if (pthread_cond_timedwait(&s->live_cond, &s->mu, &until) != 0) break;
    pthread_mutex_unlock(&s->mu);
    if (s->sweep_started) {
        pthread_mutex_lock(&s->conn_mu);
        s->sweep_stop = true;
        pthread_cond_signal(&s->sweep_cond);
        pthread_mutex_unlock(&s->conn_mu);
        pthread_join(s->sweeper, NULL);
    }
    if (s->mhd) MHD_stop_daemon(s->mhd);
    if (s->listen_fd >= 0) close(s->listen_fd);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i].worker && s->cfg.worker_free) s->cfg.worker_free(s->workers[i].worker);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->long_cond);
    pthread_cond_destroy(&s->live_cond);
    pthread_mutex_destroy(&s->conn_mu);
    pthread_cond_destroy(&s->sweep_cond);
    free(s->workers);
    free(s);
}

/* ------------------------------------------------------------ accessors */

const char *http_request_method(const http_request *r) { return r->method; }
const char *http_request_uri(const http_request *r) { return r->uri; }
const char *http_request_path(const http_request *r) { return r->path; }

int http_request_set_path(http_request *r, const char *path)
{
    char *p = strdup(path);
    if (!p) return -1;
    free(r->path);
    r->path = p;
    return 0;
}
const char *http_request_query(const http_request *r) { return r->query; }
void *http_request_user(const http_request *r) { return r->user; }

const char *http_request_header(const http_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

typedef struct header_iter {
    int (*fn)(void *cls, const char *name, const char *value);
    void *cls;
} header_iter;

static enum MHD_Result header_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    header_iter *it = cls;
    return it->fn(it->cls, key, value ? value : "") == 0 ? MHD_YES : MHD_NO;
}

void http_request_headers_each(const http_request *r,
                               int (*fn)(void *cls, const char *name, const char *value), void *cls)
{
    header_iter it = {fn, cls};
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, header_cb, &it);
}

const char *http_request_body(const http_request *r, size_t *len)
{
    *len = r->body_len;
    return r->body ? r->body : "";
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (size 256); -1 if it does not fit. */
static int query_decode(const char *s, size_t n, char out[256])
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o >= 255) return -1;
        char c = s[i];
        if (c == '+') c = ' ';
        else if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

int http_query_each(const char *query, int (*fn)(void *cls, const char *key, const char *value),
                    void *cls)
{
    const char *p = query ? query : "";
    while (*p) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0) {
            const char *eq = memchr(p, '=', n);
            if (!eq) return -1;
            char key[256], value[256];
            size_t klen = (size_t)(eq - p);
            if (query_decode(p, klen, key) != 0 || query_decode(eq + 1, n - klen - 1, value) != 0)
                return -1;
            int rc = fn(cls, key, value);
            if (rc != 0) return rc;
        }
        p += n;
        if (*p == '&') p++;
    }
    return 0;
}

void http_request_set_body_limit(http_request *r, size_t limit) { r->body_limit = limit; }
void http_request_set_long_running(http_request *r) { r->long_running = true; }
void http_request_set_user(http_request *r, void *user) { r->user = user; }
void http_request_vet_first(http_request *r) { r->vet = true; }

void http_request_vet_first_long(http_request *r)
{
    r->vet = true;
    r->vet_long = true;
}

void http_request_set_data(http_request *r, void *data, void (*free_fn)(void *data))
{
    r->data = data;
    r->data_free = free_fn;
}

void *http_request_data(const http_request *r) { return r->data; }

void http_request_stream_body(http_request *r, http_body_fn fn, void *cls)
{
    r->stream_fn = fn;
    r->stream_cls = cls;
}

/* ------------------------------------------------------------ replies */

const char *http_reason(int status)
{
    const char *s = MHD_get_reason_phrase_for((unsigned)status);
    return s && *s ? s : "Unknown";
}

/* True when req may get a reply now (its own thread, none recorded yet). */
static bool may_reply(http_request *req, int status)
{
    if (http_current != req) {
        log_write(LOG_ERROR,
                  "event=http_reply_misuse status=%d reason=\"not on the request's thread\"",
                  status);
        return false;
    }
    if (req->status != 0) {
        log_write(LOG_ERROR, "event=http_reply_twice status=%d first_status=%d", status,
                  req->status);
        return false;
    }
    return true;
}

void http_add_header(http_request *req, const char *name, const char *value)
{
    http_header *h = calloc(1, sizeof *h);
    if (!h || !(h->name = strdup(name)) || !(h->value = strdup(value))) {
        if (h) free(h->name);
        free(h);
        return;
    }
    h->next = req->headers;
    req->headers = h;
}

void http_reply_bytes(http_request *req, int status, const char *content_type, const void *data,
                      size_t len)
{
    if (!may_reply(req, status)) return;
    if (len) {
        req->reply_body = malloc(len);
        if (!req->reply_body) {
            log_write(LOG_ERROR, "event=http_reply_oom status=%d bytes=%zu", status, len);
            req->status = 500;
            return;
        }
        memcpy(req->reply_body, data, len);
        req->reply_len = len;
    }
    if (content_type) req->content_type = strdup(content_type);
    req->status = status;
}

void http_reply_stream(http_request *req, int status, const char *content_type, int64_t size,
                       http_stream_fn fn, void *cls, void (*done)(void *cls))
{
    if (!may_reply(req, status)) {
        if (done) done(cls);
        return;
    }
    req->reply_fn = fn;
    req->reply_cls = cls;
    req->reply_done = done;
    req->reply_size = size;
    if (content_type) req->content_type = strdup(content_type);
    req->status = status;
}

void http_reply_upgrade(http_request *req, const char *protocol, http_upgrade_fn fn, void *cls)
{
    if (!may_reply(req, 101)) return;
    req->upgrade_fn = fn;
    req->upgrade_cls = cls;
    http_add_header(req, "Upgrade", protocol);
    http_add_header(req, "Connection", "Upgrade");
    req->status = 101;
}

int http_reply_status(const http_request *req) { return req->status; }

void http_reply_json(http_request *req, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";
        http_reply_bytes(req, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    http_reply_bytes(req, status, "application/json", text, strlen(text));
    free(text);
}

void http_reply_error(http_request *req, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_reply_json(req, status,
                    json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

void http_reply_empty(http_request *req, int status)
{
    http_reply_bytes(req, status, NULL, NULL, 0);
}
