/* tunnel_tls: mutual TLS for the port tunnel (see tunnel_tls.h). */
#include "tunnel_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd_io.h"
#include "mono_time.h"

struct tunnel_tls {
    SSL_CTX *ctx;
    bool server;
    char *name; /* server: the client name required; client: the server name override */
};

struct tunnel_tls_conn {
    SSL *ssl;
    int fd;
};

static int ssl_err(terr *err, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return terr_set(err, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

static int ctx_new(bool server, const char *cert, const char *key, const char *ca, const char *name,
                   tunnel_tls **out, terr *err)
{
    *out = NULL;
    if (!cert || !key || !ca) return terr_set(err, "tunnel TLS needs a certificate, key and CA");
    tunnel_tls *t = calloc(1, sizeof *t);
    if (!t) return terr_set(err, "out of memory");
    t->server = server;
    t->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!t->ctx || (name && !(t->name = strdup(name)))) {
        tunnel_tls_free(t);
        return ssl_err(err, "tunnel TLS context");
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    /* Non-application records never make a read wait for data that is not
     * coming (the pump polls and reads again). */
    SSL_CTX_clear_mode(t->ctx, SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    if (server) SSL_CTX_set_num_tickets(t->ctx, 0); /* one connection per token: no resumption */
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert) != 1) {
        tunnel_tls_free(t);
        return ssl_err(err, "tunnel TLS certificate");
    }
    if (SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx) != 1) {
        tunnel_tls_free(t);
        return ssl_err(err, "tunnel TLS key");
    }
    if (SSL_CTX_load_verify_locations(t->ctx, ca, NULL) != 1) {
        tunnel_tls_free(t);
        return ssl_err(err, "tunnel TLS CA");
    }
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                       NULL);
    *out = t;
    return 0;
}

int tunnel_tls_server(const char *cert, const char *key, const char *ca, const char *client_name,
                      tunnel_tls **out, terr *err)
{
    return ctx_new(true, cert, key, ca, client_name, out, err);
}

int tunnel_tls_client(const char *cert, const char *key, const char *ca, const char *server_name,
                      tunnel_tls **out, terr *err)
{
    return ctx_new(false, cert, key, ca, server_name, out, err);
}

void tunnel_tls_free(tunnel_tls *t)
{
    if (!t) return;
    if (t->ctx) SSL_CTX_free(t->ctx);
    free(t->name);
    free(t);
}

/* After an SSL call returned rc: waits (until deadline) for what it wants.
 * -1: a real error, or the deadline passed. */
static int ssl_wait(tunnel_tls_conn *c, int rc, int64_t deadline)
{
    int e = SSL_get_error(c->ssl, rc);
    short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (!ev) return -1;
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) return -1;
        struct pollfd pf = {.fd = c->fd, .events = ev};
        int n = poll(&pf, 1, (int)left);
        if (n > 0) return 0;
        if (n < 0 && errno != EINTR) return -1;
    }
}

static tunnel_tls_conn *conn_new(tunnel_tls *t, int fd, terr *err)
{
    tunnel_tls_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->ssl = SSL_new(t->ctx)) || SSL_set_fd(c->ssl, fd) != 1) {
        if (c && c->ssl) SSL_free(c->ssl);
        free(c);
        ssl_err(err, "tunnel TLS connection");
        return NULL;
    }
    c->fd = fd;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return c;
}

/* True when one of the certificate's identities is name (see the header). */
static bool cert_names(X509 *cert, const char *name)
{
    bool found = false, any_san = false;
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS || g->type == GEN_URI || g->type == GEN_EMAIL) {
            any_san = true;
            const ASN1_IA5STRING *s = g->d.ia5;
            found = (size_t)s->length == strlen(name) && !memcmp(s->data, name, strlen(name));
        } else if (g->type == GEN_IPADD) {
            any_san = true;
            char text[INET6_ADDRSTRLEN] = "";
            const ASN1_OCTET_STRING *ip = g->d.iPAddress;
            if (ip->length == 4) inet_ntop(AF_INET, ip->data, text, sizeof text);
            else if (ip->length == 16) inet_ntop(AF_INET6, ip->data, text, sizeof text);
            found = !strcmp(text, name);
        }
    }
    GENERAL_NAMES_free(sans);
    if (found || any_san) return found;
    char cn[256];
    return X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) >
               0 &&
           !strcmp(cn, name);
}

