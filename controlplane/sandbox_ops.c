/* sandbox_ops: the sandbox state machine of the control plane (contract in
 * sandbox_ops.h). Why over 600 lines: every operation is the same
 * compare-and-set -> agent call -> settle shape over shared helpers
 * (load, agent_for, settle_from_agent, create's host loop); one file keeps
 * the transitions side by side for review. */
#include "sandbox_ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ids.h"
#include "host_probe.h"
#include "log.h"
#include "mono_time.h"
#include "ping_route.h"
#include "reconciler.h"
#include "touch_gate.h"

#define BIT(s) SB_STATUS_BIT(s)

/* ------------------------------------------------------------ outcomes */

static void set_outcome(sbop_result *res, sbop_outcome o) { res->outcome = o; }

/* Hosts a create tries before answering no capacity. */
#define CREATE_MAX_HOSTS 16

static void internal(sbop_result *res, const terr *err)
{
    if (err != &res->err) res->err = *err;
    set_outcome(res, SBOP_INTERNAL);
}

static void agent_failed(sbop_result *res, grpc_status_code st, const terr *err)
{
    res->grpc = st;
    if (err != &res->err) res->err = *err;
    set_outcome(res, SBOP_AGENT_FAILED);
}

static void conflict(sbop_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conflict(sbop_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->err.msg, sizeof res->err.msg, fmt, ap);
    va_end(ap);
    set_outcome(res, SBOP_CONFLICT);
}

/* ------------------------------------------------------------ helpers */

/* Loads the team's sandbox id into res->row; -1 with the outcome set. */
static int load(const sbop_ctx *c, const char *id, sbop_result *res)
{
    bool found;
    if (db_sandbox_get(c->db, c->team_id, id, &res->row, &found, &res->err) != 0) {
        internal(res, &res->err);
        return -1;
    }
    if (!found) {
        terr_set(&res->err, "sandbox %s not found", id);
        set_outcome(res, SBOP_NOT_FOUND);
        return -1;
    }
    return 0;
}

/* After a conditional update lost a race: conflict, with the row as it is now. */
static void conflict_now(const sbop_ctx *c, const char *id, const char *what, sbop_result *res)
{
    if (load(c, id, res) != 0) return;
    conflict(res, "%s (status: %s)", what, sb_status_name(res->row.status));
}

static int require_running(sbop_result *res)
{
    if (res->row.status == SB_RUNNING) return 0;
    conflict(res, "sandbox is not running (status: %s)", sb_status_name(res->row.status));
    return -1;
}

/* The agent client of host (the row's); -1 with the outcome set. */
static int agent_of_host(const sbop_ctx *c, sbop_result *res, const db_host *host,
                         rpc_client **client)
{
    const sandbox_row *row = &res->row;
    if (strcmp(host->status, "unreachable") == 0) {
        /* Not asked at all: a frozen agent would hold the call until its deadline. */
        terr_set(
            &res->err,
            "host %s of sandbox %s is unreachable (its agent has not answered for %.0f s); the sandbox keeps "
            "its status and can be used again once the host answers",
            row->host_id, row->id, host->last_seen_age_sec < 0 ? 0 : host->last_seen_age_sec);
        set_outcome(res, SBOP_HOST_UNREACHABLE);
        return -1;
    }
    if (agent_pool_get(c->agents, host, client, &res->err) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=agent_connect_failed host_id=%s sandbox_id=%s error=\"%s\"", row->host_id,
                  row->id, log_quote(res->err.msg, q, sizeof q));
        set_outcome(res, SBOP_AGENT_UNREACHABLE);
        return -1;
    }
    return 0;
}

/* The agent client of the row's host; -1 with the outcome set. */
static int agent_for(const sbop_ctx *c, sbop_result *res, rpc_client **client)
{
    db_host host;
    bool found;
    const sandbox_row *row = &res->row;
    if (db_host_get(c->db, row->host_id, &host, &found, &res->err) != 0) {
        internal(res, &res->err);
        return -1;
    }
    if (!found) {
        terr_set(&res->err, "host %s of sandbox %s is not registered", row->host_id, row->id);
        internal(res, &res->err);
        return -1;
    }
    return agent_of_host(c, res, &host, client);
}

