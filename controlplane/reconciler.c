/* reconciler: one pass per host every interval (see reconciler.h): probe,
 * list, settle rows, acknowledge auto-pause notices, sweep orphans, record
 * host state. Why over 600 lines: the pass is one transaction-shaped
 * sequence whose steps share the host's lock and the DB clock taken before
 * the list; splitting it would spread one invariant over several files. */
#include "reconciler.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cp_metrics.h"
#include "db.h"
#include "host_probe.h"
#include "log.h"
#include "mono_time.h"
#include "torpor_limits.h"

#define BIT(s) SB_STATUS_BIT(s)
/* A create may take up to its deadline; a pending row older than this was
 * abandoned (e.g. the replica that created it died). */
#define PENDING_GRACE_SEC (AGENT_DEADLINE_CREATE_MS / 1000.0 + 60.0)

_Static_assert(AGENT_DEADLINE_PAUSE_MS <= AGENT_DEADLINE_TRANSITION_MAX_MS &&
                   AGENT_DEADLINE_RESUME_MS <= AGENT_DEADLINE_TRANSITION_MAX_MS &&
                   AGENT_DEADLINE_CREATE_MS <= AGENT_DEADLINE_TRANSITION_MAX_MS &&
                   RECONCILER_GRACE_DEFAULT_SEC * 1000 > AGENT_DEADLINE_TRANSITION_MAX_MS,
               "the default grace must outlast every transition's agent deadline");

sb_status reconciler_decide(sb_status db, agent_view view, bool auto_paused, bool past_grace)
{
    switch (db) {
    case SB_RUNNING:
        if (view == AGENT_VIEW_RUNNING || view == AGENT_VIEW_PAUSING || view == AGENT_VIEW_RESUMING)
            return db; /* still held; an auto_paused notice for a running VM is stale */
        if (view == AGENT_VIEW_PAUSED || auto_paused) return SB_PAUSED;
        return SB_STOPPED;
    case SB_PAUSING:
        if (!past_grace) return db; /* a request thread is still on it */
        if (view == AGENT_VIEW_RUNNING) return SB_RUNNING;
        if (view == AGENT_VIEW_PAUSED || (view == AGENT_VIEW_ABSENT && auto_paused))
            return SB_PAUSED;
        if (view == AGENT_VIEW_ABSENT) return SB_STOPPED;
        return db; /* the agent is still pausing it */
    case SB_RESUMING:
        if (!past_grace) return db;
        if (view == AGENT_VIEW_RUNNING) return SB_RUNNING;
        if (view == AGENT_VIEW_PAUSED) return SB_PAUSED;
        /* Absent: a failed resume that consumed the snapshot destroys the
         * sandbox; an old auto-pause notice does not bring it back. */
        if (view == AGENT_VIEW_ABSENT) return SB_STOPPED;
        return db; /* the agent is still resuming it */
    case SB_PENDING:
        if (!past_grace) return db;
        if (view == AGENT_VIEW_RUNNING) return SB_RUNNING;
        /* The create landed and the reaper auto-paused it since. */
        if (view == AGENT_VIEW_PAUSED || (view == AGENT_VIEW_ABSENT && auto_paused))
            return SB_PAUSED;
        if (view == AGENT_VIEW_ABSENT) return SB_ERROR;
        return db;
    case SB_PAUSED:
        /* A paused sandbox the host no longer holds can never be resumed.
         * (One held as running stays paused in the DB: its TTL pauses it
         * again, and a resume request then finds it running.) */
        if (view == AGENT_VIEW_ABSENT && past_grace) return SB_STOPPED;
        return db;
    case SB_MOVING:
        /* A move whose control plane stopped refreshing it: the source
         * still holds the sandbox, so it is paused there again. */
        if (past_grace && view == AGENT_VIEW_PAUSED) return SB_PAUSED;
        return db;
    default: /* stopped, error: final */ return db;
    }
}

bool reconciler_is_orphan(int row_status, double row_age_sec, double grace_sec, bool seen_last_pass)
{
    /* No row of this host: rows are inserted before the create RPC and never
     * deleted, so the sandbox belongs to someone else (another control
     * plane's database, or another host id at the same address). */
    if (row_status < 0) return false;
    if (row_status != SB_STOPPED && row_status != SB_ERROR) return false;
    return seen_last_pass || row_age_sec >= grace_sec;
}

