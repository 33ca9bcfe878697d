/* agent_client: the pool of gRPC clients (one per host, replaced when the
 * host's address changes) and one typed function per HostAgentService RPC
 * (agent_client.h), which owns the method path, the deadline, the retry of
 * idempotent calls and the protobuf <-> row translation, so no HTTP handler
 * spells any of them. Over 600 lines because there is one such function per
 * RPC (the template RPCs are in agent_templates.c). */
#include "agent_client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "mono_time.h"

typedef struct pool_entry {
    char host_id[64];
    char address[256];
    rpc_client *client;
} pool_entry;

struct agent_pool {
    pthread_mutex_t mu;
    char *cert, *key, *ca, *server_name;
    pool_entry *entries; /* current client per host */
    size_t n, cap;
    rpc_client **retired; /* replaced clients, closed at agent_pool_close */
    size_t n_retired;
};

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int agent_pool_open(const rpc_tls_config *tls, agent_pool **out, terr *err)
{
    *out = NULL;
    agent_pool *p = calloc(1, sizeof *p);
    if (!p) return terr_set(err, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    if (tls) {
        p->cert = dup_or_null(tls->cert_path);
        p->key = dup_or_null(tls->key_path);
        p->ca = dup_or_null(tls->ca_path);
        p->server_name = dup_or_null(tls->server_name_override);
    }
    *out = p;
    return 0;
}

void agent_pool_close(agent_pool *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) rpc_client_close(p->entries[i].client);
    for (size_t i = 0; i < p->n_retired; i++) rpc_client_close(p->retired[i]);
    free(p->entries);
    free(p->retired);
    free(p->cert);
    free(p->key);
    free(p->ca);
    free(p->server_name);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static int open_client(agent_pool *p, const char *address, rpc_client **out, terr *err)
{
    rpc_client_config cfg = {
        .target = address,
        .tls = {.cert_path = p->cert,
                .key_path = p->key,
                .ca_path = p->ca,
                .server_name_override = p->server_name},
    };
    if (rpc_client_open(&cfg, out, err) != 0) return terr_wrap(err, "agent %s", address);
    return 0;
}

int agent_pool_get(agent_pool *p, const db_host *host, rpc_client **out, terr *err)
{
    *out = NULL;
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    pool_entry *e = NULL;
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->entries[i].host_id, host->id) == 0) e = &p->entries[i];
    if (e && strcmp(e->address, host->address) == 0) {
        *out = e->client;
        goto done;
    }
    rpc_client *c;
    if (open_client(p, host->address, &c, err) != 0) {
        rc = -1;
        goto done;
    }
    if (e) {
        rpc_client **grown = realloc(p->retired, (p->n_retired + 1) * sizeof *grown);
        if (!grown) {
            rpc_client_close(c);
            rc = terr_set(err, "out of memory");
            goto done;
        }
        p->retired = grown;
        p->retired[p->n_retired++] = e->client;
    } else {
        if (p->n == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 4;
            pool_entry *grown = realloc(p->entries, cap * sizeof *grown);
            if (!grown) {
                rpc_client_close(c);
                rc = terr_set(err, "out of memory");
                goto done;
            }
            p->entries = grown;
            p->cap = cap;
        }
        e = &p->entries[p->n++];
        snprintf(e->host_id, sizeof e->host_id, "%s", host->id);
    }
    snprintf(e->address, sizeof e->address, "%s", host->address);
    e->client = c;
    *out = c;
done:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

bool agent_is_connect_failure(grpc_status_code code, const char *message)
{
    /* "Broken pipe": the write hit a connection the (killed) agent had
     * closed, so no agent process read this request either. Errors seen
     * after the request was written ("Socket closed", resets) are not
     * retried: the agent may have acted on it. */
    return code == GRPC_STATUS_UNAVAILABLE && message &&
           (strstr(message, "failed to connect") != NULL || strstr(message, "Broken pipe") != NULL);
}