void sandbox_ops_touch(const sbop_ctx *c, const char *id)
{
    bool changed;
    terr err;
    if (!touch_gate_due(c->touches, id, mono_ms())) return; /* written < TOUCH_GATE_MS ago */
    /* The agent already counted the activity; a failed DB write only delays
     * last_active_at in the REST view, so it is logged, not answered. */
    if (db_sandbox_touch(c->db, id, &changed, &err) != 0) {
        touch_gate_forget(c->touches, id);
        char q[LOG_QUOTE_MAX];
        log_warn("event=touch_failed sandbox_id=%s error=\"%s\"", id,
                 log_quote(err.msg, q, sizeof q));
    }
}

/* Marks a row still in `from` stopped: the agent said it holds nothing. */
static void mark_stopped(const sbop_ctx *c, const char *id, sb_status from)
{
    bool ch;
    terr dberr;
    if (db_sandbox_transition(c->db, id, BIT(from), SB_STOPPED, 0, NULL, NULL, &ch, &dberr) != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=mark_stopped_failed sandbox_id=%s error=\"%s\"", id,
                  log_quote(dberr.msg, q, sizeof q));
    }
}

/* Asks the agent what it holds about id and moves the row from `from`
 * accordingly. Returns the status the row ends in, or `from` when the agent
 * could not be asked or reports a transition still in progress. */
static sb_status settle_from_agent(const sbop_ctx *c, rpc_client *client, const char *id,
                                   sb_status from, sandbox_row *out)
{
    Torpor__Hostagent__V1__ListSandboxesResponse *resp;
    terr err;
    char q[LOG_QUOTE_MAX];
    grpc_status_code st = agent_list(client, NULL, 0, &resp, &err);
    if (st != GRPC_STATUS_OK) {
        log_warn("event=settle_list_failed sandbox_id=%s error=\"%s\"", id,
                 log_quote(err.msg, q, sizeof q));
        return from;
    }
    bool auto_paused;
    agent_view view = agent_view_of(resp, id, &auto_paused);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    sb_status to = reconciler_decide(from, view, auto_paused, true);
    if (to == from) return from;
    unsigned flags =
        to == SB_RUNNING ? DB_SET_ACTIVE | (from != SB_PAUSING ? DB_SET_STARTED : 0) : 0;
    bool changed;
    if (db_sandbox_transition(c->db, id, BIT(from), to, flags, NULL, out, &changed, &err) != 0) {
        log_error("event=settle_write_failed sandbox_id=%s error=\"%s\"", id,
                  log_quote(err.msg, q, sizeof q));
        return from;
    }
    log_info("event=sandbox_settled sandbox_id=%s from=%s to=%s", id, sb_status_name(from),
             sb_status_name(to));
    return changed ? to : from;
}

/* ------------------------------------------------------------ create */

bool sandbox_ops_create_outcome_unknown(grpc_status_code st, const char *message)
{
    if (st != GRPC_STATUS_UNAVAILABLE && st != GRPC_STATUS_DEADLINE_EXCEEDED) return false;
    /* A call that never reached the agent created nothing. */
    return !agent_is_connect_failure(st, message);
}

/* Destroys a VM the create just made whose row is no longer pending. */
static void destroy_unowned(rpc_client *client, const char *id, const char *row_status)
{
    terr err;
    grpc_status_code st = agent_destroy(client, id, &err);
    if (st == GRPC_STATUS_OK || st == GRPC_STATUS_NOT_FOUND) {
        log_info("event=sandbox_create_orphan_destroyed sandbox_id=%s row_status=%s", id,
                 row_status);
        return;
    }
    /* The reconciler's orphan sweep retries it. */
    char q[LOG_QUOTE_MAX];
    log_warn(
        "event=sandbox_create_orphan_destroy_failed sandbox_id=%s row_status=%s grpc_status=%d error=\"%s\"",
        id, row_status, (int)st, log_quote(err.msg, q, sizeof q));
}

