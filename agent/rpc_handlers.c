/* rpc_handlers: the HostAgentService table (agent_rpc_methods) and one short
 * handler per RPC: check the message, call lifecycle/net/transfer, translate
 * the outcome to a gRPC status and the answer to protobuf. Over 600 lines only
 * because there are 18 such handlers, each a screen or less; the template RPCs
 * are in rpc_templates.c and the file RPCs' chunking in rpc_files.c. */
#include "rpc_handlers.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "agent_metrics.h"
#include "hostagent.pb-c.h"
#include "log.h"
#include "mono_time.h"
#include "rpc_files.h"
#include "sandbox_transfer.h"
#include "net_policy.h"
#include "port_tunnel.h"
#include "torpor_limits.h"

typedef Torpor__Hostagent__V1__SandboxInfo pb_info;

grpc_status_code agent_code_to_grpc(agent_code c)
{
    switch (c) {
    case AGENT_OK: return GRPC_STATUS_OK;
    case AGENT_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
    case AGENT_FAILED_PRECONDITION: return GRPC_STATUS_FAILED_PRECONDITION;
    case AGENT_INVALID_ARGUMENT: return GRPC_STATUS_INVALID_ARGUMENT;
    case AGENT_ALREADY_EXISTS: return GRPC_STATUS_ALREADY_EXISTS;
    case AGENT_INTERNAL: return GRPC_STATUS_INTERNAL;
    case AGENT_RESOURCE_EXHAUSTED: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case AGENT_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
    }
    return GRPC_STATUS_UNKNOWN;
}

/* Seconds since t0 (mono_ms), for torpor_agent_operation_duration_seconds. */
static double since(int64_t t0) { return (double)(mono_ms() - t0) / 1000.0; }

static void fail_code(rpc_call *call, agent_code c, const terr *e)
{
    rpc_fail(call, agent_code_to_grpc(c), "%s", e->msg);
}

/* Checks an id before it is copied anywhere; true = call already failed. */
static bool bad_id(rpc_call *call, const char *id)
{
    if (limits_sandbox_id_valid(id)) return false;
    rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
             "invalid sandbox_id: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$");
    return true;
}

/* The pb view points into info (which must outlive the reply). */
static void to_pb(const agent_rpc *app, const lifecycle_info *info, pb_info *pb)
{
    torpor__hostagent__v1__sandbox_info__init(pb);
    pb->sandbox_id = (char *)info->spec.sandbox_id;
    pb->status = (char *)sandbox_status_name(info->status);
    pb->template_ = (char *)info->spec.template_name;
    pb->vcpus = info->spec.vcpus;
    pb->memory_mb = info->spec.memory_mb;
    pb->host_ip = (char *)(app->host_ip ? app->host_ip : "");
    pb->created_at_unix = info->spec.created_at_unix;
    pb->last_active_at_unix = info->last_active_ms / 1000;
    pb->timeout_sec = info->spec.timeout_sec;
}

/* NULL pb = the default policy. */
static int policy_from_pb(const Torpor__Hostagent__V1__NetworkPolicy *pb, net_policy *p, terr *e)
{
    net_policy_default(p);
    if (!pb) return 0;
    if (pb->egress && pb->egress[0] && net_policy_set_egress(p, pb->egress, e) < 0) return -1;
    for (size_t i = 0; i < pb->n_allow; i++)
        if (net_policy_add(p, true, pb->allow[i], e) < 0) return -1;
    for (size_t i = 0; i < pb->n_deny; i++)
        if (net_policy_add(p, false, pb->deny[i], e) < 0) return -1;
    return 0;
}

