/* ids: random hex from getrandom(2), SHA-256 through OpenSSL's EVP API. */
#include "ids.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/random.h>

static void ids_to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

int ids_random_hex(char *out, size_t nbytes, terr *err)
{
    if (!out) return terr_set(err, "ids: output buffer is NULL");
    if (nbytes == 0 || nbytes > IDS_MAX_RANDOM_BYTES)
        return terr_set(err, "ids: random length must be 1..%d bytes (got %zu)",
                        IDS_MAX_RANDOM_BYTES, nbytes);
    unsigned char buf[IDS_MAX_RANDOM_BYTES];
    size_t got = 0;
    while (got < nbytes) {
        ssize_t r = getrandom(buf + got, nbytes - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return terr_set(err, "ids: getrandom: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    ids_to_hex(buf, nbytes, out);
    memset(buf, 0, nbytes); /* API keys pass through here */
    return 0;
}

int ids_sha256_hex(const void *data, size_t len, char out[65])
{
    if (!out || (!data && len > 0)) return -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data ? data : "", len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -1;
    ids_to_hex(md, mdlen, out);
    return 0;
}
