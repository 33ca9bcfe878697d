/* qemu_accel: choosing the accelerator (KVM or TCG) for the QEMU driver.
 *
 * Contract: qemu_accel_resolve() turns auto|kvm|tcg into "kvm" or "tcg".
 * auto picks KVM only when this host's KVM can run an ordinary guest; it
 * decides from facts it can read at once (no guest is started, so it never
 * hangs): /dev/kvm opens read-write and answers KVM_GET_API_VERSION, the CPU
 * has hardware virtualisation (vmx/svm) and the matching kvm_intel/kvm_amd
 * module is the one serving /dev/kvm. A PVM host (kvm_pvm, as on the
 * project's own machines) can only run PVM-built guest kernels, so auto
 * falls back to TCG there. Explicit kvm fails when /dev/kvm cannot be used
 * at all. *why says what was decided and why (for the log). */
#ifndef TORPOR_QEMU_ACCEL_H
#define TORPOR_QEMU_ACCEL_H

#include <stddef.h>

#include "qemu.h"
#include "terr.h"

int qemu_accel_resolve(qemu_accel want, const char **out, char *why, size_t why_n, terr *err);

#endif