static void h_create(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__CreateSandboxRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    if (!limits_template_name_valid(req->template_)) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                 "invalid template: must match ^[a-z0-9][a-z0-9._-]{0,62}$");
        return;
    }
    if (req->disk_mb != 0 &&
        (req->disk_mb < TORPOR_DISK_MB_MIN || req->disk_mb > TORPOR_DISK_MB_MAX)) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                 "invalid disk_mb: must be 0 (default) or 512..65536");
        return;
    }
    runtime_spec spec = {.vcpus = req->vcpus,
                         .memory_mb = req->memory_mb,
                         .timeout_sec = req->timeout_sec,
                         .disk_mb = req->disk_mb};
    snprintf(spec.sandbox_id, sizeof spec.sandbox_id, "%s", req->sandbox_id);
    snprintf(spec.template_name, sizeof spec.template_name, "%s", req->template_);
    lifecycle_info info;
    terr e;
    net_policy policy;
    if (policy_from_pb(req->network, &policy, &e) < 0) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "invalid network policy: %s", e.msg);
        return;
    }
    int64_t t0 = mono_ms();
    agent_code c = lifecycle_create_net(app->lc, &spec, &policy, &info, &e);
    agent_metrics_operation("create", c, since(t0));
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    pb_info pb;
    to_pb(app, &info, &pb);
    Torpor__Hostagent__V1__CreateSandboxResponse resp =
        TORPOR__HOSTAGENT__V1__CREATE_SANDBOX_RESPONSE__INIT;
    resp.sandbox = &pb;
    rpc_reply(call, &resp.base);
}

static void h_destroy(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__DestroySandboxRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    terr e;
    int64_t t0 = mono_ms();
    agent_code c = lifecycle_destroy(app->lc, req->sandbox_id, &e);
    agent_metrics_operation("destroy", c, since(t0));
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__DestroySandboxResponse resp =
        TORPOR__HOSTAGENT__V1__DESTROY_SANDBOX_RESPONSE__INIT;
    rpc_reply(call, &resp.base);
}

static void h_pause(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__PauseSandboxRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    lifecycle_info info;
    terr e;
    int64_t t0 = mono_ms();
    agent_code c = lifecycle_pause(app->lc, req->sandbox_id, &info, &e);
    agent_metrics_operation("pause", c, since(t0));
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    pb_info pb;
    to_pb(app, &info, &pb);
    Torpor__Hostagent__V1__PauseSandboxResponse resp =
        TORPOR__HOSTAGENT__V1__PAUSE_SANDBOX_RESPONSE__INIT;
    resp.sandbox = &pb;
    rpc_reply(call, &resp.base);
}

static void h_resume(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__ResumeSandboxRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    lifecycle_info info;
    terr e;
    net_policy policy;
    if (req->network && policy_from_pb(req->network, &policy, &e) < 0) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "invalid network policy: %s", e.msg);
        return;
    }
    int64_t t0 = mono_ms();
    agent_code c = lifecycle_resume_net(app->lc, req->sandbox_id, req->timeout_sec,
                                        req->network ? &policy : NULL, &info, &e);
    agent_metrics_operation("resume", c, since(t0));
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    pb_info pb;
    to_pb(app, &info, &pb);
    Torpor__Hostagent__V1__ResumeSandboxResponse resp =
        TORPOR__HOSTAGENT__V1__RESUME_SANDBOX_RESPONSE__INIT;
    resp.sandbox = &pb;
    rpc_reply(call, &resp.base);
}

static void h_ping(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__PingSandboxRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    int64_t last = 0;
    terr e;
    agent_code c = lifecycle_ping(app->lc, req->sandbox_id, &last, &e);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__PingSandboxResponse resp =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_RESPONSE__INIT;
    resp.last_active_at_unix = last / 1000;
    rpc_reply(call, &resp.base);
}

static void h_set_timeout(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__SetSandboxTimeoutRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    lifecycle_info info;
    terr e;
    agent_code c = lifecycle_set_timeout(app->lc, req->sandbox_id, req->timeout_sec, &info, &e);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    pb_info pb;
    to_pb(app, &info, &pb);
    Torpor__Hostagent__V1__SetSandboxTimeoutResponse resp =
        TORPOR__HOSTAGENT__V1__SET_SANDBOX_TIMEOUT_RESPONSE__INIT;
    resp.sandbox = &pb;
    rpc_reply(call, &resp.base);
}