/* ListSandboxes answers are sorted by id once (sort_answer), so that each
 * row's lookup is a binary search: a host may hold 10,000 sandboxes. */
static int cmp_info(const void *a, const void *b)
{
    const Torpor__Hostagent__V1__SandboxInfo *x =
        *(const Torpor__Hostagent__V1__SandboxInfo *const *)a;
    const Torpor__Hostagent__V1__SandboxInfo *y =
        *(const Torpor__Hostagent__V1__SandboxInfo *const *)b;
    return strcmp(x && x->sandbox_id ? x->sandbox_id : "", y && y->sandbox_id ? y->sandbox_id : "");
}

static int cmp_str(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return strcmp(x ? x : "", y ? y : "");
}

static void sort_answer(Torpor__Hostagent__V1__ListSandboxesResponse *resp)
{
    /* An empty repeated field is a NULL array: qsort must not see it. */
    if (resp->n_sandboxes > 1)
        qsort(resp->sandboxes, resp->n_sandboxes, sizeof *resp->sandboxes, cmp_info);
    if (resp->n_auto_paused_sandbox_ids > 1)
        qsort(resp->auto_paused_sandbox_ids, resp->n_auto_paused_sandbox_ids,
              sizeof *resp->auto_paused_sandbox_ids, cmp_str);
}

/* agent_view_of over a sorted answer; *at (if not NULL) gets the entry's
 * position in resp->sandboxes, or SIZE_MAX when absent. */
static agent_view view_at(const Torpor__Hostagent__V1__ListSandboxesResponse *resp, const char *id,
                          bool *auto_paused, size_t *at)
{
    const char *key = id;
    *auto_paused = resp->n_auto_paused_sandbox_ids > 0 &&
                   bsearch(&key, resp->auto_paused_sandbox_ids, resp->n_auto_paused_sandbox_ids,
                           sizeof *resp->auto_paused_sandbox_ids, cmp_str) != NULL;
    Torpor__Hostagent__V1__SandboxInfo probe = TORPOR__HOSTAGENT__V1__SANDBOX_INFO__INIT,
                                       *pp = &probe;
    probe.sandbox_id = (char *)id;
    Torpor__Hostagent__V1__SandboxInfo **hit =
        resp->n_sandboxes
            ? bsearch(&pp, resp->sandboxes, resp->n_sandboxes, sizeof *resp->sandboxes, cmp_info)
            : NULL;
    if (at) *at = hit ? (size_t)(hit - resp->sandboxes) : SIZE_MAX;
    if (!hit) return AGENT_VIEW_ABSENT;
    /* The one-entry answer gives the status mapping of agent_client. */
    Torpor__Hostagent__V1__ListSandboxesResponse one =
        TORPOR__HOSTAGENT__V1__LIST_SANDBOXES_RESPONSE__INIT;
    one.sandboxes = hit;
    one.n_sandboxes = 1;
    bool unused;
    return agent_view_of(&one, id, &unused);
}

static agent_view view_of(const Torpor__Hostagent__V1__ListSandboxesResponse *resp, const char *id,
                          bool *auto_paused)
{
    return view_at(resp, id, auto_paused, NULL);
}

/* A malloc'd list of sandbox ids. */
typedef struct id_list {
    char **ids;
    size_t n;
} id_list;

static void id_list_free(id_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->ids[i]);
    free(l->ids);
    l->ids = NULL;
    l->n = 0;
}

static bool id_list_has(const id_list *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->ids[i], id) == 0) return true;
    return false;
}

static int id_list_push(id_list *l, const char *id, terr *err)
{
    char **grown = realloc(l->ids, (l->n + 1) * sizeof *grown);
    if (!grown) return terr_set(err, "out of memory");
    l->ids = grown;
    if (!(l->ids[l->n] = strdup(id))) return terr_set(err, "out of memory");
    l->n++;
    return 0;
}

