/* guest_sync: the SYNC request - set the clock and reseed the kernel RNG.
 *
 * Why: every sandbox is restored from one shared template snapshot (same
 * RNG state) and a resumed VM's clock stopped while it was paused. The host
 * sends its time and fresh random bytes after every create and resume.
 * Contract: sets CLOCK_REALTIME to req->unix_time_ns and adds req->random to
 * the input pool with ioctl(RNDADDENTROPY) on /dev/urandom, crediting 8 bits
 * per byte (needs root). Fills res with status 0, or the errno of the first
 * step that failed and a message; returns -1 only when out of memory. */
#ifndef TORPOR_GUEST_SYNC_H
#define TORPOR_GUEST_SYNC_H

#include "guest_protocol.h"

int guest_sync_apply(const gp_sync_req *req, gp_status_result *res, terr *err);

#endif
