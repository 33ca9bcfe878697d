/* qemu_accel: accelerator choice (see qemu_accel.h). */
#include "qemu_accel.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

int runtime_qemu_parse_accel(const char *s, qemu_accel *out)
{
    if (!s) return -1;
    if (!strcmp(s, "auto")) *out = QEMU_ACCEL_AUTO;
    else if (!strcmp(s, "kvm")) *out = QEMU_ACCEL_KVM;
    else if (!strcmp(s, "tcg")) *out = QEMU_ACCEL_TCG;
    else return -1;
    return 0;
}

static bool path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Looks for a whole-word flag on the cpuinfo "flags" lines. */
static bool cpu_has_flag(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    if (!f) return false;
    char line[8192];
    bool found = false;
    size_t fl = strlen(flag);
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        for (char *p = strstr(line, flag); p; p = strstr(p + 1, flag)) {
            bool start = p == line || p[-1] == ' ' || p[-1] == '\t';
            char end = p[fl];
            if (start && (end == ' ' || end == '\n' || end == '\0')) {
                found = true;
                break;
            }
        }
    }
    fclose(f);
    return found;
}

/* 0 if /dev/kvm opens and speaks the stable API. */
static int kvm_device_ok(char *why, size_t why_n)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_n, "/dev/kvm: %s", strerror(errno));
        return -1;
    }
    int v = ioctl(fd, KVM_GET_API_VERSION, 0);
    close(fd);
    if (v != KVM_API_VERSION) {
        snprintf(why, why_n, "/dev/kvm API version %d (want %d)", v, KVM_API_VERSION);
        return -1;
    }
    return 0;
}

int qemu_accel_resolve(qemu_accel want, const char **out, char *why, size_t why_n, terr *err)
{
    if (want == QEMU_ACCEL_TCG) {
        snprintf(why, why_n, "configured");
        *out = "tcg";
        return 0;
    }
    char kw[200];
    if (kvm_device_ok(kw, sizeof kw) < 0) {
        if (want == QEMU_ACCEL_KVM) return terr_set(err, "accel kvm requested but %s", kw);
        snprintf(why, why_n, "auto: %s", kw);
        *out = "tcg";
        return 0;
    }
    if (want == QEMU_ACCEL_KVM) {
        snprintf(why, why_n, "configured");
        *out = "kvm";
        return 0;
    }
    bool intel = cpu_has_flag("vmx") && path_exists("/sys/module/kvm_intel");
    bool amd = cpu_has_flag("svm") && path_exists("/sys/module/kvm_amd");
    if (path_exists("/sys/module/kvm_pvm")) {
        snprintf(why, why_n,
                 "auto: /dev/kvm is served by kvm_pvm, which runs only PVM guest kernels");
        *out = "tcg";
    } else if (!intel && !amd) {
        snprintf(why, why_n, "auto: no vmx/svm CPU flag with kvm_intel/kvm_amd loaded");
        *out = "tcg";
    } else {
        snprintf(why, why_n, "auto: /dev/kvm works with %s", intel ? "kvm_intel" : "kvm_amd");
        *out = "kvm";
    }
    return 0;
}