/* Per-host memory of the reconciler thread. */
typedef struct host_state {
    char host_id[64];
    id_list acks;     /* acks not delivered yet */
    id_list suspects; /* seen on the last pass: paused rows the agent did not
                       * hold, agent sandboxes under a stopped/error row */
    bool failing;     /* last pass failed: log the next failures at debug level only */
    /* Written under reconciler.mu (read by reconciler_host_reach). */
    int reachable;      /* the agent answered the last ListSandboxes: 1/0 */
    int64_t checked_ms; /* mono_ms of that call */
} host_state;

struct reconciler {
    reconciler_config cfg;
    db_conn *db;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    host_state *hosts; /* per host, created on first sight */
    size_t n_hosts;
};

static host_state *state_for(reconciler *r, const char *host_id)
{
    for (size_t i = 0; i < r->n_hosts; i++)
        if (strcmp(r->hosts[i].host_id, host_id) == 0) return &r->hosts[i];
    pthread_mutex_lock(&r->mu); /* reconciler_host_reach reads the array */
    host_state *grown = realloc(r->hosts, (r->n_hosts + 1) * sizeof *grown);
    host_state *h = NULL;
    if (grown) {
        r->hosts = grown;
        h = &r->hosts[r->n_hosts];
        memset(h, 0, sizeof *h);
        snprintf(h->host_id, sizeof h->host_id, "%s", host_id);
        r->n_hosts++;
    }
    pthread_mutex_unlock(&r->mu);
    return h;
}

static void note_reach(reconciler *r, host_state *hs, bool reachable)
{
    pthread_mutex_lock(&r->mu);
    hs->reachable = reachable;
    hs->checked_ms = mono_ms();
    pthread_mutex_unlock(&r->mu);
}

int reconciler_host_reach(reconciler *r, const char *host_id, double *age_sec)
{
    int rc = -1;
    if (!r) return -1;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_hosts; i++)
        if (strcmp(r->hosts[i].host_id, host_id) == 0 && r->hosts[i].checked_ms) {
            rc = r->hosts[i].reachable;
            *age_sec = (double)(mono_ms() - r->hosts[i].checked_ms) / 1e3;
        }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* What one pass decided beyond the row changes it committed. */
typedef struct pass_result {
    id_list ack;      /* auto-pause notices to acknowledge */
    id_list orphans;  /* agent sandboxes to destroy */
    id_list suspects; /* the next pass's host_state.suspects */
} pass_result;

static void pass_result_free(pass_result *p)
{
    id_list_free(&p->ack);
    id_list_free(&p->orphans);
    id_list_free(&p->suspects);
}

/* Agent sandboxes whose row on this host is stopped or error: orphans when
 * reconciler_is_orphan says so, else suspects for the next pass. Sandboxes
 * without a row of this host are never touched. held[i]: resp->sandboxes[i]
 * has a row on this host that apply read in a live status; apply never
 * moves such a row to stopped or error while the agent lists it (only an
 * absent sandbox is stopped), so those are skipped without a query: usually
 * all of them (one that a request stops meanwhile is seen by the next pass). */
