/* The auto-pause journal: durability across reopen/restart, acks, torn and
 * malformed lines, compaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_fixture.h"

static int setup(void **state)
{
    *state = fx_new();
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(content, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static char *read_whole(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The pending ids joined with ',' (static buffer). */
static const char *pending(journal *j)
{
    static char out[4096];
    char **ids;
    size_t n;
    terr e;
    assert_int_equal(journal_pending(j, &ids, &n, &e), 0);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i) strcat(out, ",");
        strcat(out, ids[i]);
    }
    journal_ids_free(ids, n);
    return out;
}

static journal *reopen(agent_fx *fx)
{
    terr e;
    journal_close(fx->journal);
    fx->journal = NULL;
    journal *j;
    assert_int_equal(journal_open(fx->journal_path, &j, &e), 0);
    return j;
}

static void test_entries_survive_reopen_until_ack(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(journal_append_paused(fx->journal, "sb-1", &e), 0);
    assert_int_equal(journal_append_paused(fx->journal, "sb-2", &e), 0);
    assert_int_equal(journal_append_paused(fx->journal, "sb-1", &e), 0); /* idempotent */
    fx->journal = reopen(fx);
    assert_string_equal(pending(fx->journal), "sb-1,sb-2");
    const char *ack[] = {"sb-1", "sb-unknown"};
    assert_int_equal(journal_ack(fx->journal, ack, 2, &e), 0);
    assert_string_equal(pending(fx->journal), "sb-2");
    fx->journal = reopen(fx);
    assert_string_equal(pending(fx->journal), "sb-2");
    assert_string_equal(read_whole(fx->journal_path), "P sb-1\nP sb-2\nA sb-1\n");
}

static void test_torn_last_line_is_ignored(void **state)
{
    agent_fx *fx = *state;
    terr e;
    journal_close(fx->journal);
    fx->journal = NULL;
    write_file(fx->journal_path, "P sb-a\nP sb-b\nA sb-a\nP sb-c"); /* crash mid-append */
    assert_int_equal(journal_open(fx->journal_path, &fx->journal, &e), 0);
    assert_string_equal(pending(fx->journal), "sb-b");
    /* the torn tail is gone, so the next record lands on its own line */
    assert_int_equal(journal_append_paused(fx->journal, "sb-d", &e), 0);
    fx->journal = reopen(fx);
    assert_string_equal(pending(fx->journal), "sb-b,sb-d");
}

static void test_malformed_lines_are_ignored(void **state)
{
    agent_fx *fx = *state;
    terr e;
    journal_close(fx->journal);
    fx->journal = NULL;
    write_file(fx->journal_path, "X sb-x\nP ../etc\nP\nPsb-y\n\nP sb-ok\nA nope\n");
    assert_int_equal(journal_open(fx->journal_path, &fx->journal, &e), 0);
    assert_string_equal(pending(fx->journal), "sb-ok");
    assert_int_equal(journal_append_paused(fx->journal, "../evil", &e), -1);
}

static void test_compaction_bounds_the_file(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(journal_append_paused(fx->journal, "keep", &e), 0);
    char id[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "sb-%d", i);
        assert_int_equal(journal_append_paused(fx->journal, id, &e), 0);
        const char *ack[] = {id};
        assert_int_equal(journal_ack(fx->journal, ack, 1, &e), 0);
    }
    assert_true(journal_record_count(fx->journal) < 400);
    assert_string_equal(pending(fx->journal), "keep");
    fx->journal = reopen(fx);
    assert_string_equal(pending(fx->journal), "keep");
    assert_true(journal_record_count(fx->journal) < 400);
    assert_int_equal(access(fx->journal_path, F_OK), 0);
}

/* After a compaction the journal's fd is the renamed file: later records
 * land in the file a restart reads. */
static void test_appends_after_compaction_reach_the_file(void **state)
{
    agent_fx *fx = *state;
    terr e;
    char id[32];
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "sb-%d", i);
        assert_int_equal(journal_append_paused(fx->journal, id, &e), 0);
        const char *ack[] = {id};
        assert_int_equal(journal_ack(fx->journal, ack, 1, &e), 0);
    }
    assert_true(journal_record_count(fx->journal) < 300); /* compacted at least once */
    assert_int_equal(journal_append_paused(fx->journal, "after", &e), 0);
    assert_non_null(strstr(read_whole(fx->journal_path), "P after\n"));
    fx->journal = reopen(fx);
    assert_string_equal(pending(fx->journal), "after");
}

/* A write that fails half-way (disk full) must not leave a partial line
 * that the next record is glued to. */
