/* vm_death: see vm_death.h. */
#include "vm_death.h"

#include <stdlib.h>
#include <string.h>

#include "lifecycle_internal.h"
#include "log.h"

int vm_death_collect(lifecycle *lc, vm_death **out, size_t *n, terr *err)
{
    *out = NULL;
    *n = 0;
    size_t nvms = 0;
    /* Snapshot (id, vm ref) under the lock, ask the driver outside it. */
    sandbox_table_lock(lc->table);
    size_t total = sandbox_table_count_locked(lc->table);
    vm_death *all = calloc(total ? total : 1, sizeof *all);
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
        else all[k++] = all[i]; /* keeps its reference: see vm_death_claim */
    }
    *out = all;
    *n = k;
    return 0;
}

void vm_death_free(vm_death *dead, size_t n)
{
    if (!dead) return;
    for (size_t i = 0; i < n; i++) runtime_vm_unref(dead[i].vm);
    free(dead);
}

bool vm_death_claim(lifecycle *lc, const char *id, const runtime_vm *vm)
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

void vm_death_destroy_claimed(lifecycle *lc, const char *id)
{
    sandbox *sb = sandbox_table_get(lc->table, id);
    if (!sb) {
        log_error("event=destroy_dead_lost sandbox_id=%s", id);
        return;
    }
    terr derr = {{0}};
    int rc = lifecycle_destroy_held(lc, sb, SANDBOX_RUNNING, &derr);
    lifecycle_unlock(lc, sb);
    char q[LOG_QUOTE_MAX];
    if (rc == 0) log_warn("event=sandbox_destroyed sandbox_id=%s reason=vm_died", id);
    else
        log_error("event=destroy_failed sandbox_id=%s reason=vm_died error=\"%s\"", id,
                  log_quote(derr.msg, q, sizeof q));
}
