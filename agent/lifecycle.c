/* lifecycle: the helpers lifecycle_internal.h declares, open/close (the
 * table rebuilt from the driver's recover() and the journal), and the
 * operations that hold the lifecycle lock across a driver call: create,
 * destroy, pause, resume. Ping/exec/files are in lifecycle_activity.c,
 * auto-pause in autopause.c. Just over 600 lines: create, destroy, pause and
 * resume share the lock/claim/settle helpers above them. */
#include "lifecycle_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "net.h"
#include "torpor_limits.h"

/* ------------------------------------------------------------ shared helpers */

void lifecycle_fill_info(const sandbox *sb, lifecycle_info *out)
{
    if (!out) return;
    out->spec = sb->spec;
    out->status = sb->status;
    out->last_active_ms = sb->last_active_ms;
}

agent_code lifecycle_not_found(const char *id, terr *err)
{
    terr_set(err, "sandbox %s not found", id);
    return AGENT_NOT_FOUND;
}

agent_code lifecycle_wrong_state(const char *id, sandbox_status st, const char *want, terr *err)
{
    terr_set(err, "sandbox %s is %s, not %s", id, sandbox_status_name(st), want);
    return AGENT_FAILED_PRECONDITION;
}

agent_code lifecycle_check_id(const char *id, terr *err)
{
    if (!limits_sandbox_id_valid(id)) {
        terr_set(err, "invalid sandbox_id: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$");
        return AGENT_INVALID_ARGUMENT;
    }
    return AGENT_OK;
}

agent_code lifecycle_check_timeout(int timeout_sec, terr *err)
{
    if (timeout_sec < 0 || timeout_sec > TORPOR_TIMEOUT_SEC_MAX) {
        terr_set(err, "invalid timeout_sec %d: must be 0..%d", timeout_sec, TORPOR_TIMEOUT_SEC_MAX);
        return AGENT_INVALID_ARGUMENT;
    }
    return AGENT_OK;
}

/* The shape rules of a sandbox: what create accepts, and so the only specs
 * a recovered sandbox can legitimately have. */
static agent_code check_spec(const runtime_spec *s, terr *err)
{
    agent_code code = lifecycle_check_id(s->sandbox_id, err);
    if (code != AGENT_OK) return code;
    if (!limits_template_name_valid(s->template_name)) {
        terr_set(err, "invalid template: must match ^[a-z0-9][a-z0-9._-]{0,62}$");
        return AGENT_INVALID_ARGUMENT;
    }
    if (s->vcpus < TORPOR_VCPUS_MIN || s->vcpus > TORPOR_VCPUS_MAX) {
        terr_set(err, "invalid vcpus %d: must be %d..%d", s->vcpus, TORPOR_VCPUS_MIN,
                 TORPOR_VCPUS_MAX);
        return AGENT_INVALID_ARGUMENT;
    }
    if (s->memory_mb < TORPOR_MEMORY_MB_MIN || s->memory_mb > TORPOR_MEMORY_MB_MAX) {
        terr_set(err, "invalid memory_mb %d: must be %d..%d", s->memory_mb, TORPOR_MEMORY_MB_MIN,
                 TORPOR_MEMORY_MB_MAX);
        return AGENT_INVALID_ARGUMENT;
    }
    return lifecycle_check_timeout(s->timeout_sec, err);
}

