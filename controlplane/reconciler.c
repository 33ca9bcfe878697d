#include "reconciler.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"

#define BIT(s) SB_STATUS_BIT(s)
/* A create may take up to its deadline; a pending row older than this was
 * abandoned (e.g. the replica that created it died). */
#define PENDING_GRACE_SEC (AGENT_DEADLINE_CREATE_MS / 1000.0 + 60.0)

sb_status reconciler_decide(sb_status db, agent_view view, bool auto_paused, bool past_grace)
{
    switch (db) {
    case SB_RUNNING:
        if (view == AGENT_VIEW_RUNNING || view == AGENT_VIEW_PAUSING || view == AGENT_VIEW_RESUMING)
            return db; /* still held; an auto_paused notice for a running VM is stale */
        if (view == AGENT_VIEW_PAUSED || auto_paused) return SB_PAUSED;
        return SB_STOPPED;
    case SB_PAUSING:
    case SB_RESUMING:
        if (!past_grace) return db; /* a request thread is still on it */
        if (view == AGENT_VIEW_RUNNING) return SB_RUNNING;
        if (view == AGENT_VIEW_PAUSED || (view == AGENT_VIEW_ABSENT && auto_paused)) return SB_PAUSED;
        if (view == AGENT_VIEW_ABSENT) return SB_STOPPED;
        return db; /* the agent is still pausing/resuming it */
    case SB_PENDING:
        if (!past_grace) return db;
        if (view == AGENT_VIEW_RUNNING) return SB_RUNNING;
        if (view == AGENT_VIEW_ABSENT) return SB_ERROR;
        return db;
    default: /* paused, stopped, error: nothing the agent says changes them */
        return db;
    }
}

/* Per-host memory of the reconciler thread. */
typedef struct host_acks {
    char host_id[64];
    char **ids;   /* acks not delivered yet */
    size_t n;
    bool failing; /* last pass failed: log the next failures at debug level only */
} host_acks;

struct reconciler {
    reconciler_config cfg;
    db_conn *db;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    host_acks *acks; /* acks that could not be delivered yet, per host */
    size_t n_acks;
};

