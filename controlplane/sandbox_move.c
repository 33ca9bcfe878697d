/* sandbox_move: sandbox_ops_move (contract in sandbox_ops.h). */
#include <stdio.h>
#include <string.h>

#include "db_templates.h"
#include "log.h"
#include "mono_time.h"
#include "sandbox_ops.h"
#include "template_copy.h"

#define BIT(s) SB_STATUS_BIT(s)
/* The row's last_updated is refreshed this often (in chunks) while the
 * files stream, so the reconciler can tell a move in progress from one
 * whose control plane died (reconciler.h, MOVE_STALE_SEC). */
#define MOVE_HEARTBEAT_CHUNKS 32

static void fail_agent(sbop_result *res, grpc_status_code st, const terr *err, const char *what)
{
    res->grpc = st;
    terr_set(&res->err, "move: %s: %s", what, err->msg);
    res->outcome = SBOP_AGENT_FAILED;
}

/* Streams one file from src to dst; returns the gRPC status of the first
 * failed call (GRPC_STATUS_OK when all went through). */
static grpc_status_code copy_file(const sbop_ctx *c, rpc_client *src, rpc_client *dst,
                                  const char *id, const Torpor__Hostagent__V1__TransferFile *f,
                                  long long *chunks, long long *bytes, terr *err, const char **what)
{
    int64_t off = 0;
    while (off < f->size) {
        Torpor__Hostagent__V1__ReadSandboxFileChunkResponse *chunk = NULL;
        grpc_status_code st = agent_transfer_read_chunk(src, id, f->name, off, &chunk, err);
        if (st != GRPC_STATUS_OK) {
            *what = "read from the source host";
            return st;
        }
        int64_t n = chunk->zero_len > 0 ? chunk->zero_len : (int64_t)chunk->data.len;
        if (n == 0) {
            protobuf_c_message_free_unpacked(&chunk->base, NULL);
            terr_set(err, "file %s ended at %lld of %lld bytes", f->name, (long long)off,
                     (long long)f->size);
            *what = "read from the source host";
            return GRPC_STATUS_DATA_LOSS;
        }
        st = agent_transfer_write_chunk(
            dst, id, f->name, off, chunk->zero_len > 0 ? NULL : chunk->data.data,
            chunk->zero_len > 0 ? 0 : chunk->data.len, chunk->zero_len, err);
        protobuf_c_message_free_unpacked(&chunk->base, NULL);
        if (st != GRPC_STATUS_OK) {
            *what = "write to the target host";
            return st;
        }
        off += n;
        *bytes += n;
        if (++*chunks % MOVE_HEARTBEAT_CHUNKS == 0) {
            bool ch;
            terr hb;
            if (db_sandbox_transition(c->db, id, BIT(SB_MOVING), SB_MOVING, 0, NULL, NULL, &ch,
                                      &hb) != 0) {
                char q[LOG_QUOTE_MAX];
                log_warn("event=move_heartbeat_failed sandbox_id=%s error=\"%s\"", id,
                         log_quote(hb.msg, q, sizeof q));
            }
        }
    }
    return GRPC_STATUS_OK;
}

/* Undo before the switch: the import goes, the row is paused on the source. */
static void move_back(const sbop_ctx *c, rpc_client *dst, const char *id, const char *target_id)
{
    terr err;
    char q[LOG_QUOTE_MAX];
    if (dst && agent_abort_import(dst, id, &err) != GRPC_STATUS_OK)
        log_warn("event=move_abort_failed sandbox_id=%s target=%s error=\"%s\"", id, target_id,
                 log_quote(err.msg, q, sizeof q));
    bool changed;
    if (db_sandbox_transition(c->db, id, BIT(SB_MOVING), SB_PAUSED, 0, NULL, NULL, &changed,
                              &err) != 0)
        log_error("event=move_revert_failed sandbox_id=%s error=\"%s\"", id,
                  log_quote(err.msg, q, sizeof q));
}

/* The sandbox's base: its team's custom template of that name (found
 * false for `debian`/`minimal` and other agent images). A template's digest
 * never changes, and it cannot be deleted while a paused sandbox uses it. */
static int custom_base(const sbop_ctx *c, const sandbox_row *row, template_row *tpl, bool *found,
                       terr *err)
{
    *found = false;
    if (template_is_builtin(row->template_name)) return 0;
    if (db_template_get(c->db, row->team_id, row->template_name, tpl, found, err) != 0) return -1;
    if (*found && (tpl->status != TPL_READY || !tpl->digest[0])) *found = false;
    return 0;
}

