#include "test_driver.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TD_MAX_DEFAULT 64
#define TD_MAX (td->max)

typedef struct td_file {
    char path[256];
    uint8_t *data;
    size_t len;
    struct td_file *next;
} td_file;

typedef struct td_entry {
    bool used;
    runtime_spec spec;
    int state; /* 1 running, 2 paused, 3 debris (snapshot consumed) */
    bool dead;
    runtime_vm *vm; /* current handle (not owned) while running */
    td_file *files;
} td_entry;

typedef struct td_slot { /* per (op, id): gate, failure, counter */
    bool used;
    td_op op;
    char id[RUNTIME_ID_MAX];
    bool closed;
    int blocked;
    int calls;
    char fail_msg[200];
    bool fail;
    bool lose; /* resume only: fail after consuming the snapshot */
} td_slot;

struct test_driver {
    runtime_driver rd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int max; /* entries; slots hold 4 per entry */
    td_entry *entries;
    td_slot *slots;
};

static test_driver *td_of(runtime_driver *d) { return d->priv; }

static td_entry *entry_find(test_driver *td, const char *id)
{
    for (int i = 0; i < TD_MAX; i++)
        if (td->entries[i].used && strcmp(td->entries[i].spec.sandbox_id, id) == 0)
            return &td->entries[i];
    return NULL;
}

static void entry_clear(td_entry *e)
{
    for (td_file *f = e->files, *n; f; f = n) {
        n = f->next;
        free(f->data);
        free(f);
    }
    memset(e, 0, sizeof *e);
}

static td_slot *slot_get(test_driver *td, td_op op, const char *id)
{
    td_slot *free_slot = NULL;
    for (size_t i = 0; i < (size_t)td->max * 4; i++) {
        td_slot *s = &td->slots[i];
        if (s->used && s->op == op && strcmp(s->id, id) == 0) return s;
        if (!s->used && !free_slot) free_slot = s;
    }
    if (!free_slot) abort(); /* a test with this many sandboxes is a bug */
    free_slot->used = true;
    free_slot->op = op;
    snprintf(free_slot->id, sizeof free_slot->id, "%s", id);
    return free_slot;
}

/* Counts the call, parks at a closed gate, then consumes an injected
 * failure. Returns -1 (err set) when the call must fail. Lock held. */
static int enter_locked(test_driver *td, td_op op, const char *id, terr *err)
{
    td_slot *s = slot_get(td, op, id);
    s->calls++;
    if (s->closed) {
        s->blocked++;
        pthread_cond_broadcast(&td->cv);
        while (s->closed) pthread_cond_wait(&td->cv, &td->mu);
        s->blocked--;
    }
    if (s->fail) {
        s->fail = false;
        return terr_set(err, "%s", s->fail_msg);
    }
    return 0;
}

static runtime_vm *new_vm(test_driver *td, td_entry *e)
{
    runtime_vm *vm = calloc(1, sizeof *vm);
    if (!vm) abort();
    runtime_vm_init(vm, &td->rd, e->spec.sandbox_id, e); /* priv: a lookup hint */
    e->vm = vm;
    e->state = 1;
    e->dead = false;
    return vm;
}

/* The entry of a handle if the handle is the live VM of a running entry. */
static td_entry *live_entry(test_driver *td, runtime_vm *vm)
{
    /* The entry the handle was made for, when it still is this handle's
     * (entries never move); else the linear search. */
    td_entry *e = vm->priv;
    if (!(e && e->used && e->vm == vm && strcmp(e->spec.sandbox_id, vm->sandbox_id) == 0))
        e = entry_find(td, vm->sandbox_id);
    if (!e || e->vm != vm || e->state != 1) return NULL;
    return e;
}

static int td_create(runtime_driver *d, const runtime_spec *spec, runtime_vm **out, terr *err)
{
    test_driver *td = td_of(d);
    pthread_mutex_lock(&td->mu);
    int rc = enter_locked(td, TD_CREATE, spec->sandbox_id, err);
    if (rc == 0 && strcmp(spec->template_name, "minimal") != 0 &&
        strcmp(spec->template_name, "base") != 0)
        rc = terr_set(err, "unknown template %s", spec->template_name);
    if (rc == 0 && entry_find(td, spec->sandbox_id))
        rc = terr_set(err, "sandbox dir %s exists", spec->sandbox_id);
    td_entry *e = NULL;
    for (int i = 0; rc == 0 && i < TD_MAX && !e; i++)
        if (!td->entries[i].used) e = &td->entries[i];
    if (rc == 0 && !e) rc = terr_set(err, "test driver full");
    if (rc == 0) {
        e->used = true;
        e->spec = *spec;
        *out = new_vm(td, e);
    }
    pthread_mutex_unlock(&td->mu);
    return rc;
}

