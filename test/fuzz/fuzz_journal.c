/* libFuzzer target: the agent's auto-pause journal reader (agent/journal.c).
 * The input is written as the journal file and opened (replayed, maybe
 * compacted); every pending id must then be reported pending, and one more
 * append and ack must work on what was read. Files live in a private temp
 * dir made once per process. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_check.h"
#include "journal.h"

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/torpor-fuzz-journal-XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    char path[128];
    snprintf(path, sizeof path, "%s/auto_paused.journal", dir);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size) fwrite(data, 1, size, f);
    fclose(f);

    journal *j;
    terr err;
    if (journal_open(path, &j, &err) == 0) {
        char **ids;
        size_t n;
        if (journal_pending(j, &ids, &n, &err) == 0) {
            for (size_t i = 0; i < n; i++) FUZZ_CHECK(journal_is_pending(j, ids[i]));
            journal_ids_free(ids, n);
        }
        if (journal_append_paused(j, "sb-00000000000000aa", &err) == 0) {
            FUZZ_CHECK(journal_is_pending(j, "sb-00000000000000aa"));
            const char *ack[] = {"sb-00000000000000aa"};
            if (journal_ack(j, ack, 1, &err) == 0)
                FUZZ_CHECK(!journal_is_pending(j, "sb-00000000000000aa"));
        }
        journal_close(j);
    }
    unlink(path);
    return 0;
}
