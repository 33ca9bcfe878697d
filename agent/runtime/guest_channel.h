/* guest_channel: the host side of the torpor-guest protocol
 * (common/guest_protocol.h) over one VM's virtio-serial unix socket.
 *
 * Contract:
 * - open() connects to <dir>/<name> (relative to dirfd, no sun_path limit),
 *   starts one reader thread and performs the handshake: it PINGs (again
 *   every 250 ms) until a PONG for one of its own PINGs arrives. Until then
 *   bytes that are not a frame of ours are skipped: after a resume the guest
 *   may finish writing an answer it started before the pause, and that tail
 *   must not break the new connection. Request ids start at a random value
 *   per connection, so a late answer to a request from before a pause never
 *   matches a new request. After the handshake any framing error breaks the
 *   channel (the guest protocol says: never guess).
 * - call() sends one request and waits for the answer with the same id;
 *   several calls may be in flight at once from different threads. An ERROR
 *   answer fails with the guest's message.
 * - close() (pause, destroy, VM died) makes every waiting and later call
 *   fail promptly with "<reason>"; idempotent. The object is reference
 *   counted: whoever calls outside the owner's lock takes a reference. */
#ifndef TORPOR_GUEST_CHANNEL_H
#define TORPOR_GUEST_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "terr.h"

typedef struct guest_channel guest_channel;

int guest_channel_open(int dirfd, const char *name, const char *sandbox_id, int pidfd,
                       int timeout_ms, guest_channel **out, terr *err);

/* On success *resp is the malloc'd payload of the answer (NULL if empty),
 * whose type was expect_type. */
int guest_channel_call(guest_channel *ch, uint8_t type, const void *payload, size_t len,
                       uint8_t expect_type, int timeout_ms, uint8_t **resp, size_t *resp_len,
                       terr *err);

/* SYNC: host CLOCK_REALTIME + 64 bytes from getrandom(). */
int guest_channel_sync(guest_channel *ch, int timeout_ms, terr *err);

void guest_channel_close(guest_channel *ch, const char *reason);
void guest_channel_ref(guest_channel *ch);
void guest_channel_unref(guest_channel *ch); /* NULL-safe */

#endif