/* The create reached a definite end at the agent; settle the pending row. */
static void create_settle(const sbop_ctx *c, rpc_client *client, sbop_result *res, int64_t t0)
{
    sandbox_row *row = &res->row;
    bool changed;
    terr dberr;
    if (db_sandbox_transition(c->db, row->id, BIT(SB_PENDING), SB_RUNNING,
                              DB_SET_STARTED | DB_SET_ACTIVE, NULL, row, &changed, &dberr) != 0) {
        /* The VM exists but its row could not be written: the reconciler's
         * pending rule will find it running on the agent. */
        internal(res, &dberr);
        return;
    }
    if (!changed) {
        /* The row left pending meanwhile (a DELETE that reached the agent
         * before this create did, or the reconciler gave up on it): the VM
         * just created belongs to nobody unless the row went running. */
        bool found;
        char id[SANDBOX_ID_MAX];
        snprintf(id, sizeof id, "%s", row->id);
        if (db_sandbox_get(c->db, NULL, id, row, &found, &dberr) != 0) {
            internal(res, &dberr);
            return;
        }
        if (found && row->status != SB_STOPPED && row->status != SB_ERROR) {
            set_outcome(res, SBOP_OK); /* e.g. the reconciler found it running */
            return;
        }
        destroy_unowned(client, id, found ? sb_status_name(row->status) : "missing");
        snprintf(row->id, sizeof row->id, "%s", id);
        conflict(res, "sandbox %s was deleted while it was being created (status: %s)", id,
                 found ? sb_status_name(row->status) : "gone");
        return;
    }
    log_info("event=sandbox_created sandbox_id=%s duration_ms=%lld", row->id,
             (long long)(mono_ms() - t0));
    set_outcome(res, SBOP_OK);
}

int sandbox_ops_probe_host(const sbop_ctx *c, const db_host *host, rpc_client **client, terr *err)
{
    if (host_probe(c->db, c->agents, host, c->host_fresh_sec, client, err) == 0) return 0;
    char q[LOG_QUOTE_MAX];
    log_warn("event=host_probe_failed host_id=%s error=\"%s\"", host->id,
             log_quote(err->msg, q, sizeof q));
    return -1;
}

/* Most hosts one create tries before it answers no_capacity. */
#define CREATE_MAX_HOSTS 16

/* One create attempt on host, whose agent (client) just answered the probe.
 * Returns 1 when the host refused for lack of capacity (admission control:
 * nothing created, row removed, *full = its message), else 0 with res set. */
