/* vm_user: the unprivileged user every QEMU runs as (docs/security.md).
 *
 * Contract: vm_user_ensure(name) returns 0 when the user exists, creating
 * it first as a system user without home or login shell (useradd) when it
 * does not; -1 with the reason otherwise. Only for the default user of an
 * agent running as root (an explicitly named user must exist). Blocking. */
#ifndef TORPOR_AGENT_VM_USER_H
#define TORPOR_AGENT_VM_USER_H

#include "terr.h"

int vm_user_ensure(const char *name, terr *err);

#endif
