/* metrics_http: the metrics listener of a service (libmicrohttpd).
 *
 * Contract: metrics_http_start binds addr ("127.0.0.1:9464", "[::1]:0";
 * port 0 = ephemeral, see metrics_http_port) and serves, on one internal
 * thread, GET (or HEAD) /metrics: 200 with metrics_render(reg) as
 * "text/plain; version=0.0.4; charset=utf-8". Any other path is 404, any
 * other method on /metrics 405; a render failure is 500. No key: the
 * listener is meant for loopback or a scrape network (docs/operations.md);
 * a non-loopback address is logged as a warning (event=metrics_not_loopback).
 * At most 32 connections, 10 s idle timeout, request bodies are discarded.
 * A scrape runs the registry's collectors, so it may block (e.g. on a DB
 * query) - only this listener's thread, never the service's API.
 * metrics_http_addr_off tells whether addr is "off" (listener disabled).
 * metrics_http_stop closes the listener and frees; NULL-safe. */
#ifndef TORPOR_METRICS_HTTP_H
#define TORPOR_METRICS_HTTP_H

#include <stdbool.h>

#include "metrics.h"
#include "terr.h"

typedef struct metrics_http metrics_http;

bool metrics_http_addr_off(const char *addr);
int metrics_http_start(const char *addr, metrics_registry *reg, metrics_http **out, terr *err);
int metrics_http_port(const metrics_http *h);
void metrics_http_stop(metrics_http *h);

#endif