static int create_on_host(const sbop_ctx *c, const sandbox_row *spec, const char *image,
                          const db_host *host, rpc_client *client, sbop_result *res, terr *full)
{
    terr err;
    sandbox_row row = {0};
    char hex[17];
    if (ids_random_hex(hex, 8, &err) != 0) {
        internal(res, &err);
        return 0;
    }
    snprintf(row.id, sizeof row.id, "sb-%s", hex);
    snprintf(row.team_id, sizeof row.team_id, "%s", c->team_id);
    snprintf(row.host_id, sizeof row.host_id, "%s", host->id);
    snprintf(row.template_name, sizeof row.template_name, "%s", spec->template_name);
    row.vcpus = spec->vcpus;
    row.memory_mb = spec->memory_mb;
    row.timeout_sec = spec->timeout_sec;
    row.disk_mb = spec->disk_mb;
    row.env_json = spec->env_json;
    row.auto_resume = spec->auto_resume;
    memcpy(row.access_token_hash, spec->access_token_hash, sizeof row.access_token_hash);
    snprintf(row.network, sizeof row.network, "%s", spec->network);
    snprintf(res->row.id, sizeof res->row.id, "%s", row.id);
    bool over;
    if (db_sandbox_insert_within_quota(c->db, &row, &res->row, &over, res->err.msg,
                                       sizeof res->err.msg, &err) != 0) {
        internal(res, &err);
        return 0;
    }
    if (over) {
        res->row.id[0] = '\0';
        set_outcome(res, SBOP_QUOTA_EXCEEDED);
        return 0;
    }
    log_info(
        "event=sandbox_create_start sandbox_id=%s host_id=%s template=%s vcpus=%d memory_mb=%d "
        "disk_mb=%d timeout_sec=%d",
        row.id, host->id, row.template_name, row.vcpus, row.memory_mb, res->row.disk_mb,
        row.timeout_sec);

    int64_t t0 = mono_ms();
    sandbox_row arow = res->row; /* the agent gets the image, the row keeps the name */
    if (image) snprintf(arow.template_name, sizeof arow.template_name, "%s", image);
    grpc_status_code st = agent_create(client, &arow, &err);
    if (st == GRPC_STATUS_OK) {
        create_settle(c, client, res, t0);
        return 0;
    }

    terr dberr;
    char q[LOG_QUOTE_MAX];
    if (st == GRPC_STATUS_RESOURCE_EXHAUSTED) {
        /* Admission control: this host is full and created nothing. The
         * row goes; the caller tries the next host. */
        if (db_sandbox_delete_pending(c->db, row.id, &dberr) != 0)
            log_error("event=sandbox_delete_failed sandbox_id=%s error=\"%s\"", row.id,
                      log_quote(dberr.msg, q, sizeof q));
        log_warn("event=host_full sandbox_id=%s host_id=%s error=\"%s\"", row.id, host->id,
                 log_quote(err.msg, q, sizeof q));
        *full = err;
        return 1;
    }
    if (st == GRPC_STATUS_INVALID_ARGUMENT) {
        /* Bad input (e.g. an unknown template) changes nothing: the agent
         * created nothing, so the row goes too. */
        if (db_sandbox_delete_pending(c->db, row.id, &dberr) != 0)
            log_error("event=sandbox_delete_failed sandbox_id=%s error=\"%s\"", row.id,
                      log_quote(dberr.msg, q, sizeof q));
        agent_failed(res, st, &err);
        return 0;
    }
    if (sandbox_ops_create_outcome_unknown(st, err.msg)) {
        /* The request may have reached the agent, which may still create
         * the VM. The row goes to error at once (the client may retry, and
         * the next create may land elsewhere), so no VM may outlive it: the
         * host's reconciler destroys a VM it finds under an error row
         * (orphan rule). No destroy call here: the agent did not answer, and
         * the client must not wait for it again. */
        int http;
        const char *ecode;
        agent_status_to_http(st, &http, &ecode);
        log_warn(
            "event=sandbox_create_unknown sandbox_id=%s host_id=%s grpc_status=%d http_status=%d error=\"%s\"",
            row.id, host->id, (int)st, http, log_quote(err.msg, q, sizeof q));
        char msg[sizeof err.msg];
        snprintf(msg, sizeof msg, "%s", err.msg);
        bool ch;
        terr_set(
            &res->err,
            "agent on host %s did not answer in time (%s); sandbox %s is error, and a VM the agent may still "
            "create for it will be destroyed by the reconciler",
            host->id, msg, row.id);
        if (db_sandbox_transition(c->db, row.id, BIT(SB_PENDING), SB_ERROR, 0, res->err.msg, NULL,
                                  &ch, &dberr) != 0)
            log_error("event=sandbox_mark_error_failed sandbox_id=%s error=\"%s\"", row.id,
                      log_quote(dberr.msg, q, sizeof q));
        res->grpc = st;
        set_outcome(res, SBOP_CREATE_UNKNOWN);
        return 0;
    }
    bool changed;
    if (db_sandbox_transition(c->db, row.id, BIT(SB_PENDING), SB_ERROR, 0, err.msg, NULL, &changed,
                              &dberr) != 0)
        log_error("event=sandbox_mark_error_failed sandbox_id=%s error=\"%s\"", row.id,
                  log_quote(dberr.msg, q, sizeof q));
    agent_failed(res, st, &err);
    return 0;
}

