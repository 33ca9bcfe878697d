/* template_copy: copies of template images between hosts (template_copy.h). */
#include "template_copy.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent_templates.h"
#include "db_templates.h"
#include "log.h"
#include "mono_time.h"

typedef struct beat_fn {
    void (*fn)(void *);
    void *ctx;
} beat_fn;

static grpc_status_code copy_file(rpc_client *src, rpc_client *dst, const char *image,
                                  const Torpor__Hostagent__V1__TransferFile *f, const beat_fn *beat,
                                  template_copy_stats *stats, terr *err)
{
    int64_t off = 0;
    while (off < f->size) {
        Torpor__Hostagent__V1__ReadSandboxFileChunkResponse *chunk = NULL;
        grpc_status_code st = agent_read_template_chunk(src, image, f->name, off, &chunk, err);
        if (st != GRPC_STATUS_OK) return st;
        int64_t n = chunk->zero_len > 0 ? chunk->zero_len : (int64_t)chunk->data.len;
        if (n == 0) {
            protobuf_c_message_free_unpacked(&chunk->base, NULL);
            terr_set(err, "file %s ended at %lld of %lld bytes on the source", f->name,
                     (long long)off, (long long)f->size);
            return GRPC_STATUS_DATA_LOSS;
        }
        st = agent_write_template_chunk(
            dst, image, f->name, off, chunk->zero_len > 0 ? NULL : chunk->data.data,
            chunk->zero_len > 0 ? 0 : chunk->data.len, chunk->zero_len, err);
        if (chunk->zero_len > 0) stats->holes += n;
        else stats->bytes += n;
        protobuf_c_message_free_unpacked(&chunk->base, NULL);
        if (st != GRPC_STATUS_OK) return st;
        off += n;
        if (++stats->chunks % TEMPLATE_COPY_BEAT_CHUNKS == 0 && beat->fn) beat->fn(beat->ctx);
    }
    return GRPC_STATUS_OK;
}

grpc_status_code template_copy_image(agent_pool *agents, const db_host *src, const db_host *dst,
                                     const char *image, const char *want_digest,
                                     void (*beat)(void *), void *beat_ctx,
                                     template_copy_stats *stats, terr *err)
{
    memset(stats, 0, sizeof *stats);
    beat_fn bf = {beat, beat_ctx};
    int64_t t0 = mono_ms();
    rpc_client *sc = NULL, *dc = NULL;
    if (agent_pool_get(agents, src, &sc, err) != 0 || agent_pool_get(agents, dst, &dc, err) != 0)
        return GRPC_STATUS_UNAVAILABLE;
    Torpor__Hostagent__V1__ExportTemplateImageResponse *m = NULL;
    grpc_status_code st = agent_export_template_image(sc, image, &m, err);
    if (st != GRPC_STATUS_OK) return st;
    if (strcmp(m->digest, want_digest) != 0) {
        terr_set(err, "host %s holds %s with digest %.16s, not %.16s", src->id, image, m->digest,
                 want_digest);
        protobuf_c_message_free_unpacked(&m->base, NULL);
        return GRPC_STATUS_FAILED_PRECONDITION;
    }
    for (size_t i = 0; i < m->n_files && st == GRPC_STATUS_OK; i++)
        st = copy_file(sc, dc, image, m->files[i], &bf, stats, err);
    if (st == GRPC_STATUS_OK) st = agent_commit_template_image(dc, image, m, err);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    if (st == GRPC_STATUS_ALREADY_EXISTS) {
        /* Committed by an earlier copy whose settle was lost: done if the
         * target holds exactly this digest. */
        Torpor__Hostagent__V1__GetTemplateResponse *g = NULL;
        terr gerr;
        if (agent_get_template(dc, image, 0, &g, &gerr) == GRPC_STATUS_OK && g->template_ &&
            strcmp(g->template_->status, "ready") == 0 &&
            strcmp(g->template_->digest, want_digest) == 0)
            st = GRPC_STATUS_OK;
        if (g) protobuf_c_message_free_unpacked(&g->base, NULL);
    }
    if (st != GRPC_STATUS_OK && st != GRPC_STATUS_ALREADY_EXISTS) {
        terr aerr;
        if (agent_abort_template_image(dc, image, &aerr) != GRPC_STATUS_OK) {
            char q[LOG_QUOTE_MAX];
            log_warn("event=template_copy_abort_failed template_id=%s host_id=%s error=\"%s\"",
                     image, dst->id, log_quote(aerr.msg, q, sizeof q));
        }
    }
    stats->ms = mono_ms() - t0;
    return st;
}

static int host_of(db_conn *db, const char *id, db_host *out, terr *err)
{
    bool found;
    if (db_host_get(db, id, out, &found, err) != 0) return -1;
    if (!found) return terr_set(err, "host %s is not registered", id);
    return 0;
}

typedef struct beat_ctx {
    db_conn *db;
    const template_copy_claim *cl;
} beat_ctx;

