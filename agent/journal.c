#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd_io.h"
#include "fs_util.h"
#include "runtime.h"
#include "torpor_limits.h"

/* Compact when the file holds this many more records than pending ids. */
#define JOURNAL_COMPACT_SLACK 256

struct journal {
    pthread_mutex_t mu;
    char *path;
    int fd;     /* O_APPEND */
    char **ids; /* pending, in append order */
    size_t n, cap;
    size_t records; /* lines in the file */
    /* The file may not match ids (a failed append could not be undone):
     * rewrite it from ids before appending anything else. */
    bool dirty;
};

static ssize_t find_id(const journal *j, const char *id)
{
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->ids[i], id) == 0) return (ssize_t)i;
    return -1;
}

static int add_id(journal *j, const char *id, terr *err)
{
    if (find_id(j, id) >= 0) return 0;
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        char **ids = realloc(j->ids, cap * sizeof *ids);
        if (!ids) return terr_set(err, "journal: out of memory");
        j->ids = ids;
        j->cap = cap;
    }
    char *copy = strdup(id);
    if (!copy) return terr_set(err, "journal: out of memory");
    j->ids[j->n++] = copy;
    return 0;
}

static void remove_id(journal *j, const char *id)
{
    ssize_t i = find_id(j, id);
    if (i < 0) return;
    free(j->ids[i]);
    /* Keep append order: the control plane sees notices oldest first. */
    memmove(&j->ids[i], &j->ids[i + 1], (j->n - (size_t)i - 1) * sizeof *j->ids);
    j->n--;
}

static int fsync_dir_of(const char *path, terr *err)
{
    char *copy = strdup(path);
    if (!copy) return terr_set(err, "journal: out of memory");
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        terr_set(err, "journal: open dir %s: %s", dir, strerror(errno));
        free(copy);
        return -1;
    }
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) {
        terr_set(err, "journal: fsync dir %s: %s", dir, strerror(e));
        free(copy);
        return -1;
    }
    free(copy);
    return 0;
}

/* Rewrites the file with only the pending ids. The temp file's own fd
 * becomes j->fd the moment the rename succeeds: it is the new journal's
 * inode, so there is no reopen that could fail and leave j->fd on the old,
 * unlinked file. */