static int find_orphans(reconciler *r, const db_host *host, const host_state *hs,
                        const Torpor__Hostagent__V1__ListSandboxesResponse *resp, const bool *held,
                        pass_result *out, terr *err)
{
    size_t n = resp->n_sandboxes;
    if (n == 0) return 0;
    bool *foreign = NULL;
    double *fages = NULL;
    const char **rowless = NULL;
    const char **ids = calloc(n, sizeof *ids);
    int *statuses = calloc(n, sizeof *statuses);
    double *ages = calloc(n, sizeof *ages);
    int rc = -1;
    if (!ids || !statuses || !ages) {
        terr_set(err, "out of memory");
        goto out;
    }
    size_t k = 0;
    /* Only well-formed ids: they are the agent's text, logged and sent back
     * in DestroySandbox (and no row can have another shape). */
    for (size_t i = 0; i < n; i++)
        if (!held[i] && resp->sandboxes[i] && resp->sandboxes[i]->sandbox_id &&
            limits_sandbox_id_valid(resp->sandboxes[i]->sandbox_id))
            ids[k++] = resp->sandboxes[i]->sandbox_id;
    if (k == 0) {
        rc = 0;
        goto out;
    }
    if (db_sandbox_statuses(r->db, host->id, ids, k, statuses, ages, err) != 0) goto out;
    /* A sandbox whose row names another host (with another agent) and is
     * not being moved: a move finished or was undone elsewhere; this copy
     * is nobody's. */
    /* Only the ids without a row on this host are asked about (usually none). */
    foreign = calloc(k ? k : 1, sizeof *foreign);
    fages = calloc(k ? k : 1, sizeof *fages);
    rowless = calloc(k ? k : 1, sizeof *rowless);
    if (!foreign || !fages || !rowless) {
        terr_set(err, "out of memory");
        goto out;
    }
    size_t nr = 0;
    for (size_t i = 0; i < k; i++)
        if (statuses[i] < 0) rowless[nr++] = ids[i];
    if (db_sandbox_foreign(r->db, host->id, rowless, nr, foreign, fages, err) != 0) goto out;
    for (size_t i = 0; i < nr; i++) {
        if (!foreign[i]) continue;
        bool seen = id_list_has(&hs->suspects, rowless[i]);
        if (id_list_push(&out->suspects, rowless[i], err) != 0) goto out;
        if (!seen && fages[i] < r->cfg.grace_sec) {
            log_info("event=orphan_suspected sandbox_id=%s host_id=%s row=another_host", rowless[i],
                     host->id);
            continue;
        }
        if (id_list_push(&out->orphans, rowless[i], err) != 0) goto out;
    }
    for (size_t i = 0; i < k; i++) {
        if (statuses[i] != SB_STOPPED && statuses[i] != SB_ERROR) continue;
        bool seen = id_list_has(&hs->suspects, ids[i]);
        const char *row = sb_status_name((sb_status)statuses[i]);
        if (id_list_push(&out->suspects, ids[i], err) != 0)
            goto out; /* retried if the destroy fails */
        if (!reconciler_is_orphan(statuses[i], ages[i], r->cfg.grace_sec, seen)) {
            log_info("event=orphan_suspected sandbox_id=%s host_id=%s row_status=%s", ids[i],
                     host->id, row);
            continue;
        }
        if (id_list_push(&out->orphans, ids[i], err) != 0) goto out;
    }
    rc = 0;
out:
    free(ids);
    free(statuses);
    free(ages);
    free(foreign);
    free(fages);
    free(rowless);
    return rc;
}

/* Applies reconciler_decide to the host's rows in one transaction and
 * collects what may be done once it has committed. */
