/* template_builder: the build queue and its worker (the state machine of a
 * build: building -> ready | error), the state files, and the public API
 * (template_builder.h). A build's child process is in template_child.c, the
 * setup script in template_setup.c, file helpers in template_files.c; what
 * they share is template_builder_internal.h. Over 600 lines because the
 * queue, the worker's state machine and the crash-safe state files are one
 * invariant (a build's state on disk is always one the worker can resume or
 * fail cleanly after a restart); the parts without it are already split out. */
#include "template_builder.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs_util.h"
#include "log.h"
#include "mono_time.h"
#include "template_builder_internal.h"
#include "template_limits.h"
#include "torpor_limits.h"

extern char **environ;

struct tb_entry {
    tb_info info;
    bool queued;    /* waiting for or in the worker */
    char *packages; /* comma-separated */
    char *setup;    /* NULL = none; kept in memory only (a restart ends the build) */
    struct tb_entry *next;
};

const char *tb_status_name(tb_status s)
{
    switch (s) {
    case TB_BUILDING: return "building";
    case TB_READY: return "ready";
    case TB_ERROR: return "error";
    }
    return "error";
}

/* ------------------------------------------------------------ state files */

/* The state file: "status\nsize\ndigest\ncreated\n" and error in its own file. */
static int save_state(const template_builder *tb, const tb_entry *e, terr *err)
{
    char path[4096], text[256];
    tb_state_path(tb, e->info.name, "error", path, sizeof path);
    if (tb_write_file(path, e->info.error, err) != 0) return -1;
    snprintf(text, sizeof text, "%s\n%lld\n%s\n%lld\n", tb_status_name(e->info.status),
             (long long)e->info.size_bytes, e->info.digest[0] ? e->info.digest : "-",
             (long long)e->info.created_at_unix);
    tb_state_path(tb, e->info.name, "state", path, sizeof path);
    return tb_write_file(path, text, err);
}

static int load_state(const template_builder *tb, const char *name, tb_entry *e)
{
    char path[4096], text[256], status[32] = "", digest[80] = "";
    long long size = 0, created = 0;
    tb_state_path(tb, name, "state", path, sizeof path);
    if (tb_read_small(path, text, sizeof text) != 0) return -1;
    if (sscanf(text, "%31s %lld %79s %lld", status, &size, digest, &created) != 4) return -1;
    if (strlen(name) >= sizeof e->info.name) return -1;
    memcpy(e->info.name, name, strlen(name) + 1);
    e->info.status = strcmp(status, "ready") == 0      ? TB_READY
                     : strcmp(status, "building") == 0 ? TB_BUILDING
                                                       : TB_ERROR;
    e->info.size_bytes = size;
    snprintf(e->info.digest, sizeof e->info.digest, "%s", strcmp(digest, "-") == 0 ? "" : digest);
    e->info.created_at_unix = created;
    tb_state_path(tb, name, "error", path, sizeof path);
    tb_read_small(path, e->info.error, sizeof e->info.error);
    tb_state_path(tb, name, "packages", path, sizeof path);
    char pk[8192];
    if (tb_read_small(path, pk, sizeof pk) == 0) e->packages = strdup(pk);
    return 0;
}

/* ------------------------------------------------------------ the worker */

static tb_entry *find(template_builder *tb, const char *name)
{
    for (tb_entry *e = tb->entries; e; e = e->next)
        if (strcmp(e->info.name, name) == 0) return e;
    return NULL;
}

/* The most telling line of a failed build's log: apt's "E: ..." if any,
 * else the last non-empty line. */
static void failure_reason(const char *log_path, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen(log_path, "r");
    if (!f) return;
    char line[512], last[512] = "";
    bool have_e = false;
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (!n) continue;
        if (!have_e && strncmp(line, "E: ", 3) == 0) {
            snprintf(out, size, "%s", line);
            have_e = true;
        }
        snprintf(last, sizeof last, "%s", line);
    }
    fclose(f);
    if (!have_e) snprintf(out, size, "%s", last);
}