static void h_list(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__ListSandboxesRequest *req = (const void *)m;
    terr e;
    /* Acks first, so the answer never repeats what the caller just recorded.
     * Best effort: a journal that cannot be written (disk full) must not
     * stop the host from being reconciled. The unwritten acks stay pending
     * and are reported again, which the caller handles (it acks them
     * again). */
    char q[LOG_QUOTE_MAX];
    if (req->n_ack_auto_paused_sandbox_ids > 0 &&
        journal_ack(app->journal, (const char *const *)req->ack_auto_paused_sandbox_ids,
                    req->n_ack_auto_paused_sandbox_ids, &e) != 0)
        log_warn("event=journal_ack_failed count=%zu error=\"%s\"",
                 req->n_ack_auto_paused_sandbox_ids, log_quote(e.msg, q, sizeof q));
    lifecycle_info *infos = NULL;
    size_t n = 0;
    if (lifecycle_list(app->lc, &infos, &n, &e) != 0) {
        rpc_fail(call, GRPC_STATUS_INTERNAL, "%s", e.msg);
        return;
    }
    char **ids = NULL;
    size_t n_ids = 0;
    if (journal_pending(app->journal, &ids, &n_ids, &e) != 0) {
        free(infos);
        rpc_fail(call, GRPC_STATUS_INTERNAL, "%s", e.msg);
        return;
    }
    pb_info *pbs = calloc(n ? n : 1, sizeof *pbs);
    pb_info **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!pbs || !ptrs) {
        free(pbs);
        free(ptrs);
        free(infos);
        journal_ids_free(ids, n_ids);
        rpc_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "list: out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        to_pb(app, &infos[i], &pbs[i]);
        ptrs[i] = &pbs[i];
    }
    Torpor__Hostagent__V1__ListSandboxesResponse resp =
        TORPOR__HOSTAGENT__V1__LIST_SANDBOXES_RESPONSE__INIT;
    resp.n_sandboxes = n;
    resp.sandboxes = ptrs;
    resp.n_auto_paused_sandbox_ids = n_ids;
    resp.auto_paused_sandbox_ids = ids;
    if (app->agent_id) resp.agent_id = (char *)app->agent_id;
    rpc_reply(call, &resp.base);
    free(pbs);
    free(ptrs);
    free(infos);
    journal_ids_free(ids, n_ids);
}

static void h_exec(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__ExecRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    runtime_exec_request r = {
        .cmd = req->cmd,
        .args = (const char *const *)req->args,
        .n_args = req->n_args,
        .env = (const char *const *)req->env,
        .n_env = req->n_env,
        .cwd = req->cwd,
        .timeout_sec = req->timeout_sec,
        .stdin_data = req->stdin.data,
        .stdin_len = req->stdin.len,
    };
    for (size_t i = 0; i < req->n_env; i++) {
        if (!strchr(req->env[i], '=') || req->env[i][0] == '=') {
            rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "invalid env entry %zu: must be KEY=VALUE",
                     i);
            return;
        }
    }
    runtime_exec_result res;
    terr e;
    int64_t t0 = mono_ms();
    runtime_call_deadline_set(rpc_call_deadline_mono_ms(call));
    agent_code c = lifecycle_exec(app->lc, req->sandbox_id, &r, &res, &e);
    runtime_call_deadline_set(0);
    agent_metrics_operation("exec", c, since(t0));
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__ExecResponse resp = TORPOR__HOSTAGENT__V1__EXEC_RESPONSE__INIT;
    resp.stdout.data = res.out;
    resp.stdout.len = res.out_len;
    resp.stderr.data = res.err;
    resp.stderr.len = res.err_len;
    resp.exit_code = res.exit_code;
    resp.timed_out = res.timed_out;
    resp.stdout_truncated = res.out_truncated;
    resp.stderr_truncated = res.err_truncated;
    rpc_reply(call, &resp.base);
    runtime_exec_result_free(&res);
}

