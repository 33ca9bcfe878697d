/* template_builder: custom templates built on this host (docs/templates.md).
 *
 * Contract: tb_build queues an asynchronous build of a Debian image (the
 * `debian` recipe, guest/build-rootfs.sh, plus extra packages) under a name
 * and returns at once with status "building". One worker thread runs the
 * builds one at a time, in order; at most TB_QUEUE_MAX builds are queued or
 * running (see tb_build). A build is the
 * recipe script run as a child in its own process group with its output in
 * <state_dir>/template-builds/<name>/build.log, stopped after time_limit_sec
 * (SIGTERM to the group, so mmdebstrap unmounts what it mounted in its tree,
 * then SIGKILL after TB_TERM_GRACE_MS). It
 * links <image_dir>/<name> to the finished image (content-addressed in the
 * image cache) only when complete; the state ("building" | "ready" | "error",
 * the error, the digest, the size) is kept in <state_dir>/template-builds/<name>/
 * and written last, so:
 *  - a failed build (e.g. a package apt cannot find) ends in "error" with the
 *    script's output (apt's message) in the log, and leaves no image link;
 *  - an agent that stops or dies mid-build: on the next tb_open every build
 *    still "building" becomes "error" ("interrupted ...") and its image link,
 *    if any, is removed; nothing half-built is ever usable (the script renames
 *    a complete image into the cache and links it last, and it dies with the
 *    agent: PR_SET_PDEATHSIG).
 * With a setup script (tenant code) the recipe's image is linked as
 * <image_dir>/<name>.base, a VM of it is booted through the runtime driver
 * (sandbox id "<name>.setup", 1 vCPU, TB_SETUP_MEMORY_MB, the smallest
 * disk), the script runs inside it as root from /tmp within what is left of
 * the time limit, the root filesystem is synced and frozen, the VM paused,
 * and its disk (overlay + base) flattened with qemu-img into
 * <state_dir>/template-builds/<name>/image/rootfs.img: that is the template
 * (its digest is the sha256 of that file). The script never runs on the
 * host. The setup VM is destroyed whatever happens; one left by a crash is
 * adopted by the lifecycle on restart and destroyed by the control plane's
 * reconciler as an orphan.
 * Images in the image dir that the builder did not make (`minimal`,
 * `debian`) are reported "ready" and builtin; they cannot be deleted.
 * Thread-safe: every call may come from any RPC thread. */
#ifndef TORPOR_AGENT_TEMPLATE_BUILDER_H
#define TORPOR_AGENT_TEMPLATE_BUILDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lifecycle.h"
#include "runtime.h"
#include "template_limits.h"
#include "terr.h"

#define TB_QUEUE_MAX 4 /* builds queued or running per host */
#define TB_LOG_TAIL_MAX (1024 * 1024)
#define TB_TIME_LIMIT_DEFAULT 1200 /* seconds per build, setup included */
#define TB_SETUP_MEMORY_MB 512     /* the setup VM */
#define TB_BASE_SUFFIX ".base"     /* <name>.base: the image before setup */
#define TB_TERM_GRACE_MS 15000     /* SIGTERM -> SIGKILL of a build's processes */

typedef struct template_builder template_builder;

typedef struct tb_config {
    const char *state_dir;     /* <state_dir>/template-builds/<name>/ holds build state */
    const char *image_dir;     /* <image_dir>/<name> becomes the image link */
    const char *recipe_script; /* guest/build-rootfs.sh */
    const char *guest_binary;  /* torpor-guest, copied into the image */
    int time_limit_sec;        /* 0 = TB_TIME_LIMIT_DEFAULT */
    runtime_driver *driver;    /* borrowed: boots the setup VMs; NULL = setup scripts refused */
} tb_config;

typedef enum { TB_BUILDING = 0, TB_READY, TB_ERROR } tb_status;

