/* admission: may this host start one more VM? (issue 10, host resources)
 *
 * Contract:
 * - RAM: the guest RAM of every sandbox that holds or is about to hold a
 *   VM (creating, running, pausing, resuming) plus the new one must stay
 *   within host_memory_mb x overcommit. The check and the state change that
 *   makes the new sandbox count (insert as creating / move to resuming)
 *   happen under one table lock, so two creates cannot both take the last
 *   room.
 * - Disk: the file system of disk_path must have at least the new VM's RAM
 *   file (memory_mb, what it can grow to) plus disk_reserve_mb free. Free
 *   space is what sandboxes actually use, not their nominal disk size.
 * - Refusal: AGENT_RESOURCE_EXHAUSTED, err says which limit, what is used and
 *   what the limit is (the control plane tries another host, then answers
 *   503 no_capacity).
 * A NULL config, or overcommit <= 0 and disk_reserve_mb < 0, admits all. */
#ifndef TORPOR_AGENT_ADMISSION_H
#define TORPOR_AGENT_ADMISSION_H

#include <stdint.h>

#include "sandbox_table.h"
#include "terr.h"

typedef struct admission_config {
    int64_t host_memory_mb;  /* MemTotal; 0 = read /proc/meminfo at check time */
    double overcommit;       /* guest RAM may total host RAM x this; <= 0 = no RAM check */
    int64_t disk_reserve_mb; /* < 0 = no disk check */
    const char *disk_path;   /* the state dir */
} admission_config;

/* MemTotal of this host in MiB, or -1 with err set. */
int64_t admission_host_memory_mb(terr *err);

/* Disk part; call without the table lock (statvfs). 0 = admitted. */
int admission_check_disk(const admission_config *cfg, int memory_mb, terr *err);
/* RAM part; table lock held. 0 = admitted. */
int admission_check_ram_locked(const admission_config *cfg, sandbox_table *t, int memory_mb,
                               terr *err);

#endif
