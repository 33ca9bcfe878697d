#include "lifecycle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct lifecycle {
    runtime_driver *driver;
    journal *journal;
    const agent_clock *clock;
    sandbox_table *table;
};

const char *agent_code_name(agent_code c)
{
    switch (c) {
    case AGENT_OK: return "ok";
    case AGENT_NOT_FOUND: return "not_found";
    case AGENT_FAILED_PRECONDITION: return "failed_precondition";
    case AGENT_INVALID_ARGUMENT: return "invalid_argument";
    case AGENT_ALREADY_EXISTS: return "already_exists";
    case AGENT_INTERNAL: return "internal";
    }
    return "unknown";
}

static int64_t now_ms(const lifecycle *lc) { return agent_clock_now_ms(lc->clock); }

static void fill_info(const sandbox *sb, lifecycle_info *out)
{
    if (!out) return;
    out->spec = sb->spec;
    out->status = sb->status;
    out->last_active_ms = sb->last_active_ms;
}

static agent_code not_found(const char *id, terr *err)
{
    terr_set(err, "sandbox %s not found", id);
    return AGENT_NOT_FOUND;
}

static agent_code wrong_state(const char *id, sandbox_status st, const char *want, terr *err)
{
    terr_set(err, "sandbox %s is %s, not %s", id, sandbox_status_name(st), want);
    return AGENT_FAILED_PRECONDITION;
}

static agent_code check_id(const char *id, terr *err)
{
    if (!sandbox_id_valid(id)) {
        terr_set(err, "invalid sandbox_id: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$");
        return AGENT_INVALID_ARGUMENT;
    }
    return AGENT_OK;
}

static agent_code check_timeout(int timeout_sec, terr *err)
{
    if (timeout_sec < 0 || timeout_sec > LIFECYCLE_MAX_TIMEOUT_SEC) {
        terr_set(err, "invalid timeout_sec %d: must be 0..%d", timeout_sec, LIFECYCLE_MAX_TIMEOUT_SEC);
        return AGENT_INVALID_ARGUMENT;
    }
    return AGENT_OK;
}

/* The shape rules of a sandbox: what create accepts, and so the only specs
 * a recovered sandbox can legitimately have. */
static agent_code check_spec(const runtime_spec *s, terr *err)
{
    agent_code code = check_id(s->sandbox_id, err);
    if (code != AGENT_OK) return code;
    if (!sandbox_id_valid(s->template_name)) {
        terr_set(err, "invalid template: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$");
        return AGENT_INVALID_ARGUMENT;
    }
    if (s->vcpus < 1 || s->vcpus > 64) {
        terr_set(err, "invalid vcpus %d: must be 1..64", s->vcpus);
        return AGENT_INVALID_ARGUMENT;
    }
    if (s->memory_mb < 64 || s->memory_mb > 65536) {
        terr_set(err, "invalid memory_mb %d: must be 64..65536", s->memory_mb);
        return AGENT_INVALID_ARGUMENT;
    }
    return check_timeout(s->timeout_sec, err);
}

/* Checks id, takes the table lock and finds the record. On AGENT_OK the
 * caller holds the table lock and must release it; on any error it does not. */
static agent_code find_and_lock_table(lifecycle *lc, const char *id, sandbox **out, terr *err)
{
    agent_code code = check_id(id, err);
    if (code != AGENT_OK) return code;
    sandbox_table_lock(lc->table);
    sandbox *sb = sandbox_table_find_locked(lc->table, id);
    if (!sb) {
        sandbox_table_unlock(lc->table);
        return not_found(id, err);
    }
    *out = sb;
    return AGENT_OK;
}

/* Looks id up and takes its lifecycle lock (waiting for it). On AGENT_OK the
 * caller holds a record reference and the lifecycle lock, not the table
 * lock. */