static int compact_locked(journal *j, terr *err)
{
    size_t tlen = strlen(j->path) + 5;
    char *tmp = malloc(tlen);
    if (!tmp) return terr_set(err, "journal: out of memory");
    snprintf(tmp, tlen, "%s.tmp", j->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        terr_set(err, "journal: create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    for (size_t i = 0; i < j->n; i++) {
        char line[RUNTIME_ID_MAX + 4];
        int len = snprintf(line, sizeof line, "P %s\n", j->ids[i]);
        if (fd_write_all(fd, line, (size_t)len) != 0) goto fail;
    }
    if (fsync(fd) != 0) goto fail;
    if (rename(tmp, j->path) != 0) goto fail;
    free(tmp);
    tmp = NULL;
    if (j->fd >= 0) close(j->fd);
    j->fd = fd;
    j->records = j->n;
    j->dirty = false;
    /* The rename is done and j->fd is right whatever happens here; only its
     * durability across a power loss is in doubt, which is reported. */
    return fsync_dir_of(j->path, err);
fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    if (tmp) unlink(tmp);
    terr_set(err, "journal: compact %s: %s", j->path, strerror(e));
    free(tmp);
    return -1;
}

static int append_locked(journal *j, char kind, const char *id, terr *err)
{
    if (j->dirty && compact_locked(j, err) != 0) {
        terr_wrap(err, "journal: repairing after a failed append");
        return -1;
    }
    char line[RUNTIME_ID_MAX + 4];
    int len = snprintf(line, sizeof line, "%c %s\n", kind, id);
    off_t end = lseek(j->fd, 0, SEEK_END);
    if (fd_write_all(j->fd, line, (size_t)len) != 0) {
        int e = errno;
        /* Cut a partial line so the next record starts on a clean line; if
         * that fails too, the next append rewrites the file first (writing
         * after a partial line would garble both records on replay). */
        if (end < 0 || ftruncate(j->fd, end) != 0) j->dirty = true;
        return terr_set(err, "journal: write %s: %s", j->path, strerror(e));
    }
    if (fsync(j->fd) != 0) {
        int e = errno;
        /* The line may or may not reach the disk, and ids will not hold it:
         * rewrite from ids before the next append. */
        j->dirty = true;
        return terr_set(err, "journal: fsync %s: %s", j->path, strerror(e));
    }
    j->records++;
    return 0;
}

static void maybe_compact_locked(journal *j)
{
    if (j->records <= j->n + JOURNAL_COMPACT_SLACK) return;
    /* The append already made the record durable; a failed compaction only
     * means a bigger file, so it is not the caller's error. */
    terr e;
    if (compact_locked(j, &e) != 0) j->records = j->n; /* retry much later */
}

/* Replays the whole file; *torn = the last line had no newline. */
static int replay(journal *j, int fd, bool *torn, terr *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return terr_set(err, "journal: stat %s: %s", j->path, strerror(errno));
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (!buf) return terr_set(err, "journal: out of memory (%zu bytes)", size);
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    *torn = false;
    size_t pos = 0;
    while (pos < got) {
        char *nl = memchr(buf + pos, '\n', got - pos);
        if (!nl) {
            *torn = true; /* crash mid-append: this record never counted */
            break;
        }
        *nl = '\0';
        const char *line = buf + pos;
        pos = (size_t)(nl - buf) + 1;
        j->records++;
        if ((line[0] != 'P' && line[0] != 'A') || line[1] != ' ' ||
            !limits_sandbox_id_valid(line + 2))
            continue; /* malformed: never written by us; skip */
        if (line[0] == 'P') {
            if (add_id(j, line + 2, err) != 0) {
                free(buf);
                return -1;
            }
        } else {
            remove_id(j, line + 2);
        }
    }
    free(buf);
    return 0;
}

int journal_open(const char *path, journal **out, terr *err)
{
    journal *j = calloc(1, sizeof *j);
    if (!j) return terr_set(err, "journal: out of memory");
    pthread_mutex_init(&j->mu, NULL);
    j->fd = -1;
    j->path = strdup(path);
    if (!j->path) {
        journal_close(j);
        return terr_set(err, "journal: out of memory");
    }
    char *dircopy = strdup(path);
    if (!dircopy) {
        journal_close(j);
        return terr_set(err, "journal: out of memory");
    }
    int rc = fs_mkdir_p(dirname(dircopy), 0700, err) == 0 ? 0 : terr_wrap(err, "journal");
    free(dircopy);
    if (rc != 0) {
        journal_close(j);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        terr_set(err, "journal: open %s: %s", path, strerror(errno));
        journal_close(j);
        return -1;
    }
    j->fd = fd;
    bool torn = false;
    if (replay(j, fd, &torn, err) != 0) {
        journal_close(j);
        return -1;
    }
    if (torn || j->records > j->n + JOURNAL_COMPACT_SLACK) {
        if (compact_locked(j, err) != 0) {
            journal_close(j);
            return -1;
        }
    }
    *out = j;
    return 0;
}

void journal_close(journal *j)
{
    if (!j) return;
    if (j->fd >= 0) close(j->fd);
    for (size_t i = 0; i < j->n; i++) free(j->ids[i]);
    free(j->ids);
    free(j->path);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int journal_append_paused(journal *j, const char *id, terr *err)
{
    if (!limits_sandbox_id_valid(id)) return terr_set(err, "journal: invalid sandbox id");
    pthread_mutex_lock(&j->mu);
    int rc = 0;
    if (find_id(j, id) < 0) {
        rc = append_locked(j, 'P', id, err);
        if (rc == 0) rc = add_id(j, id, err);
        if (rc == 0) maybe_compact_locked(j);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int journal_ack(journal *j, const char *const *ids, size_t n, terr *err)
{
    pthread_mutex_lock(&j->mu);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!ids[i] || find_id(j, ids[i]) < 0) continue;
        rc = append_locked(j, 'A', ids[i], err);
        if (rc == 0) remove_id(j, ids[i]);
    }
    if (rc == 0) maybe_compact_locked(j);
    pthread_mutex_unlock(&j->mu);
    return rc;
}

bool journal_is_pending(journal *j, const char *id)
{
    pthread_mutex_lock(&j->mu);
    bool found = find_id(j, id) >= 0;
    pthread_mutex_unlock(&j->mu);
    return found;
}

int journal_pending(journal *j, char ***ids, size_t *n, terr *err)
{
    pthread_mutex_lock(&j->mu);
    char **copy = calloc(j->n ? j->n : 1, sizeof *copy);
    if (!copy) {
        pthread_mutex_unlock(&j->mu);
        return terr_set(err, "journal: out of memory");
    }
    for (size_t i = 0; i < j->n; i++) {
        copy[i] = strdup(j->ids[i]);
        if (!copy[i]) {
            journal_ids_free(copy, i);
            pthread_mutex_unlock(&j->mu);
            return terr_set(err, "journal: out of memory");
        }
    }
    *n = j->n;
    *ids = copy;
    pthread_mutex_unlock(&j->mu);
    return 0;
}

void journal_ids_free(char **ids, size_t n)
{
    if (!ids) return;
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

size_t journal_record_count(journal *j)
{
    pthread_mutex_lock(&j->mu);
    size_t r = j->records;
    pthread_mutex_unlock(&j->mu);
    return r;
}
