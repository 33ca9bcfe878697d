#include "agent_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ids.h"

bool agent_identity_valid(const char *s)
{
    if (!s || strncmp(s, AGENT_ID_PREFIX, sizeof AGENT_ID_PREFIX - 1) != 0) return false;
    const char *hex = s + sizeof AGENT_ID_PREFIX - 1;
    for (size_t i = 0; i < AGENT_ID_HEX; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'))) return false;
    return hex[AGENT_ID_HEX] == '\0';
}

static int ensure_dir(const char *dir, terr *err)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return terr_set(err, "agent identity: mkdir %s: %s", dir, strerror(errno));
    return 0;
}

/* Reads an existing id file. *missing is set when it does not exist. */
static int read_id(const char *path, char out[AGENT_ID_LEN + 1], bool *missing, terr *err)
{
    *missing = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            *missing = true;
            return 0;
        }
        return terr_set(err, "agent identity: open %s: %s", path, strerror(errno));
    }
    char buf[64];
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fd, buf + len, sizeof buf - 1 - len);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            return terr_set(err, "agent identity: read %s: %s", path, strerror(e));
        }
        if (k == 0 || (len += (size_t)k) == sizeof buf - 1) break;
    }
    close(fd);
    buf[len] = '\0';
    if (len > 0 && buf[len - 1] == '\n') buf[--len] = '\0';
    if (!agent_identity_valid(buf))
        return terr_set(
            err,
            "agent identity: %s is malformed (want \"%s\" + %d lowercase hex digits); restore it "
            "from a backup or, to give this host a new identity, remove it and run "
            "\"torpor-cp hosts reset-identity --id HOST\"",
            path, AGENT_ID_PREFIX, AGENT_ID_HEX);
    memcpy(out, buf, AGENT_ID_LEN + 1);
    return 0;
}

/* Writes a new id atomically: temp + fsync + rename + directory fsync. */
static int create_id(const char *dir, const char *path, char out[AGENT_ID_LEN + 1], terr *err)
{
    char hex[AGENT_ID_HEX + 1];
    if (ids_random_hex(hex, AGENT_ID_HEX / 2, err) != 0) return terr_wrap(err, "agent identity");
    char id[AGENT_ID_LEN + 2];
    snprintf(id, sizeof id, "%s%s\n", AGENT_ID_PREFIX, hex);

    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return terr_set(err, "agent identity: path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return terr_set(err, "agent identity: create %s: %s", tmp, strerror(errno));
    size_t len = strlen(id);
    ssize_t w = write(fd, id, len);
    if (w != (ssize_t)len || fsync(fd) != 0) {
        int e = w < 0 ? errno : (w != (ssize_t)len ? EIO : errno);
        close(fd);
        unlink(tmp);
        return terr_set(err, "agent identity: write %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return terr_set(err, "agent identity: rename %s: %s", tmp, strerror(e));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return terr_set(err, "agent identity: open dir %s: %s", dir, strerror(errno));
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    if (rc != 0) return terr_set(err, "agent identity: fsync dir %s: %s", dir, strerror(e));
    memcpy(out, id, AGENT_ID_LEN);
    out[AGENT_ID_LEN] = '\0';
    return 0;
}

int agent_identity_load(const char *state_dir, char out[AGENT_ID_LEN + 1], bool *created, terr *err)
{
    if (created) *created = false;
    out[0] = '\0';
    if (!state_dir || !*state_dir) return terr_set(err, "agent identity: no state dir");
    char dir[PATH_MAX], path[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof dir, "%s/agent", state_dir) >= sizeof dir ||
        (size_t)snprintf(path, sizeof path, "%s/agent_id", dir) >= sizeof path)
        return terr_set(err, "agent identity: state dir path too long");
    if (ensure_dir(state_dir, err) != 0 || ensure_dir(dir, err) != 0) return -1;
    bool missing;
    if (read_id(path, out, &missing, err) != 0) return -1;
    if (!missing) return 0;
    if (create_id(dir, path, out, err) != 0) return -1;
    if (created) *created = true;
    return 0;
}
