/* vm_user: create the VM user when missing (see vm_user.h). */
#include "vm_user.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

#define USERADD "/usr/sbin/useradd"

extern char **environ;

int vm_user_ensure(const char *name, terr *err)
{
    if (getpwnam(name)) return 0;
    char *argv[] = {USERADD,      "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    (char *)name, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, USERADD, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return terr_set(err, "VM user %s does not exist and " USERADD " cannot run: %s", name,
                        strerror(rc));
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    /* useradd exits 9 when another process created the user meanwhile. */
    if (!getpwnam(name))
        return terr_set(err, "VM user %s does not exist and useradd failed (status %d)", name,
                        WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    log_info("event=vm_user_created user=%s", name);
    return 0;
}