static int apply(reconciler *r, const db_host *host, const host_state *hs,
                 const Torpor__Hostagent__V1__ListSandboxesResponse *resp, int64_t list_sent_us,
                 pass_result *out, terr *err)
{
    memset(out, 0, sizeof *out);
    int64_t t0 = mono_ms();
    if (db_begin(r->db, err) != 0) return -1;
    db_pass_row *rows = NULL;
    size_t n = 0;
    bool *held = calloc(resp->n_sandboxes ? resp->n_sandboxes : 1, sizeof *held);
    if (!held) {
        db_rollback(r->db);
        return terr_set(err, "out of memory");
    }
    int *statuses = NULL;
    unsigned mask = BIT(SB_PENDING) | BIT(SB_RUNNING) | BIT(SB_PAUSING) | BIT(SB_PAUSED) |
                    BIT(SB_RESUMING) | BIT(SB_MOVING);
    /* Read without locking (10,000 row locks cost more than the rest of the
     * pass); each change below holds only if its row is still the one read. */
    if (db_sandbox_rows_for_host(r->db, host->id, mask, &rows, &n, err) != 0) goto fail;
    int64_t t_read = mono_ms();
    for (size_t i = 0; i < n; i++) {
        bool auto_paused;
        size_t at;
        agent_view view = view_at(resp, rows[i].id, &auto_paused, &at);
        if (at != SIZE_MAX) held[at] = true;
        /* A row written after ListSandboxes was sent (a create or resume that
         * just finished) may be newer than the agent's answer: next pass.
         * Both times are the database's clock, so a stall between the
         * answer and this transaction cannot make a fresh row look old. */
        if (rows[i].last_updated_us >= list_sent_us) continue;
        bool past_grace;
        if (rows[i].status == SB_PAUSED) {
            if (view != AGENT_VIEW_ABSENT) continue;
            /* Lost only when two consecutive answers agree. */
            past_grace = id_list_has(&hs->suspects, rows[i].id);
            if (!past_grace) {
                if (id_list_push(&out->suspects, rows[i].id, err) != 0) goto fail;
                log_info("event=paused_sandbox_missing sandbox_id=%s host_id=%s", rows[i].id,
                         host->id);
                continue;
            }
        } else {
            double grace = rows[i].status == SB_PENDING  ? PENDING_GRACE_SEC
                           : rows[i].status == SB_MOVING ? MOVE_STALE_SEC
                                                         : r->cfg.grace_sec;
            past_grace = rows[i].age_sec >= grace;
        }
        sb_status to = reconciler_decide(rows[i].status, view, auto_paused, past_grace);
        if (to == rows[i].status) continue;
        unsigned flags = 0;
        if (to == SB_RUNNING)
            flags = DB_SET_ACTIVE | (rows[i].status != SB_PAUSING ? DB_SET_STARTED : 0);
        bool changed;
        const char *msg =
            to == SB_ERROR ? "create was abandoned; the agent does not hold the sandbox"
            : rows[i].status == SB_PAUSED ? "the host no longer holds the paused sandbox"
                                          : NULL;
        if (db_sandbox_transition_unchanged(r->db, rows[i].id, BIT(rows[i].status),
                                            rows[i].last_updated_us, to, flags, msg, &changed,
                                            err) != 0)
            goto fail;
        if (!changed) { /* written since it was read: the next pass decides on the new row */
            log_debug("event=reconcile_row_moved_on sandbox_id=%s host_id=%s", rows[i].id,
                      host->id);
            continue;
        }
        log_info("event=reconcile_change sandbox_id=%s host_id=%s from=%s to=%s auto_paused=%d",
                 rows[i].id, host->id, sb_status_name(rows[i].status), sb_status_name(to),
                 auto_paused);
    }

    size_t na = resp->n_auto_paused_sandbox_ids;
    if (na > 0) {
        statuses = calloc(na, sizeof *statuses);
        if (!statuses) {
            terr_set(err, "out of memory");
            goto fail;
        }
        if (db_sandbox_statuses(r->db, NULL, (const char *const *)resp->auto_paused_sandbox_ids, na,
                                statuses, NULL, err) != 0)
            goto fail;
        for (size_t i = 0; i < na; i++) {
            const char *id = resp->auto_paused_sandbox_ids[i];
            bool unused;
            bool settled =
                statuses[i] < 0 || statuses[i] == SB_PAUSED || statuses[i] == SB_STOPPED ||
                statuses[i] == SB_ERROR ||
                (statuses[i] == SB_RUNNING && view_of(resp, id, &unused) == AGENT_VIEW_RUNNING);
            if (settled && id_list_push(&out->ack, id, err) != 0) goto fail;
        }
    }
    int64_t t_decided = mono_ms();
    if (find_orphans(r, host, hs, resp, held, out, err) != 0) goto fail;
    int64_t t_orphans = mono_ms();
    if (db_commit(r->db, err) != 0) goto fail;
    log_debug("event=reconcile_apply_timing host_id=%s rows=%zu read_ms=%lld decide_ms=%lld "
              "orphans_ms=%lld commit_ms=%lld",
              host->id, n, (long long)(t_read - t0), (long long)(t_decided - t_read),
              (long long)(t_orphans - t_decided), (long long)(mono_ms() - t_orphans));
    free(rows);
    free(held);
    free(statuses);
    return 0;
fail:
    db_rollback(r->db);
    free(rows);
    free(held);
    free(statuses);
    pass_result_free(out);
    return -1;
}

static void destroy_orphans(const db_host *host, rpc_client *c, const id_list *orphans)
{
    for (size_t i = 0; i < orphans->n; i++) {
        terr err;
        grpc_status_code st = agent_destroy(c, orphans->ids[i], &err);
        if (st == GRPC_STATUS_OK || st == GRPC_STATUS_NOT_FOUND) {
            log_info("event=orphan_destroyed sandbox_id=%s host_id=%s agent_not_found=%d",
                     orphans->ids[i], host->id, st == GRPC_STATUS_NOT_FOUND);
        } else {
            /* Still a suspect: the next pass tries again. */
            char q[LOG_QUOTE_MAX];
            log_warn(
                "event=orphan_destroy_failed sandbox_id=%s host_id=%s grpc_status=%d error=\"%s\"",
                orphans->ids[i], host->id, (int)st, log_quote(err.msg, q, sizeof q));
        }
    }
}