void sandbox_ops_create_on(const sbop_ctx *c, const sandbox_row *spec, const char *image,
                           const char *tpl_digest, sbop_result *res)
{
    memset(res, 0, sizeof *res);
    terr full = {{0}};
    rpc_client *client = NULL;
    terr perr;
    bool custom = image && tpl_digest && tpl_digest[0];
    /* The scheduler picks a ready host with room (db_host_pick); a host whose
     * probe fails or whose agent answers full (RESOURCE_EXHAUSTED) is skipped
     * and the next one is tried. */
    const char *skip[CREATE_MAX_HOSTS];
    char skip_ids[CREATE_MAX_HOSTS][64];
    size_t n_skip = 0, n_full = 0;
    bool any_template = false;
    while (n_skip < CREATE_MAX_HOSTS) {
        db_host host;
        bool found = false;
        terr err;
        /* A custom template: only hosts holding its exact image. */
        int prc =
            custom ? db_host_pick_template(c->db, spec->memory_mb, image, tpl_digest, skip, n_skip,
                                           &host, &found, &err)
                   : db_host_pick(c->db, spec->memory_mb, any_template ? NULL : spec->template_name,
                                  skip, n_skip, &host, &found, &err);
        if (prc != 0) {
            memset(res, 0, sizeof *res);
            internal(res, &err);
            return;
        }
        if (!found && !any_template && !custom) {
            /* No host reports the template ready: ask one with room anyway;
             * its agent answers an unknown template (400) or builds it. */
            any_template = true;
            continue;
        }
        if (!found) break;
        memset(res, 0, sizeof *res);
        if (sandbox_ops_probe_host(c, &host, &client, &perr) == 0) {
            if (create_on_host(c, spec, image, &host, client, res, &full) == 0) return;
            n_full++;
        }
        snprintf(skip_ids[n_skip], sizeof skip_ids[n_skip], "%s", host.id);
        skip[n_skip] = skip_ids[n_skip];
        n_skip++;
    }
    memset(res, 0, sizeof *res);
    if (n_full > 0) {
        /* Agents answered, and said they were full. */
        terr err;
        terr_set(&err, "no capacity: %zu host(s) tried, %zu full (last: %s)", n_skip, n_full,
                 full.msg);
        agent_failed(res, GRPC_STATUS_RESOURCE_EXHAUSTED, &err);
        return;
    }
    terr_set(
        &res->err,
        "no host has room for a %d MiB sandbox of template %s (%zu host(s) did not answer); retry later",
        spec->memory_mb, spec->template_name, n_skip);
    log_warn("event=sandbox_no_capacity memory_mb=%d template=%s hosts_unanswered=%zu",
             spec->memory_mb, spec->template_name, n_skip);
    set_outcome(res, SBOP_NO_CAPACITY);
}

void sandbox_ops_create(const sbop_ctx *c, const sandbox_row *spec, sbop_result *res)
{
    sandbox_ops_create_on(c, spec, NULL, NULL, res);
}

/* ------------------------------------------------------------ delete */

void sandbox_ops_delete(const sbop_ctx *c, const char *id, sbop_result *res)
{
    memset(res, 0, sizeof *res);
    if (load(c, id, res) != 0) return;
    if (res->row.status == SB_STOPPED) {
        set_outcome(res, SBOP_OK);
        return;
    } /* idempotent: already gone */
    if (res->row.status == SB_MOVING) {
        conflict(
            res,
            "sandbox is being moved to another host (status: moving); retry when it is paused");
        return;
    }
    rpc_client *client;
    if (agent_for(c, res, &client) != 0) return;
    terr err;
    grpc_status_code st = agent_destroy(client, id, &err);
    if (st != GRPC_STATUS_OK && st != GRPC_STATUS_NOT_FOUND) {
        agent_failed(res, st, &err);
        return;
    }
    bool changed;
    unsigned from = ~(BIT(SB_STOPPED) | BIT(SB_MOVING)) & ((1u << SB_STATUS_COUNT) - 1);
    if (db_sandbox_transition(c->db, id, from, SB_STOPPED, 0, NULL, NULL, &changed, &err) != 0) {
        internal(res, &err);
        return;
    }
    log_info("event=sandbox_destroyed sandbox_id=%s agent_not_found=%d", id,
             st == GRPC_STATUS_NOT_FOUND);
    set_outcome(res, SBOP_OK);
}

/* ------------------------------------------------------------ pause / resume */

/* One compare-and-set of the row, from -> to (also setting `set`): 0 when it
 * moved; else -1 with res answered (internal error, or 409 naming what the
 * row holds now, as `what`). */
