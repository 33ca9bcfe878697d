/* lifecycle_activity: the operations that act on a sandbox as it is and
 * never take its lifecycle lock: ping, set_timeout, get, list, exec and the
 * file ops (lifecycle.h has the rules; a pausing sandbox answers
 * FAILED_PRECONDITION at once). */
#include "lifecycle_internal.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "torpor_limits.h"

agent_code lifecycle_ping(lifecycle *lc, const char *id, int64_t *last_active_ms, terr *err)
{
    sandbox *sb;
    agent_code code = lifecycle_find_and_lock_table(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    if (sb->status != SANDBOX_RUNNING) {
        code = lifecycle_wrong_state(id, sb->status, "running", err);
    } else {
        sb->last_active_ms = lifecycle_now_ms(lc);
        if (last_active_ms) *last_active_ms = sb->last_active_ms;
    }
    sandbox_table_unlock(lc->table);
    return code;
}

agent_code lifecycle_set_timeout(lifecycle *lc, const char *id, int timeout_sec,
                                 lifecycle_info *out, terr *err)
{
    agent_code code = lifecycle_check_id(id, err);
    if (code != AGENT_OK) return code;
    if ((code = lifecycle_check_timeout(timeout_sec, err)) != AGENT_OK) return code;
    sandbox *sb;
    if ((code = lifecycle_find_and_lock_table(lc, id, &sb, err)) != AGENT_OK) return code;
    if (sb->status == SANDBOX_RUNNING || sb->status == SANDBOX_PAUSED) {
        sb->spec.timeout_sec = timeout_sec;
        if (sb->status == SANDBOX_RUNNING) sb->last_active_ms = lifecycle_now_ms(lc);
        lifecycle_fill_info(sb, out);
    } else {
        code = lifecycle_wrong_state(id, sb->status, "running or paused", err);
    }
    sandbox_table_unlock(lc->table);
    if (code == AGENT_OK)
        log_info("event=timeout_set sandbox_id=%s timeout_sec=%d", id, timeout_sec);
    return code;
}

agent_code lifecycle_get(lifecycle *lc, const char *id, lifecycle_info *out, terr *err)
{
    sandbox *sb;
    agent_code code = lifecycle_find_and_lock_table(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    lifecycle_fill_info(sb, out);
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
        lifecycle_fill_info(sb, &infos[k++]);
    }
    sandbox_table_unlock(lc->table);
    *out = infos;
    *n = k;
    return 0;
}

/* Starts an exec/file op: the sandbox must be running; counts as activity
 * and holds off the reaper until end_activity. */
static agent_code begin_activity(lifecycle *lc, const char *id, sandbox **sb_out,
                                 runtime_vm **vm_out, terr *err)
{
    sandbox *sb;
    agent_code code = lifecycle_find_and_lock_table(lc, id, &sb, err);
    if (code != AGENT_OK) return code;
    if (sb->status != SANDBOX_RUNNING || !sb->vm) {
        code = lifecycle_wrong_state(id, sb->status, "running", err);
    } else {
        sandbox_ref_locked(sb);
        sb->active_execs++;
        sb->last_active_ms = lifecycle_now_ms(lc);
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
    if (running) sb->last_active_ms = lifecycle_now_ms(lc);
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
    if (req->timeout_sec < 0 || req->timeout_sec > TORPOR_EXEC_TIMEOUT_MAX_SEC) {
        terr_set(err, "invalid exec timeout_sec %d: must be 0..%d (0 = %d)", req->timeout_sec,
                 TORPOR_EXEC_TIMEOUT_MAX_SEC, TORPOR_EXEC_TIMEOUT_DEFAULT_SEC);
        return AGENT_INVALID_ARGUMENT;
    }
    runtime_exec_request r = *req;
    if (r.timeout_sec == 0) r.timeout_sec = TORPOR_EXEC_TIMEOUT_DEFAULT_SEC;
    sandbox *sb = NULL;
    runtime_vm *vm = NULL;
    agent_code code = begin_activity(lc, id, &sb, &vm, err);
    if (code != AGENT_OK) return code;
    memset(res, 0, sizeof *res);
    terr derr = {{0}};
    int rc = lc->driver->ops->exec(lc->driver, vm, &r, res, &derr);
    if (rc != 0) runtime_exec_result_free(res);
    return end_activity(lc, sb, vm, rc, "exec", &derr, err);
}

agent_code lifecycle_guest_call(lifecycle *lc, const char *id, const char *what, uint8_t req_type,
                                const void *payload, size_t len, uint8_t resp_type, int timeout_ms,
                                uint8_t **resp, size_t *resp_len, terr *err)
{
    *resp = NULL;
    *resp_len = 0;
    sandbox *sb = NULL;
    runtime_vm *vm = NULL;
    agent_code code = begin_activity(lc, id, &sb, &vm, err);
    if (code != AGENT_OK) return code;
    terr derr = {{0}};
    if (!lc->driver->ops->guest_call) {
        end_activity(lc, sb, vm, 0, what, &derr, err);
        terr_set(err, "%s: not supported by the %s runtime", what, lc->driver->ops->name);
        return AGENT_FAILED_PRECONDITION;
    }
    int rc = lc->driver->ops->guest_call(lc->driver, vm, what, req_type, payload, len, resp_type,
                                         timeout_ms, resp, resp_len, &derr);
    return end_activity(lc, sb, vm, rc, what, &derr, err);
}

agent_code lifecycle_read_file(lifecycle *lc, const char *id, const char *path, uint8_t **data,
                               size_t *len, terr *err)
{
    if (!path || !path[0]) {
        terr_set(err, "path is required");
        return AGENT_INVALID_ARGUMENT;
    }
    sandbox *sb = NULL;
    runtime_vm *vm = NULL;
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
    sandbox *sb = NULL;
    runtime_vm *vm = NULL;
    agent_code code = begin_activity(lc, id, &sb, &vm, err);
    if (code != AGENT_OK) return code;
    terr derr = {{0}};
    int rc =
        lc->driver->ops->write_file(lc->driver, vm, path, data, len, mode ? mode : 0644, &derr);
    return end_activity(lc, sb, vm, rc, "write_file", &derr, err);
}
