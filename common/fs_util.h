/* fs_util: small file-system helpers shared by the agent and its tests.
 *
 * fs_mkdir_p: creates path and every missing parent with mode (like
 * `mkdir -p`); an existing directory is success, an existing non-directory
 * an error. Returns 0, or -1 with err naming the component that failed. */
#ifndef TORPOR_FS_UTIL_H
#define TORPOR_FS_UTIL_H

#include <sys/types.h>

#include "terr.h"

int fs_mkdir_p(const char *path, mode_t mode, terr *err);

#endif