/* Runs the recipe (and the setup script) for e; returns with e->info
 * settled (ready or error). Without setup the recipe links the image to
 * <image_dir>/<name>; with setup it links it to <image_dir>/<name>.base
 * for the setup VM, and run_setup makes and links the final image. */
static void run_build(template_builder *tb, tb_entry *e, const char *name, const char *packages,
                      const char *setup)
{
    char log_path[4096], link[4200], base_name[80], base_link[4200], qn[LOG_QUOTE_MAX];
    tb_state_path(tb, name, "build.log", log_path, sizeof log_path);
    tb_image_link(tb, name, link, sizeof link);
    snprintf(base_name, sizeof base_name, "%s" TB_BASE_SUFFIX, name);
    tb_image_link(tb, base_name, base_link, sizeof base_link);
    log_quote(name, qn, sizeof qn);

    /* Everything exec needs, prepared before fork (the child of a threaded
     * process may only make async-signal-safe calls). */
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char **envp = calloc(n_env + 3, sizeof *envp);
    char extra[8300], marker[128];
    snprintf(extra, sizeof extra, "TORPOR_EXTRA_PACKAGES=%s", packages ? packages : "");
    snprintf(marker, sizeof marker, TB_MARKER_ENV "=%s", name);
    size_t k = 0;
    if (envp) {
        envp[k++] = marker; /* first: tproc_members reads only the start of an environment */
        envp[k++] = extra;
    }
    for (size_t i = 0; envp && i < n_env; i++)
        if (strncmp(environ[i], "TORPOR_EXTRA_PACKAGES=", 22) != 0 &&
            strncmp(environ[i], TB_MARKER_ENV "=", strlen(TB_MARKER_ENV) + 1) != 0)
            envp[k++] = environ[i];
    char *argv[] = {"/bin/bash", tb->recipe_script, setup ? base_link : link, tb->guest_binary,
                    NULL};
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

    bool ok = false;
    char reason[512] = "";
    int64_t t0 = mono_ms();
    if (!envp || logfd < 0 || devnull < 0) {
        snprintf(reason, sizeof reason, "could not start the build: %s", strerror(errno));
    } else {
        dprintf(logfd, "torpor-agent: building template %s: debian + [%s]%s\n", name,
                packages ? packages : "", setup ? " + setup script" : "");
        char pgid_path[4096];
        tb_state_path(tb, name, "pgid", pgid_path, sizeof pgid_path);
        int r = tb_run_child(tb, argv, envp, logfd, devnull, t0, pgid_path, marker, reason,
                             sizeof reason);
        if (r == 0 && tb_image_complete(setup ? base_link : link)) {
            ok = true;
        } else if (r >= 0) {
            failure_reason(log_path, reason, sizeof reason);
            if (!reason[0]) snprintf(reason, sizeof reason, "build failed");
        }
        if (ok && setup) {
            ok = tb_run_setup(tb, name, base_name, setup, envp, logfd, devnull, t0, reason,
                              sizeof reason) == 0 &&
                 tb_image_complete(link);
            if (!ok && !reason[0]) snprintf(reason, sizeof reason, "setup failed");
        }
    }
    if (setup) unlink(base_link);
    if (logfd >= 0) {
        if (!ok) dprintf(logfd, "torpor-agent: build failed: %s\n", reason);
        else dprintf(logfd, "torpor-agent: build done in %lld ms\n", (long long)(mono_ms() - t0));
        close(logfd);
    }
    if (devnull >= 0) close(devnull);
    free(envp);

    tb_info done = {0};
    if (ok) {
        done.size_bytes = tb_image_size(link);
        char p[4300];
        tb_pjoin(p, sizeof p, link, "rootfs.sha256");
        tb_read_small(p, done.digest, sizeof done.digest);
        tb_alias_by_digest(tb, link, done.digest);
    } else {
        unlink(link); /* never a half image under the name */
    }
    terr err;
    pthread_mutex_lock(&tb->mu);
    e->info.status = ok ? TB_READY : TB_ERROR;
    e->info.size_bytes = done.size_bytes;
    snprintf(e->info.digest, sizeof e->info.digest, "%s", done.digest);
    snprintf(e->info.error, sizeof e->info.error, "%s", ok ? "" : reason);
    e->queued = false;
    int rc = save_state(tb, e, &err);
    pthread_mutex_unlock(&tb->mu);
    char qr[LOG_QUOTE_MAX];
    if (ok)
        log_info("event=template_built name=\"%s\" ms=%lld size_bytes=%lld digest=%.16s setup=%s",
                 qn, (long long)(mono_ms() - t0), (long long)done.size_bytes, done.digest,
                 setup ? "yes" : "no");
    else
        log_warn("event=template_build_failed name=\"%s\" ms=%lld error=\"%s\"", qn,
                 (long long)(mono_ms() - t0), log_quote(reason, qr, sizeof qr));
    if (rc != 0)
        log_error("event=template_state_write_failed name=\"%s\" error=\"%s\"", qn,
                  log_quote(err.msg, qr, sizeof qr));
}