/* An overlay only works on its exact base: makes sure host dst holds the
 * template's image with its digest, copying it there first if not. */
static int ensure_base(const sbop_ctx *c, const template_row *tpl, const char *dst, terr *err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        template_host_row *rows = NULL;
        size_t n = 0;
        if (db_template_hosts(c->db, tpl->id, &rows, &n, err) != 0) return -1;
        bool have = false;
        for (size_t i = 0; i < n; i++)
            have |= strcmp(rows[i].host_id, dst) == 0 && strcmp(rows[i].status, "ready") == 0 &&
                    strcmp(rows[i].digest, tpl->digest) == 0;
        free(rows);
        if (have) return 0;
        if (attempt == 1) break;
        log_info("event=move_copies_template template_id=%s host_id=%s digest=%.16s", tpl->id, dst,
                 tpl->digest);
        if (template_copy_run_once(c->db, c->agents, tpl->id, dst, err) < 0) return -1;
    }
    return terr_set(err,
                    "host %s does not hold template %s (digest %.16s) and copying it there did "
                    "not succeed (or another copy is under way); retry later",
                    dst, tpl->name, tpl->digest);
}

void sandbox_ops_move(const sbop_ctx *c, const char *id, const char *target_id, sbop_result *res)
{
    memset(res, 0, sizeof *res);
    bool found;
    terr err;
    char q[LOG_QUOTE_MAX];
    if (db_sandbox_get(c->db, c->team_id, id, &res->row, &found, &res->err) != 0) {
        res->outcome = SBOP_INTERNAL;
        return;
    }
    if (!found) {
        terr_set(&res->err, "sandbox %s not found", id);
        res->outcome = SBOP_NOT_FOUND;
        return;
    }
    sandbox_row row = res->row;
    if (row.status != SB_PAUSED) {
        terr_set(&res->err, "only a paused sandbox can be moved (status: %s)",
                 sb_status_name(row.status));
        res->outcome = SBOP_CONFLICT;
        return;
    }
    db_host src, dst;
    if (db_host_get(c->db, row.host_id, &src, &found, &res->err) != 0 || !found) {
        if (!found) terr_set(&res->err, "host %s of sandbox %s is not registered", row.host_id, id);
        res->outcome = SBOP_INTERNAL;
        return;
    }
    if (strcmp(src.status, "unreachable") == 0) {
        terr_set(&res->err, "host %s of sandbox %s is unreachable; its files cannot be read",
                 src.id, id);
        res->outcome = SBOP_HOST_UNREACHABLE;
        return;
    }
    rpc_client *sc = NULL, *dc = NULL;
    template_row tpl;
    bool is_custom;
    if (custom_base(c, &row, &tpl, &is_custom, &res->err) != 0) {
        res->outcome = SBOP_INTERNAL;
        return;
    }
    if (target_id) {
        if (db_host_get(c->db, target_id, &dst, &found, &res->err) != 0) {
            res->outcome = SBOP_INTERNAL;
            return;
        }
        if (!found) {
            terr_set(&res->err, "no host with id %s", target_id);
            res->outcome = SBOP_NOT_FOUND;
            return;
        }
        if (strcmp(dst.id, src.id) == 0 || strcmp(dst.status, "ready") != 0) {
            terr_set(&res->err,
                     strcmp(dst.id, src.id) == 0
                         ? "sandbox %s is already on host %s"
                         : "sandbox %s cannot move to host %s: it is not ready",
                     id, dst.id);
            res->outcome = SBOP_CONFLICT;
            return;
        }
        if (sandbox_ops_probe_host(c, &dst, &dc, &err) != 0) {
            terr_set(&res->err, "target host %s does not answer: %s", dst.id, err.msg);
            res->outcome = SBOP_HOST_UNREACHABLE;
            return;
        }
    } else {
        const char *skip[8] = {src.id};
        char skip_ids[8][64];
        size_t n_skip = 1;
        for (;;) {
            /* A custom template's sandbox: a host holding its base first,
             * else any (the base is copied there below). */
            found = false;
            if (is_custom && db_host_pick_template(c->db, row.memory_mb, tpl.id, tpl.digest, skip,
                                                   n_skip, &dst, &found, &res->err) != 0) {
                res->outcome = SBOP_INTERNAL;
                return;
            }
            if (!found && db_host_pick(c->db, row.memory_mb, is_custom ? NULL : row.template_name,
                                       skip, n_skip, &dst, &found, &res->err) != 0) {
                res->outcome = SBOP_INTERNAL;
                return;
            }
            if (!found) {
                terr_set(&res->err,
                         "no other ready host has room for sandbox %s (%d MiB, template %s)", id,
                         row.memory_mb, row.template_name);
                res->outcome = SBOP_NO_CAPACITY;
                return;
            }
            if (sandbox_ops_probe_host(c, &dst, &dc, &err) == 0) break;
            if (n_skip == sizeof skip / sizeof skip[0]) {
                res->outcome = SBOP_NO_CAPACITY;
                terr_set(&res->err, "no other ready host answered");
                return;
            }
            snprintf(skip_ids[n_skip], sizeof skip_ids[n_skip], "%s", dst.id);
            skip[n_skip] = skip_ids[n_skip];
            n_skip++;
        }
    }
    if (is_custom && ensure_base(c, &tpl, dst.id, &err) != 0) {
        terr_set(&res->err, "move: %s", err.msg);
        res->outcome = SBOP_CONFLICT;
        return;
    }
    if (agent_pool_get(c->agents, &src, &sc, &err) != 0) {
        fail_agent(res, GRPC_STATUS_UNAVAILABLE, &err, "connect to the source host");
        return;
    }
    bool changed;
    if (db_sandbox_transition(c->db, id, BIT(SB_PAUSED), SB_MOVING, 0, NULL, &res->row, &changed,
                              &res->err) != 0) {
        res->outcome = SBOP_INTERNAL;
        return;
    }
    if (!changed) {
        terr_set(&res->err, "sandbox %s changed state before the move started", id);
        res->outcome = SBOP_CONFLICT;
        return;
    }
    int64_t t0 = mono_ms();
    log_info("event=sandbox_move_start sandbox_id=%s from=%s to=%s", id, src.id, dst.id);

    Torpor__Hostagent__V1__ExportSandboxFilesResponse *manifest = NULL;
    grpc_status_code st = agent_export_files(sc, id, &manifest, &err);
    if (st != GRPC_STATUS_OK) {
        move_back(c, NULL, id, dst.id);
        fail_agent(res, st, &err, "list the files on the source host");
        return;
    }
    long long chunks = 0, bytes = 0;
    const char *what = "";
    for (size_t i = 0; i < manifest->n_files && st == GRPC_STATUS_OK; i++)
        st = copy_file(c, sc, dc, id, manifest->files[i], &chunks, &bytes, &err, &what);
    if (st == GRPC_STATUS_OK) {
        what = "commit on the target host";
        st = agent_commit_import(dc, &row, manifest, &err);
    }
    size_t n_files = manifest->n_files;
    protobuf_c_message_free_unpacked(&manifest->base, NULL);
    if (st != GRPC_STATUS_OK) {
        log_warn(
            "event=sandbox_move_failed sandbox_id=%s from=%s to=%s step=\"%s\" grpc_status=%d error=\"%s\"",
            id, src.id, dst.id, what, (int)st, log_quote(err.msg, q, sizeof q));
        move_back(c, dc, id, dst.id);
        fail_agent(res, st, &err, what);
        return;
    }
    if (db_sandbox_move_switch(c->db, id, src.id, dst.id, &res->row, &changed, &res->err) != 0 ||
        !changed) {
        /* The target holds a committed copy no row of its host names: its
         * reconciler destroys it; the row stays with the source. */
        if (changed) res->outcome = SBOP_INTERNAL;
        else {
            terr_set(&res->err, "sandbox %s changed state during the move", id);
            res->outcome = SBOP_CONFLICT;
        }
        log_error("event=sandbox_move_switch_failed sandbox_id=%s from=%s to=%s error=\"%s\"", id,
                  src.id, dst.id, log_quote(res->err.msg, q, sizeof q));
        if (!changed) move_back(c, NULL, id, dst.id);
        return;
    }
    st = agent_destroy(sc, id, &err);
    if (st != GRPC_STATUS_OK && st != GRPC_STATUS_NOT_FOUND)
        /* Its row names another host now: the source's reconciler removes it. */
        log_warn(
            "event=sandbox_move_source_cleanup_failed sandbox_id=%s host_id=%s grpc_status=%d error=\"%s\"",
            id, src.id, (int)st, log_quote(err.msg, q, sizeof q));
    log_info(
        "event=sandbox_moved sandbox_id=%s from=%s to=%s files=%zu bytes=%lld chunks=%lld duration_ms=%lld",
        id, src.id, dst.id, n_files, bytes, chunks, (long long)(mono_ms() - t0));
    res->outcome = SBOP_OK;
}
