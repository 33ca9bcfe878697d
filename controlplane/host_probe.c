/* host_probe: see host_probe.h. */
#include "host_probe.h"

#include <string.h>

#include "log.h"

static void log_change(const char *host_id, int rc, const terr *dberr, const char *before,
                       const char *after)
{
    char q[LOG_QUOTE_MAX];
    if (rc != 0)
        log_error("event=host_record_failed host_id=%s error=\"%s\"", host_id,
                  log_quote(dberr->msg, q, sizeof q));
    else if (strcmp(before, after) != 0)
        log_info("event=host_status host_id=%s from=%s to=%s", host_id, before, after);
}

int host_probe(db_conn *db, agent_pool *agents, const db_host *host, double fresh_sec,
               rpc_client **client, terr *err)
{
    char before[16], after[16];
    terr dberr;
    Torpor__Hostagent__V1__GetHostInfoResponse *info = NULL;
    grpc_status_code st = GRPC_STATUS_UNAVAILABLE;
    if (agent_pool_get(agents, host, client, err) == 0)
        st = agent_host_info(*client, AGENT_DEADLINE_PROBE_MS, &info, err);
    if (st != GRPC_STATUS_OK) {
        int rc = db_host_record_failure(db, host->id, fresh_sec, before, after, &dberr);
        log_change(host->id, rc, &dberr, before, after);
        return terr_wrap(err, "GetHostInfo on host %s", host->id);
    }
    db_host_info hi = {.memory_total_mb = info->memory_total_mb,
                       .memory_reserved_mb = info->memory_reserved_mb,
                       .disk_free_mb = info->disk_free_mb,
                       .vcpus = info->vcpus,
                       .memory_capacity_mb = info->memory_capacity_mb,
                       .templates = (const char *const *)info->templates_ready,
                       .n_templates = info->n_templates_ready};
    int rc = db_host_record_answer(db, host->id, &hi, before, after, &dberr);
    log_change(host->id, rc, &dberr, before, after);
    protobuf_c_message_free_unpacked(&info->base, NULL);
    return 0;
}