static int td_pause(runtime_driver *d, runtime_vm *vm, const runtime_spec *spec, terr *err)
{
    test_driver *td = td_of(d);
    pthread_mutex_lock(&td->mu);
    int rc = enter_locked(td, TD_PAUSE, vm->sandbox_id, err);
    td_entry *e = live_entry(td, vm);
    if (rc == 0 && !e) rc = terr_set(err, "vm is not running");
    if (rc == 0 && e->dead) rc = terr_set(err, "qmp: connection reset: vm process exited");
    if (rc == 0) {
        e->state = 2;
        e->vm = NULL;
        e->spec = *spec;
    }
    pthread_mutex_unlock(&td->mu);
    return rc;
}

static int td_resume(runtime_driver *d, const runtime_spec *spec, runtime_vm **out, terr *err)
{
    test_driver *td = td_of(d);
    pthread_mutex_lock(&td->mu);
    int rc = enter_locked(td, TD_RESUME, spec->sandbox_id, err);
    td_entry *e = entry_find(td, spec->sandbox_id);
    if (rc == 0 && (!e || e->state != 2))
        rc = terr_set(err, "no snapshot for %s", spec->sandbox_id);
    td_slot *s = slot_get(td, TD_RESUME, spec->sandbox_id);
    if (rc == 0 && s->lose) {
        s->lose = false;
        e->state = 3;
        terr_set(err, "%s", s->fail_msg);
        pthread_mutex_unlock(&td->mu);
        return RUNTIME_SNAPSHOT_LOST;
    }
    if (rc == 0) {
        e->spec = *spec;
        *out = new_vm(td, e);
    }
    pthread_mutex_unlock(&td->mu);
    return rc;
}

static int td_destroy(runtime_driver *d, const char *id, runtime_vm *vm, terr *err)
{
    test_driver *td = td_of(d);
    pthread_mutex_lock(&td->mu);
    int rc = enter_locked(td, TD_DESTROY, id, err);
    td_entry *e = entry_find(td, id);
    if (rc == 0 && e) entry_clear(e);
    pthread_mutex_unlock(&td->mu);
    return rc;
}

static int td_exec(runtime_driver *d, runtime_vm *vm, const runtime_exec_request *req,
                   runtime_exec_result *res, terr *err)
{
    test_driver *td = td_of(d);
    pthread_mutex_lock(&td->mu);
    int rc = enter_locked(td, TD_EXEC, vm->sandbox_id, err);
    td_entry *e = live_entry(td, vm);
    if (rc == 0 && (!e || e->dead)) rc = terr_set(err, "vm is not running");
    if (rc == 0) {
        memset(res, 0, sizeof *res);
        size_t n = strlen(req->cmd);
        res->out = malloc(n + 1);
        res->err = malloc(1);
        if (!res->out || !res->err) abort();
        memcpy(res->out, req->cmd, n);
        res->out[n] = '\n';
        res->out_len = n + 1;
        res->exit_code = 0;
    }
    pthread_mutex_unlock(&td->mu);
    return rc;
}

static td_file *file_find(td_entry *e, const char *path)
{
    for (td_file *f = e->files; f; f = f->next)
        if (strcmp(f->path, path) == 0) return f;
    return NULL;
}

static int td_read_file(runtime_driver *d, runtime_vm *vm, const char *path, uint8_t **data,
                        size_t *len, terr *err)
{
    test_driver *td = td_of(d);
    pthread_mutex_lock(&td->mu);
    int rc = enter_locked(td, TD_READ, vm->sandbox_id, err);
    td_entry *e = live_entry(td, vm);
    if (rc == 0 && (!e || e->dead)) rc = terr_set(err, "vm is not running");
    td_file *f = rc == 0 ? file_find(e, path) : NULL;
    if (rc == 0 && !f) rc = terr_set(err, "open %s: No such file or directory", path);
    if (rc == 0) {
        *data = malloc(f->len ? f->len : 1);
        if (!*data) abort();
        memcpy(*data, f->data, f->len);
        *len = f->len;
    }
    pthread_mutex_unlock(&td->mu);
    return rc;
}

