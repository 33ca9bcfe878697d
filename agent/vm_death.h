/* vm_death: a running sandbox whose VM died is destroyed.
 *
 * The reaper's other job, on the same pattern as autopause.h: scan
 * (vm_death_collect asks the driver outside the table lock whether each
 * running VM is alive), claim (vm_death_claim: only if the sandbox still
 * runs that very VM and its lifecycle lock is free; status destroying),
 * then act (vm_death_destroy_claimed: driver destroy, record removed,
 * logged; the lifecycle lock released). */
#ifndef TORPOR_AGENT_VM_DEATH_H
#define TORPOR_AGENT_VM_DEATH_H

#include <stdbool.h>
#include <stddef.h>

#include "lifecycle.h"
#include "terr.h"

/* A running sandbox whose VM was found dead: the id and the handle seen
 * (one reference held, so the handle's address cannot be reused). */
typedef struct vm_death {
    char id[RUNTIME_ID_MAX];
    runtime_vm *vm;
} vm_death;

/* Running sandboxes whose VM is no longer alive; free with vm_death_free
 * (after the claims). */
int vm_death_collect(lifecycle *lc, vm_death **out, size_t *n, terr *err);
void vm_death_free(vm_death *dead, size_t n);
/* Claims a dead running sandbox for destruction (status destroying), only
 * if it still runs that very VM: a sandbox destroyed and re-created (or
 * paused and resumed) since the scan has a new, live VM and is left alone.
 * True = claimed: call vm_death_destroy_claimed exactly once. */
bool vm_death_claim(lifecycle *lc, const char *id, const runtime_vm *vm);
void vm_death_destroy_claimed(lifecycle *lc, const char *id);

#endif