typedef struct tb_info {
    char name[64];
    tb_status status;
    int64_t size_bytes;
    char digest[65];
    int64_t created_at_unix;
    char error[512];
    bool builtin;
} tb_info;

const char *tb_status_name(tb_status s);

int tb_open(const tb_config *cfg, template_builder **out, terr *err);
/* Kills a running build (it ends in "error"), joins the worker, frees. */
void tb_close(template_builder *tb);

/* Queues a build. AGENT_INVALID_ARGUMENT: bad name, base other than "debian"
 * (or ""), bad or too many packages, setup too large, or given without a
 * driver. AGENT_ALREADY_EXISTS: the name is
 * taken (a build of it or an image in the image dir).
 * AGENT_FAILED_PRECONDITION: TB_QUEUE_MAX builds already queued/running. */
agent_code tb_build(template_builder *tb, const char *name, const char *base,
                    const char *const *packages, size_t n_packages, const char *setup, tb_info *out,
                    terr *err);
/* *log (malloc'd, may be NULL when log_tail is 0) gets the last log_tail
 * bytes of the build log. AGENT_NOT_FOUND for an unknown name. */
agent_code tb_get(template_builder *tb, const char *name, size_t log_tail, tb_info *out, char **log,
                  size_t *log_len, terr *err);
/* Builds and builtin images; *out malloc'd. */
int tb_list(template_builder *tb, tb_info **out, size_t *n, terr *err);
/* AGENT_FAILED_PRECONDITION while building or for a builtin image. An
 * imported image's content (<state_dir>/template-images/<digest>/) goes
 * with its last name. */
agent_code tb_delete(template_builder *tb, const char *name, terr *err);

/* ---- Copies between hosts (template_transfer.c; docs/templates.md,
 * "Copies"). A ready image is exported as its files (sizes, SHA-256) and
 * read in chunks of at most TRANSFER_CHUNK_MAX; another host imports it:
 * chunks go to <state_dir>/template-images/.incoming-<name>/ (at most
 * TB_IMPORTS_MAX imports at a time, one a name; one untouched for
 * TB_IMPORT_STALE_SEC no longer counts and is removed; files at most
 * TB_IMPORT_FILE_MAX bytes, TRANSFER_FILES_MAX of them); commit verifies
 * every file against the manifest, that rootfs.img's SHA-256 is the digest
 * and rootfs.sha256 says the same, and that the boot files are there, then
 * renames the directory to template-images/<digest>/ (atomic; one already
 * there is reused), records the template ready (the builder's state, so
 * get/list/delete treat it like a build) and links <image_dir>/<name> to it
 * last (symlink + rename). A failed commit leaves the incoming directory
 * for abort (or the next open) to remove: nothing partial is ever under
 * the name. A repeated commit of the same name and digest is OK. */
#define TB_IMPORTS_MAX 2
#define TB_IMPORT_STALE_SEC 600
#define TB_IMPORT_FILE_MAX (4LL << 30)

struct transfer_file;
/* AGENT_NOT_FOUND unknown; AGENT_FAILED_PRECONDITION not a ready image
 * this builder made or imported. *n <= max. */
agent_code tb_image_export(template_builder *tb, const char *name, char digest[65],
                           struct transfer_file *files, size_t max, size_t *n, terr *err);
agent_code tb_image_read_chunk(template_builder *tb, const char *name, const char *file,
                               int64_t offset, size_t max_len, uint8_t *buf, size_t *len,
                               bool *zero, terr *err);
/* zero_len > 0: that many zero bytes at offset (only extends the file). */
agent_code tb_image_write_chunk(template_builder *tb, const char *name, const char *file,
                                int64_t offset, const uint8_t *data, size_t len, size_t zero_len,
                                terr *err);
agent_code tb_image_commit(template_builder *tb, const char *name, const char *digest,
                           const struct transfer_file *files, size_t n, tb_info *out, terr *err);
agent_code tb_image_abort(template_builder *tb, const char *name, terr *err);

#endif