static int td_write_file(runtime_driver *d, runtime_vm *vm, const char *path, const uint8_t *data,
                         size_t len, unsigned mode, terr *err)
{
    test_driver *td = td_of(d);
    pthread_mutex_lock(&td->mu);
    int rc = enter_locked(td, TD_WRITE, vm->sandbox_id, err);
    td_entry *e = live_entry(td, vm);
    if (rc == 0 && (!e || e->dead)) rc = terr_set(err, "vm is not running");
    if (rc == 0) {
        td_file *f = file_find(e, path);
        if (!f) {
            f = calloc(1, sizeof *f);
            if (!f) abort();
            snprintf(f->path, sizeof f->path, "%s", path);
            f->next = e->files;
            e->files = f;
        }
        free(f->data);
        f->data = malloc(len ? len : 1);
        if (!f->data) abort();
        memcpy(f->data, data, len);
        f->len = len;
    }
    pthread_mutex_unlock(&td->mu);
    return rc;
}

static bool td_vm_alive(runtime_driver *d, runtime_vm *vm)
{
    test_driver *td = td_of(d);
    pthread_mutex_lock(&td->mu);
    td_entry *e = live_entry(td, vm);
    bool alive = e && !e->dead;
    pthread_mutex_unlock(&td->mu);
    return alive;
}

static bool slow_recover_locked(test_driver *td, const char *id)
{
    for (int i = 0; i < td->max * 4; i++) {
        td_slot *s = &td->slots[i];
        if (s->used && s->op == TD_RECOVER && strcmp(s->id, id) == 0) return s->closed || s->fail;
    }
    return false;
}

static int td_recover(runtime_driver *d, runtime_recover_fn cb, void *ctx, terr *err)
{
    test_driver *td = td_of(d);
    /* Collect under the lock, call back outside it (the callee may unref). */
    runtime_spec *specs = calloc((size_t)TD_MAX, sizeof *specs);
    runtime_spec *slow = calloc((size_t)TD_MAX, sizeof *slow);
    runtime_vm **vms = calloc((size_t)TD_MAX, sizeof *vms);
    if (!specs || !slow || !vms) abort();
    int n = 0, n_slow = 0;
    pthread_mutex_lock(&td->mu);
    for (int i = 0; i < TD_MAX; i++) {
        td_entry *e = &td->entries[i];
        if (!e->used) continue;
        if ((e->state == 1 && e->dead) || e->state == 3) { /* debris: no VM, no snapshot */
            entry_clear(e);
            continue;
        }
        if (e->state == 1 && !e->vm && slow_recover_locked(td, e->spec.sandbox_id)) {
            slow[n_slow++] = e->spec;
            continue;
        }
        specs[n] = e->spec;
        if (e->state == 1) {
            if (e->vm) { /* a handle of the previous "agent" still exists: hand a ref */
                runtime_vm_ref(e->vm);
                vms[n] = e->vm;
            } else {
                vms[n] = new_vm(td, e);
            }
        } else {
            vms[n] = NULL;
        }
        n++;
    }
    pthread_mutex_unlock(&td->mu);
    for (int i = 0; i < n_slow; i++) cb(ctx, &slow[i], RUNTIME_VM_RECOVERING);
    for (int i = 0; i < n; i++) cb(ctx, &specs[i], vms[i]);
    cb(ctx, NULL, RUNTIME_VM_RECOVERING);
    for (int i = 0; i < n_slow; i++) {
        terr e;
        runtime_vm *vm = RUNTIME_VM_GONE;
        pthread_mutex_lock(&td->mu);
        if (enter_locked(td, TD_RECOVER, slow[i].sandbox_id, &e) == 0) {
            td_entry *en = entry_find(td, slow[i].sandbox_id);
            if (en) vm = new_vm(td, en);
        }
        pthread_mutex_unlock(&td->mu);
        cb(ctx, &slow[i], vm);
    }
    (void)err;
    free(specs);
    free(slow);
    free(vms);
    return 0;
}

static void td_vm_free(runtime_vm *vm)
{
    test_driver *td = td_of(vm->driver);
    pthread_mutex_lock(&td->mu);
    td_entry *e = entry_find(td, vm->sandbox_id);
    if (e && e->vm == vm) e->vm = NULL; /* VM "process" keeps running without a handle */
    pthread_mutex_unlock(&td->mu);
    free(vm);
}

