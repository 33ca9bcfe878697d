/* Unit tests for common/log: one event is one line whatever the values
 * contain (control characters escaped by log_write), and log_quote makes a
 * value safe between double quotes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static void test_quote(void **state)
{
    char buf[64];
    assert_string_equal(log_quote("plain /tmp/a b", buf, sizeof buf), "plain /tmp/a b");
    assert_string_equal(log_quote("say \"hi\" \\o/", buf, sizeof buf), "say \\\"hi\\\" \\\\o/");
    assert_string_equal(log_quote("a\nb\tc\rd", buf, sizeof buf), "a\\nb\\tc\\rd");
    assert_string_equal(log_quote("\x1b[31m\x7f", buf, sizeof buf), "\\x1b[31m\\x7f");
    assert_string_equal(log_quote("caf\xc3\xa9", buf, sizeof buf),
                        "caf\xc3\xa9"); /* UTF-8 untouched */
    assert_string_equal(log_quote(NULL, buf, sizeof buf), "");
    assert_string_equal(log_quote("", buf, sizeof buf), "");
}

static void test_quote_truncates_whole_escapes(void **state)
{
    char small[8];
    assert_string_equal(log_quote("abcdefghij", small, sizeof small), "abcd...");
    /* "ab" + "\n" needs 4 bytes + "..." = 7: fits exactly. */
    assert_string_equal(log_quote("ab\nxxxxxx", small, sizeof small), "ab\\n...");
    /* Never half an escape before the ellipsis. */
    assert_string_equal(log_quote("abc\x01zzzz", small, sizeof small), "abc...");
    assert_string_equal(log_quote("abcdefg", small, sizeof small),
                        "abcdefg"); /* fits without cut */
    /* Every result is NUL-terminated within the buffer, for any input length. */
    char big[300];
    memset(big, '"', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    for (size_t size = 4; size < 40; size++) {
        char out[40];
        memset(out, 'Z', sizeof out);
        log_quote(big, out, size);
        assert_true(memchr(out, '\0', size) != NULL);
        size_t len = strlen(out);
        assert_true(len < size);
        assert_true(len >= 3 && strcmp(out + len - 3, "...") == 0);
    }
}

/* Runs one log_info with stderr redirected; returns what was written. */
static char *capture(const char *value)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
    log_info("event=test value=\"%s\" end=1", value);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(fds[1]);
    char *out = calloc(1, 16384);
    assert_non_null(out);
    size_t n = 0;
    ssize_t got;
    while ((got = read(fds[0], out + n, 16383 - n)) > 0) n += (size_t)got;
    close(fds[0]);
    return out;
}

static void test_one_event_one_line(void **state)
{
    unsetenv("TORPOR_LOG_LEVEL");
    char *out = capture("/tmp/x\nts=2020-01-01T00:00:00.000Z level=error event=forged");
    /* Exactly one newline, at the end: the forged line stayed inside the value. */
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0');
    assert_non_null(strstr(out, "value=\"/tmp/x\\nts=2020"));
    assert_non_null(strstr(out, " end=1\n"));
    assert_int_equal(strncmp(out, "ts=", 3), 0);
    assert_non_null(strstr(out, " level=info event=test "));
    free(out);

    out = capture("tab\there bell\a del\x7f");
    assert_non_null(strstr(out, "value=\"tab\\there bell\\x07 del\\x7f\" end=1\n"));
    free(out);

    /* A value longer than a line is cut, still one line. */
    char *huge = malloc(20000);
    assert_non_null(huge);
    memset(huge, '\n', 19999);
    huge[19999] = '\0';
    out = capture(huge);
    nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0');
    free(out);
    free(huge);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_quote_truncates_whole_escapes),
        cmocka_unit_test(test_one_event_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