/* The claimed row is alive: refresh its updated_at. */
static void heartbeat(void *arg)
{
    beat_ctx *b = arg;
    terr err;
    if (db_template_copy_heartbeat(b->db, b->cl->template_id, b->cl->host_id, &err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=template_copy_heartbeat_failed template_id=%s host_id=%s error=\"%s\"",
                 b->cl->template_id, b->cl->host_id, log_quote(err.msg, q, sizeof q));
    }
}

int template_copy_run_once(db_conn *db, agent_pool *agents, const char *tpl_id, const char *host_id,
                           terr *err)
{
    template_copy_claim cl;
    bool found;
    if (db_template_copy_claim(db, tpl_id, host_id, TEMPLATE_COPY_STALE_SEC, &cl, &found, err) != 0)
        return -1;
    if (!found) return 0;
    db_host src, dst;
    terr cerr = {{0}};
    grpc_status_code st = GRPC_STATUS_UNAVAILABLE;
    template_copy_stats stats = {0};
    if (db_template_copy_source(db, cl.template_id, cl.digest, cl.host_id, &src, &found, &cerr) ==
            0 &&
        !found)
        terr_set(&cerr, "no reachable host holds the image with digest %.16s", cl.digest);
    else if (found && host_of(db, cl.host_id, &dst, &cerr) == 0) {
        log_info("event=template_copy_start template_id=%s from=%s to=%s digest=%.16s",
                 cl.template_id, src.id, dst.id, cl.digest);
        beat_ctx bc = {db, &cl};
        st = template_copy_image(agents, &src, &dst, cl.template_id, cl.digest, heartbeat, &bc,
                                 &stats, &cerr);
    }
    bool ok = st == GRPC_STATUS_OK;
    char q[LOG_QUOTE_MAX];
    bool changed = false;
    terr serr;
    if (db_template_copy_settle(db, cl.template_id, cl.host_id, ok, ok ? "" : cerr.msg, &changed,
                                &serr) != 0) {
        log_error("event=template_copy_settle_failed template_id=%s host_id=%s error=\"%s\"",
                  cl.template_id, cl.host_id, log_quote(serr.msg, q, sizeof q));
        return 1;
    }
    if (ok) {
        log_info(
            "event=template_copied template_id=%s from=%s to=%s digest=%.16s bytes=%lld holes=%lld chunks=%lld duration_ms=%lld",
            cl.template_id, src.id, cl.host_id, cl.digest, stats.bytes, stats.holes, stats.chunks,
            stats.ms);
        if (!changed) {
            /* The template went away (or another replica took over): a
             * copy no row names is removed again. */
            rpc_client *dc;
            terr derr;
            if (agent_pool_get(agents, &dst, &dc, &derr) == 0)
                agent_delete_template(dc, cl.template_id, &derr);
            log_info("event=template_copy_dropped template_id=%s host_id=%s", cl.template_id,
                     cl.host_id);
        }
    } else {
        log_warn("event=template_copy_failed template_id=%s host_id=%s grpc_status=%d error=\"%s\"",
                 cl.template_id, cl.host_id, (int)st, log_quote(cerr.msg, q, sizeof q));
    }
    return 1;
}

/* ------------------------------------------------------------ the thread */

struct template_copier {
    char *database_url;
    agent_pool *agents;
    double interval_sec;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
};

static void *copier_main(void *arg)
{
    template_copier *c = arg;
    db_conn *db = NULL;
    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        pthread_mutex_unlock(&c->mu);
        terr err;
        if (!db && db_open(c->database_url, &db, &err) != 0) db = NULL;
        for (int i = 0; db && i < TEMPLATE_COPIES_PER_PASS; i++) {
            int r = template_copy_run_once(db, c->agents, NULL, NULL, &err);
            if (r < 0) {
                char q[LOG_QUOTE_MAX];
                log_warn("event=template_copy_pass_failed error=\"%s\"",
                         log_quote(err.msg, q, sizeof q));
            }
            if (r <= 0) break;
            pthread_mutex_lock(&c->mu);
            bool stop = c->stopping;
            pthread_mutex_unlock(&c->mu);
            if (stop) break;
        }
        pthread_mutex_lock(&c->mu);
        if (c->stopping) break;
        struct timespec ts = mono_deadline((int64_t)(c->interval_sec * 1000));
        int rc = 0;
        while (!c->stopping && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    if (db) db_close(db);
    return NULL;
}

int template_copier_start(const template_copier_config *cfg, template_copier **out, terr *err)
{
    *out = NULL;
    template_copier *c = calloc(1, sizeof *c);
    if (!c || !(c->database_url = strdup(cfg->database_url))) {
        free(c);
        return terr_set(err, "out of memory");
    }
    c->agents = cfg->agents;
    c->interval_sec = cfg->interval_sec > 0 ? cfg->interval_sec : 5.0;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&c->thread, NULL, copier_main, c) != 0) {
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c->database_url);
        free(c);
        return terr_set(err, "start the template copier thread failed");
    }
    *out = c;
    return 0;
}

void template_copier_stop(template_copier *c)
{
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->database_url);
    free(c);
}