static void h_read_file(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__ReadFileRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    uint8_t *data = NULL;
    size_t len = 0;
    terr e;
    runtime_call_deadline_set(rpc_call_deadline_mono_ms(call));
    agent_code c = lifecycle_read_file(app->lc, req->sandbox_id, req->path, &data, &len, &e);
    runtime_call_deadline_set(0);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__ReadFileResponse resp = TORPOR__HOSTAGENT__V1__READ_FILE_RESPONSE__INIT;
    resp.content.data = data;
    resp.content.len = len;
    rpc_reply(call, &resp.base);
    free(data);
}

static void h_write_file(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__WriteFileRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    terr e;
    runtime_call_deadline_set(rpc_call_deadline_mono_ms(call));
    agent_code c = lifecycle_write_file(app->lc, req->sandbox_id, req->path, req->content.data,
                                        req->content.len, req->mode, &e);
    runtime_call_deadline_set(0);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__WriteFileResponse resp =
        TORPOR__HOSTAGENT__V1__WRITE_FILE_RESPONSE__INIT;
    resp.size = (int64_t)req->content.len;
    rpc_reply(call, &resp.base);
}

/* Template images under image_dir (its subdirectories); *out malloc'd. */
static size_t templates_ready(const char *image_dir, char ***out)
{
    *out = NULL;
    if (!image_dir) return 0;
    DIR *d = opendir(image_dir);
    if (!d) return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 256) {
        if (!limits_template_name_valid(e->d_name)) continue;
        if (e->d_type != DT_DIR) {
            /* A built template is a link into the image cache
             * (template_builder.h): a link to a directory counts. */
            char p[4096];
            struct stat st;
            if (e->d_type != DT_LNK && e->d_type != DT_UNKNOWN) continue;
            if (snprintf(p, sizeof p, "%s/%s", image_dir, e->d_name) >= (int)sizeof p) continue;
            if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        }
        char **grown = realloc(*out, (n + 1) * sizeof *grown);
        if (!grown) break;
        *out = grown;
        if (!((*out)[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    return n;
}

static void h_host_info(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    (void)m;
    lifecycle_info *infos = NULL;
    size_t n = 0;
    terr e;
    if (lifecycle_list(app->lc, &infos, &n, &e) != 0) {
        rpc_fail(call, GRPC_STATUS_INTERNAL, "%s", e.msg);
        return;
    }
    Torpor__Hostagent__V1__GetHostInfoResponse resp =
        TORPOR__HOSTAGENT__V1__GET_HOST_INFO_RESPONSE__INIT;
    resp.agent_id = (char *)(app->agent_id ? app->agent_id : "");
    for (size_t i = 0; i < n; i++) {
        if (infos[i].status == SANDBOX_PAUSED) {
            resp.sandboxes_paused++;
        } else {
            resp.sandboxes_running++;
            resp.memory_reserved_mb += infos[i].spec.memory_mb;
        }
    }
    free(infos);
    struct sysinfo si;
    if (sysinfo(&si) == 0)
        resp.memory_total_mb = (int64_t)((uint64_t)si.totalram * si.mem_unit / (1024 * 1024));
    struct statvfs vf;
    if (app->state_dir && statvfs(app->state_dir, &vf) == 0)
        resp.disk_free_mb = (int64_t)((uint64_t)vf.f_bavail * vf.f_frsize / (1024 * 1024));
    resp.memory_capacity_mb = app->memory_capacity_mb;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    resp.vcpus = cpus > 0 ? (int32_t)cpus : 0;
    char **tpl;
    resp.n_templates_ready = templates_ready(app->image_dir, &tpl);
    resp.templates_ready = tpl;
    rpc_reply(call, &resp.base);
    for (size_t i = 0; i < resp.n_templates_ready; i++) free(tpl[i]);
    free(tpl);
}

typedef Torpor__Hostagent__V1__TransferFile pb_tfile;

void agent_rpc_files_to_pb(const transfer_file *files, size_t n, pb_tfile *pbs, pb_tfile **ptrs)
{
    for (size_t i = 0; i < n; i++) {
        pbs[i] = (pb_tfile)TORPOR__HOSTAGENT__V1__TRANSFER_FILE__INIT;
        pbs[i].name = (char *)files[i].name;
        pbs[i].size = files[i].size;
        pbs[i].sha256 = (char *)files[i].sha256;
        ptrs[i] = &pbs[i];
    }
}

bool agent_rpc_files_from_pb(pb_tfile *const *in, size_t n, transfer_file *out)
{
    for (size_t i = 0; i < n; i++) {
        const pb_tfile *f = in[i];
        if (!f || !f->name || !f->sha256 || strlen(f->name) >= sizeof out[i].name ||
            strlen(f->sha256) != 64)
            return false;
        snprintf(out[i].name, sizeof out[i].name, "%s", f->name);
        snprintf(out[i].sha256, sizeof out[i].sha256, "%s", f->sha256);
        out[i].size = f->size;
    }
    return true;
}

static void h_export_files(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__ExportSandboxFilesRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n = 0;
    terr e;
    agent_code c =
        transfer_export_manifest(app->lc, app->state_dir, req->sandbox_id, files, &n, &e);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    pb_tfile pbs[TRANSFER_FILES_MAX];
    pb_tfile *ptrs[TRANSFER_FILES_MAX];
    agent_rpc_files_to_pb(files, n, pbs, ptrs);
    Torpor__Hostagent__V1__ExportSandboxFilesResponse resp =
        TORPOR__HOSTAGENT__V1__EXPORT_SANDBOX_FILES_RESPONSE__INIT;
    resp.files = ptrs;
    resp.n_files = n;
    log_info("event=sandbox_export sandbox_id=%s files=%zu", req->sandbox_id, n);
    rpc_reply(call, &resp.base);
}

static void h_read_chunk(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__ReadSandboxFileChunkRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    uint8_t *buf = malloc(TRANSFER_CHUNK_MAX);
    if (!buf) {
        rpc_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t len = 0;
    bool zero = false;
    terr e;
    agent_code c = transfer_read_chunk(
        app->lc, app->state_dir, req->sandbox_id, req->name ? req->name : "", req->offset,
        req->max_len > 0 ? (size_t)req->max_len : 0, buf, &len, &zero, &e);
    if (c != AGENT_OK) {
        free(buf);
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__ReadSandboxFileChunkResponse resp =
        TORPOR__HOSTAGENT__V1__READ_SANDBOX_FILE_CHUNK_RESPONSE__INIT;
    if (zero) {
        resp.zero_len = (int64_t)len;
    } else {
        resp.data.data = buf;
        resp.data.len = len;
    }
    rpc_reply(call, &resp.base);
    free(buf);
}

static void h_write_chunk(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__WriteSandboxFileChunkRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    terr e;
    if (req->zero_len < 0 || req->zero_len > TRANSFER_CHUNK_MAX) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "zero_len out of range");
        return;
    }
    agent_code c =
        transfer_write_chunk(app->lc, app->state_dir, req->sandbox_id, req->name ? req->name : "",
                             req->offset, req->data.data, req->data.len, (size_t)req->zero_len, &e);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__WriteSandboxFileChunkResponse resp =
        TORPOR__HOSTAGENT__V1__WRITE_SANDBOX_FILE_CHUNK_RESPONSE__INIT;
    rpc_reply(call, &resp.base);
}

static void h_commit_import(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__CommitSandboxImportRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    if (req->n_files == 0 || req->n_files > TRANSFER_FILES_MAX || !req->template_ ||
        strlen(req->template_) >= RUNTIME_TEMPLATE_MAX) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "bad file list or template");
        return;
    }
    transfer_file files[TRANSFER_FILES_MAX];
    if (!agent_rpc_files_from_pb(req->files, req->n_files, files)) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "bad file entry");
        return;
    }
    runtime_spec spec = {.vcpus = req->vcpus,
                         .memory_mb = req->memory_mb,
                         .timeout_sec = req->timeout_sec,
                         .created_at_unix = req->created_at_unix};
    snprintf(spec.sandbox_id, sizeof spec.sandbox_id, "%s", req->sandbox_id);
    snprintf(spec.template_name, sizeof spec.template_name, "%s", req->template_);
    terr e;
    agent_code c = transfer_commit(app->lc, app->state_dir, &spec, files, req->n_files, &e);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__CommitSandboxImportResponse resp =
        TORPOR__HOSTAGENT__V1__COMMIT_SANDBOX_IMPORT_RESPONSE__INIT;
    rpc_reply(call, &resp.base);
}