tunnel_tls_conn *tunnel_tls_accept(tunnel_tls *t, int fd, int timeout_ms, terr *err)
{
    tunnel_tls_conn *c = conn_new(t, fd, err);
    if (!c) return NULL;
    int64_t deadline = mono_ms() + timeout_ms;
    int rc;
    while ((rc = SSL_accept(c->ssl)) != 1)
        if (ssl_wait(c, rc, deadline) != 0) {
            ssl_err(err, "tunnel TLS handshake");
            tunnel_tls_end(c);
            return NULL;
        }
    X509 *peer = SSL_get1_peer_certificate(c->ssl);
    bool ok = peer && SSL_get_verify_result(c->ssl) == X509_V_OK &&
              (!t->name || cert_names(peer, t->name));
    X509_free(peer);
    if (!ok) {
        terr_set(err, "tunnel client certificate refused%s%s", t->name ? ": not " : "",
                 t->name ? t->name : "");
        tunnel_tls_end(c);
        return NULL;
    }
    return c;
}

tunnel_tls_conn *tunnel_tls_connect(tunnel_tls *t, int fd, const char *host, int timeout_ms,
                                    terr *err)
{
    tunnel_tls_conn *c = conn_new(t, fd, err);
    if (!c) return NULL;
    const char *name = t->name ? t->name : host;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    int set = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name)
                    : SSL_set1_host(c->ssl, name);
    if (!is_ip) SSL_set_tlsext_host_name(c->ssl, name);
    if (set != 1) {
        ssl_err(err, "tunnel TLS server name");
        tunnel_tls_end(c);
        return NULL;
    }
    int64_t deadline = mono_ms() + timeout_ms;
    int rc;
    while ((rc = SSL_connect(c->ssl)) != 1)
        if (ssl_wait(c, rc, deadline) != 0) {
            ssl_err(err, "tunnel TLS handshake");
            tunnel_tls_end(c);
            return NULL;
        }
    return c;
}

int tunnel_tls_read_line(tunnel_tls_conn *c, char *buf, size_t n, int timeout_ms, terr *err)
{
    int64_t deadline = mono_ms() + timeout_ms;
    size_t got = 0;
    while (got + 1 < n) {
        char ch;
        int rc = SSL_read(c->ssl, &ch, 1);
        if (rc == 1) {
            if (ch == '\n') {
                buf[got] = '\0';
                return 0;
            }
            buf[got++] = ch;
            continue;
        }
        if (ssl_wait(c, rc, deadline) != 0) {
            ERR_clear_error();
            return terr_set(err, "no line within %d ms", timeout_ms);
        }
    }
    return terr_set(err, "line over %zu bytes", n - 1);
}

int tunnel_tls_write_all(tunnel_tls_conn *c, const void *data, size_t n, int timeout_ms, terr *err)
{
    int64_t deadline = mono_ms() + timeout_ms;
    const char *p = data;
    while (n) {
        int rc = SSL_write(c->ssl, p, n > 65536 ? 65536 : (int)n);
        if (rc > 0) {
            p += rc;
            n -= (size_t)rc;
        } else if (ssl_wait(c, rc, deadline) != 0) {
            ERR_clear_error();
            return terr_set(err, "TLS write failed");
        }
    }
    return 0;
}

void tunnel_tls_pump(tunnel_tls_conn *c, int fd, void (*on_traffic)(void *cls), void *cls)
{
    char buf[16384]; /* one TLS record */
    bool tls_open = true, fd_open = true;
    terr ignored;
    while (tls_open || fd_open) {
        /* TLS -> fd: everything OpenSSL has, then poll. */
        while (tls_open) {
            int n = SSL_read(c->ssl, buf, sizeof buf);
            if (n > 0) {
                if (fd_send_all(fd, buf, (size_t)n) != 0) return;
                if (on_traffic) on_traffic(cls);
                continue;
            }
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
            ERR_clear_error();
            if (e != SSL_ERROR_ZERO_RETURN && e != SSL_ERROR_SYSCALL) return; /* broken */
            shutdown(fd, SHUT_WR); /* the peer's close_notify (or end): passed on */
            tls_open = false;
        }
        if (!tls_open && !fd_open) break;
        struct pollfd pf[2] = {{.fd = tls_open ? c->fd : -1, .events = POLLIN},
                               {.fd = fd_open ? fd : -1, .events = POLLIN}};
        int r = poll(pf, 2, -1);
        if (r < 0 && errno != EINTR) return;
        if (r <= 0 || !pf[1].revents) continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            /* our end: close_notify, the TLS direction stays readable */
            int rc = SSL_shutdown(c->ssl);
            int64_t deadline = mono_ms() + 5000;
            while (rc < 0 && ssl_wait(c, rc, deadline) == 0) rc = SSL_shutdown(c->ssl);
            ERR_clear_error();
            fd_open = false;
            continue;
        }
        /* as a plain send would: as long as the peer takes it */
        if (tunnel_tls_write_all(c, buf, (size_t)n, INT32_MAX, &ignored) != 0) return;
        if (on_traffic) on_traffic(cls);
    }
}

void tunnel_tls_end(tunnel_tls_conn *c)
{
    if (!c) return;
    SSL_free(c->ssl);
    ERR_clear_error();
    free(c);
}
