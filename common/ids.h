/* ids: random identifiers and digests.
 *
 * ids_random_hex: fills out with 2*nbytes lowercase hex digits from the
 * kernel CSPRNG (getrandom) plus a NUL; out must hold 2*nbytes+1 chars.
 * Sandbox ids are "sb-" + ids_random_hex(8), API keys "tpk_" +
 * ids_random_hex(16). Returns 0, or -1 with err set (nbytes 0 or > 4096,
 * NULL out, or the kernel refusing randomness).
 *
 * ids_sha256_hex: SHA-256 of data as 64 lowercase hex digits + NUL (API keys
 * are stored only as this digest). Returns 0, or -1 on NULL arguments or a
 * crypto library failure. */
#ifndef TORPOR_IDS_H
#define TORPOR_IDS_H

#include <stddef.h>

#include "terr.h"

#define IDS_MAX_RANDOM_BYTES 4096

int ids_random_hex(char *out, size_t nbytes, terr *err);
int ids_sha256_hex(const void *data, size_t len, char out[65]);

#endif
