#include "runtime.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

void runtime_exec_result_free(runtime_exec_result *r)
{
    if (!r) return;
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

void runtime_vm_init(runtime_vm *vm, runtime_driver *d, const char *sandbox_id, void *priv)
{
    vm->driver = d;
    snprintf(vm->sandbox_id, sizeof vm->sandbox_id, "%s", sandbox_id);
    atomic_init(&vm->refs, 1);
    vm->priv = priv;
}

void runtime_vm_ref(runtime_vm *vm) { atomic_fetch_add(&vm->refs, 1); }

void runtime_vm_unref(runtime_vm *vm)
{
    if (!vm) return;
    if (atomic_fetch_sub(&vm->refs, 1) == 1) vm->driver->ops->vm_free(vm);
}

static _Thread_local long long call_deadline_ms;

void runtime_call_deadline_set(long long mono_ms) { call_deadline_ms = mono_ms; }

long long runtime_call_deadline(void) { return call_deadline_ms; }
