/* admission: see admission.h. */
#include "admission.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>

int64_t admission_host_memory_mb(terr *err)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f) return terr_set(err, "/proc/meminfo: %s", strerror(errno));
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %lld kB", &kb) == 1) break;
    fclose(f);
    if (kb <= 0) return terr_set(err, "/proc/meminfo: no MemTotal");
    return kb / 1024;
}

int admission_check_disk(const admission_config *cfg, int memory_mb, terr *err)
{
    if (!cfg || cfg->disk_reserve_mb < 0 || !cfg->disk_path) return 0;
    struct statvfs st;
    if (statvfs(cfg->disk_path, &st) != 0)
        return terr_set(err, "statvfs %s: %s", cfg->disk_path, strerror(errno));
    int64_t free_mb = (int64_t)((unsigned long long)st.f_bavail * st.f_frsize / (1024 * 1024));
    int64_t need = (int64_t)memory_mb + cfg->disk_reserve_mb;
    if (free_mb < need)
        return terr_set(
            err,
            "no capacity on this host: disk has %lld MiB free, a %d MiB sandbox needs %lld "
            "(its RAM file + the %lld MiB reserve)",
            (long long)free_mb, memory_mb, (long long)need, (long long)cfg->disk_reserve_mb);
    return 0;
}

int admission_check_ram_locked(const admission_config *cfg, sandbox_table *t, int memory_mb,
                               terr *err)
{
    if (!cfg || cfg->overcommit <= 0) return 0;
    int64_t host = cfg->host_memory_mb;
    if (host <= 0 && (host = admission_host_memory_mb(err)) < 0) return -1;
    int64_t used = 0;
    for (size_t i = 0; i < sandbox_table_count_locked(t); i++) {
        const sandbox *sb = sandbox_table_at_locked(t, i);
        if (sb->status == SANDBOX_PAUSED || sb->status == SANDBOX_DESTROYING) continue;
        used += sb->spec.memory_mb;
    }
    int64_t limit = (int64_t)((double)host * cfg->overcommit);
    if (used + memory_mb > limit)
        return terr_set(
            err,
            "no capacity on this host: guest RAM in use %lld MiB + %d MiB requested exceeds "
            "%lld MiB (host %lld MiB x overcommit %g)",
            (long long)used, memory_mb, (long long)limit, (long long)host, cfg->overcommit);
    return 0;
}