static int step(const sbop_ctx *c, const char *id, sb_status from, sb_status to, unsigned set,
                const char *what, sbop_result *res)
{
    bool changed;
    terr err;
    if (db_sandbox_transition(c->db, id, BIT(from), to, set, NULL, &res->row, &changed, &err) !=
        0) {
        internal(res, &err);
        return -1;
    }
    if (!changed) {
        conflict_now(c, id, what, res);
        return -1;
    }
    return 0;
}

void sandbox_ops_pause(const sbop_ctx *c, const char *id, sbop_result *res)
{
    memset(res, 0, sizeof *res);
    if (load(c, id, res) != 0 || require_running(res) != 0) return;
    rpc_client *client;
    if (agent_for(c, res, &client) != 0) return;
    /* pausing before the RPC, so the reconciler never takes the VM's
     * disappearance for a crash. */
    if (step(c, id, SB_RUNNING, SB_PAUSING, 0, "sandbox is not running", res) != 0) return;
    int64_t t0 = mono_ms();
    terr err;
    grpc_status_code st = agent_pause(client, id, &err);
    if (st == GRPC_STATUS_OK) {
        if (step(c, id, SB_PAUSING, SB_PAUSED, 0, "sandbox changed state during the pause", res) !=
            0)
            return;
        log_info("event=sandbox_paused sandbox_id=%s duration_ms=%lld", id,
                 (long long)(mono_ms() - t0));
        set_outcome(res, SBOP_OK);
        return;
    }
    /* The pause failed: find out where the sandbox really is. */
    sb_status now = settle_from_agent(c, client, id, SB_PAUSING, &res->row);
    if (now == SB_PAUSING && st == GRPC_STATUS_NOT_FOUND) mark_stopped(c, id, SB_PAUSING);
    if (now == SB_PAUSED) { /* e.g. the reaper paused it first */
        set_outcome(res, SBOP_OK);
        return;
    }
    agent_failed(res, st, &err);
}

void sandbox_ops_resume(const sbop_ctx *c, const char *id, sbop_result *res)
{
    memset(res, 0, sizeof *res);
    if (load(c, id, res) != 0) return;
    if (res->row.status != SB_PAUSED) {
        conflict(res, "sandbox is not paused (status: %s)", sb_status_name(res->row.status));
        return;
    }
    rpc_client *client;
    if (agent_for(c, res, &client) != 0) return;
    if (step(c, id, SB_PAUSED, SB_RESUMING, 0, "sandbox is not paused", res) != 0) return;
    int64_t t0 = mono_ms();
    terr err;
    grpc_status_code st = agent_resume(client, id, res->row.timeout_sec, res->row.network, &err);
    if (st == GRPC_STATUS_OK) {
        if (step(c, id, SB_RESUMING, SB_RUNNING, DB_SET_STARTED | DB_SET_ACTIVE,
                 "sandbox changed state during the resume", res) != 0)
            return;
        log_info("event=sandbox_resumed sandbox_id=%s timeout_sec=%d duration_ms=%lld", id,
                 res->row.timeout_sec, (long long)(mono_ms() - t0));
        set_outcome(res, SBOP_OK);
        return;
    }
    /* The resume failed: what the agent now holds decides the row. The
     * agent keeps a snapshot it did not consume (paused), may have resumed
     * after all (running: the caller's wish holds), or lost the snapshot and
     * destroyed the sandbox (absent: stopped). A row must never stay paused
     * when the agent no longer holds the sandbox, since nothing could ever
     * resume it. When the agent cannot be asked, the row stays resuming and
     * the reconciler settles it after the grace period. */
    sb_status now = settle_from_agent(c, client, id, SB_RESUMING, &res->row);
    if (now == SB_RUNNING) {
        log_info(
            "event=sandbox_resumed sandbox_id=%s timeout_sec=%d duration_ms=%lld after_error=1", id,
            res->row.timeout_sec, (long long)(mono_ms() - t0));
        set_outcome(res, SBOP_OK);
        return;
    }
    if (now == SB_RESUMING && st == GRPC_STATUS_NOT_FOUND)
        mark_stopped(c, id, SB_RESUMING); /* the agent said so */
    agent_failed(res, st, &err);
}

/* ------------------------------------------------------------ ping / timeout */

