/* fs_mkdir_p (common/fs_util.h): creates every missing component with the
 * given mode, accepts what exists as a directory, and names the component
 * that is in the way. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_util.h"

static char *tmpdir(void)
{
    char tpl[] = "/tmp/torpor-fs-XXXXXX";
    char *d = mkdtemp(tpl);
    assert_non_null(d);
    return strdup(d);
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static bool is_dir_with_mode(const char *path, mode_t mode)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == mode;
}

static void test_creates_every_missing_component_with_mode(void **state)
{
    char *root = tmpdir();
    char path[256];
    snprintf(path, sizeof path, "%s/a/b/c/", root);
    mode_t old = umask(0);
    terr e = {{0}};
    assert_int_equal(fs_mkdir_p(path, 0710, &e), 0);
    umask(old);
    snprintf(path, sizeof path, "%s/a", root);
    assert_true(is_dir_with_mode(path, 0710));
    snprintf(path, sizeof path, "%s/a/b/c", root);
    assert_true(is_dir_with_mode(path, 0710));
    rm_rf(root);
    free(root);
}

static void test_existing_directory_is_success(void **state)
{
    char *root = tmpdir();
    char path[256];
    snprintf(path, sizeof path, "%s/x/y", root);
    terr e = {{0}};
    assert_int_equal(fs_mkdir_p(path, 0755, &e), 0);
    assert_int_equal(fs_mkdir_p(path, 0755, &e), 0);
    assert_int_equal(fs_mkdir_p(root, 0755, &e), 0);
    rm_rf(root);
    free(root);
}

static void test_file_in_the_way_is_an_error_naming_it(void **state)
{
    char *root = tmpdir();
    char file[256], path[300];
    snprintf(file, sizeof file, "%s/plain", root);
    int fd = open(file, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    close(fd);
    terr e = {{0}};
    /* as a parent and as the last component */
    snprintf(path, sizeof path, "%s/sub", file);
    assert_int_equal(fs_mkdir_p(path, 0755, &e), -1);
    assert_non_null(strstr(e.msg, file));
    memset(&e, 0, sizeof e);
    assert_int_equal(fs_mkdir_p(file, 0755, &e), -1);
    assert_non_null(strstr(e.msg, file));
    assert_non_null(strstr(e.msg, "Not a directory"));
    rm_rf(root);
    free(root);
}

static void test_empty_path_is_an_error(void **state)
{
    terr e = {{0}};
    assert_int_equal(fs_mkdir_p("", 0755, &e), -1);
    assert_true(strlen(e.msg) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_creates_every_missing_component_with_mode),
        cmocka_unit_test(test_existing_directory_is_success),
        cmocka_unit_test(test_file_in_the_way_is_an_error_naming_it),
        cmocka_unit_test(test_empty_path_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
