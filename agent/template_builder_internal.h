/* template_builder_internal: what the files of the template builder share,
 * private to them (not a public API; nothing else includes it):
 *  - template_builder.c: the build queue and worker (the state machine),
 *    the state files, tb_open/tb_close/tb_build/tb_get/tb_list/tb_delete;
 *  - template_child.c: a build's child process in its own process group,
 *    under the build's time limit and the builder's stop, and the orphans
 *    of a build whose agent died;
 *  - template_setup.c: the setup script inside a VM of the new image, and
 *    flattening that VM's disk into the template image;
 *  - template_files.c: paths, atomic writes and small reads under the
 *    builder's state dir, the image dir's images, tree removal;
 *  - template_transfer.c: export and import of a ready image (copies
 *    between hosts).
 *
 * Locking: tb->mu guards entries, stopping, running_pid and setup_vm; the
 * other fields are set by tb_open and read-only after. */
#ifndef TORPOR_AGENT_TEMPLATE_BUILDER_INTERNAL_H
#define TORPOR_AGENT_TEMPLATE_BUILDER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime.h"
#include "template_builder.h"
#include "terr.h"

/* In the environment of every process of a build: tells its leftovers. */
#define TB_MARKER_ENV "TORPOR_TEMPLATE_BUILD"

typedef struct tb_entry tb_entry; /* template_builder.c */

struct template_builder {
    char *agent_state_dir;  /* the agent's state dir (the driver's sandboxes/) */
    char *state_dir;        /* <state_dir>/template-builds */
    char *images_dir;       /* <state_dir>/template-images: imported images by digest */
    runtime_driver *driver; /* for setup VMs; NULL = no setup scripts */
    runtime_vm *setup_vm;   /* the setup VM running now, if any */
    char *image_dir;
    char *recipe_script;
    char *guest_binary;
    int time_limit_sec;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tb_entry *entries; /* in creation order */
    bool stopping;
    pid_t running_pid; /* 0 = none */
    pthread_t worker;
    bool worker_started;
};

/* ---- template_files.c */

/* snprintf that may truncate (messages, bounded names). */
void tb_setf(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* dir + "/" + file into out ("" when it does not fit). */
void tb_pjoin(char *out, size_t size, const char *dir, const char *file);
/* <state_dir>/template-builds/<name>/<file> into out ("" when it does not fit). */
void tb_state_path(const template_builder *tb, const char *name, const char *file, char *out,
                   size_t size);
/* Writes file atomically (tmp + fsync + rename). */
int tb_write_file(const char *path, const char *text, terr *err);
/* A small text file into out, trailing newlines/spaces cut; -1 if unreadable. */
int tb_read_small(const char *path, char *out, size_t size);
/* <image_dir>/<name> into out. */
void tb_image_link(const template_builder *tb, const char *name, char *out, size_t size);
/* Sum of the image's regular files (following the link). */
int64_t tb_image_size(const char *dir);
/* The image has its kernel and initramfs. */
bool tb_image_complete(const char *dir);
/* An image of the image dir the builder did not make: ready, builtin. */
void tb_builtin_info(const template_builder *tb, const char *name, tb_info *out);
/* The last tail bytes of a file (malloc'd, NUL-terminated); NULL if unreadable. */
char *tb_read_tail(const char *path, size_t tail, size_t *len);
/* Removes dir and everything below it (no symlink followed, no other
 * filesystem entered). */
void tb_remove_tree(const char *dir);

/* ---- template_builder.c, for template_transfer.c */

/* Registers an imported image as a ready entry (state written, under
 * tb->mu): AGENT_ALREADY_EXISTS when the name is taken (*same: by a ready
 * entry of the same digest). */
agent_code tb_register_import(template_builder *tb, const char *name, const char *digest,
                              int64_t size, tb_info *out, bool *same, terr *err);
/* The ready entry's info; AGENT_NOT_FOUND / AGENT_FAILED_PRECONDITION. */
agent_code tb_ready_info(template_builder *tb, const char *name, tb_info *out, terr *err);
/* <state_dir>/template-images/<digest> -> the built image (resolved), so
 * a moved sandbox finds its base by digest on every host that holds it
 * (sandbox_transfer.h); nothing when one is already there. */
void tb_alias_by_digest(const template_builder *tb, const char *link, const char *digest);
/* Whether some name in the image dir links to target. */
bool tb_image_dir_linked(const template_builder *tb, const char *target);
/* Removes what unfinished imports left (at open). */
void tb_imports_clean(template_builder *tb);

/* ---- template_child.c */

/* Runs argv (a prepared envp) as a child in its own process group with its
 * output in logfd, until it exits, the build's time limit (from t0) passes
 * or the builder stops (both kill the group). 0 = exited 0; 1 = exited
 * otherwise (reason ""); -1 = spawn failure, time limit or stop (reason set). */
int tb_run_child(template_builder *tb, char *const argv[], char *const envp[], int logfd,
                 int devnull, int64_t t0, const char *pgid_path, const char *marker, char *reason,
                 size_t rsize);
/* Stops what is left of the process group recorded in pgid_path by a build
 * of name whose agent died (only processes carrying the build's marker). */
void tb_kill_orphan_group(const char *pgid_path, const char *name);

/* ---- template_setup.c */

/* Runs the setup script in a VM of <image_dir>/<base> and makes and links
 * the final image <image_dir>/<name>. 0 = done; -1 with reason. */
int tb_run_setup(template_builder *tb, const char *name, const char *base, const char *setup,
                 char *const envp[], int logfd, int devnull, int64_t t0, char *reason,
                 size_t rsize);

#endif