static void open_running_host(const sbop_ctx *c, const char *id, rpc_client **client,
                              db_host *host_out, sbop_result *res)
{
    memset(res, 0, sizeof *res);
    /* One query for the row and its host: this is the path of every ping. */
    db_host host;
    bool found;
    if (db_sandbox_get_with_host(c->db, c->team_id, id, &res->row, &host, &found, &res->err) != 0) {
        internal(res, &res->err);
        return;
    }
    if (!found) {
        terr_set(&res->err, "sandbox %s not found", id);
        set_outcome(res, SBOP_NOT_FOUND);
        return;
    }
    if (require_running(res) != 0 || agent_of_host(c, res, &host, client) != 0) return;
    if (host_out) *host_out = host;
    set_outcome(res, SBOP_OK);
}

void sandbox_ops_open_running(const sbop_ctx *c, const char *id, rpc_client **client,
                              sbop_result *res)
{
    open_running_host(c, id, client, NULL, res);
}

/* How long a caller waits for a sandbox that another caller (or replica)
 * is resuming, or that is pausing, before 409. */
#define WAKE_WAIT_MS 60000
#define WAKE_POLL_MS 50
/* A running row this close to its expiry (or past it) is checked with its
 * agent before a call: room for last_active_at's lag and clock skew. */
#define WAKE_EXPIRY_MARGIN_US 2000000

/* The agent's reaper pauses a sandbox at its last activity + timeout, and
 * the row hears of it at the next reconcile pass, up to an interval later:
 * in between the row reads running while the VM is gone. True for a row
 * that may be in that window. */
static bool may_be_auto_paused(const sandbox_row *r)
{
    if (r->status != SB_RUNNING || !r->auto_resume || r->timeout_sec <= 0 || !r->last_active_at_us)
        return false;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    return now_us >= r->last_active_at_us + (int64_t)r->timeout_sec * 1000000 - WAKE_EXPIRY_MARGIN_US;
}

