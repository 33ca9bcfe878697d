/* autopause: see autopause.h. */
#include "autopause.h"

#include <stdlib.h>
#include <string.h>

#include "agent_metrics.h"
#include "lifecycle_internal.h"
#include "log.h"

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
           now - sb->last_active_ms >= (int64_t)sb->spec.timeout_sec * 1000 &&
           now >= sb->pause_retry_at_ms;
}

int64_t autopause_backoff_ms(int failures)
{
    int64_t ms = AUTOPAUSE_RETRY_FIRST_MS;
    for (int i = 1; i < failures && ms < AUTOPAUSE_RETRY_MAX_MS; i++) ms *= 2;
    return ms < AUTOPAUSE_RETRY_MAX_MS ? ms : AUTOPAUSE_RETRY_MAX_MS;
}

int autopause_collect(lifecycle *lc, char ***ids, size_t *n, terr *err)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 0;
    int64_t now = lifecycle_now_ms(lc);
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

bool autopause_claim(lifecycle *lc, const char *id)
{
    bool claimed = false;
    int64_t now = lifecycle_now_ms(lc);
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

void autopause_run(lifecycle *lc, const char *id)
{
    sandbox *sb = sandbox_table_get(lc->table, id);
    if (!sb) { /* cannot happen: a claimed sandbox cannot be destroyed */
        log_error("event=auto_pause_lost sandbox_id=%s", id);
        return;
    }
    sandbox_table_lock(lc->table);
    runtime_vm *vm = sb->vm;
    runtime_spec spec = sb->spec;
    int64_t idle_ms = lifecycle_now_ms(lc) - sb->last_active_ms;
    sandbox_table_unlock(lc->table);

    int64_t t0 = lifecycle_now_ms(lc);
    terr derr = {{0}};
    char q[LOG_QUOTE_MAX];
    int rc = lc->driver->ops->pause(lc->driver, vm, &spec, &derr);
    if (rc == 0) {
        terr jerr = {{0}};
        /* Journal before "paused": once a List can show it paused, the notice
         * is durable. */
        if (lc->journal && journal_append_paused(lc->journal, id, &jerr) != 0)
            log_error("event=journal_append_failed sandbox_id=%s error=\"%s\"", id,
                      log_quote(jerr.msg, q, sizeof q));
        sandbox_table_lock(lc->table);
        sb->status = SANDBOX_PAUSED;
        sb->vm = NULL;
        sb->pause_failures = 0;
        sb->pause_retry_at_ms = 0;
        lifecycle_unlock_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        runtime_vm_unref(vm);
        agent_metrics_auto_pause(true, (double)(lifecycle_now_ms(lc) - t0) / 1000.0);
        log_info("event=sandbox_paused sandbox_id=%s reason=inactivity idle_ms=%lld timeout_sec=%d "
                 "duration_ms=%lld",
                 id, (long long)idle_ms, spec.timeout_sec, (long long)(lifecycle_now_ms(lc) - t0));
        return;
    }
    agent_metrics_auto_pause(false, (double)(lifecycle_now_ms(lc) - t0) / 1000.0);
    if (lc->driver->ops->vm_alive(lc->driver, vm)) {
        /* QMP timeout, ENOSPC, EMFILE...: the tenant's VM is fine, so it
         * keeps running and a later tick tries again, backing off. */
        sandbox_table_lock(lc->table);
        sb->status = SANDBOX_RUNNING;
        sb->pause_failures++;
        int failures = sb->pause_failures;
        int64_t wait = autopause_backoff_ms(failures);
        sb->pause_retry_at_ms = lifecycle_now_ms(lc) + wait;
        lifecycle_unlock_locked(lc, sb);
        sandbox_table_unlock(lc->table);
        log_warn("event=auto_pause_failed sandbox_id=%s outcome=still_running failures=%d "
                 "retry_in_ms=%lld error=\"%s\"",
                 id, failures, (long long)wait, log_quote(derr.msg, q, sizeof q));
        return;
    }
    log_error("event=auto_pause_failed sandbox_id=%s outcome=vm_gone action=destroy error=\"%s\"",
              id, log_quote(derr.msg, q, sizeof q));
    sandbox_table_lock(lc->table);
    sb->status = SANDBOX_DESTROYING;
    sandbox_table_unlock(lc->table);
    terr xerr = {{0}};
    int drc = lifecycle_destroy_held(lc, sb, SANDBOX_RUNNING, &xerr);
    lifecycle_unlock(lc, sb);
    if (drc == 0)
        log_warn("event=sandbox_destroyed sandbox_id=%s reason=auto_pause_failed cause=\"%s\"", id,
                 log_quote(derr.msg, q, sizeof q));
    else /* still running (status restored); the next tick retries */
        log_error("event=destroy_failed sandbox_id=%s reason=auto_pause_failed error=\"%s\"", id,
                  log_quote(xerr.msg, q, sizeof q));
}