bool agent_method_is_idempotent(const char *method_path)
{
    static const char *const idempotent[] = {
        RPC_LIST_SANDBOXES,       RPC_PING_SANDBOX,
        RPC_SET_TIMEOUT,          RPC_READ_FILE,
        RPC_WRITE_FILE,           RPC_DESTROY_SANDBOX,
        RPC_READ_FILE_CHUNK,      RPC_LIST_DIR,
        RPC_GET_TEMPLATE,         RPC_LIST_TEMPLATES,
        RPC_GET_HOST_INFO,        RPC_EXPORT_FILES,
        RPC_READ_CHUNK,           RPC_WRITE_CHUNK,
        RPC_ABORT_IMPORT,         RPC_EXPORT_TEMPLATE_IMAGE,
        RPC_READ_TEMPLATE_CHUNK,  RPC_WRITE_TEMPLATE_CHUNK,
        RPC_ABORT_TEMPLATE_IMAGE,
    };
    for (size_t i = 0; i < sizeof idempotent / sizeof idempotent[0]; i++)
        if (strcmp(method_path, idempotent[i]) == 0) return true;
    return false;
}

grpc_status_code agent_call(rpc_client *c, const char *method_path, const ProtobufCMessage *request,
                            const ProtobufCMessageDescriptor *response_descriptor,
                            ProtobufCMessage **response, int deadline_ms, terr *err)
{
    int64_t start = mono_ms();
    int sleep_ms = 100;
    for (;;) {
        int64_t elapsed = mono_ms() - start;
        int remaining = deadline_ms - (int)elapsed;
        if (remaining < 1) remaining = 1;
        terr e = {{0}};
        grpc_status_code st =
            rpc_client_call(c, method_path, request, response_descriptor, response, remaining, &e);
        elapsed = mono_ms() - start;
        bool retry = agent_is_connect_failure(st, e.msg) ||
                     (st == GRPC_STATUS_UNAVAILABLE && agent_method_is_idempotent(method_path));
        if (!retry || elapsed + sleep_ms > AGENT_CONNECT_RETRY_MS ||
            elapsed + sleep_ms >= deadline_ms) {
            if (st != GRPC_STATUS_OK) terr_set(err, "%s", e.msg);
            return st;
        }
        struct timespec ts = {.tv_sec = sleep_ms / 1000,
                              .tv_nsec = (long)(sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (sleep_ms < 800) sleep_ms *= 2;
    }
}

void agent_status_to_http(grpc_status_code code, int *http_status, const char **error_code)
{
    switch (code) {
    case GRPC_STATUS_OK:
        *http_status = 200;
        *error_code = "";
        break;
    case GRPC_STATUS_NOT_FOUND:
        *http_status = 404;
        *error_code = "not_found";
        break;
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_ALREADY_EXISTS:
        *http_status = 409;
        *error_code = "invalid_state";
        break;
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_OUT_OF_RANGE:
        *http_status = 400;
        *error_code = "invalid_request";
        break;
    case GRPC_STATUS_RESOURCE_EXHAUSTED: /* admission control: the host is full */
        *http_status = 503;
        *error_code = "no_capacity";
        break;
    default: /* UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ... */
        *http_status = 502;
        *error_code = "agent_error";
        break;
    }
}

static agent_view view_from_status(const char *s)
{
    if (!s) return AGENT_VIEW_ABSENT;
    if (strcmp(s, "running") == 0) return AGENT_VIEW_RUNNING;
    if (strcmp(s, "pausing") == 0) return AGENT_VIEW_PAUSING;
    if (strcmp(s, "paused") == 0) return AGENT_VIEW_PAUSED;
    if (strcmp(s, "resuming") == 0) return AGENT_VIEW_RESUMING;
    /* Re-attached after an agent restart: held, its calls answer
     * UNAVAILABLE for now; like a transition, never gone. */
    if (strcmp(s, "recovering") == 0) return AGENT_VIEW_PAUSING;
    /* An unknown status from a newer agent: it holds the sandbox, so treat
     * it as in transition rather than gone. */
    return AGENT_VIEW_PAUSING;
}

agent_view agent_view_of(const Torpor__Hostagent__V1__ListSandboxesResponse *resp, const char *id,
                         bool *auto_paused)
{
    *auto_paused = false;
    for (size_t i = 0; i < resp->n_auto_paused_sandbox_ids; i++)
        if (resp->auto_paused_sandbox_ids[i] && strcmp(resp->auto_paused_sandbox_ids[i], id) == 0)
            *auto_paused = true;
    for (size_t i = 0; i < resp->n_sandboxes; i++) {
        const Torpor__Hostagent__V1__SandboxInfo *s = resp->sandboxes[i];
        if (s && s->sandbox_id && strcmp(s->sandbox_id, id) == 0)
            return view_from_status(s->status);
    }
    return AGENT_VIEW_ABSENT;
}

grpc_status_code agent_call_no_answer(rpc_client *c, const char *method,
                                      const ProtobufCMessage *req,
                                      const ProtobufCMessageDescriptor *resp_desc, int deadline_ms,
                                      terr *err)
{
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = agent_call(c, method, req, resp_desc, &resp, deadline_ms, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return st;
}

/* agent_call for calls with an answer: *out is NULL unless OK. */
static grpc_status_code call_answer(rpc_client *c, const char *method, const ProtobufCMessage *req,
                                    const ProtobufCMessageDescriptor *resp_desc,
                                    ProtobufCMessage **out, int deadline_ms, terr *err)
{
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = agent_call(c, method, req, resp_desc, &resp, deadline_ms, err);
    if (st != GRPC_STATUS_OK && resp) {
        protobuf_c_message_free_unpacked(resp, NULL);
        resp = NULL;
    }
    *out = resp;
    return st;
}

grpc_status_code agent_destroy(rpc_client *c, const char *sandbox_id, terr *err)
{
    Torpor__Hostagent__V1__DestroySandboxRequest req =
        TORPOR__HOSTAGENT__V1__DESTROY_SANDBOX_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    return agent_call_no_answer(c, RPC_DESTROY_SANDBOX, &req.base,
                                &torpor__hostagent__v1__destroy_sandbox_response__descriptor,
                                AGENT_DEADLINE_DESTROY_MS, err);
}

grpc_status_code agent_list(rpc_client *c, char **ack, size_t n_ack,
                            Torpor__Hostagent__V1__ListSandboxesResponse **out, terr *err)
{
    Torpor__Hostagent__V1__ListSandboxesRequest req =
        TORPOR__HOSTAGENT__V1__LIST_SANDBOXES_REQUEST__INIT;
    req.ack_auto_paused_sandbox_ids = ack;
    req.n_ack_auto_paused_sandbox_ids = n_ack;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = agent_call(c, RPC_LIST_SANDBOXES, &req.base,
                                     &torpor__hostagent__v1__list_sandboxes_response__descriptor,
                                     &resp, AGENT_DEADLINE_SHORT_MS, err);
    *out = (Torpor__Hostagent__V1__ListSandboxesResponse *)resp;
    return st;
}

grpc_status_code agent_host_info(rpc_client *c, int deadline_ms,
                                 Torpor__Hostagent__V1__GetHostInfoResponse **out, terr *err)
{
    Torpor__Hostagent__V1__GetHostInfoRequest req =
        TORPOR__HOSTAGENT__V1__GET_HOST_INFO_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = agent_call(
        c, RPC_GET_HOST_INFO, &req.base, &torpor__hostagent__v1__get_host_info_response__descriptor,
        &resp, deadline_ms > 0 ? deadline_ms : AGENT_DEADLINE_PROBE_MS, err);
    *out = (Torpor__Hostagent__V1__GetHostInfoResponse *)resp;
    return st;
}

/* The wire form of a canonical network JSON ("" = default: no message).
 * Strings point into *holder (json_decref it and free the arrays after the
 * call). */
typedef struct net_pb {
    Torpor__Hostagent__V1__NetworkPolicy msg;
    json_t *holder;
    char **allow, **deny;
} net_pb;

static void net_pb_free(net_pb *n)
{
    json_decref(n->holder);
    free(n->allow);
    free(n->deny);
}

static int strings_of(json_t *a, char ***out, size_t *n, terr *err)
{
    *n = json_is_array(a) ? json_array_size(a) : 0;
    *out = calloc(*n ? *n : 1, sizeof **out);
    if (!*out) return terr_set(err, "out of memory");
    for (size_t i = 0; i < *n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s) return terr_set(err, "network policy in the row is malformed");
        (*out)[i] = (char *)s;
    }
    return 0;
}

static int net_pb_from_json(const char *text, net_pb *n, terr *err)
{
    memset(n, 0, sizeof *n);
    torpor__hostagent__v1__network_policy__init(&n->msg);
    n->holder = json_loads(text, 0, NULL);
    const char *eg = json_string_value(json_object_get(n->holder, "egress"));
    if (!n->holder || !eg) return terr_set(err, "network policy in the row is malformed");
    n->msg.egress = (char *)eg;
    if (strings_of(json_object_get(n->holder, "allow"), &n->allow, &n->msg.n_allow, err) < 0 ||
        strings_of(json_object_get(n->holder, "deny"), &n->deny, &n->msg.n_deny, err) < 0)
        return -1;
    n->msg.allow = n->allow;
    n->msg.deny = n->deny;
    return 0;
}

/* A request's optional policy field from a row's network JSON: left NULL
 * for "" (the default policy), else pointed at n->msg. -1 (n freed) when
 * the JSON is malformed; else free n with net_pb_free after the call. */
static int net_pb_set_optional(const char *text, net_pb *n,
                               Torpor__Hostagent__V1__NetworkPolicy **field, terr *err)
{
    memset(n, 0, sizeof *n);
    if (!text || !text[0]) return 0;
    if (net_pb_from_json(text, n, err) < 0) {
        net_pb_free(n);
        return -1;
    }
    *field = &n->msg;
    return 0;
}

grpc_status_code agent_create(rpc_client *c, const sandbox_row *row, terr *err)
{
    Torpor__Hostagent__V1__CreateSandboxRequest req =
        TORPOR__HOSTAGENT__V1__CREATE_SANDBOX_REQUEST__INIT;
    req.sandbox_id = (char *)row->id;
    req.template_ = (char *)row->template_name;
    req.vcpus = row->vcpus;
    req.memory_mb = row->memory_mb;
    req.timeout_sec = row->timeout_sec;
    req.disk_mb = row->disk_mb;
    net_pb net;
    if (net_pb_set_optional(row->network, &net, &req.network, err) < 0)
        return GRPC_STATUS_INVALID_ARGUMENT;
    grpc_status_code st = agent_call_no_answer(
        c, RPC_CREATE_SANDBOX, &req.base,
        &torpor__hostagent__v1__create_sandbox_response__descriptor, AGENT_DEADLINE_CREATE_MS, err);
    net_pb_free(&net);
    return st;
}

grpc_status_code agent_open_port(rpc_client *c, const char *sandbox_id, int port, char *token,
                                 size_t token_size, int *tunnel_port, terr *err)
{
    Torpor__Hostagent__V1__OpenPortRequest req = TORPOR__HOSTAGENT__V1__OPEN_PORT_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.port = port;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = agent_call(c, RPC_OPEN_PORT, &req.base,
                                     &torpor__hostagent__v1__open_port_response__descriptor, &resp,
                                     AGENT_DEADLINE_SHORT_MS, err);
    if (st != GRPC_STATUS_OK) return st;
    const Torpor__Hostagent__V1__OpenPortResponse *r = (const void *)resp;
    snprintf(token, token_size, "%s", r->token ? r->token : "");
    *tunnel_port = r->tunnel_port;
    protobuf_c_message_free_unpacked(resp, NULL);
    return GRPC_STATUS_OK;
}

grpc_status_code agent_set_network(rpc_client *c, const char *sandbox_id, const char *network,
                                   terr *err)
{
    Torpor__Hostagent__V1__SetSandboxNetworkRequest req =
        TORPOR__HOSTAGENT__V1__SET_SANDBOX_NETWORK_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    net_pb net;
    if (net_pb_from_json(network, &net, err) < 0) {
        net_pb_free(&net);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    req.network = &net.msg;
    grpc_status_code st =
        agent_call_no_answer(c, RPC_SET_NETWORK, &req.base,
                             &torpor__hostagent__v1__set_sandbox_network_response__descriptor,
                             AGENT_DEADLINE_SHORT_MS, err);
    net_pb_free(&net);
    return st;
}

grpc_status_code agent_pause(rpc_client *c, const char *sandbox_id, terr *err)
{
    Torpor__Hostagent__V1__PauseSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PAUSE_SANDBOX_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    return agent_call_no_answer(c, RPC_PAUSE_SANDBOX, &req.base,
                                &torpor__hostagent__v1__pause_sandbox_response__descriptor,
                                AGENT_DEADLINE_PAUSE_MS, err);
}

grpc_status_code agent_resume(rpc_client *c, const char *sandbox_id, int timeout_sec,
                              const char *network, terr *err)
{
    Torpor__Hostagent__V1__ResumeSandboxRequest req =
        TORPOR__HOSTAGENT__V1__RESUME_SANDBOX_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.timeout_sec = timeout_sec;
    net_pb net;
    if (net_pb_set_optional(network, &net, &req.network, err) < 0) return GRPC_STATUS_INTERNAL;
    grpc_status_code st = agent_call_no_answer(
        c, RPC_RESUME_SANDBOX, &req.base,
        &torpor__hostagent__v1__resume_sandbox_response__descriptor, AGENT_DEADLINE_RESUME_MS, err);
    net_pb_free(&net);
    return st;
}

grpc_status_code agent_ping(rpc_client *c, const char *sandbox_id, terr *err)
{
    Torpor__Hostagent__V1__PingSandboxRequest req =
        TORPOR__HOSTAGENT__V1__PING_SANDBOX_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    return agent_call_no_answer(c, RPC_PING_SANDBOX, &req.base,
                                &torpor__hostagent__v1__ping_sandbox_response__descriptor,
                                AGENT_DEADLINE_SHORT_MS, err);
}

grpc_status_code agent_set_timeout(rpc_client *c, const char *sandbox_id, int timeout_sec,
                                   terr *err)
{
    Torpor__Hostagent__V1__SetSandboxTimeoutRequest req =
        TORPOR__HOSTAGENT__V1__SET_SANDBOX_TIMEOUT_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.timeout_sec = timeout_sec;
    return agent_call_no_answer(c, RPC_SET_TIMEOUT, &req.base,
                                &torpor__hostagent__v1__set_sandbox_timeout_response__descriptor,
                                AGENT_DEADLINE_SHORT_MS, err);
}

grpc_status_code agent_exec(rpc_client *c, const char *sandbox_id, const agent_exec_args *a,
                            Torpor__Hostagent__V1__ExecResponse **out, terr *err)
{
    Torpor__Hostagent__V1__ExecRequest req = TORPOR__HOSTAGENT__V1__EXEC_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.cmd = (char *)a->cmd;
    req.args = (char **)a->args;
    req.n_args = a->n_args;
    req.env = a->env;
    req.n_env = a->n_env;
    req.cwd = a->cwd ? (char *)a->cwd : "";
    req.timeout_sec = a->timeout_sec;
    req.stdin.data = (uint8_t *)a->stdin_data;
    req.stdin.len = a->stdin_data ? a->stdin_len : 0;
    return call_answer(c, RPC_EXEC, &req.base, &torpor__hostagent__v1__exec_response__descriptor,
                       (ProtobufCMessage **)out, a->timeout_sec * 1000 + AGENT_EXEC_SLACK_MS, err);
}

static atomic_int files_deadline = AGENT_DEADLINE_FILES_MS;

void agent_set_files_deadline_ms(int ms) { atomic_store(&files_deadline, ms); }

static int files_deadline_ms(void) { return atomic_load(&files_deadline); }

grpc_status_code agent_write_file(rpc_client *c, const char *sandbox_id, const char *path,
                                  const uint8_t *data, size_t len, terr *err)
{
    Torpor__Hostagent__V1__WriteFileRequest req = TORPOR__HOSTAGENT__V1__WRITE_FILE_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.path = (char *)path;
    req.content.data = (uint8_t *)data;
    req.content.len = len;
    return agent_call_no_answer(c, RPC_WRITE_FILE, &req.base,
                                &torpor__hostagent__v1__write_file_response__descriptor,
                                files_deadline_ms(), err);
}

grpc_status_code agent_read_file(rpc_client *c, const char *sandbox_id, const char *path,
                                 Torpor__Hostagent__V1__ReadFileResponse **out, terr *err)
{
    Torpor__Hostagent__V1__ReadFileRequest req = TORPOR__HOSTAGENT__V1__READ_FILE_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.path = (char *)path;
    return call_answer(c, RPC_READ_FILE, &req.base,
                       &torpor__hostagent__v1__read_file_response__descriptor,
                       (ProtobufCMessage **)out, files_deadline_ms(), err);
}

grpc_status_code agent_write_chunk(rpc_client *c, const agent_chunk_args *a,
                                   Torpor__Hostagent__V1__WriteFileChunkResponse **out, terr *err)
{
    Torpor__Hostagent__V1__WriteFileChunkRequest req =
        TORPOR__HOSTAGENT__V1__WRITE_FILE_CHUNK_REQUEST__INIT;
    req.sandbox_id = (char *)a->sandbox_id;
    req.path = (char *)a->path;
    req.upload_id = (char *)a->upload_id;
    req.offset = a->offset;
    req.data.data = (uint8_t *)a->data;
    req.data.len = a->data ? a->len : 0;
    req.mode = a->mode;
    req.commit = a->commit;
    req.abort = a->abort;
    return call_answer(c, RPC_WRITE_FILE_CHUNK, &req.base,
                       &torpor__hostagent__v1__write_file_chunk_response__descriptor,
                       (ProtobufCMessage **)out, files_deadline_ms(), err);
}

grpc_status_code agent_read_chunk(rpc_client *c, const char *sandbox_id, const char *path,
                                  uint64_t offset, uint32_t length, uint64_t expect_ino,
                                  Torpor__Hostagent__V1__ReadFileChunkResponse **out, terr *err)
{
    Torpor__Hostagent__V1__ReadFileChunkRequest req =
        TORPOR__HOSTAGENT__V1__READ_FILE_CHUNK_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.path = (char *)path;
    req.offset = offset;
    req.length = length;
    req.expect_ino = expect_ino;
    return call_answer(c, RPC_READ_FILE_CHUNK, &req.base,
                       &torpor__hostagent__v1__read_file_chunk_response__descriptor,
                       (ProtobufCMessage **)out, files_deadline_ms(), err);
}

grpc_status_code agent_list_dir(rpc_client *c, const char *sandbox_id, const char *path,
                                uint32_t max_entries, Torpor__Hostagent__V1__ListDirResponse **out,
                                terr *err)
{
    Torpor__Hostagent__V1__ListDirRequest req = TORPOR__HOSTAGENT__V1__LIST_DIR_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.path = (char *)path;
    req.max_entries = max_entries;
    return call_answer(c, RPC_LIST_DIR, &req.base,
                       &torpor__hostagent__v1__list_dir_response__descriptor,
                       (ProtobufCMessage **)out, files_deadline_ms(), err);
}

grpc_status_code agent_export_files(rpc_client *c, const char *sandbox_id,
                                    Torpor__Hostagent__V1__ExportSandboxFilesResponse **out,
                                    terr *err)
{
    Torpor__Hostagent__V1__ExportSandboxFilesRequest req =
        TORPOR__HOSTAGENT__V1__EXPORT_SANDBOX_FILES_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st =
        agent_call(c, RPC_EXPORT_FILES, &req.base,
                   &torpor__hostagent__v1__export_sandbox_files_response__descriptor, &resp,
                   AGENT_DEADLINE_TRANSFER_MS, err);
    *out = (Torpor__Hostagent__V1__ExportSandboxFilesResponse *)resp;
    return st;
}

grpc_status_code agent_transfer_read_chunk(
    rpc_client *c, const char *sandbox_id, const char *name, int64_t offset,
    Torpor__Hostagent__V1__ReadSandboxFileChunkResponse **out, terr *err)
{
    Torpor__Hostagent__V1__ReadSandboxFileChunkRequest req =
        TORPOR__HOSTAGENT__V1__READ_SANDBOX_FILE_CHUNK_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.name = (char *)name;
    req.offset = offset;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st =
        agent_call(c, RPC_READ_CHUNK, &req.base,
                   &torpor__hostagent__v1__read_sandbox_file_chunk_response__descriptor, &resp,
                   AGENT_DEADLINE_TRANSFER_MS, err);
    *out = (Torpor__Hostagent__V1__ReadSandboxFileChunkResponse *)resp;
    return st;
}

grpc_status_code agent_transfer_write_chunk(rpc_client *c, const char *sandbox_id, const char *name,
                                            int64_t offset, const uint8_t *data, size_t len,
                                            int64_t zero_len, terr *err)
{
    Torpor__Hostagent__V1__WriteSandboxFileChunkRequest req =
        TORPOR__HOSTAGENT__V1__WRITE_SANDBOX_FILE_CHUNK_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    req.name = (char *)name;
    req.offset = offset;
    req.data.data = (uint8_t *)data;
    req.data.len = len;
    req.zero_len = zero_len;
    return agent_call_no_answer(
        c, RPC_WRITE_CHUNK, &req.base,
        &torpor__hostagent__v1__write_sandbox_file_chunk_response__descriptor,
        AGENT_DEADLINE_TRANSFER_MS, err);
}

grpc_status_code agent_commit_import(
    rpc_client *c, const sandbox_row *row,
    const Torpor__Hostagent__V1__ExportSandboxFilesResponse *manifest, terr *err)
{
    Torpor__Hostagent__V1__CommitSandboxImportRequest req =
        TORPOR__HOSTAGENT__V1__COMMIT_SANDBOX_IMPORT_REQUEST__INIT;
    req.sandbox_id = (char *)row->id;
    req.template_ = (char *)row->template_name;
    req.vcpus = row->vcpus;
    req.memory_mb = row->memory_mb;
    req.timeout_sec = row->timeout_sec;
    req.created_at_unix = row->created_at_us / 1000000;
    req.files = manifest->files;
    req.n_files = manifest->n_files;
    return agent_call_no_answer(c, RPC_COMMIT_IMPORT, &req.base,
                                &torpor__hostagent__v1__commit_sandbox_import_response__descriptor,
                                AGENT_DEADLINE_TRANSFER_MS, err);
}

grpc_status_code agent_abort_import(rpc_client *c, const char *sandbox_id, terr *err)
{
    Torpor__Hostagent__V1__AbortSandboxImportRequest req =
        TORPOR__HOSTAGENT__V1__ABORT_SANDBOX_IMPORT_REQUEST__INIT;
    req.sandbox_id = (char *)sandbox_id;
    return agent_call_no_answer(c, RPC_ABORT_IMPORT, &req.base,
                                &torpor__hostagent__v1__abort_sandbox_import_response__descriptor,
                                AGENT_DEADLINE_SHORT_MS, err);
}