static void h_abort_import(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__AbortSandboxImportRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    terr e;
    agent_code c = transfer_abort(app->state_dir, req->sandbox_id, &e);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__AbortSandboxImportResponse resp =
        TORPOR__HOSTAGENT__V1__ABORT_SANDBOX_IMPORT_RESPONSE__INIT;
    rpc_reply(call, &resp.base);
}

static void h_set_network(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__SetSandboxNetworkRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    terr e;
    net_policy policy;
    if (policy_from_pb(req->network, &policy, &e) < 0) {
        rpc_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "invalid network policy: %s", e.msg);
        return;
    }
    lifecycle_info info;
    agent_code c = lifecycle_set_network(app->lc, req->sandbox_id, &policy, &info, &e);
    if (c != AGENT_OK) {
        fail_code(call, c, &e);
        return;
    }
    pb_info pb;
    to_pb(app, &info, &pb);
    Torpor__Hostagent__V1__SetSandboxNetworkResponse resp =
        TORPOR__HOSTAGENT__V1__SET_SANDBOX_NETWORK_RESPONSE__INIT;
    resp.sandbox = &pb;
    rpc_reply(call, &resp.base);
}

static void h_open_port(void *appv, rpc_call *call, const ProtobufCMessage *m)
{
    agent_rpc *app = appv;
    const Torpor__Hostagent__V1__OpenPortRequest *req = (const void *)m;
    if (bad_id(call, req->sandbox_id)) return;
    if (!app->tunnel) {
        rpc_fail(
            call, GRPC_STATUS_UNAVAILABLE,
            "this agent has no port tunnel (network off, or a non-loopback address without TLS)");
        return;
    }
    char token[TUNNEL_TOKEN_LEN + 1];
    int closed = 0;
    terr e;
    agent_code c = tunnel_open(app->tunnel, req->sandbox_id, req->port, token, &closed, &e);
    if (c != AGENT_OK) {
        if (closed)
            rpc_fail(call, GRPC_STATUS_OUT_OF_RANGE, "nothing listens on port %d: %s", req->port,
                     e.msg);
        else fail_code(call, c, &e);
        return;
    }
    Torpor__Hostagent__V1__OpenPortResponse resp = TORPOR__HOSTAGENT__V1__OPEN_PORT_RESPONSE__INIT;
    resp.token = token;
    resp.tunnel_port = tunnel_port(app->tunnel);
    rpc_reply(call, &resp.base);
}