static void *worker_main(void *arg)
{
    template_builder *tb = arg;
    pthread_mutex_lock(&tb->mu);
    for (;;) {
        tb_entry *next = NULL;
        for (tb_entry *e = tb->entries; e && !next; e = e->next)
            if (e->queued && e->info.status == TB_BUILDING) next = e;
        if (tb->stopping) break;
        if (!next) {
            pthread_cond_wait(&tb->cv, &tb->mu);
            continue;
        }
        char name[64];
        snprintf(name, sizeof name, "%s", next->info.name);
        char *packages = next->packages ? strdup(next->packages) : NULL;
        char *setup = next->setup ? strdup(next->setup) : NULL;
        pthread_mutex_unlock(&tb->mu);
        /* Entries are only freed by tb_delete, which refuses building ones,
         * and by tb_close after this thread is joined. */
        run_build(tb, next, name, packages, setup);
        free(packages);
        free(setup);
        pthread_mutex_lock(&tb->mu);
    }
    pthread_mutex_unlock(&tb->mu);
    return NULL;
}

/* ------------------------------------------------------------ open/close */

static void entry_free(tb_entry *e)
{
    if (!e) return;
    free(e->packages);
    free(e->setup);
    free(e);
}

int tb_open(const tb_config *cfg, template_builder **out, terr *err)
{
    *out = NULL;
    template_builder *tb = calloc(1, sizeof *tb);
    if (!tb) return terr_set(err, "out of memory");
    if (asprintf(&tb->state_dir, "%s/template-builds", cfg->state_dir) < 0) tb->state_dir = NULL;
    if (asprintf(&tb->images_dir, "%s/template-images", cfg->state_dir) < 0) tb->images_dir = NULL;
    tb->agent_state_dir = strdup(cfg->state_dir);
    tb->driver = cfg->driver;
    tb->image_dir = strdup(cfg->image_dir);
    tb->recipe_script = strdup(cfg->recipe_script ? cfg->recipe_script : "");
    tb->guest_binary = strdup(cfg->guest_binary ? cfg->guest_binary : "");
    tb->time_limit_sec = cfg->time_limit_sec > 0 ? cfg->time_limit_sec : TB_TIME_LIMIT_DEFAULT;
    pthread_mutex_init(&tb->mu, NULL);
    pthread_cond_init(&tb->cv, NULL);
    if (!tb->state_dir || !tb->images_dir || !tb->agent_state_dir || !tb->image_dir ||
        !tb->recipe_script || !tb->guest_binary) {
        tb_close(tb);
        return terr_set(err, "out of memory");
    }
    if (fs_mkdir_p(tb->state_dir, 0755, err) != 0 || fs_mkdir_p(tb->images_dir, 0755, err) != 0) {
        tb_close(tb);
        return -1;
    }
    tb_imports_clean(tb);
    DIR *d = opendir(tb->state_dir);
    if (!d) {
        terr_set(err, "open %s: %s", tb->state_dir, strerror(errno));
        tb_close(tb);
        return -1;
    }
    struct dirent *de;
    tb_entry **tail = &tb->entries;
    while ((de = readdir(d))) {
        if (!limits_template_name_valid(de->d_name)) continue;
        tb_entry *e = calloc(1, sizeof *e);
        if (!e) break;
        if (load_state(tb, de->d_name, e) != 0) {
            entry_free(e);
            continue;
        }
        char q[LOG_QUOTE_MAX];
        if (e->info.status == TB_BUILDING) {
            /* The agent stopped or died mid-build: never a usable half image. */
            char pgid_path[4096];
            tb_state_path(tb, e->info.name, "pgid", pgid_path, sizeof pgid_path);
            tb_kill_orphan_group(pgid_path, e->info.name);
            char link[4200];
            tb_image_link(tb, e->info.name, link, sizeof link);
            unlink(link);
            char base[80];
            snprintf(base, sizeof base, "%s" TB_BASE_SUFFIX, e->info.name);
            tb_image_link(tb, base, link, sizeof link);
            unlink(link);
            e->info.status = TB_ERROR;
            snprintf(e->info.error, sizeof e->info.error,
                     "interrupted: the agent restarted during the build");
            terr werr;
            if (save_state(tb, e, &werr) != 0)
                log_error("event=template_state_write_failed error=\"%s\"",
                          log_quote(werr.msg, q, sizeof q));
            log_warn("event=template_build_interrupted name=\"%s\"",
                     log_quote(e->info.name, q, sizeof q));
        } else if (e->info.status == TB_READY) {
            /* An import records its state before the link: a crash between
             * leaves a ready state without its image. */
            char link[4200];
            tb_image_link(tb, e->info.name, link, sizeof link);
            if (!tb_image_complete(link)) {
                e->info.status = TB_ERROR;
                snprintf(e->info.error, sizeof e->info.error, "the image is missing on this host");
                terr werr;
                if (save_state(tb, e, &werr) != 0)
                    log_error("event=template_state_write_failed error=\"%s\"",
                              log_quote(werr.msg, q, sizeof q));
                log_warn("event=template_image_missing name=\"%s\"",
                         log_quote(e->info.name, q, sizeof q));
            }
        }
        *tail = e;
        tail = &e->next;
    }
    closedir(d);
    if (pthread_create(&tb->worker, NULL, worker_main, tb) != 0) {
        tb_close(tb);
        return terr_set(err, "start the template build thread failed");
    }
    tb->worker_started = true;
    *out = tb;
    return 0;
}