void sandbox_ops_open_awake(const sbop_ctx *c, const char *id, rpc_client **client,
                            sbop_result *res)
{
    long long deadline = mono_ms() + WAKE_WAIT_MS;
    bool waited = false, asked = false;
    for (;;) {
        memset(res, 0, sizeof *res);
        if (load(c, id, res) != 0) return;
        sb_status st = res->row.status;
        if (!asked && may_be_auto_paused(&res->row)) {
            /* Ask its agent once; an auto-pause it reports settles the row
             * (paused) and the loop resumes it like any paused sandbox. */
            asked = true;
            rpc_client *agent;
            if (agent_for(c, res, &agent) != 0) return;
            if (settle_from_agent(c, agent, id, SB_RUNNING, &res->row) != SB_RUNNING) continue;
        }
        if (st == SB_RUNNING || !res->row.auto_resume) break;
        if (st == SB_PAUSED) {
            /* The compare-and-set paused -> resuming inside resume decides
             * which caller resumes; a loser sees a conflict and waits. */
            sandbox_ops_resume(c, id, res);
            if (res->outcome == SBOP_OK) {
                log_info("event=sandbox_auto_resumed sandbox_id=%s", id);
                break;
            }
            if (res->outcome != SBOP_CONFLICT) return;
        } else if (st != SB_RESUMING && st != SB_PAUSING) {
            break; /* stopped, error, pending: not ours to wake */
        }
        if (mono_ms() >= deadline) {
            conflict(res, "sandbox did not become running within %d ms (status: %s)", WAKE_WAIT_MS,
                     sb_status_name(st));
            return;
        }
        waited = true;
        struct timespec ts = {0, WAKE_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (waited) log_debug("event=sandbox_wake_waited sandbox_id=%s", id);
    if (require_running(res) != 0 || agent_for(c, res, client) != 0) return;
    set_outcome(res, SBOP_OK);
}

void sandbox_ops_set_network(const sbop_ctx *c, const char *id, const char *network,
                             sbop_result *res)
{
    memset(res, 0, sizeof *res);
    if (load(c, id, res) != 0) return;
    if (res->row.status != SB_RUNNING && res->row.status != SB_PAUSED) {
        conflict(res, "sandbox is not running or paused (status: %s)",
                 sb_status_name(res->row.status));
        return;
    }
    sandbox_row old = res->row;
    rpc_client *client;
    if (agent_for(c, res, &client) != 0) return;
    /* Row first (compare-and-set on the status), then the agent; an agent
     * failure puts the old policy back, so the row never claims rules the
     * host does not enforce. */
    bool changed;
    terr err;
    if (db_sandbox_set_network(c->db, id, BIT(SB_RUNNING) | BIT(SB_PAUSED), network, &res->row,
                               &changed, &err) != 0) {
        internal(res, &err);
        return;
    }
    if (!changed) {
        conflict_now(c, id, "sandbox is not running or paused", res);
        return;
    }
    grpc_status_code st = agent_set_network(client, id, network, &err);
    if (st != GRPC_STATUS_OK) {
        terr dberr;
        sandbox_row ignored;
        if (db_sandbox_set_network(c->db, id, ~0u, old.network, &ignored, &changed, &dberr) != 0)
            log_error("event=network_revert_failed sandbox_id=%s", id);
        agent_failed(res, st, &err);
        return;
    }
    log_info("event=sandbox_network_set sandbox_id=%s", id);
    set_outcome(res, SBOP_OK);
}

void sandbox_ops_ping(const sbop_ctx *c, const char *id, sbop_result *res)
{
    rpc_client *client;
    terr err;
    db_host host;
    /* Read before the row: the route's age counts from a moment the row
     * certainly said running on that host (ping_route.h). */
    int64_t now = mono_ms();
    grpc_status_code via_st = GRPC_STATUS_OK; /* the route's call, if one was made */
    db_host via;
    via.id[0] = via.address[0] = '\0';
    if (ping_route_get(c->routes, c->team_id, id, now, &via)) {
        if (agent_pool_get(c->agents, &via, &client, &err) == 0) {
            via_st = agent_ping(client, id, &err);
            if (via_st == GRPC_STATUS_OK) {
                memset(res, 0, sizeof *res);
                set_outcome(res, SBOP_OK);
                sandbox_ops_touch(c, id);
                return;
            }
        }
        ping_route_forget(c->routes, id); /* any doubt: the full way */
    }
    open_running_host(c, id, &client, &host, res);
    if (res->outcome != SBOP_OK) return;
    /* The same agent just failed to answer at all: not asked twice. */
    bool unanswered = via_st == GRPC_STATUS_DEADLINE_EXCEEDED || via_st == GRPC_STATUS_UNAVAILABLE;
    grpc_status_code st =
        unanswered && strcmp(via.id, host.id) == 0 && strcmp(via.address, host.address) == 0
            ? via_st
            : agent_ping(client, id, &err);
    if (st != GRPC_STATUS_OK) {
        agent_failed(res, st, &err);
        return;
    } /* the DB stays as it was */
    ping_route_put(c->routes, c->team_id, id, now, &host);
    sandbox_ops_touch(c, id);
}

void sandbox_ops_set_timeout(const sbop_ctx *c, const char *id, int timeout_sec, sbop_result *res)
{
    memset(res, 0, sizeof *res);
    if (load(c, id, res) != 0) return;
    if (res->row.status != SB_RUNNING && res->row.status != SB_PAUSED) {
        conflict(res, "sandbox is not running or paused (status: %s)",
                 sb_status_name(res->row.status));
        return;
    }
    terr err;
    if (res->row.status == SB_RUNNING) {
        /* A paused sandbox gets the DB's value with its next resume. */
        rpc_client *client;
        if (agent_for(c, res, &client) != 0) return;
        grpc_status_code st = agent_set_timeout(client, id, timeout_sec, &err);
        if (st != GRPC_STATUS_OK) {
            agent_failed(res, st, &err);
            return;
        }
    }
    bool changed;
    if (db_sandbox_set_timeout(c->db, id, BIT(SB_RUNNING) | BIT(SB_PAUSED), timeout_sec, &res->row,
                               &changed, &err) != 0) {
        internal(res, &err);
        return;
    }
    if (!changed) {
        conflict_now(c, id, "sandbox changed state while setting its timeout", res);
        return;
    }
    log_info("event=sandbox_timeout_set sandbox_id=%s timeout_sec=%d", id, timeout_sec);
    set_outcome(res, SBOP_OK);
}