static void td_close(runtime_driver *d) { test_driver_free(td_of(d)); }

static const runtime_ops td_ops = {
    .name = "test",
    .create = td_create,
    .pause = td_pause,
    .resume = td_resume,
    .destroy = td_destroy,
    .exec = td_exec,
    .read_file = td_read_file,
    .write_file = td_write_file,
    .vm_alive = td_vm_alive,
    .recover = td_recover,
    .vm_free = td_vm_free,
    .close = td_close,
};

test_driver *test_driver_new(void) { return test_driver_new_sized(TD_MAX_DEFAULT); }

test_driver *test_driver_new_sized(int max)
{
    test_driver *td = calloc(1, sizeof *td);
    if (!td) abort();
    td->max = max;
    td->entries = calloc((size_t)max, sizeof *td->entries);
    td->slots = calloc((size_t)max * 4, sizeof *td->slots);
    if (!td->entries || !td->slots) abort();
    td->rd.ops = &td_ops;
    td->rd.priv = td;
    pthread_mutex_init(&td->mu, NULL);
    pthread_cond_init(&td->cv, NULL);
    return td;
}

runtime_driver *test_driver_runtime(test_driver *td) { return &td->rd; }

void test_driver_free(test_driver *td)
{
    if (!td) return;
    for (int i = 0; i < TD_MAX; i++)
        if (td->entries[i].used) entry_clear(&td->entries[i]);
    pthread_cond_destroy(&td->cv);
    pthread_mutex_destroy(&td->mu);
    free(td->entries);
    free(td->slots);
    free(td);
}

void test_driver_gate_close(test_driver *td, td_op op, const char *id)
{
    pthread_mutex_lock(&td->mu);
    slot_get(td, op, id)->closed = true;
    pthread_mutex_unlock(&td->mu);
}

void test_driver_gate_open(test_driver *td, td_op op, const char *id)
{
    pthread_mutex_lock(&td->mu);
    slot_get(td, op, id)->closed = false;
    pthread_cond_broadcast(&td->cv);
    pthread_mutex_unlock(&td->mu);
}

bool test_driver_wait_blocked(test_driver *td, td_op op, const char *id, int n, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&td->mu);
    td_slot *s = slot_get(td, op, id);
    int rc = 0;
    while (s->blocked < n && rc == 0) rc = pthread_cond_timedwait(&td->cv, &td->mu, &deadline);
    bool ok = s->blocked >= n;
    pthread_mutex_unlock(&td->mu);
    return ok;
}

void test_driver_fail_next(test_driver *td, td_op op, const char *id, const char *msg)
{
    pthread_mutex_lock(&td->mu);
    td_slot *s = slot_get(td, op, id);
    s->fail = true;
    snprintf(s->fail_msg, sizeof s->fail_msg, "%s", msg);
    pthread_mutex_unlock(&td->mu);
}

void test_driver_lose_snapshot_next(test_driver *td, const char *id, const char *msg)
{
    pthread_mutex_lock(&td->mu);
    td_slot *s = slot_get(td, TD_RESUME, id);
    s->lose = true;
    snprintf(s->fail_msg, sizeof s->fail_msg, "%s", msg);
    pthread_mutex_unlock(&td->mu);
}

void test_driver_set_spec(test_driver *td, const char *id, const runtime_spec *spec)
{
    pthread_mutex_lock(&td->mu);
    td_entry *e = entry_find(td, id);
    if (e) {
        e->spec = *spec;
        /* the id is the entry's key (a directory name): keep it */
        snprintf(e->spec.sandbox_id, sizeof e->spec.sandbox_id, "%s", id);
    }
    pthread_mutex_unlock(&td->mu);
}

void test_driver_kill(test_driver *td, const char *id)
{
    pthread_mutex_lock(&td->mu);
    td_entry *e = entry_find(td, id);
    if (e) e->dead = true;
    pthread_mutex_unlock(&td->mu);
}

int test_driver_calls(test_driver *td, td_op op, const char *id)
{
    pthread_mutex_lock(&td->mu);
    int n = slot_get(td, op, id)->calls;
    pthread_mutex_unlock(&td->mu);
    return n;
}

int test_driver_disk_state(test_driver *td, const char *id)
{
    pthread_mutex_lock(&td->mu);
    td_entry *e = entry_find(td, id);
    int st = e ? e->state : 0;
    pthread_mutex_unlock(&td->mu);
    return st;
}