static void test_failed_append_does_not_garble_the_next(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(journal_append_paused(fx->journal, "sb-a", &e), 0); /* "P sb-a\n": 7 bytes */
    rlim_t old = fx_limit_file_size(7 + 4); /* "P sb-long-name\n" gets 4 bytes in */
    int rc = journal_append_paused(fx->journal, "sb-long-name", &e);
    fx_limit_file_size(old);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, "journal: write"));
    assert_false(journal_is_pending(fx->journal, "sb-long-name"));
    assert_int_equal(journal_append_paused(fx->journal, "sb-c", &e), 0);
    assert_string_equal(read_whole(fx->journal_path), "P sb-a\nP sb-c\n");
    fx->journal = reopen(fx);
    assert_string_equal(pending(fx->journal), "sb-a,sb-c");
}

static void test_open_fails_cleanly_on_bad_path(void **state)
{
    journal *j = NULL;
    terr e = {{0}};
    assert_int_equal(journal_open("/proc/torpor/no/such/journal", &j, &e), -1);
    assert_null(j);
    assert_true(strlen(e.msg) > 0);
}

/* Agent level: an auto-pause notice survives an agent restart, and the
 * restarted agent still knows the sandbox is paused on disk. */
static void test_agent_restart_keeps_notice_until_ack(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "sb-r", 3), AGENT_OK);
    assert_int_equal(fx_create(fx, "sb-run", 0), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 3000);
    reaper_tick(fx->reaper);
    assert_true(fx_wait_status(fx, "sb-r", SANDBOX_PAUSED, 10000));

    fx_restart(fx);
    assert_string_equal(pending(fx->journal), "sb-r");
    assert_int_equal(fx_status(fx, "sb-r"), SANDBOX_PAUSED);
    assert_int_equal(fx_status(fx, "sb-run"), SANDBOX_RUNNING);

    fx_restart(fx); /* no ack yet: still there */
    assert_string_equal(pending(fx->journal), "sb-r");

    const char *ack[] = {"sb-r"};
    assert_int_equal(journal_ack(fx->journal, ack, 1, &e), 0);
    fx_restart(fx);
    assert_string_equal(pending(fx->journal), "");
    assert_int_equal(fx_status(fx, "sb-r"), SANDBOX_PAUSED);
}

static void test_resume_and_destroy_drop_stale_notice(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "sb-x", 1), AGENT_OK);
    assert_int_equal(fx_create(fx, "sb-y", 1), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 1000);
    reaper_tick(fx->reaper);
    assert_true(fx_wait_status(fx, "sb-x", SANDBOX_PAUSED, 10000));
    assert_true(fx_wait_status(fx, "sb-y", SANDBOX_PAUSED, 10000));
    assert_int_equal(lifecycle_resume(fx->lc, "sb-x", 1, NULL, &e), AGENT_OK);
    assert_int_equal(lifecycle_destroy(fx->lc, "sb-y", &e), AGENT_OK);
    assert_string_equal(pending(fx->journal), "");
}

/* A notice whose sandbox did not come back after a restart, or came back
 * running, describes nothing true: the restarted agent drops it. */
static void test_restart_drops_stale_notices(void **state)
{
    agent_fx *fx = *state;
    terr e;
    assert_int_equal(fx_create(fx, "sb-p", 1), AGENT_OK);
    assert_int_equal(fx_create(fx, "sb-run", 0), AGENT_OK);
    agent_clock_advance_ms(&fx->clock, 1000);
    reaper_tick(fx->reaper);
    assert_true(fx_wait_status(fx, "sb-p", SANDBOX_PAUSED, 10000));
    /* left by an earlier run: a sandbox gone from disk, and one that was
     * resumed just before a crash (the notice drop never happened) */
    assert_int_equal(journal_append_paused(fx->journal, "sb-ghost", &e), 0);
    assert_int_equal(journal_append_paused(fx->journal, "sb-run", &e), 0);
    assert_string_equal(pending(fx->journal), "sb-p,sb-ghost,sb-run");
    fx_restart(fx);
    assert_string_equal(pending(fx->journal), "sb-p");
    fx->journal = reopen(fx); /* the drop is durable */
    assert_string_equal(pending(fx->journal), "sb-p");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_entries_survive_reopen_until_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_last_line_is_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_lines_are_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_bounds_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_appends_after_compaction_reach_the_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_append_does_not_garble_the_next, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_fails_cleanly_on_bad_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_restart_keeps_notice_until_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_and_destroy_drop_stale_notice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_drops_stale_notices, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