agent_code lifecycle_find_and_lock_table(lifecycle *lc, const char *id, sandbox **out, terr *err)
{
    agent_code code = lifecycle_check_id(id, err);
    if (code != AGENT_OK) return code;
    sandbox_table_lock(lc->table);
    sandbox *sb = sandbox_table_find_locked(lc->table, id);
    if (!sb) {
        sandbox_table_unlock(lc->table);
        return lifecycle_not_found(id, err);
    }
    if (sb->status == SANDBOX_RECOVERING) {
        sandbox_table_unlock(lc->table);
        /* "is recovering": the control plane's cue for 503 + Retry-After. */
        terr_set(
            err,
            "sandbox %s is recovering (the agent restarted and is re-attaching its VM); retry shortly",
            id);
        return AGENT_UNAVAILABLE;
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
    agent_code code = lifecycle_find_and_lock_table(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    sandbox_ref_locked(sb);
    sandbox_lifecycle_acquire_locked(lc->table, sb);
    if (!sb->in_table) { /* destroyed while we waited */
        lifecycle_unlock_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        return lifecycle_not_found(id, err);
    }
    sandbox_table_unlock(lc->table);
    *out = sb;
    return AGENT_OK;
}

void lifecycle_unlock_locked(lifecycle *lc, sandbox *sb)
{
    sandbox_lifecycle_release_locked(sb);
    sandbox_unref_locked(lc->table, sb);
}

void lifecycle_unlock(lifecycle *lc, sandbox *sb)
{
    sandbox_table_lock(lc->table);
    lifecycle_unlock_locked(lc, sb);
    sandbox_table_unlock(lc->table);
}

void lifecycle_drop_notice(lifecycle *lc, const char *id)
{
    if (!lc->journal || !journal_is_pending(lc->journal, id)) return;
    terr e;
    const char *ids[1] = {id};
    if (journal_ack(lc->journal, ids, 1, &e) != 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=journal_drop_failed sandbox_id=%s error=\"%s\"", id,
                 log_quote(e.msg, q, sizeof q));
    }
}

/* ------------------------------------------------------------ open/close */

/* A re-attached VM (or its failure) for a sandbox announced as recovering.
 * Returns true when it was one (handled), false when it was not announced. */
static bool settle_recovering(lifecycle *lc, const runtime_spec *spec, runtime_vm *vm)
{
    sandbox_table_lock(lc->table);
    sandbox *sb = sandbox_table_find_locked(lc->table, spec->sandbox_id);
    if (!sb || sb->status != SANDBOX_RECOVERING) {
        sandbox_table_unlock(lc->table);
        return false;
    }
    if (vm == RUNTIME_VM_GONE) {
        sandbox_lifecycle_release_locked(sb);
        sandbox_table_remove_locked(lc->table, sb);
        sandbox_table_unlock(lc->table);
        pthread_mutex_lock(&lc->rec_mu);
        lc->n_gone++;
        pthread_mutex_unlock(&lc->rec_mu);
        log_warn("event=sandbox_recover_failed sandbox_id=%s outcome=removed_from_table",
                 spec->sandbox_id);
        return true;
    }
    sb->vm = vm;
    sb->status = SANDBOX_RUNNING;
    sb->last_active_ms = lifecycle_now_ms(lc); /* a restart counts as a fresh start of the TTL */
    sandbox_lifecycle_release_locked(sb);
    sandbox_table_unlock(lc->table);
    pthread_mutex_lock(&lc->rec_mu);
    lc->n_running++;
    pthread_mutex_unlock(&lc->rec_mu);
    log_info("event=sandbox_recovered sandbox_id=%s status=running", spec->sandbox_id);
    return true;
}

static void on_recovered(void *ctx, const runtime_spec *spec, runtime_vm *vm)
{
    lifecycle *lc = ctx;
    if (!spec) { /* every sandbox announced */
        pthread_mutex_lock(&lc->rec_mu);
        lc->rec_announced = true;
        pthread_cond_broadcast(&lc->rec_cv);
        pthread_mutex_unlock(&lc->rec_mu);
        return;
    }
    bool announce = vm == RUNTIME_VM_RECOVERING;
    /* Before the sandbox is served: its namespace, DNS and port proxy. */
    if (vm && vm != RUNTIME_VM_GONE && !announce && limits_sandbox_id_valid(spec->sandbox_id))
        lifecycle_net_reattach(lc, spec->sandbox_id, vm);
    if (vm == RUNTIME_VM_GONE || (vm && !announce)) {
        if (settle_recovering(lc, spec, vm)) return;
        if (vm == RUNTIME_VM_GONE) return; /* never announced: nothing to undo */
    }
    if (!limits_sandbox_id_valid(spec->sandbox_id)) {
        log_warn("event=recover_skip reason=invalid_id");
        if (!announce) runtime_vm_unref(vm);
        return;
    }
    terr e;
    /* Metadata on disk is input like any other: a spec create would refuse
     * (corrupt or hand-edited) cannot be served, and a sandbox left on disk
     * but not in the table would never be listed or reclaimed, so it is
     * removed (once its VM is reported, for an announced one). */
    if (check_spec(spec, &e) != AGENT_OK) {
        if (announce) return;
        terr derr = {{0}};
        int drc = lc->driver->ops->destroy(lc->driver, spec->sandbox_id, vm, &derr);
        runtime_vm_unref(vm);
        pthread_mutex_lock(&lc->rec_mu);
        lc->n_rejected++;
        pthread_mutex_unlock(&lc->rec_mu);
        char q[LOG_QUOTE_MAX], q2[LOG_QUOTE_MAX];
        if (drc == 0)
            log_error(
                "event=recover_rejected sandbox_id=%s reason=\"invalid spec: %s\" action=destroyed",
                spec->sandbox_id, log_quote(e.msg, q, sizeof q));
        else
            log_error("event=recover_rejected sandbox_id=%s reason=\"invalid spec: %s\" "
                      "action=destroy_failed error=\"%s\"",
                      spec->sandbox_id, log_quote(e.msg, q, sizeof q),
                      log_quote(derr.msg, q2, sizeof q2));
        return;
    }
    sandbox_status st = announce ? SANDBOX_RECOVERING : vm ? SANDBOX_RUNNING : SANDBOX_PAUSED;
    sandbox_table_lock(lc->table);
    sandbox *sb = sandbox_table_insert_locked(lc->table, spec, st, &e);
    if (!sb) {
        sandbox_table_unlock(lc->table);
        char q[LOG_QUOTE_MAX];
        log_warn("event=recover_skip sandbox_id=%s error=\"%s\"", spec->sandbox_id,
                 log_quote(e.msg, q, sizeof q));
        if (!announce) runtime_vm_unref(vm);
        return;
    }
    /* Recovering: the lifecycle lock is held until the VM is settled, so the
     * reaper and every lifecycle call keep off it. */
    if (announce) sb->lifecycle_busy = true;
    else sb->vm = vm;
    sb->last_active_ms = lifecycle_now_ms(lc);
    sandbox_unref_locked(lc->table, sb);
    sandbox_table_unlock(lc->table);
    pthread_mutex_lock(&lc->rec_mu);
    if (announce) {
    } else if (vm) {
        lc->n_running++;
    } else {
        lc->n_paused++;
    }
    pthread_mutex_unlock(&lc->rec_mu);
    log_info("event=sandbox_recovered sandbox_id=%s status=%s", spec->sandbox_id,
             sandbox_status_name(st));
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
    char q[LOG_QUOTE_MAX];
    if (journal_pending(lc->journal, &ids, &n, &e) != 0) {
        log_warn("event=journal_stale_check_failed error=\"%s\"", log_quote(e.msg, q, sizeof q));
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
        log_warn("event=journal_drop_failed count=%zu error=\"%s\"", k,
                 log_quote(e.msg, q, sizeof q));
    for (size_t i = 0; i < k; i++)
        log_info("event=journal_stale_notice_dropped sandbox_id=%s", ids[i]);
    journal_ids_free(ids, k);
}

/* Runs the driver's recover(); on the background thread when async. */
static void *recover_main(void *arg)
{
    lifecycle *lc = arg;
    terr e = {{0}};
    long long t0 = lifecycle_now_ms(lc);
    int rc = lc->driver->ops->recover(lc->driver, on_recovered, lc, &e);
    pthread_mutex_lock(&lc->rec_mu);
    lc->rec_done = true;
    if (rc != 0) {
        lc->rec_failed = true;
        lc->rec_err = e;
    }
    pthread_cond_broadcast(&lc->rec_cv);
    log_info("event=table_recovered paused=%d running=%d rejected=%d gone=%d duration_ms=%lld",
             lc->n_paused, lc->n_running, lc->n_rejected, lc->n_gone,
             (long long)(lifecycle_now_ms(lc) - t0));
    pthread_mutex_unlock(&lc->rec_mu);
    return NULL;
}

int lifecycle_open(const lifecycle_config *cfg, lifecycle **out, terr *err)
{
    if (!cfg->driver || !cfg->clock)
        return terr_set(err, "lifecycle: driver and clock are required");
    lifecycle *lc = calloc(1, sizeof *lc);
    if (!lc) return terr_set(err, "lifecycle: out of memory");
    lc->driver = cfg->driver;
    if (cfg->admission) {
        lc->admission = *cfg->admission;
        lc->admission_on = true;
    }
    lc->journal = cfg->journal;
    lc->clock = cfg->clock;
    lc->net = cfg->net;
    if (sandbox_table_new(&lc->table, err) != 0) {
        free(lc);
        return -1;
    }
    pthread_mutex_init(&lc->rec_mu, NULL);
    pthread_cond_init(&lc->rec_cv, NULL);
    if (!lc->driver->ops->recover) {
        lc->rec_announced = lc->rec_done = true;
    } else if (cfg->async_recover) {
        int e = pthread_create(&lc->rec_thread, NULL, recover_main, lc);
        if (e) {
            terr_set(err, "recover: pthread_create: %s", strerror(e));
            lifecycle_close(lc);
            return -1;
        }
        lc->rec_thread_started = true;
        /* Open returns once every sandbox is known; live VMs are re-attached
         * meanwhile (listed as recovering). */
        pthread_mutex_lock(&lc->rec_mu);
        while (!lc->rec_announced && !lc->rec_done) pthread_cond_wait(&lc->rec_cv, &lc->rec_mu);
        int failed = lc->rec_failed;
        pthread_mutex_unlock(&lc->rec_mu);
        if (failed) {
            terr_set(err, "recover: %s", lc->rec_err.msg);
            lifecycle_close(lc);
            return -1;
        }
    } else {
        recover_main(lc);
        if (lc->rec_failed) {
            terr_set(err, "recover: %s", lc->rec_err.msg);
            lifecycle_close(lc);
            return -1;
        }
    }
    drop_stale_notices(lc);
    *out = lc;
    return 0;
}

void lifecycle_close(lifecycle *lc)
{
    if (!lc) return;
    if (lc->rec_thread_started) pthread_join(lc->rec_thread, NULL); /* bounded: each re-attach is */
    sandbox_table_free(lc->table);
    free(lc);
}

/* ------------------------------------------------------------ lifecycle */

agent_code lifecycle_create(lifecycle *lc, const runtime_spec *in, lifecycle_info *out, terr *err)
{
    return lifecycle_create_net(lc, in, NULL, out, err);
}

/* Network of a sandbox about to start (create or resume): namespace and
 * rules (policy, or the stored one when NULL), and a TAP fd for the VM in
 * *tap (-1 without network). */
static int net_prepare(lifecycle *lc, const char *id, const net_policy *policy, bool creating,
                       int *tap, terr *err)
{
    *tap = -1;
    if (!lc->net) return 0;
    net_policy def;
    if (creating && !policy) {
        net_policy_default(&def);
        policy = &def;
    }
    if (net_setup(lc->net, id, policy, err) < 0) return -1;
    if (net_tap_open(lc->net, id, tap, err) < 0) return -1;
    return 0;
}

agent_code lifecycle_create_net(lifecycle *lc, const runtime_spec *in, const net_policy *policy,
                                lifecycle_info *out, terr *err)
{
    agent_code code = check_spec(in, err);
    if (code != AGENT_OK) return code;

    runtime_spec spec = *in;
    if (spec.created_at_unix == 0) spec.created_at_unix = lifecycle_now_ms(lc) / 1000;

    const admission_config *adm = lc->admission_on ? &lc->admission : NULL;
    if (admission_check_disk(adm, spec.memory_mb, err) != 0) {
        log_warn("event=admission_refused sandbox_id=%s op=create limit=disk", spec.sandbox_id);
        return AGENT_RESOURCE_EXHAUSTED;
    }
    sandbox_table_lock(lc->table);
    if (sandbox_table_find_locked(lc->table, spec.sandbox_id)) {
        sandbox_table_unlock(lc->table);
        terr_set(err, "sandbox %s already exists", spec.sandbox_id);
        return AGENT_ALREADY_EXISTS;
    }
    if (admission_check_ram_locked(adm, lc->table, spec.memory_mb, err) != 0) {
        sandbox_table_unlock(lc->table);
        log_warn("event=admission_refused sandbox_id=%s op=create limit=memory memory_mb=%d",
                 spec.sandbox_id, spec.memory_mb);
        return AGENT_RESOURCE_EXHAUSTED;
    }
    sandbox *sb = sandbox_table_insert_locked(lc->table, &spec, SANDBOX_CREATING, err);
    if (!sb) {
        sandbox_table_unlock(lc->table);
        return AGENT_INTERNAL;
    }
    sb->lifecycle_busy = true; /* new record: nobody can hold it */
    sandbox_table_unlock(lc->table);

    int64_t t0 = lifecycle_now_ms(lc);
    runtime_vm *vm = NULL;
    terr derr = {{0}};
    int tap = -1;
    int rc = net_prepare(lc, spec.sandbox_id, policy, true, &tap, &derr);
    if (rc == 0) {
        spec.net_fd = tap > 2 ? tap : 0;
        rc = lc->driver->ops->create(lc->driver, &spec, &vm, &derr);
        spec.net_fd = 0;
    }
    if (tap >= 0) close(tap);
    if (rc != 0 && lc->net) {
        terr nerr;
        if (net_teardown(lc->net, spec.sandbox_id, &nerr) < 0) {
            char q[LOG_QUOTE_MAX];
            log_warn("event=net_teardown_failed sandbox_id=%s error=\"%s\"", spec.sandbox_id,
                     log_quote(nerr.msg, q, sizeof q));
        }
    }

    sandbox_table_lock(lc->table);
    if (rc == 0) {
        sb->vm = vm;
        sb->status = SANDBOX_RUNNING;
        sb->last_active_ms = lifecycle_now_ms(lc);
        lifecycle_fill_info(sb, out);
    } else {
        sandbox_table_remove_locked(lc->table, sb);
    }
    lifecycle_unlock_locked(lc, sb);
    sandbox_table_unlock(lc->table);

    if (rc != 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=create_failed sandbox_id=%s template=%s error=\"%s\"", spec.sandbox_id,
                 spec.template_name, log_quote(derr.msg, q, sizeof q));
        terr_set(err, "%s", derr.msg);
        return strncmp(derr.msg, "unknown template", 16) == 0 ? AGENT_INVALID_ARGUMENT
                                                              : AGENT_INTERNAL;
    }
    log_info("event=sandbox_created sandbox_id=%s template=%s vcpus=%d memory_mb=%d timeout_sec=%d "
             "duration_ms=%lld",
             spec.sandbox_id, spec.template_name, spec.vcpus, spec.memory_mb, spec.timeout_sec,
             (long long)(lifecycle_now_ms(lc) - t0));
    return AGENT_OK;
}

/* Lifecycle lock held, status already destroying: driver destroy + removal.
 * On failure the status goes back to prev. */
int lifecycle_destroy_held(lifecycle *lc, sandbox *sb, sandbox_status prev, terr *err)
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
    if (rc == 0) lifecycle_drop_notice(lc, sb->id);
    if (rc == 0 && lc->net) {
        /* The VM is gone: its namespace goes too. A failure leaves debris
         * that the next create of the same id would rebuild; logged. */
        terr nerr;
        if (net_teardown(lc->net, sb->id, &nerr) < 0) {
            char q[LOG_QUOTE_MAX];
            log_warn("event=net_teardown_failed sandbox_id=%s error=\"%s\"", sb->id,
                     log_quote(nerr.msg, q, sizeof q));
        }
    }
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
    int rc = lifecycle_destroy_held(lc, sb, prev, &derr);
    lifecycle_unlock(lc, sb);
    if (rc != 0) {
        char q[LOG_QUOTE_MAX];
        log_error("event=destroy_failed sandbox_id=%s error=\"%s\"", id,
                  log_quote(derr.msg, q, sizeof q));
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
        lifecycle_unlock_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        return AGENT_FAILED_PRECONDITION;
    }
    sb->status = SANDBOX_PAUSING;
    runtime_vm *vm = sb->vm;
    runtime_spec spec = sb->spec;
    sandbox_table_unlock(lc->table);

    int64_t t0 = lifecycle_now_ms(lc);
    terr derr = {{0}};
    int rc = lc->driver->ops->pause(lc->driver, vm, &spec, &derr);
    if (rc == 0) {
        sandbox_table_lock(lc->table);
        sb->status = SANDBOX_PAUSED;
        sb->vm = NULL;
        lifecycle_fill_info(sb, out);
        lifecycle_unlock_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        runtime_vm_unref(vm);
        log_info("event=sandbox_paused sandbox_id=%s reason=request duration_ms=%lld", id,
                 (long long)(lifecycle_now_ms(lc) - t0));
        return AGENT_OK;
    }
    if (lc->driver->ops->vm_alive(lc->driver, vm)) {
        sandbox_table_lock(lc->table);
        sb->status = SANDBOX_RUNNING;
        lifecycle_unlock_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        char q[LOG_QUOTE_MAX];
        log_warn("event=pause_failed sandbox_id=%s outcome=still_running error=\"%s\"", id,
                 log_quote(derr.msg, q, sizeof q));
        terr_set(err, "pause failed (sandbox still running): %s", derr.msg);
        return AGENT_INTERNAL;
    }
    sandbox_table_lock(lc->table);
    sb->status = SANDBOX_DESTROYING;
    sandbox_table_unlock(lc->table);
    terr xerr = {{0}};
    int drc = lifecycle_destroy_held(lc, sb, SANDBOX_RUNNING, &xerr);
    lifecycle_unlock(lc, sb);
    char q[LOG_QUOTE_MAX], q2[LOG_QUOTE_MAX];
    if (drc == 0)
        log_error("event=pause_failed sandbox_id=%s outcome=destroyed error=\"%s\"", id,
                  log_quote(derr.msg, q, sizeof q));
    else
        log_error("event=pause_failed sandbox_id=%s outcome=destroy_failed error=\"%s\" "
                  "destroy_error=\"%s\"",
                  id, log_quote(derr.msg, q, sizeof q), log_quote(xerr.msg, q2, sizeof q2));
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
    lifecycle_drop_notice(lc, sb->id);
    char q[LOG_QUOTE_MAX], q2[LOG_QUOTE_MAX];
    if (drc == 0)
        log_error(
            "event=resume_failed sandbox_id=%s outcome=snapshot_lost action=destroyed error=\"%s\"",
            sb->id, log_quote(derr->msg, q, sizeof q));
    else
        log_error("event=resume_failed sandbox_id=%s outcome=snapshot_lost action=destroy_failed "
                  "error=\"%s\" destroy_error=\"%s\"",
                  sb->id, log_quote(derr->msg, q, sizeof q), log_quote(xerr.msg, q2, sizeof q2));
    terr_set(err, "resume failed and the snapshot was lost; sandbox destroyed: %s", derr->msg);
    lifecycle_unlock(lc, sb);
    return AGENT_INTERNAL;
}

