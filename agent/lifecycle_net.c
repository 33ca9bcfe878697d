/* lifecycle_net: the network policy operation of the lifecycle (lifecycle.h);
 * the namespaces themselves are net.c's. */
#include "lifecycle_internal.h"

#include <unistd.h>

#include "log.h"
#include "net.h"

agent_code lifecycle_set_network(lifecycle *lc, const char *id, const net_policy *policy,
                                 lifecycle_info *out, terr *err)
{
    agent_code code = lifecycle_check_id(id, err);
    if (code != AGENT_OK) return code;
    sandbox *sb;
    if ((code = lifecycle_find_and_lock_table(lc, id, &sb, err)) != AGENT_OK) return code;
    if (sb->status == SANDBOX_RUNNING || sb->status == SANDBOX_PAUSED ||
        sb->status == SANDBOX_PAUSING || sb->status == SANDBOX_RESUMING)
        lifecycle_fill_info(sb, out);
    else code = lifecycle_wrong_state(id, sb->status, "running or paused", err);
    sandbox_table_unlock(lc->table);
    if (code != AGENT_OK) return code;
    if (!lc->net) {
        terr_set(err, "this agent runs without sandbox networking");
        return AGENT_FAILED_PRECONDITION;
    }
    /* A concurrent destroy may remove the namespace meanwhile: the apply
     * then fails (INTERNAL), and the sandbox is gone anyway. */
    if (net_apply(lc->net, id, policy, err) < 0) {
        char q[LOG_QUOTE_MAX];
        log_warn("event=net_policy_failed sandbox_id=%s error=\"%s\"", id,
                 log_quote(err->msg, q, sizeof q));
        return AGENT_INTERNAL;
    }
    return AGENT_OK;
}

void lifecycle_net_reattach(lifecycle *lc, const char *id, runtime_vm *vm)
{
    if (!lc->net || !lc->driver->ops->net_fd) return;
    terr err, ferr = {{0}};
    /* No fd (the VM has no TAP, or it cannot be taken): enough while the
     * namespace is still mounted. */
    int fd = lc->driver->ops->net_fd(lc->driver, vm, &ferr);
    int rc = net_reattach(lc->net, id, fd, &err);
    if (fd >= 0) close(fd);
    if (rc < 0) {
        char q[LOG_QUOTE_MAX], q2[LOG_QUOTE_MAX];
        log_warn("event=net_reattach_failed sandbox_id=%s error=\"%s\" net_fd_error=\"%s\"", id,
                 log_quote(err.msg, q, sizeof q), log_quote(ferr.msg, q2, sizeof q2));
    }
}