static agent_code lock_lifecycle(lifecycle *lc, const char *id, sandbox **out, terr *err)
{
    sandbox *sb;
    agent_code code = find_and_lock_table(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    sandbox_ref_locked(sb);
    sandbox_lifecycle_acquire_locked(lc->table, sb);
    if (!sb->in_table) { /* destroyed while we waited */
        sandbox_lifecycle_release_locked(sb);
        sandbox_unref_locked(lc->table, sb);
        sandbox_table_unlock(lc->table);
        return not_found(id, err);
    }
    sandbox_table_unlock(lc->table);
    *out = sb;
    return AGENT_OK;
}

/* Table lock held: ends a lifecycle operation. */
static void unlock_lifecycle_locked(lifecycle *lc, sandbox *sb)
{
    sandbox_lifecycle_release_locked(sb);
    sandbox_unref_locked(lc->table, sb);
}

/* The journal's notice is stale once the sandbox runs again or is gone. */
static void drop_notice(lifecycle *lc, const char *id)
{
    if (!lc->journal || !journal_is_pending(lc->journal, id)) return;
    terr e;
    const char *ids[1] = {id};
    if (journal_ack(lc->journal, ids, 1, &e) != 0)
        log_warn("event=journal_drop_failed sandbox_id=%s error=\"%s\"", id, e.msg);
}

/* ------------------------------------------------------------ open/close */

typedef struct recover_ctx {
    lifecycle *lc;
    int n_paused, n_running, n_rejected;
} recover_ctx;

static void on_recovered(void *ctx, const runtime_spec *spec, runtime_vm *vm)
{
    recover_ctx *rc = ctx;
    lifecycle *lc = rc->lc;
    if (!sandbox_id_valid(spec->sandbox_id)) {
        log_warn("event=recover_skip reason=invalid_id");
        runtime_vm_unref(vm);
        return;
    }
    terr e;
    /* Metadata on disk is input like any other: a spec create would refuse
     * (corrupt or hand-edited) cannot be served, and a sandbox left on disk
     * but not in the table would never be listed or reclaimed, so it is
     * removed. */
    if (check_spec(spec, &e) != AGENT_OK) {
        terr derr = {{0}};
        int drc = lc->driver->ops->destroy(lc->driver, spec->sandbox_id, vm, &derr);
        runtime_vm_unref(vm);
        rc->n_rejected++;
        log_error("event=recover_rejected sandbox_id=%s reason=\"invalid spec: %s\" action=%s%s%s%s",
                  spec->sandbox_id, e.msg, drc == 0 ? "destroyed" : "destroy_failed",
                  drc == 0 ? "" : " error=\"", drc == 0 ? "" : derr.msg, drc == 0 ? "" : "\"");
        return;
    }
    sandbox_table_lock(lc->table);
    sandbox *sb = sandbox_table_insert_locked(lc->table, spec, vm ? SANDBOX_RUNNING : SANDBOX_PAUSED, &e);
    if (!sb) {
        sandbox_table_unlock(lc->table);
        log_warn("event=recover_skip sandbox_id=%s error=\"%s\"", spec->sandbox_id, e.msg);
        runtime_vm_unref(vm);
        return;
    }
    sb->vm = vm;
    sb->last_active_ms = now_ms(lc); /* a restart counts as a fresh start of the TTL */
    sandbox_unref_locked(lc->table, sb);
    sandbox_table_unlock(lc->table);
    if (vm) rc->n_running++;
    else rc->n_paused++;
    log_info("event=sandbox_recovered sandbox_id=%s status=%s", spec->sandbox_id,
             vm ? "running" : "paused");
}

/* After recovery: a journal notice says "auto-paused and still paused". One
 * whose sandbox did not come back, or is not paused (a crash between a
 * resume and its drop_notice), would make a control plane record a state
 * that is not true; drop it. Best effort: a failure only leaves the
 * notices for the next start. */
static void drop_stale_notices(lifecycle *lc)
{
    if (!lc->journal) return;
    char **ids = NULL;
    size_t n = 0, k = 0;
    terr e;
    if (journal_pending(lc->journal, &ids, &n, &e) != 0) {
        log_warn("event=journal_stale_check_failed error=\"%s\"", e.msg);
        return;
    }
    sandbox_table_lock(lc->table);
    for (size_t i = 0; i < n; i++) {
        const sandbox *sb = sandbox_table_find_locked(lc->table, ids[i]);
        if (sb && sb->status == SANDBOX_PAUSED) {
            free(ids[i]);
        } else {
            ids[k++] = ids[i];
        }
    }
    sandbox_table_unlock(lc->table);
    if (k > 0 && journal_ack(lc->journal, (const char *const *)ids, k, &e) != 0)
        log_warn("event=journal_drop_failed count=%zu error=\"%s\"", k, e.msg);
    for (size_t i = 0; i < k; i++)
        log_info("event=journal_stale_notice_dropped sandbox_id=%s", ids[i]);
    journal_ids_free(ids, k);
}

int lifecycle_open(const lifecycle_config *cfg, lifecycle **out, terr *err)
{
    if (!cfg->driver || !cfg->clock) return terr_set(err, "lifecycle: driver and clock are required");
    lifecycle *lc = calloc(1, sizeof *lc);
    if (!lc) return terr_set(err, "lifecycle: out of memory");
    lc->driver = cfg->driver;
    lc->journal = cfg->journal;
    lc->clock = cfg->clock;
    if (sandbox_table_new(&lc->table, err) != 0) {
        free(lc);
        return -1;
    }
    recover_ctx rc = {.lc = lc};
    if (lc->driver->ops->recover && lc->driver->ops->recover(lc->driver, on_recovered, &rc, err) != 0) {
        terr_wrap(err, "recover");
        lifecycle_close(lc);
        return -1;
    }
    drop_stale_notices(lc);
    log_info("event=table_recovered paused=%d running=%d rejected=%d", rc.n_paused, rc.n_running,
             rc.n_rejected);
    *out = lc;
    return 0;
}

void lifecycle_close(lifecycle *lc)
{
    if (!lc) return;
    sandbox_table_free(lc->table);
    free(lc);
}

/* ------------------------------------------------------------ lifecycle */

agent_code lifecycle_create(lifecycle *lc, const runtime_spec *in, lifecycle_info *out, terr *err)
{
    agent_code code = check_spec(in, err);
    if (code != AGENT_OK) return code;

    runtime_spec spec = *in;
    if (spec.created_at_unix == 0) spec.created_at_unix = now_ms(lc) / 1000;

    sandbox_table_lock(lc->table);
    if (sandbox_table_find_locked(lc->table, spec.sandbox_id)) {
        sandbox_table_unlock(lc->table);
        terr_set(err, "sandbox %s already exists", spec.sandbox_id);
        return AGENT_ALREADY_EXISTS;
    }
    sandbox *sb = sandbox_table_insert_locked(lc->table, &spec, SANDBOX_CREATING, err);
    if (!sb) {
        sandbox_table_unlock(lc->table);
        return AGENT_INTERNAL;
    }
    sb->lifecycle_busy = true; /* new record: nobody can hold it */
    sandbox_table_unlock(lc->table);

    int64_t t0 = now_ms(lc);
    runtime_vm *vm = NULL;
    terr derr = {{0}};
    int rc = lc->driver->ops->create(lc->driver, &spec, &vm, &derr);

    sandbox_table_lock(lc->table);
    if (rc == 0) {
        sb->vm = vm;
        sb->status = SANDBOX_RUNNING;
        sb->last_active_ms = now_ms(lc);
        fill_info(sb, out);
    } else {
        sandbox_table_remove_locked(lc->table, sb);
    }
    unlock_lifecycle_locked(lc, sb);
    sandbox_table_unlock(lc->table);

    if (rc != 0) {
        log_warn("event=create_failed sandbox_id=%s template=%s error=\"%s\"", spec.sandbox_id,
                 spec.template_name, derr.msg);
        terr_set(err, "%s", derr.msg);
        return strncmp(derr.msg, "unknown template", 16) == 0 ? AGENT_INVALID_ARGUMENT : AGENT_INTERNAL;
    }
    log_info("event=sandbox_created sandbox_id=%s template=%s vcpus=%d memory_mb=%d timeout_sec=%d "
             "duration_ms=%lld",
             spec.sandbox_id, spec.template_name, spec.vcpus, spec.memory_mb, spec.timeout_sec,
             (long long)(now_ms(lc) - t0));
    return AGENT_OK;
}

/* Lifecycle lock held, status already destroying: driver destroy + removal.
 * On failure the status goes back to prev. */
static int destroy_held(lifecycle *lc, sandbox *sb, sandbox_status prev, terr *err)
{
    sandbox_table_lock(lc->table);
    runtime_vm *vm = sb->vm;
    sandbox_table_unlock(lc->table);
    int rc = lc->driver->ops->destroy(lc->driver, sb->id, vm, err);
    sandbox_table_lock(lc->table);
    if (rc == 0) {
        sb->vm = NULL;
        sandbox_table_remove_locked(lc->table, sb);
    } else {
        sb->status = prev;
        vm = NULL;
    }
    sandbox_table_unlock(lc->table);
    runtime_vm_unref(vm);
    if (rc == 0) drop_notice(lc, sb->id);
    return rc;
}

agent_code lifecycle_destroy(lifecycle *lc, const char *id, terr *err)
{
    sandbox *sb;
    agent_code code = lock_lifecycle(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    sandbox_table_lock(lc->table);
    sandbox_status prev = sb->status;
    sb->status = SANDBOX_DESTROYING;
    sandbox_table_unlock(lc->table);

    terr derr = {{0}};
    int rc = destroy_held(lc, sb, prev, &derr);
    sandbox_table_lock(lc->table);
    unlock_lifecycle_locked(lc, sb);
    sandbox_table_unlock(lc->table);
    if (rc != 0) {
        log_error("event=destroy_failed sandbox_id=%s error=\"%s\"", id, derr.msg);
        terr_set(err, "destroy failed: %s", derr.msg);
        return AGENT_INTERNAL;
    }
    log_info("event=sandbox_destroyed sandbox_id=%s from=%s", id, sandbox_status_name(prev));
    return AGENT_OK;
}

agent_code lifecycle_pause(lifecycle *lc, const char *id, lifecycle_info *out, terr *err)
{
    sandbox *sb;
    agent_code code = lock_lifecycle(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    sandbox_table_lock(lc->table);
    if (sb->status != SANDBOX_RUNNING) {
        terr_set(err, "sandbox %s is %s, not running", id, sandbox_status_name(sb->status));
        unlock_lifecycle_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        return AGENT_FAILED_PRECONDITION;
    }
    sb->status = SANDBOX_PAUSING;
    runtime_vm *vm = sb->vm;
    runtime_spec spec = sb->spec;
    sandbox_table_unlock(lc->table);

    int64_t t0 = now_ms(lc);
    terr derr = {{0}};
    int rc = lc->driver->ops->pause(lc->driver, vm, &spec, &derr);
    if (rc == 0) {
        sandbox_table_lock(lc->table);
        sb->status = SANDBOX_PAUSED;
        sb->vm = NULL;
        fill_info(sb, out);
        unlock_lifecycle_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        runtime_vm_unref(vm);
        log_info("event=sandbox_paused sandbox_id=%s reason=request duration_ms=%lld", id,
                 (long long)(now_ms(lc) - t0));
        return AGENT_OK;
    }
    if (lc->driver->ops->vm_alive(lc->driver, vm)) {
        sandbox_table_lock(lc->table);
        sb->status = SANDBOX_RUNNING;
        unlock_lifecycle_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        log_warn("event=pause_failed sandbox_id=%s outcome=still_running error=\"%s\"", id, derr.msg);
        terr_set(err, "pause failed (sandbox still running): %s", derr.msg);
        return AGENT_INTERNAL;
    }
    sandbox_table_lock(lc->table);
    sb->status = SANDBOX_DESTROYING;
    sandbox_table_unlock(lc->table);
    terr xerr = {{0}};
    int drc = destroy_held(lc, sb, SANDBOX_RUNNING, &xerr);
    sandbox_table_lock(lc->table);
    unlock_lifecycle_locked(lc, sb);
    sandbox_table_unlock(lc->table);
    log_error("event=pause_failed sandbox_id=%s outcome=%s error=\"%s\"%s%s%s", id,
              drc == 0 ? "destroyed" : "destroy_failed", derr.msg, drc == 0 ? "" : " destroy_error=\"",
              drc == 0 ? "" : xerr.msg, drc == 0 ? "" : "\"");
    terr_set(err, "vm died during pause; sandbox destroyed: %s", derr.msg);
    return AGENT_INTERNAL;
}

/* Lifecycle lock held, status resuming, and the driver reported
 * RUNTIME_SNAPSHOT_LOST: nothing resumable remains, so the sandbox must not
 * read "paused" again (every later resume would fail). Whatever the driver
 * left is destroyed and the record removed even if that destroy fails: the
 * leftovers hold no committed snapshot, which the driver's recover()
 * removes as debris on the next start. */
static agent_code resume_lost(lifecycle *lc, sandbox *sb, const terr *derr, terr *err)
{
    sandbox_table_lock(lc->table);
    sb->status = SANDBOX_DESTROYING;
    runtime_vm *vm = sb->vm; /* NULL while paused; kept general */
    sb->vm = NULL;
    sandbox_table_unlock(lc->table);
    terr xerr = {{0}};
    int drc = lc->driver->ops->destroy(lc->driver, sb->id, vm, &xerr);
    runtime_vm_unref(vm);
    sandbox_table_lock(lc->table);
    sandbox_table_remove_locked(lc->table, sb);
    sandbox_table_unlock(lc->table);
    drop_notice(lc, sb->id);
    if (drc == 0)
        log_error("event=resume_failed sandbox_id=%s outcome=snapshot_lost action=destroyed error=\"%s\"",
                  sb->id, derr->msg);
    else
        log_error("event=resume_failed sandbox_id=%s outcome=snapshot_lost action=destroy_failed "
                  "error=\"%s\" destroy_error=\"%s\"",
                  sb->id, derr->msg, xerr.msg);
    terr_set(err, "resume failed and the snapshot was lost; sandbox destroyed: %s", derr->msg);
    sandbox_table_lock(lc->table);
    unlock_lifecycle_locked(lc, sb);
    sandbox_table_unlock(lc->table);
    return AGENT_INTERNAL;
}

agent_code lifecycle_resume(lifecycle *lc, const char *id, int timeout_sec, lifecycle_info *out,
                            terr *err)
{
    agent_code code = check_timeout(timeout_sec, err);
    if (code != AGENT_OK) return code;
    sandbox *sb;
    if ((code = lock_lifecycle(lc, id, &sb, err)) != AGENT_OK) return code;
    sandbox_table_lock(lc->table);
    if (sb->status != SANDBOX_PAUSED) {
        terr_set(err, "sandbox %s is %s, not paused", id, sandbox_status_name(sb->status));
        unlock_lifecycle_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        return AGENT_FAILED_PRECONDITION;
    }
    sb->status = SANDBOX_RESUMING;
    runtime_spec spec = sb->spec;
    spec.timeout_sec = timeout_sec;
    sandbox_table_unlock(lc->table);

    int64_t t0 = now_ms(lc);
    runtime_vm *vm = NULL;
    terr derr = {{0}};
    int rc = lc->driver->ops->resume(lc->driver, &spec, &vm, &derr);
    if (rc == RUNTIME_SNAPSHOT_LOST) return resume_lost(lc, sb, &derr, err);
    sandbox_table_lock(lc->table);
    if (rc == 0) {
        sb->vm = vm;
        sb->spec.timeout_sec = timeout_sec;
        sb->status = SANDBOX_RUNNING;
        sb->last_active_ms = now_ms(lc);
        fill_info(sb, out);
    } else {
        sb->status = SANDBOX_PAUSED; /* the driver kept the snapshot: resume may be retried */
    }
    unlock_lifecycle_locked(lc, sb);
    sandbox_table_unlock(lc->table);
    if (rc != 0) {
        log_warn("event=resume_failed sandbox_id=%s outcome=still_paused error=\"%s\"", id, derr.msg);
        terr_set(err, "resume failed (sandbox stays paused): %s", derr.msg);
        return AGENT_INTERNAL;
    }
    drop_notice(lc, id);
    log_info("event=sandbox_resumed sandbox_id=%s timeout_sec=%d duration_ms=%lld", id, timeout_sec,
             (long long)(now_ms(lc) - t0));
    return AGENT_OK;
}

/* ------------------------------------------------------------ activity */

agent_code lifecycle_ping(lifecycle *lc, const char *id, int64_t *last_active_ms, terr *err)
{
    sandbox *sb;
    agent_code code = find_and_lock_table(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    if (sb->status != SANDBOX_RUNNING) {
        code = wrong_state(id, sb->status, "running", err);
    } else {
        sb->last_active_ms = now_ms(lc);
        if (last_active_ms) *last_active_ms = sb->last_active_ms;
    }
    sandbox_table_unlock(lc->table);
    return code;
}

agent_code lifecycle_set_timeout(lifecycle *lc, const char *id, int timeout_sec,
                                 lifecycle_info *out, terr *err)
{
    agent_code code = check_id(id, err);
    if (code != AGENT_OK) return code;
    if ((code = check_timeout(timeout_sec, err)) != AGENT_OK) return code;
    sandbox *sb;
    if ((code = find_and_lock_table(lc, id, &sb, err)) != AGENT_OK) return code;
    if (sb->status == SANDBOX_RUNNING || sb->status == SANDBOX_PAUSED) {
        sb->spec.timeout_sec = timeout_sec;
        if (sb->status == SANDBOX_RUNNING) sb->last_active_ms = now_ms(lc);
        fill_info(sb, out);
    } else {
        code = wrong_state(id, sb->status, "running or paused", err);
    }
    sandbox_table_unlock(lc->table);
    if (code == AGENT_OK)
        log_info("event=timeout_set sandbox_id=%s timeout_sec=%d", id, timeout_sec);
    return code;
}

agent_code lifecycle_get(lifecycle *lc, const char *id, lifecycle_info *out, terr *err)
{
    sandbox *sb;
    agent_code code = find_and_lock_table(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    fill_info(sb, out);
    sandbox_table_unlock(lc->table);
    return AGENT_OK;
}

int lifecycle_list(lifecycle *lc, lifecycle_info **out, size_t *n, terr *err)
{
    sandbox_table_lock(lc->table);
    size_t total = sandbox_table_count_locked(lc->table);
    lifecycle_info *infos = calloc(total ? total : 1, sizeof *infos);
    if (!infos) {
        sandbox_table_unlock(lc->table);
        return terr_set(err, "list: out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < total; i++) {
        sandbox *sb = sandbox_table_at_locked(lc->table, i);
        if (sb->status == SANDBOX_CREATING || sb->status == SANDBOX_DESTROYING) continue;
        fill_info(sb, &infos[k++]);
    }
    sandbox_table_unlock(lc->table);
    *out = infos;
    *n = k;
    return 0;
}

/* Starts an exec/file op: the sandbox must be running; counts as activity
 * and holds off the reaper until end_activity. */
static agent_code begin_activity(lifecycle *lc, const char *id, sandbox **sb_out, runtime_vm **vm_out,
                                 terr *err)
{
    sandbox *sb;
    agent_code code = find_and_lock_table(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    if (sb->status != SANDBOX_RUNNING || !sb->vm) {
        code = wrong_state(id, sb->status, "running", err);
    } else {
        sandbox_ref_locked(sb);
        sb->active_execs++;
        sb->last_active_ms = now_ms(lc);
        runtime_vm_ref(sb->vm); /* the op runs outside the lifecycle lock */
        *sb_out = sb;
        *vm_out = sb->vm;
    }
    sandbox_table_unlock(lc->table);
    return code;
}

/* Ends an op; maps a driver failure to FAILED_PRECONDITION when the sandbox
 * stopped running meanwhile (a pause/destroy cut it short). */
static agent_code end_activity(lifecycle *lc, sandbox *sb, runtime_vm *vm, int rc, const char *what,
                               terr *derr, terr *err)
{
    agent_code code = AGENT_OK;
    sandbox_table_lock(lc->table);
    sb->active_execs--;
    bool running = sb->in_table && sb->status == SANDBOX_RUNNING;
    if (running) sb->last_active_ms = now_ms(lc);
    if (rc != 0) {
        if (running) {
            terr_set(err, "%s failed: %s", what, derr->msg);
            code = AGENT_INTERNAL;
        } else {
            terr_set(err, "%s interrupted: sandbox %s is %s: %s", what, sb->id,
                     sb->in_table ? sandbox_status_name(sb->status) : "destroyed", derr->msg);
            code = AGENT_FAILED_PRECONDITION;
        }
    }
    sandbox_unref_locked(lc->table, sb);
    sandbox_table_unlock(lc->table);
    runtime_vm_unref(vm);
    return code;
}

agent_code lifecycle_exec(lifecycle *lc, const char *id, const runtime_exec_request *req,
                          runtime_exec_result *res, terr *err)
{
    if (!req->cmd || !req->cmd[0]) {
        terr_set(err, "cmd is required");
        return AGENT_INVALID_ARGUMENT;
    }
    if (req->timeout_sec < 0 || req->timeout_sec > LIFECYCLE_EXEC_MAX_TIMEOUT_SEC) {
        terr_set(err, "invalid exec timeout_sec %d: must be 0..%d (0 = %d)", req->timeout_sec,
                 LIFECYCLE_EXEC_MAX_TIMEOUT_SEC, LIFECYCLE_EXEC_DEFAULT_TIMEOUT_SEC);
        return AGENT_INVALID_ARGUMENT;
    }
    runtime_exec_request r = *req;
    if (r.timeout_sec == 0) r.timeout_sec = LIFECYCLE_EXEC_DEFAULT_TIMEOUT_SEC;
    sandbox *sb;
    runtime_vm *vm;
    agent_code code = begin_activity(lc, id, &sb, &vm, err);
    if (code != AGENT_OK) return code;
    memset(res, 0, sizeof *res);
    terr derr = {{0}};
    int rc = lc->driver->ops->exec(lc->driver, vm, &r, res, &derr);
    if (rc != 0) runtime_exec_result_free(res);
    return end_activity(lc, sb, vm, rc, "exec", &derr, err);
}

agent_code lifecycle_read_file(lifecycle *lc, const char *id, const char *path, uint8_t **data,
                               size_t *len, terr *err)
{
    if (!path || !path[0]) {
        terr_set(err, "path is required");
        return AGENT_INVALID_ARGUMENT;
    }
    sandbox *sb;
    runtime_vm *vm;
    agent_code code = begin_activity(lc, id, &sb, &vm, err);
    if (code != AGENT_OK) return code;
    terr derr = {{0}};
    *data = NULL;
    *len = 0;
    int rc = lc->driver->ops->read_file(lc->driver, vm, path, data, len, &derr);
    return end_activity(lc, sb, vm, rc, "read_file", &derr, err);
}

agent_code lifecycle_write_file(lifecycle *lc, const char *id, const char *path,
                                const uint8_t *data, size_t len, unsigned mode, terr *err)
{
    if (!path || !path[0]) {
        terr_set(err, "path is required");
        return AGENT_INVALID_ARGUMENT;
    }
    if (mode > 07777) {
        terr_set(err, "invalid mode %o: must be at most 07777", mode);
        return AGENT_INVALID_ARGUMENT;
    }
    sandbox *sb;
    runtime_vm *vm;
    agent_code code = begin_activity(lc, id, &sb, &vm, err);
    if (code != AGENT_OK) return code;
    terr derr = {{0}};
    int rc = lc->driver->ops->write_file(lc->driver, vm, path, data, len, mode ? mode : 0644, &derr);
    return end_activity(lc, sb, vm, rc, "write_file", &derr, err);
}

/* ------------------------------------------------------------ reaper side */

static int push_id(char ***ids, size_t *n, size_t *cap, const char *id)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        char **grown = realloc(*ids, c * sizeof *grown);
        if (!grown) return -1;
        *ids = grown;
        *cap = c;
    }
    char *copy = strdup(id);
    if (!copy) return -1;
    (*ids)[(*n)++] = copy;
    return 0;
}

static bool expired_locked(const lifecycle *lc, const sandbox *sb, int64_t now)
{
    return sb->status == SANDBOX_RUNNING && sb->spec.timeout_sec > 0 && sb->active_execs == 0 &&
           now - sb->last_active_ms >= (int64_t)sb->spec.timeout_sec * 1000;
}

int lifecycle_collect_expired(lifecycle *lc, char ***ids, size_t *n, terr *err)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 0;
    int64_t now = now_ms(lc);
    sandbox_table_lock(lc->table);
    for (size_t i = 0; i < sandbox_table_count_locked(lc->table); i++) {
        sandbox *sb = sandbox_table_at_locked(lc->table, i);
        if (sb->lifecycle_busy || !expired_locked(lc, sb, now)) continue;
        if (push_id(ids, n, &cap, sb->id) != 0) {
            sandbox_table_unlock(lc->table);
            journal_ids_free(*ids, *n);
            *ids = NULL;
            *n = 0;
            return terr_set(err, "reaper scan: out of memory");
        }
    }
    sandbox_table_unlock(lc->table);
    return 0;
}

bool lifecycle_claim_auto_pause(lifecycle *lc, const char *id)
{
    bool claimed = false;
    int64_t now = now_ms(lc);
    sandbox_table_lock(lc->table);
    sandbox *sb = sandbox_table_find_locked(lc->table, id);
    /* The re-check: a ping or exec that landed since the scan wins. */
    if (sb && !sb->lifecycle_busy && expired_locked(lc, sb, now) && sb->vm) {
        sandbox_lifecycle_try_locked(sb);
        sb->status = SANDBOX_PAUSING;
        claimed = true;
    }
    sandbox_table_unlock(lc->table);
    return claimed;
}

void lifecycle_auto_pause_claimed(lifecycle *lc, const char *id)
{
    sandbox *sb = sandbox_table_get(lc->table, id);
    if (!sb) { /* cannot happen: a claimed sandbox cannot be destroyed */
        log_error("event=auto_pause_lost sandbox_id=%s", id);
        return;
    }
    sandbox_table_lock(lc->table);
    runtime_vm *vm = sb->vm;
    runtime_spec spec = sb->spec;
    int64_t idle_ms = now_ms(lc) - sb->last_active_ms;
    sandbox_table_unlock(lc->table);

    int64_t t0 = now_ms(lc);
    terr derr = {{0}};
    int rc = lc->driver->ops->pause(lc->driver, vm, &spec, &derr);
    if (rc == 0) {
        terr jerr = {{0}};
        /* Journal before "paused": once a List can show it paused, the notice
         * is durable. */
        if (lc->journal && journal_append_paused(lc->journal, id, &jerr) != 0)
            log_error("event=journal_append_failed sandbox_id=%s error=\"%s\"", id, jerr.msg);
        sandbox_table_lock(lc->table);
        sb->status = SANDBOX_PAUSED;
        sb->vm = NULL;
        unlock_lifecycle_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        runtime_vm_unref(vm);
        log_info("event=sandbox_paused sandbox_id=%s reason=inactivity idle_ms=%lld timeout_sec=%d "
                 "duration_ms=%lld",
                 id, (long long)idle_ms, spec.timeout_sec, (long long)(now_ms(lc) - t0));
        return;
    }
    log_error("event=auto_pause_failed sandbox_id=%s error=\"%s\" action=destroy", id, derr.msg);
    sandbox_table_lock(lc->table);
    sb->status = SANDBOX_DESTROYING;
    sandbox_table_unlock(lc->table);
    terr xerr = {{0}};
    int drc = destroy_held(lc, sb, SANDBOX_RUNNING, &xerr);
    sandbox_table_lock(lc->table);
    unlock_lifecycle_locked(lc, sb);
    sandbox_table_unlock(lc->table);
    if (drc == 0)
        log_warn("event=sandbox_destroyed sandbox_id=%s reason=auto_pause_failed cause=\"%s\"", id,
                 derr.msg);
    else /* still running (status restored); the next tick retries */
        log_error("event=destroy_failed sandbox_id=%s reason=auto_pause_failed error=\"%s\"", id,
                  xerr.msg);
}

int lifecycle_collect_dead(lifecycle *lc, lifecycle_dead **out, size_t *n, terr *err)
{
    *out = NULL;
    *n = 0;
    size_t nvms = 0;
    /* Snapshot (id, vm ref) under the lock, ask the driver outside it. */
    sandbox_table_lock(lc->table);
    size_t total = sandbox_table_count_locked(lc->table);
    lifecycle_dead *all = calloc(total ? total : 1, sizeof *all);
    if (!all) {
        sandbox_table_unlock(lc->table);
        return terr_set(err, "reaper scan: out of memory");
    }
    for (size_t i = 0; i < total; i++) {
        sandbox *sb = sandbox_table_at_locked(lc->table, i);
        if (sb->status != SANDBOX_RUNNING || sb->lifecycle_busy || !sb->vm) continue;
        runtime_vm_ref(sb->vm);
        memcpy(all[nvms].id, sb->id, sizeof all[nvms].id);
        all[nvms++].vm = sb->vm;
    }
    sandbox_table_unlock(lc->table);
    size_t k = 0;
    for (size_t i = 0; i < nvms; i++) {
        if (lc->driver->ops->vm_alive(lc->driver, all[i].vm)) runtime_vm_unref(all[i].vm);
        else all[k++] = all[i]; /* keeps its reference: see lifecycle_claim_dead */
    }
    *out = all;
    *n = k;
    return 0;
}

void lifecycle_dead_free(lifecycle_dead *dead, size_t n)
{
    if (!dead) return;
    for (size_t i = 0; i < n; i++) runtime_vm_unref(dead[i].vm);
    free(dead);
}

bool lifecycle_claim_dead(lifecycle *lc, const char *id, const runtime_vm *vm)
{
    bool claimed = false;
    sandbox_table_lock(lc->table);
    sandbox *sb = sandbox_table_find_locked(lc->table, id);
    /* sb->vm == vm: still the VM found dead, not one created or resumed
     * under the same id since the scan (the scan's reference keeps that
     * handle's address from being reused meanwhile). */
    if (sb && sb->status == SANDBOX_RUNNING && sb->vm && sb->vm == vm &&
        sandbox_lifecycle_try_locked(sb)) {
        sb->status = SANDBOX_DESTROYING;
        claimed = true;
    }
    sandbox_table_unlock(lc->table);
    return claimed;
}

void lifecycle_destroy_dead_claimed(lifecycle *lc, const char *id)
{
    sandbox *sb = sandbox_table_get(lc->table, id);
    if (!sb) {
        log_error("event=destroy_dead_lost sandbox_id=%s", id);
        return;
    }
    terr derr = {{0}};
    int rc = destroy_held(lc, sb, SANDBOX_RUNNING, &derr);
    sandbox_table_lock(lc->table);
    unlock_lifecycle_locked(lc, sb);
    sandbox_table_unlock(lc->table);
    if (rc == 0)
        log_warn("event=sandbox_destroyed sandbox_id=%s reason=vm_died", id);
    else
        log_error("event=destroy_failed sandbox_id=%s reason=vm_died error=\"%s\"", id, derr.msg);
}
