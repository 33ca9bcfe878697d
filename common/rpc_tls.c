/* rpc_tls: PEM files -> grpc credentials (mutual TLS), with early, specific
 * errors for the mistakes operators actually make (wrong path, key of another
 * certificate, not PEM at all). */
#include "rpc_internal.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A PEM file larger than this is certainly not a certificate or a key. */
#define RPC_TLS_MAX_PEM_BYTES (1024 * 1024)

const char *rpc_status_name(grpc_status_code code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((int)code < 0 || (size_t)code >= sizeof names / sizeof names[0]) return "UNKNOWN_STATUS";
    return names[code];
}

int rpc_tls_mode(const rpc_tls_config *tls, bool *enabled, terr *err)
{
    int set = (tls->cert_path != NULL) + (tls->key_path != NULL) + (tls->ca_path != NULL);
    if (set == 0) {
        *enabled = false;
        return 0;
    }
    if (set == 3) {
        *enabled = true;
        return 0;
    }
    return terr_set(
        err, "tls: certificate, key and CA must be given together (have cert=%s key=%s ca=%s)",
        tls->cert_path ? tls->cert_path : "-", tls->key_path ? tls->key_path : "-",
        tls->ca_path ? tls->ca_path : "-");
}

/* Reads a whole PEM file into a NUL-terminated malloc'd string. */
static int rpc_tls_read_file(const char *what, const char *path, char **out, terr *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return terr_set(err, "tls: cannot read %s %s: %s", what, path, strerror(errno));
    char *buf = malloc(RPC_TLS_MAX_PEM_BYTES + 1);
    if (!buf) {
        fclose(f);
        return terr_set(err, "tls: out of memory reading %s", path);
    }
    size_t n = fread(buf, 1, RPC_TLS_MAX_PEM_BYTES + 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(buf);
        return terr_set(err, "tls: cannot read %s %s: read error", what, path);
    }
    if (n > RPC_TLS_MAX_PEM_BYTES) {
        free(buf);
        return terr_set(err, "tls: %s %s is larger than %d bytes", what, path,
                        RPC_TLS_MAX_PEM_BYTES);
    }
    buf[n] = '\0';
    if (strlen(buf) != n) {
        free(buf);
        return terr_set(err, "tls: %s %s is not a PEM file (binary content)", what, path);
    }
    *out = buf;
    return 0;
}

static X509 *rpc_tls_parse_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    if (!b) return NULL;
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return x;
}

static EVP_PKEY *rpc_tls_parse_key(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    if (!b) return NULL;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    return k;
}

/* Frees a buffer that held a private key, wiping it first. */
static void rpc_tls_free_secret(char *s)
{
    if (!s) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* Loads cert, key and CA and checks that they parse and that the key belongs
 * to the certificate. On success the caller frees the three strings. */
static int rpc_tls_load(const rpc_tls_config *tls, char **cert, char **key, char **ca, terr *err)
{
    *cert = *key = *ca = NULL;
    X509 *x = NULL, *cax = NULL;
    EVP_PKEY *k = NULL;
    int rc = -1;

    if (rpc_tls_read_file("certificate", tls->cert_path, cert, err) < 0) goto out;
    if (rpc_tls_read_file("private key", tls->key_path, key, err) < 0) goto out;
    if (rpc_tls_read_file("CA certificate", tls->ca_path, ca, err) < 0) goto out;

    if (!(x = rpc_tls_parse_cert(*cert))) {
        terr_set(err, "tls: %s holds no PEM certificate", tls->cert_path);
        goto out;
    }
    if (!(k = rpc_tls_parse_key(*key))) {
        terr_set(err, "tls: %s holds no unencrypted PEM private key", tls->key_path);
        goto out;
    }
    if (!(cax = rpc_tls_parse_cert(*ca))) {
        terr_set(err, "tls: %s holds no PEM CA certificate", tls->ca_path);
        goto out;
    }
    if (X509_check_private_key(x, k) != 1) {
        terr_set(err, "tls: private key %s does not match certificate %s", tls->key_path,
                 tls->cert_path);
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error(); /* OpenSSL's error queue is per thread; leave it clean */
    X509_free(x);
    X509_free(cax);
    EVP_PKEY_free(k);
    if (rc < 0) {
        free(*cert);
        rpc_tls_free_secret(*key);
        free(*ca);
        *cert = *key = *ca = NULL;
    }
    return rc;
}

int rpc_tls_server_creds(const rpc_tls_config *tls, grpc_server_credentials **out, terr *err)
{
    bool on;
    if (rpc_tls_mode(tls, &on, err) < 0) return -1;
    if (!on) {
        *out = grpc_insecure_server_credentials_create();
        return 0;
    }
    char *cert, *key, *ca;
    if (rpc_tls_load(tls, &cert, &key, &ca, err) < 0) return -1;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    /* grpc copies the PEM strings. */
    *out = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
    free(cert);
    rpc_tls_free_secret(key);
    free(ca);
    if (!*out) return terr_set(err, "tls: grpc refused the server certificate %s", tls->cert_path);
    return 0;
}

int rpc_tls_channel_creds(const rpc_tls_config *tls, grpc_channel_credentials **out, terr *err)
{
    bool on;
    if (rpc_tls_mode(tls, &on, err) < 0) return -1;
    if (!on) {
        *out = grpc_insecure_credentials_create();
        return 0;
    }
    char *cert, *key, *ca;
    if (rpc_tls_load(tls, &cert, &key, &ca, err) < 0) return -1;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    *out = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
    free(cert);
    rpc_tls_free_secret(key);
    free(ca);
    if (!*out) return terr_set(err, "tls: grpc refused the client certificate %s", tls->cert_path);
    return 0;
}