static const rpc_method methods[] = {
    {RPC_CREATE_SANDBOX, &torpor__hostagent__v1__create_sandbox_request__descriptor, h_create},
    {RPC_DESTROY_SANDBOX, &torpor__hostagent__v1__destroy_sandbox_request__descriptor, h_destroy},
    {RPC_PAUSE_SANDBOX, &torpor__hostagent__v1__pause_sandbox_request__descriptor, h_pause},
    {RPC_RESUME_SANDBOX, &torpor__hostagent__v1__resume_sandbox_request__descriptor, h_resume},
    {RPC_PING_SANDBOX, &torpor__hostagent__v1__ping_sandbox_request__descriptor, h_ping},
    {RPC_SET_TIMEOUT, &torpor__hostagent__v1__set_sandbox_timeout_request__descriptor,
     h_set_timeout},
    {RPC_LIST_SANDBOXES, &torpor__hostagent__v1__list_sandboxes_request__descriptor, h_list},
    {RPC_EXEC, &torpor__hostagent__v1__exec_request__descriptor, h_exec},
    {RPC_READ_FILE, &torpor__hostagent__v1__read_file_request__descriptor, h_read_file},
    {RPC_WRITE_FILE, &torpor__hostagent__v1__write_file_request__descriptor, h_write_file},
    {RPC_WRITE_FILE_CHUNK, &torpor__hostagent__v1__write_file_chunk_request__descriptor,
     rpc_files_write_chunk},
    {RPC_READ_FILE_CHUNK, &torpor__hostagent__v1__read_file_chunk_request__descriptor,
     rpc_files_read_chunk},
    {RPC_LIST_DIR, &torpor__hostagent__v1__list_dir_request__descriptor, rpc_files_list_dir},
    {RPC_BUILD_TEMPLATE, &torpor__hostagent__v1__build_template_request__descriptor,
     agent_rpc_build_template},
    {RPC_GET_TEMPLATE, &torpor__hostagent__v1__get_template_request__descriptor,
     agent_rpc_get_template},
    {RPC_LIST_TEMPLATES, &torpor__hostagent__v1__list_templates_request__descriptor,
     agent_rpc_list_templates},
    {RPC_DELETE_TEMPLATE, &torpor__hostagent__v1__delete_template_request__descriptor,
     agent_rpc_delete_template},
    {RPC_GET_HOST_INFO, &torpor__hostagent__v1__get_host_info_request__descriptor, h_host_info},
    {RPC_EXPORT_FILES, &torpor__hostagent__v1__export_sandbox_files_request__descriptor,
     h_export_files},
    {RPC_READ_CHUNK, &torpor__hostagent__v1__read_sandbox_file_chunk_request__descriptor,
     h_read_chunk},
    {RPC_WRITE_CHUNK, &torpor__hostagent__v1__write_sandbox_file_chunk_request__descriptor,
     h_write_chunk},
    {RPC_COMMIT_IMPORT, &torpor__hostagent__v1__commit_sandbox_import_request__descriptor,
     h_commit_import},
    {RPC_ABORT_IMPORT, &torpor__hostagent__v1__abort_sandbox_import_request__descriptor,
     h_abort_import},
    {RPC_SET_NETWORK, &torpor__hostagent__v1__set_sandbox_network_request__descriptor,
     h_set_network},
    {RPC_OPEN_PORT, &torpor__hostagent__v1__open_port_request__descriptor, h_open_port},
    {RPC_EXPORT_TEMPLATE_IMAGE, &torpor__hostagent__v1__export_template_image_request__descriptor,
     agent_rpc_export_template_image},
    {RPC_READ_TEMPLATE_CHUNK, &torpor__hostagent__v1__read_template_image_chunk_request__descriptor,
     agent_rpc_read_template_chunk},
    {RPC_WRITE_TEMPLATE_CHUNK,
     &torpor__hostagent__v1__write_template_image_chunk_request__descriptor,
     agent_rpc_write_template_chunk},
    {RPC_COMMIT_TEMPLATE_IMAGE, &torpor__hostagent__v1__commit_template_image_request__descriptor,
     agent_rpc_commit_template_image},
    {RPC_ABORT_TEMPLATE_IMAGE, &torpor__hostagent__v1__abort_template_image_request__descriptor,
     agent_rpc_abort_template_image},
};

const rpc_method *agent_rpc_methods(size_t *n)
{
    *n = sizeof methods / sizeof methods[0];
    return methods;
}

const char *const *agent_rpc_quick_methods(void)
{
    static const char *const quick[] = {RPC_PING_SANDBOX, NULL};
    return quick;
}