void tb_close(template_builder *tb)
{
    if (!tb) return;
    if (tb->worker_started) {
        pthread_mutex_lock(&tb->mu);
        tb->stopping = true;
        pthread_cond_broadcast(&tb->cv);
        runtime_vm *vm = tb->setup_vm;
        if (vm) runtime_vm_ref(vm);
        pthread_mutex_unlock(&tb->mu);
        if (vm) {
            /* A setup script runs: end it (its exec fails at once). */
            terr err;
            tb->driver->ops->destroy(tb->driver, vm->sandbox_id, vm, &err);
            runtime_vm_unref(vm);
        }
        pthread_join(tb->worker, NULL);
    }
    /* Queued builds that never ran: the next start marks them error. */
    while (tb->entries) {
        tb_entry *e = tb->entries;
        tb->entries = e->next;
        entry_free(e);
    }
    pthread_mutex_destroy(&tb->mu);
    pthread_cond_destroy(&tb->cv);
    free(tb->state_dir);
    free(tb->images_dir);
    free(tb->agent_state_dir);
    free(tb->image_dir);
    free(tb->recipe_script);
    free(tb->guest_binary);
    free(tb);
}

/* ------------------------------------------------------------ calls */

agent_code tb_build(template_builder *tb, const char *name, const char *base,
                    const char *const *packages, size_t n_packages, const char *setup, tb_info *out,
                    terr *err)
{
    if (!limits_template_name_valid(name)) {
        terr_set(err, "invalid template name: must match ^[a-z0-9][a-z0-9._-]{0,62}$");
        return AGENT_INVALID_ARGUMENT;
    }
    if (base && *base && strcmp(base, "debian") != 0) {
        terr_set(err, "invalid base \"%.64s\": only \"debian\" can be built on", base);
        return AGENT_INVALID_ARGUMENT;
    }
    if (n_packages > TEMPLATE_PACKAGES_MAX) {
        terr_set(err, "too many packages: at most %d", TEMPLATE_PACKAGES_MAX);
        return AGENT_INVALID_ARGUMENT;
    }
    size_t plen = 1;
    for (size_t i = 0; i < n_packages; i++) {
        if (!template_package_name_valid(packages[i])) {
            terr_set(err, "invalid package name \"%.130s\": must match ^[a-z0-9][a-z0-9+.-]+$",
                     packages[i]);
            return AGENT_INVALID_ARGUMENT;
        }
        plen += strlen(packages[i]) + 1;
    }
    if (setup && strlen(setup) > TEMPLATE_SETUP_MAX) {
        terr_set(err, "setup script too large: at most %d bytes", TEMPLATE_SETUP_MAX);
        return AGENT_INVALID_ARGUMENT;
    }
    if (setup && *setup && !tb->driver) {
        terr_set(err,
                 "setup scripts are not supported by this agent (no VM driver for the builder)");
        return AGENT_INVALID_ARGUMENT;
    }
    if (!tb->recipe_script[0] || access(tb->recipe_script, R_OK) != 0) {
        terr_set(err,
                 "this agent cannot build templates: recipe script %.300s not found "
                 "(TORPOR_TEMPLATE_RECIPE)",
                 tb->recipe_script);
        return AGENT_FAILED_PRECONDITION;
    }
    char *list = calloc(1, plen);
    if (!list) {
        terr_set(err, "out of memory");
        return AGENT_INTERNAL;
    }
    for (size_t i = 0; i < n_packages; i++) {
        if (i) strcat(list, ",");
        strcat(list, packages[i]);
    }
    char link[4200];
    tb_image_link(tb, name, link, sizeof link);
    pthread_mutex_lock(&tb->mu);
    agent_code code = AGENT_OK;
    size_t active = 0;
    for (tb_entry *e = tb->entries; e; e = e->next)
        if (e->queued) active++;
    struct stat st;
    if (find(tb, name) || lstat(link, &st) == 0) {
        terr_set(err, "template %s already exists on this host", name);
        code = AGENT_ALREADY_EXISTS;
    } else if (active >= TB_QUEUE_MAX) {
        terr_set(err, "%zu template builds are already queued or running on this host (the limit)",
                 active);
        code = AGENT_FAILED_PRECONDITION;
    }
    tb_entry *e = NULL;
    if (code == AGENT_OK) {
        e = calloc(1, sizeof *e);
        char dir[4200], path[4300];
        snprintf(dir, sizeof dir, "%s/%s", tb->state_dir, name);
        if (!e || (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
            terr_set(err, "create %s: %s", dir, e ? strerror(errno) : "out of memory");
            code = AGENT_INTERNAL;
        } else {
            snprintf(e->info.name, sizeof e->info.name, "%s", name);
            e->info.status = TB_BUILDING;
            e->info.created_at_unix = time(NULL);
            e->packages = list;
            list = NULL;
            if (setup && *setup && !(e->setup = strdup(setup))) {
                terr_set(err, "out of memory");
                code = AGENT_INTERNAL;
            }
            e->queued = true;
            tb_pjoin(path, sizeof path, dir, "build.log");
            unlink(path);
            tb_pjoin(path, sizeof path, dir, "packages");
            if (code == AGENT_OK &&
                (tb_write_file(path, e->packages, err) != 0 || save_state(tb, e, err) != 0))
                code = AGENT_INTERNAL;
        }
        if (code != AGENT_OK) {
            entry_free(e);
        } else {
            tb_entry **tail = &tb->entries;
            while (*tail) tail = &(*tail)->next;
            *tail = e;
            *out = e->info;
            pthread_cond_broadcast(&tb->cv);
        }
    }
    pthread_mutex_unlock(&tb->mu);
    free(list);
    if (code == AGENT_OK) {
        char q[LOG_QUOTE_MAX], qp[LOG_QUOTE_MAX];
        log_info("event=template_build_queued name=\"%s\" packages=\"%s\" queued=%zu",
                 log_quote(name, q, sizeof q),
                 log_quote(e->packages ? e->packages : "", qp, sizeof qp), active + 1);
    }
    return code;
}

agent_code tb_get(template_builder *tb, const char *name, size_t log_tail, tb_info *out, char **log,
                  size_t *log_len, terr *err)
{
    if (log) *log = NULL;
    if (log_len) *log_len = 0;
    if (!limits_template_name_valid(name)) {
        terr_set(err, "invalid template name");
        return AGENT_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&tb->mu);
    tb_entry *e = find(tb, name);
    if (e) *out = e->info;
    pthread_mutex_unlock(&tb->mu);
    if (!e) {
        char link[4200];
        tb_image_link(tb, name, link, sizeof link);
        if (!tb_image_complete(link)) {
            terr_set(err, "unknown template %s", name);
            return AGENT_NOT_FOUND;
        }
        tb_builtin_info(tb, name, out);
        return AGENT_OK;
    }
    if (log && log_tail > 0) {
        char path[4096];
        tb_state_path(tb, name, "build.log", path, sizeof path);
        *log = tb_read_tail(path, log_tail > TB_LOG_TAIL_MAX ? TB_LOG_TAIL_MAX : log_tail, log_len);
    }
    return AGENT_OK;
}

int tb_list(template_builder *tb, tb_info **out, size_t *n, terr *err)
{
    *out = NULL;
    *n = 0;
    size_t cap = 16, len = 0;
    tb_info *v = malloc(cap * sizeof *v);
    if (!v) return terr_set(err, "out of memory");
    pthread_mutex_lock(&tb->mu);
    for (tb_entry *e = tb->entries; e; e = e->next) {
        if (len == cap) {
            tb_info *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        v[len++] = e->info;
    }
    pthread_mutex_unlock(&tb->mu);
    DIR *d = opendir(tb->image_dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (!limits_template_name_valid(de->d_name)) continue;
        bool managed = false;
        for (size_t i = 0; i < len && !managed; i++) managed = strcmp(v[i].name, de->d_name) == 0;
        char link[4200];
        tb_image_link(tb, de->d_name, link, sizeof link);
        size_t nl = strlen(de->d_name), sl = strlen(TB_BASE_SUFFIX);
        bool base = nl > sl && strcmp(de->d_name + nl - sl, TB_BASE_SUFFIX) == 0;
        if (managed || base || !tb_image_complete(link)) continue;
        if (len == cap) {
            tb_info *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        tb_builtin_info(tb, de->d_name, &v[len++]);
    }
    if (d) closedir(d);
    *out = v;
    *n = len;
    return 0;
}

agent_code tb_delete(template_builder *tb, const char *name, terr *err)
{
    if (!limits_template_name_valid(name)) {
        terr_set(err, "invalid template name");
        return AGENT_INVALID_ARGUMENT;
    }
    char link[4200];
    tb_image_link(tb, name, link, sizeof link);
    pthread_mutex_lock(&tb->mu);
    tb_entry **pp = &tb->entries;
    while (*pp && strcmp((*pp)->info.name, name) != 0) pp = &(*pp)->next;
    agent_code code = AGENT_OK;
    tb_entry *e = *pp;
    if (!e) {
        if (tb_image_complete(link)) {
            terr_set(err, "template %s is built in (not made by the template builder)", name);
            code = AGENT_FAILED_PRECONDITION;
        } else {
            terr_set(err, "unknown template %s", name);
            code = AGENT_NOT_FOUND;
        }
    } else if (e->queued) {
        terr_set(err, "template %s is still building", name);
        code = AGENT_FAILED_PRECONDITION;
    } else {
        *pp = e->next;
        /* An imported image's content goes with its last name. */
        char target[4200];
        ssize_t tl = readlink(link, target, sizeof target - 1);
        size_t il = strlen(tb->images_dir);
        bool imported = tl > 0 && (size_t)tl > il + 1 && strncmp(target, tb->images_dir, il) == 0 &&
                        target[il] == '/';
        if (tl > 0) target[tl] = '\0';
        unlink(link);
        if (imported && !tb_image_dir_linked(tb, target)) tb_remove_tree(target);
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/%s", tb->state_dir, name);
        tb_remove_tree(dir);
        entry_free(e);
    }
    pthread_mutex_unlock(&tb->mu);
    if (code == AGENT_OK) {
        char q[LOG_QUOTE_MAX];
        log_info("event=template_deleted name=\"%s\"", log_quote(name, q, sizeof q));
    }
    return code;
}

/* ------------------------------------------------------------ imports */

void tb_alias_by_digest(const template_builder *tb, const char *link, const char *digest)
{
    if (strlen(digest) != 64 || strspn(digest, "0123456789abcdef") != 64) return;
    char alias[4200], tmp[4300];
    snprintf(alias, sizeof alias, "%s/%s", tb->images_dir, digest);
    struct stat st;
    if (stat(alias, &st) == 0) return; /* already here (a copy, or an earlier build) */
    char *real = realpath(link, NULL);
    if (!real) return;
    snprintf(tmp, sizeof tmp, "%s/.%s.alias", tb->images_dir, digest);
    unlink(tmp);
    if (symlink(real, tmp) != 0 || rename(tmp, alias) != 0) unlink(tmp);
    free(real);
}

bool tb_image_dir_linked(const template_builder *tb, const char *target)
{
    DIR *d = opendir(tb->image_dir);
    if (!d) return true; /* cannot tell: keep it */
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char t[4200];
        ssize_t n = readlinkat(dirfd(d), de->d_name, t, sizeof t - 1);
        if (n <= 0) continue;
        t[n] = '\0';
        found = strcmp(t, target) == 0;
    }
    closedir(d);
    return found;
}

agent_code tb_register_import(template_builder *tb, const char *name, const char *digest,
                              int64_t size, tb_info *out, bool *same, terr *err)
{
    *same = false;
    char link[4200];
    tb_image_link(tb, name, link, sizeof link);
    pthread_mutex_lock(&tb->mu);
    tb_entry *old = find(tb, name);
    struct stat st;
    if (old || lstat(link, &st) == 0) {
        *same = old && old->info.status == TB_READY && strcmp(old->info.digest, digest) == 0;
        if (old) *out = old->info;
        pthread_mutex_unlock(&tb->mu);
        terr_set(err, "template %s already exists on this host", name);
        return AGENT_ALREADY_EXISTS;
    }
    tb_entry *e = calloc(1, sizeof *e);
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/%s", tb->state_dir, name);
    agent_code code = AGENT_OK;
    if (!e || !(e->packages = strdup("")) || (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
        terr_set(err, "create %s: %s", dir, e ? strerror(errno) : "out of memory");
        code = AGENT_INTERNAL;
    } else {
        snprintf(e->info.name, sizeof e->info.name, "%s", name);
        e->info.status = TB_READY;
        e->info.size_bytes = size;
        e->info.created_at_unix = time(NULL);
        snprintf(e->info.digest, sizeof e->info.digest, "%s", digest);
        tb_pjoin(path, sizeof path, dir, "build.log");
        char line[200];
        snprintf(line, sizeof line, "torpor-agent: copied from another host (digest %s)\n", digest);
        if (tb_write_file(path, line, err) != 0 || save_state(tb, e, err) != 0)
            code = AGENT_INTERNAL;
    }
    if (code == AGENT_OK) {
        tb_entry **tail = &tb->entries;
        while (*tail) tail = &(*tail)->next;
        *tail = e;
        *out = e->info;
    } else {
        entry_free(e);
        tb_remove_tree(dir);
    }
    pthread_mutex_unlock(&tb->mu);
    return code;
}

agent_code tb_ready_info(template_builder *tb, const char *name, tb_info *out, terr *err)
{
    if (!limits_template_name_valid(name)) {
        terr_set(err, "invalid template name");
        return AGENT_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&tb->mu);
    tb_entry *e = find(tb, name);
    if (e) *out = e->info;
    pthread_mutex_unlock(&tb->mu);
    if (!e) {
        terr_set(err, "unknown template %s", name);
        return AGENT_NOT_FOUND;
    }
    if (out->status != TB_READY || !out->digest[0]) {
        terr_set(err, "template %s is not ready here (%s)", name, tb_status_name(out->status));
        return AGENT_FAILED_PRECONDITION;
    }
    return AGENT_OK;
}
