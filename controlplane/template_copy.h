/* template_copy: a custom template's image copied, byte-identical, from a
 * host that holds it to the others (docs/templates.md, "Copies").
 *
 * Contract:
 *  - template_copy_image streams one image from src to dst through the
 *    agents (ExportTemplateImage, then Read/WriteTemplateImageChunk of at
 *    most TRANSFER_CHUNK_MAX each, all-zero chunks sent as holes, each call
 *    with its own deadline, then CommitTemplateImage, which verifies every
 *    file and the digest on dst before the image is linked under its name).
 *    The source must export exactly want_digest. Any failure aborts the
 *    import on dst: nothing partial is ever usable there.
 *  - template_copy_run_once claims one due (template, host) pair in the
 *    database (db_template_copy_claim: one copy per pair at a time across
 *    replicas; a failed one is retried with a growing backoff; a template
 *    is copied only to hosts that read ready, and only once per host), finds
 *    a source holding the digest, copies (refreshing the row's updated_at
 *    every TEMPLATE_COPY_BEAT_CHUNKS chunks, so a slow copy is never taken
 *    for a dead one), and settles the row ready or error. A copy whose row went away meanwhile (template deleted) is
 *    deleted again on dst. Returns 1 when a pair was claimed (whatever the
 *    copy's outcome), 0 when nothing is due, -1 on a database error.
 *  - The copier thread runs run_once in a loop (at most
 *    TEMPLATE_COPIES_PER_PASS per pass) every interval on its own database
 *    connection: a template that became ready, a host added later and a
 *    failed copy are all picked up without a request. Copies are made one at
 *    a time per control plane, so what a client can make the platform copy
 *    is bounded by the templates it may build (each copied once a host). */
#ifndef TORPOR_CP_TEMPLATE_COPY_H
#define TORPOR_CP_TEMPLATE_COPY_H

#include <stdbool.h>

#include "agent_client.h"
#include "db.h"
#include "terr.h"

/* A copy not settled within this long lost its control plane: it may be
 * taken over (the agent's import of it expires after TB_IMPORT_STALE_SEC). */
#define TEMPLATE_COPY_STALE_SEC 900
#define TEMPLATE_COPIES_PER_PASS 4

typedef struct template_copy_stats {
    long long bytes, holes, chunks, ms;
} template_copy_stats;

/* beat (may be NULL) is called every TEMPLATE_COPY_BEAT_CHUNKS chunks. */
#define TEMPLATE_COPY_BEAT_CHUNKS 32
grpc_status_code template_copy_image(agent_pool *agents, const db_host *src, const db_host *dst,
                                     const char *image, const char *want_digest,
                                     void (*beat)(void *), void *beat_ctx,
                                     template_copy_stats *stats, terr *err);

/* tpl_id / host_id: restrict the claim (NULL = any). */
int template_copy_run_once(db_conn *db, agent_pool *agents, const char *tpl_id, const char *host_id,
                           terr *err);

typedef struct template_copier template_copier;
typedef struct template_copier_config {
    const char *database_url;
    agent_pool *agents;
    double interval_sec;
} template_copier_config;

int template_copier_start(const template_copier_config *cfg, template_copier **out, terr *err);
/* Wakes the thread, waits for the copy in progress, joins. */
void template_copier_stop(template_copier *c);

#endif
