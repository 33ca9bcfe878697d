/* proxy_stream: one plain (non-Upgrade) HTTP request through the port
 * proxy, streamed both ways between the client's connection (libmicrohttpd)
 * and the tunnel to the guest (docs/network.md, "Inbound").
 *
 * Contract: proxy_stream_start takes the tunnel fd once the request head has
 * gone out on it, becomes the request's data (http_request_set_data) and
 * starts one relay thread. Memory is fixed whatever the sizes: two
 * PROXY_RING rings (client body -> guest, made only for a request with a
 * body; guest answer body -> client) and a PROXY_HEAD_MAX head buffer. The client's body pieces (proxy_stream_body,
 * the route's http_body_fn, I/O thread) go into the up ring, framed as
 * chunks when chunked_body, and the client is paused (HTTP_BODY_PAUSE)
 * while it is full; the relay writes them to the guest. The handler calls
 * proxy_stream_answer once the body has ended: it ends a chunked body,
 * waits for the guest's answer head and replies with its status and headers
 * (hop-by-hop ones and Content-Length/Transfer-Encoding dropped) and a
 * streamed body (http_reply_stream: the guest's Content-Length, else
 * chunked; a chunked answer is decoded), paused while the relay has nothing
 * for it. An interim 1xx answer is skipped. HEAD, 204 and 304 have no body.
 *
 * Bounds and failures: some byte must move (guest to relay, relay to guest,
 * client body in, answer out to the client when the ring was full) at least
 * every idle_ms (torpor-cp --proxy-idle-timeout, PROXY_IDLE_DEFAULT_MS); else (a silent guest; a guest and a client each
 * waiting for the other), or when the guest's answer head is not HTTP/1.x or
 * over PROXY_HEAD_MAX, or the guest closes first, the reply is 502
 * bad_gateway before the head, and the answer is cut (an error for the
 * client) after it. An answer cut short by the guest (fewer bytes than its
 * Content-Length, no last chunk) is cut short for the client too. A client
 * that reads slowly holds the guest back through the full ring. A guest
 * that closes its side (it answered early) gets the rest of the body
 * dropped; its answer still goes out. The relay ends when the
 * answer has ended or the request is gone; the stream is freed by the last
 * of request, relay and reply. */
#ifndef TORPOR_CP_PROXY_STREAM_H
#define TORPOR_CP_PROXY_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "http_server.h"

#define PROXY_IDLE_DEFAULT_MS 60000 /* no byte either way for this long ends a request */
#define PROXY_RING (256 * 1024)    /* each direction's buffer */
#define PROXY_HEAD_MAX (64 * 1024) /* the guest's answer headers */
#define PROXY_READ (64 * 1024)     /* one read from the guest */

typedef struct proxy_stream proxy_stream;

/* Worker. with_body: the request announced one (the up ring is made only
 * then). idle_ms > 0: the no-progress deadline above. NULL (fd closed) when
 * out of memory or threads. */
proxy_stream *proxy_stream_start(http_request *req, int fd, bool with_body, bool chunked_body,
                                 bool head_request, int idle_ms);
/* The same for an answer whose first n bytes (n < PROXY_RING) were read
 * from the guest already (an Upgrade request the guest did not accept). */
proxy_stream *proxy_stream_start_read(http_request *req, int fd, const char *got, size_t n,
                                      bool head_request, int idle_ms);
/* I/O thread: an http_body_fn for the request (cls unused). */
int proxy_stream_body(void *cls, http_request *req, const char *data, size_t len);
/* Worker, handler, once the body has ended: replies (see above). */
void proxy_stream_answer(proxy_stream *p, http_request *req);

#endif