/* An agent id fit to record and log unquoted: [A-Za-z0-9-], < 64 chars. */
static bool agent_id_safe(const char *id)
{
    size_t n = strlen(id);
    if (n >= 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
    }
    return true;
}

/* Is the agent that answered the one this host's rows are about? Records
 * the first identity seen; on a mismatch logs it (every pass) and fails,
 * so that nothing is changed, acknowledged or destroyed for the host. */
static int check_identity(reconciler *r, const db_host *host, host_state *hs,
                          const Torpor__Hostagent__V1__ListSandboxesResponse *resp, terr *err)
{
    const char *got = resp->agent_id ? resp->agent_id : "";
    bool safe = agent_id_safe(got);
    char recorded[64];
    bool found;
    /* A malformed id is never recorded: it always reads as a mismatch. */
    if (db_host_claim_identity(r->db, host->id, safe ? got : "", recorded, &found, err) != 0)
        return -1;
    if (!found) return terr_set(err, "host %s was removed", host->id);
    if (safe && strcmp(recorded, got) == 0) {
        if (*got && !*host->agent_id) /* got passed the agent-id shape check (safe) */
            log_info("event=agent_identity_recorded host_id=%s agent_id=%s addr=%s", host->id, got,
                     host->address);
        return 0;
    }
    char q[LOG_QUOTE_MAX];
    log_error(
        "event=agent_identity_mismatch host_id=%s addr=%s expected=%s got=\"%s\" rows_changed=0 "
        "note=\"a different agent answers at this host's address; nothing is changed for the host until "
        "the address points at its agent again, or, if the agent was replaced on purpose, "
        "torpor-cp hosts reset-identity --id %s\"",
        host->id, host->address, *recorded ? recorded : "(none)",
        log_quote(*got ? got : "(none)", q, sizeof q), host->id);
    /* Whatever was suspected came from another agent's answers. */
    id_list_free(&hs->suspects);
    return terr_set(err, "agent identity mismatch on host %s (expected %s, got %s)", host->id,
                    *recorded ? recorded : "(none)",
                    !safe  ? "(malformed)"
                    : *got ? got
                           : "(none)");
}

/* The health probe (host_probe.h), by every replica on every pass (not only
 * the one that holds the host's lock, so a replica that can reach the agent
 * keeps it ready while another cannot). *c gets the agent's client when it
 * answered. */
static int probe(reconciler *r, const db_host *host, host_state *hs, rpc_client **c, terr *err)
{
    int rc = host_probe(r->db, r->cfg.agents, host, r->cfg.interval_sec, c, err);
    note_reach(r, hs, rc == 0);
    return rc;
}

/* Steps 1-3 of the contract, for a host whose agent (c) just answered the
 * probe, under the host's lock. */