agent_code lifecycle_resume(lifecycle *lc, const char *id, int timeout_sec, lifecycle_info *out,
                            terr *err)
{
    return lifecycle_resume_net(lc, id, timeout_sec, NULL, out, err);
}

agent_code lifecycle_resume_net(lifecycle *lc, const char *id, int timeout_sec,
                                const net_policy *policy, lifecycle_info *out, terr *err)
{
    agent_code code = lifecycle_check_timeout(timeout_sec, err);
    if (code != AGENT_OK) return code;
    sandbox *sb;
    if ((code = lock_lifecycle(lc, id, &sb, err)) != AGENT_OK) return code;
    const admission_config *adm = lc->admission_on ? &lc->admission : NULL;
    sandbox_table_lock(lc->table);
    int memory_mb = sb->spec.memory_mb;
    sandbox_table_unlock(lc->table);
    int disk_rc = admission_check_disk(adm, memory_mb, err);
    sandbox_table_lock(lc->table);
    if (sb->status != SANDBOX_PAUSED) {
        terr_set(err, "sandbox %s is %s, not paused", id, sandbox_status_name(sb->status));
        lifecycle_unlock_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        return AGENT_FAILED_PRECONDITION;
    }
    if (disk_rc != 0 || admission_check_ram_locked(adm, lc->table, memory_mb, err) != 0) {
        lifecycle_unlock_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        log_warn("event=admission_refused sandbox_id=%s op=resume limit=%s memory_mb=%d", id,
                 disk_rc != 0 ? "disk" : "memory", memory_mb);
        return AGENT_RESOURCE_EXHAUSTED;
    }
    sb->status = SANDBOX_RESUMING;
    runtime_spec spec = sb->spec;
    spec.timeout_sec = timeout_sec;
    sandbox_table_unlock(lc->table);

    int64_t t0 = lifecycle_now_ms(lc);
    runtime_vm *vm = NULL;
    terr derr = {{0}};
    int tap = -1;
    int rc = net_prepare(lc, id, policy, false, &tap, &derr);
    if (rc == 0) {
        spec.net_fd = tap > 2 ? tap : 0;
        rc = lc->driver->ops->resume(lc->driver, &spec, &vm, &derr);
        spec.net_fd = 0;
    }
    if (tap >= 0) close(tap);
    if (rc == RUNTIME_SNAPSHOT_LOST) return resume_lost(lc, sb, &derr, err);
    sandbox_table_lock(lc->table);
    if (rc == 0) {
        sb->vm = vm;
        sb->spec.timeout_sec = timeout_sec;
        sb->status = SANDBOX_RUNNING;
        sb->last_active_ms = lifecycle_now_ms(lc);
        lifecycle_fill_info(sb, out);
    } else {
        sb->status = SANDBOX_PAUSED; /* the driver kept the snapshot: resume may be retried */
    }
    lifecycle_unlock_locked(lc, sb);
    sandbox_table_unlock(lc->table);
    if (rc != 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=resume_failed sandbox_id=%s outcome=still_paused error=\"%s\"", id,
                 log_quote(derr.msg, q, sizeof q));
        terr_set(err, "resume failed (sandbox stays paused): %s", derr.msg);
        return AGENT_INTERNAL;
    }
    lifecycle_drop_notice(lc, id);
    log_info("event=sandbox_resumed sandbox_id=%s timeout_sec=%d duration_ms=%lld", id, timeout_sec,
             (long long)(lifecycle_now_ms(lc) - t0));
    return AGENT_OK;
}

agent_code lifecycle_adopt_paused(lifecycle *lc, const runtime_spec *spec, terr *err)
{
    agent_code code = check_spec(spec, err);
    if (code != AGENT_OK) return code;
    sandbox_table_lock(lc->table);
    sandbox *old = sandbox_table_find_locked(lc->table, spec->sandbox_id);
    if (old) {
        bool paused = old->status == SANDBOX_PAUSED;
        sandbox_table_unlock(lc->table);
        if (paused) return AGENT_OK;
        terr_set(err, "sandbox %s is already held here (%s)", spec->sandbox_id,
                 sandbox_status_name(old->status));
        return AGENT_ALREADY_EXISTS;
    }
    sandbox *sb = sandbox_table_insert_locked(lc->table, spec, SANDBOX_PAUSED, err);
    if (!sb) {
        sandbox_table_unlock(lc->table);
        return AGENT_INTERNAL;
    }
    sb->last_active_ms = lifecycle_now_ms(lc);
    sandbox_unref_locked(lc->table, sb);
    sandbox_table_unlock(lc->table);
    log_info("event=sandbox_adopted sandbox_id=%s status=paused", spec->sandbox_id);
    return AGENT_OK;
}