static void free_ids(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

static host_acks *acks_for(reconciler *r, const char *host_id, bool create)
{
    for (size_t i = 0; i < r->n_acks; i++)
        if (strcmp(r->acks[i].host_id, host_id) == 0) return &r->acks[i];
    if (!create) return NULL;
    host_acks *grown = realloc(r->acks, (r->n_acks + 1) * sizeof *grown);
    if (!grown) return NULL;
    r->acks = grown;
    host_acks *a = &r->acks[r->n_acks++];
    memset(a, 0, sizeof *a);
    snprintf(a->host_id, sizeof a->host_id, "%s", host_id);
    return a;
}

/* Applies reconciler_decide to the host's rows in one transaction and
 * collects the auto-pause notices that may be acknowledged once it has
 * committed. */
static int apply(reconciler *r, const db_host *host, const Torpor__Hostagent__V1__ListSandboxesResponse *resp,
                 double min_age, char ***ack_out, size_t *n_ack_out, terr *err)
{
    *ack_out = NULL;
    *n_ack_out = 0;
    if (db_begin(r->db, err) != 0) return -1;
    sandbox_row *rows = NULL;
    double *ages = NULL;
    size_t n = 0;
    int *statuses = NULL;
    char **ack = NULL;
    size_t n_ack = 0;
    unsigned mask = BIT(SB_PENDING) | BIT(SB_RUNNING) | BIT(SB_PAUSING) | BIT(SB_RESUMING);
    if (db_sandbox_lock_for_host(r->db, host->id, mask, &rows, &ages, &n, err) != 0) goto fail;
    for (size_t i = 0; i < n; i++) {
        /* A row written after ListSandboxes was sent (a create or resume that
         * just finished) may be newer than the agent's answer: next pass. */
        if (ages[i] < min_age) continue;
        bool auto_paused;
        agent_view view = agent_view_of(resp, rows[i].id, &auto_paused);
        double grace = rows[i].status == SB_PENDING ? PENDING_GRACE_SEC : r->cfg.grace_sec;
        sb_status to = reconciler_decide(rows[i].status, view, auto_paused, ages[i] >= grace);
        if (to == rows[i].status) continue;
        unsigned flags = 0;
        if (to == SB_RUNNING) flags = DB_SET_ACTIVE | (rows[i].status != SB_PAUSING ? DB_SET_STARTED : 0);
        bool changed;
        const char *msg = to == SB_ERROR ? "create was abandoned; the agent does not hold the sandbox" : NULL;
        if (db_sandbox_transition(r->db, rows[i].id, BIT(rows[i].status), to, flags, msg, NULL, &changed, err) != 0)
            goto fail;
        log_info("event=reconcile_change sandbox_id=%s host_id=%s from=%s to=%s auto_paused=%d", rows[i].id,
                 host->id, sb_status_name(rows[i].status), sb_status_name(to), auto_paused);
    }

    size_t na = resp->n_auto_paused_sandbox_ids;
    if (na > 0) {
        statuses = calloc(na, sizeof *statuses);
        ack = calloc(na, sizeof *ack);
        if (!statuses || !ack) {
            terr_set(err, "out of memory");
            goto fail;
        }
        if (db_sandbox_statuses(r->db, (const char *const *)resp->auto_paused_sandbox_ids, na, statuses, err) != 0)
            goto fail;
        for (size_t i = 0; i < na; i++) {
            const char *id = resp->auto_paused_sandbox_ids[i];
            bool unused;
            bool settled = statuses[i] < 0 || statuses[i] == SB_PAUSED || statuses[i] == SB_STOPPED ||
                           statuses[i] == SB_ERROR ||
                           (statuses[i] == SB_RUNNING && agent_view_of(resp, id, &unused) == AGENT_VIEW_RUNNING);
            if (!settled) continue;
            if (!(ack[n_ack] = strdup(id))) {
                terr_set(err, "out of memory");
                goto fail;
            }
            n_ack++;
        }
    }
    if (db_commit(r->db, err) != 0) goto fail;
    free(rows);
    free(ages);
    free(statuses);
    *ack_out = ack;
    *n_ack_out = n_ack;
    return 0;
fail:
    db_rollback(r->db);
    free(rows);
    free(ages);
    free(statuses);
    free_ids(ack, n_ack);
    return -1;
}

static int reconcile_host(reconciler *r, const db_host *host, terr *err)
{
    rpc_client *c;
    if (agent_pool_get(r->cfg.agents, host, &c, err) != 0) return -1;

    host_acks *pending = acks_for(r, host->id, false);
    Torpor__Hostagent__V1__ListSandboxesResponse *resp;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    grpc_status_code st = agent_list(c, pending ? pending->ids : NULL, pending ? pending->n : 0, &resp, err);
    if (st != GRPC_STATUS_OK) return terr_wrap(err, "ListSandboxes on host %s", host->id);
    if (pending) { /* delivered: the agent has dropped them */
        free_ids(pending->ids, pending->n);
        pending->ids = NULL;
        pending->n = 0;
    }

    char **ack;
    size_t n_ack;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* Margin for the transaction's own start and clock granularity. */
    double min_age = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9 + 0.5;
    int rc = apply(r, host, resp, min_age, &ack, &n_ack, err);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (rc != 0) return terr_wrap(err, "reconcile host %s", host->id); /* acknowledges nothing */
    if (n_ack == 0) {
        free(ack);
        return 0;
    }

    /* Committed: acknowledge now; if that fails, with the next pass. */
    terr ack_err;
    Torpor__Hostagent__V1__ListSandboxesResponse *resp2;
    st = agent_list(c, ack, n_ack, &resp2, &ack_err);
    if (st == GRPC_STATUS_OK) {
        protobuf_c_message_free_unpacked(&resp2->base, NULL);
        for (size_t i = 0; i < n_ack; i++)
            log_info("event=auto_pause_acked sandbox_id=%s host_id=%s", ack[i], host->id);
        free_ids(ack, n_ack);
        return 0;
    }
    log_warn("event=ack_deferred host_id=%s count=%zu error=\"%s\"", host->id, n_ack, ack_err.msg);
    pending = acks_for(r, host->id, true);
    if (!pending) {
        free_ids(ack, n_ack);
        return terr_set(err, "out of memory");
    }
    pending->ids = ack;
    pending->n = n_ack;
    return 0;
}

int reconciler_run_once(reconciler *r, terr *err)
{
    db_host *hosts;
    size_t n;
    if (db_host_list(r->db, &hosts, &n, err) != 0) return -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char key[128];
        snprintf(key, sizeof key, "torpor.reconcile:%s", hosts[i].id);
        bool locked;
        terr herr;
        if (db_try_advisory_lock(r->db, key, &locked, &herr) != 0) {
            log_warn("event=reconcile_lock_failed host_id=%s error=\"%s\"", hosts[i].id, herr.msg);
            rc = -1;
            continue;
        }
        if (!locked) {
            log_debug("event=reconcile_skip host_id=%s reason=locked_by_other_replica", hosts[i].id);
            continue;
        }
        host_acks *hs = acks_for(r, hosts[i].id, true);
        if (reconcile_host(r, &hosts[i], &herr) != 0) {
            /* One warning per outage, not one per pass. */
            if (hs && hs->failing)
                log_debug("event=reconcile_failed host_id=%s error=\"%s\"", hosts[i].id, herr.msg);
            else
                log_warn("event=reconcile_failed host_id=%s error=\"%s\"", hosts[i].id, herr.msg);
            if (hs) hs->failing = true;
            rc = -1;
        } else if (hs && hs->failing) {
            hs->failing = false;
            log_info("event=reconcile_recovered host_id=%s", hosts[i].id);
        }
        if (db_advisory_unlock(r->db, key, &herr) != 0)
            log_warn("event=reconcile_unlock_failed host_id=%s error=\"%s\"", hosts[i].id, herr.msg);
    }
    free(hosts);
    if (rc != 0) terr_set(err, "some hosts were not reconciled (see the log)");
    return rc;
}

static void *reconciler_main(void *arg)
{
    reconciler *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        terr err;
        reconciler_run_once(r, &err); /* failures are logged per host */
        pthread_mutex_lock(&r->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long long ns = (long long)(r->cfg.interval_sec * 1e9);
        ts.tv_sec += ns / 1000000000LL;
        ts.tv_nsec += ns % 1000000000LL;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!r->stop && pthread_cond_timedwait(&r->cond, &r->mu, &ts) == 0) {
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int reconciler_start(const reconciler_config *cfg, reconciler **out, terr *err)
{
    *out = NULL;
    if (cfg->interval_sec <= 0) return terr_set(err, "reconcile interval must be > 0");
    reconciler *r = calloc(1, sizeof *r);
    if (!r) return terr_set(err, "out of memory");
    r->cfg = *cfg;
    if (db_open(cfg->database_url, &r->db, err) != 0) {
        free(r);
        return terr_wrap(err, "reconciler");
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&r->thread, NULL, reconciler_main, r) != 0) {
        db_close(r->db);
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return terr_set(err, "start reconciler thread failed");
    }
    *out = r;
    return 0;
}

void reconciler_stop(reconciler *r)
{
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    for (size_t i = 0; i < r->n_acks; i++) free_ids(r->acks[i].ids, r->acks[i].n);
    free(r->acks);
    db_close(r->db);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