static int reconcile_host(reconciler *r, const db_host *host, host_state *hs, rpc_client *c,
                          terr *err)
{
    Torpor__Hostagent__V1__ListSandboxesResponse *resp;
    /* The database's time before the call: rows updated after it are
     * skipped by apply (see there). */
    int64_t list_sent_us;
    if (db_clock_us(r->db, &list_sent_us, err) != 0) return -1;
    int64_t t0 = mono_ms();
    grpc_status_code st = agent_list(c, hs->acks.ids, hs->acks.n, &resp, err);
    note_reach(r, hs, st == GRPC_STATUS_OK);
    if (st != GRPC_STATUS_OK) return terr_wrap(err, "ListSandboxes on host %s", host->id);
    if (check_identity(r, host, hs, resp, err) != 0) {
        /* The acks stay queued for the right agent (ids are random, so the
         * one that answered has none of them). */
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return -1;
    }
    id_list_free(&hs->acks); /* delivered: the agent has dropped them */
    sort_answer(resp);

    int64_t t_listed = mono_ms();
    pass_result pr;
    size_t n_agent = resp->n_sandboxes;
    int rc = apply(r, host, hs, resp, list_sent_us, &pr, err);
    log_debug("event=reconcile_timing host_id=%s agent_sandboxes=%zu list_ms=%lld apply_ms=%lld",
              host->id, n_agent, (long long)(t_listed - t0), (long long)(mono_ms() - t_listed));
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (rc != 0) return terr_wrap(err, "reconcile host %s", host->id); /* acknowledges nothing */
    id_list_free(&hs->suspects);
    hs->suspects = pr.suspects;
    pr.suspects = (id_list){0};

    if (pr.ack.n > 0) {
        /* Committed: acknowledge now; if that fails, with the next pass. */
        terr ack_err;
        Torpor__Hostagent__V1__ListSandboxesResponse *resp2;
        st = agent_list(c, pr.ack.ids, pr.ack.n, &resp2, &ack_err);
        if (st == GRPC_STATUS_OK) {
            protobuf_c_message_free_unpacked(&resp2->base, NULL);
            for (size_t i = 0; i < pr.ack.n; i++)
                log_info("event=auto_pause_acked sandbox_id=%s host_id=%s", pr.ack.ids[i],
                         host->id);
        } else {
            char q[LOG_QUOTE_MAX];
            log_warn("event=ack_deferred host_id=%s count=%zu error=\"%s\"", host->id, pr.ack.n,
                     log_quote(ack_err.msg, q, sizeof q));
            hs->acks = pr.ack;
            pr.ack = (id_list){0};
        }
    }
    destroy_orphans(host, c, &pr.orphans);
    pass_result_free(&pr);
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
        bool locked = false, ok;
        terr herr;
        char hq[LOG_QUOTE_MAX];
        rpc_client *c = NULL;
        int64_t t0 = mono_ms();
        host_state *hs = state_for(r, hosts[i].id);
        if (!hs) {
            ok = false;
            terr_set(&herr, "out of memory");
        } else if (probe(r, &hosts[i], hs, &c, &herr) != 0) {
            ok = false;
        } else if (db_try_advisory_lock(r->db, key, &locked, &herr) != 0) {
            log_warn("event=reconcile_lock_failed host_id=%s error=\"%s\"", hosts[i].id,
                     log_quote(herr.msg, hq, sizeof hq));
            rc = -1;
            continue;
        } else if (!locked) {
            log_debug("event=reconcile_skip host_id=%s reason=locked_by_other_replica",
                      hosts[i].id);
            continue;
        } else {
            int64_t t_probed = mono_ms();
            ok = reconcile_host(r, &hosts[i], hs, c, &herr) == 0;
            log_debug("event=reconcile_host_timing host_id=%s probe_and_lock_ms=%lld "
                      "reconcile_ms=%lld",
                      hosts[i].id, (long long)(t_probed - t0), (long long)(mono_ms() - t_probed));
        }
        cp_metrics_reconcile(hosts[i].id, ok, (double)(mono_ms() - t0) / 1000.0);
        if (!ok) {
            /* One warning per outage, not one per pass. */
            if (hs && hs->failing)
                log_debug("event=reconcile_failed host_id=%s error=\"%s\"", hosts[i].id,
                          log_quote(herr.msg, hq, sizeof hq));
            else
                log_warn("event=reconcile_failed host_id=%s error=\"%s\"", hosts[i].id,
                         log_quote(herr.msg, hq, sizeof hq));
            if (hs) hs->failing = true;
            rc = -1;
        } else if (hs && hs->failing) {
            hs->failing = false;
            log_info("event=reconcile_recovered host_id=%s", hosts[i].id);
        }
        if (locked && db_advisory_unlock(r->db, key, &herr) != 0)
            log_warn("event=reconcile_unlock_failed host_id=%s error=\"%s\"", hosts[i].id,
                     log_quote(herr.msg, hq, sizeof hq));
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
        struct timespec ts = mono_deadline((int64_t)(r->cfg.interval_sec * 1e3));
        while (!r->stop && pthread_cond_timedwait(&r->cond, &r->mu, &ts) == 0) {}
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
    for (size_t i = 0; i < r->n_hosts; i++) {
        id_list_free(&r->hosts[i].acks);
        id_list_free(&r->hosts[i].suspects);
    }
    free(r->hosts);
    db_close(r->db);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
