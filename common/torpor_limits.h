/* torpor_limits: the numbers and name rules both services enforce, in one place.
 *
 * The control plane checks them on REST input and the agent checks them
 * again on gRPC input (it trusts nobody's validation but its own), so they
 * must agree: a value one accepts and the other refuses is a bug.
 *
 * Names: a template name is ^[a-z0-9][a-z0-9._-]{0,62}$ (it becomes a
 * directory name and a URL path segment); a sandbox id is
 * ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ (ids are generated as "sb-" + hex, the
 * wider rule only keeps path segments safe). Both predicates are pure and
 * accept NULL (false). */
#ifndef TORPOR_LIMITS_H
#define TORPOR_LIMITS_H

#include <stdbool.h>

#define TORPOR_NAME_LEN_MAX 63 /* template names and sandbox ids */

#define TORPOR_VCPUS_MIN 1
#define TORPOR_VCPUS_MAX 64
#define TORPOR_MEMORY_MB_MIN 64
#define TORPOR_MEMORY_MB_MAX 65536
#define TORPOR_DISK_MB_MIN 512 /* root disk (templates with one); 0 on input = default */
#define TORPOR_DISK_MB_MAX 65536
#define TORPOR_DISK_MB_DEFAULT 4096
#define TORPOR_TIMEOUT_SEC_MAX 2592000 /* 30 days of inactivity before auto-pause */
#define TORPOR_EXEC_TIMEOUT_DEFAULT_SEC 30
#define TORPOR_EXEC_TIMEOUT_MAX_SEC 3600

bool limits_template_name_valid(const char *name);
bool limits_sandbox_id_valid(const char *id);

#endif
