/* Unit tests for agent/template_builder with stand-in recipe scripts (no
 * mmdebstrap): a build ends ready with the image's digest and size, or in
 * error with the script's "E:" line and no image link; a name is taken once;
 * a build over its time limit is killed; a build interrupted by a stop or a
 * crash of the agent is an error after the next open, with no image left
 * under the name; delete removes the name and the state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mono_time.h"
#include "template_builder.h"

typedef struct fx {
    char root[64];
    char state[80];
    char images[80];
    char script[96];
} fx;

/* The stand-in recipe: $1 = OUT_LINK; behaviour from TORPOR_EXTRA_PACKAGES
 * (the packages the builder passes): "ok" makes a complete image at a
 * content dir and links it, "bad" prints apt's message and fails, "slow"
 * sleeps long, "half" makes the content but dies before linking. */
static const char *RECIPE =
    "#!/bin/bash\n"
    "set -e\n"
    "out=$1\n"
    "echo \"recipe: packages=$TORPOR_EXTRA_PACKAGES\"\n"
    "case \"$TORPOR_EXTRA_PACKAGES\" in\n"
    "  *bad*) echo 'E: Unable to locate package bad' >&2; echo 'build-rootfs: mmdebstrap failed' >&2; exit 1;;\n"
    "  *slow*) sleep 30;;\n"
    "esac\n"
    "d=$(dirname \"$out\")/.content-$(basename \"$out\")\n"
    "mkdir -p \"$d\"\n"
    "echo kernel > \"$d/vmlinux\"; echo initrd > \"$d/initramfs.cpio.gz\"\n"
    "head -c 4096 /dev/zero > \"$d/rootfs.img\"\n"
    "sha256sum \"$d/rootfs.img\" | cut -d' ' -f1 > \"$d/rootfs.sha256\"\n"
    "ln -sfn \"$d\" \"$out\"\n"
    "echo 'build-rootfs: built'\n";

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/torpor-tb-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->state, sizeof f->state, "%s/state", f->root);
    snprintf(f->images, sizeof f->images, "%s/images", f->root);
    snprintf(f->script, sizeof f->script, "%s/recipe.sh", f->root);
    assert_int_equal(mkdir(f->state, 0755), 0);
    assert_int_equal(mkdir(f->images, 0755), 0);
    FILE *s = fopen(f->script, "w");
    assert_non_null(s);
    fputs(RECIPE, s);
    fclose(s);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->root);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

static template_builder *open_tb(fx *f, int time_limit)
{
    tb_config cfg = {.state_dir = f->state,
                     .image_dir = f->images,
                     .recipe_script = f->script,
                     .guest_binary = "/bin/true",
                     .time_limit_sec = time_limit};
    template_builder *tb = NULL;
    terr err = {{0}};
    if (tb_open(&cfg, &tb, &err) != 0) fail_msg("tb_open: %s", err.msg);
    return tb;
}

static tb_info wait_done(template_builder *tb, const char *name, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    tb_info info;
    terr err;
    for (;;) {
        assert_int_equal(tb_get(tb, name, 0, &info, NULL, NULL, &err), AGENT_OK);
        if (info.status != TB_BUILDING) return info;
        if (mono_ms() > end) fail_msg("%s still building after %d ms", name, timeout_ms);
        usleep(50 * 1000);
    }
}

static agent_code build(template_builder *tb, const char *name, const char *pkg, terr *err)
{
    const char *pk[] = {pkg};
    tb_info info;
    return tb_build(tb, name, "debian", pk, pkg ? 1 : 0, NULL, &info, err);
}

static bool linked(fx *f, const char *name)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", f->images, name);
    return lstat(p, &st) == 0;
}

static void test_build_ends_ready_with_digest_and_size(void **state)
{
    fx *f = *state;
    template_builder *tb = open_tb(f, 0);
    terr err = {{0}};
    assert_int_equal(build(tb, "tpl-a", "ok", &err), AGENT_OK);
    tb_info info = wait_done(tb, "tpl-a", 10000);
    assert_int_equal(info.status, TB_READY);
    assert_false(info.builtin);
    /* sha256 of 4096 zero bytes */
    assert_string_equal(info.digest,
                        "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7");
    assert_true(info.size_bytes >= 4096);
    assert_true(linked(f, "tpl-a"));
    char *log = NULL;
    size_t len = 0;
    assert_int_equal(tb_get(tb, "tpl-a", 4096, &info, &log, &len, &err), AGENT_OK);
    assert_non_null(log);
    assert_non_null(strstr(log, "recipe: packages=ok"));
    free(log);
    /* The name is taken, by a build or an image. */
    assert_int_equal(build(tb, "tpl-a", "ok", &err), AGENT_ALREADY_EXISTS);
    tb_close(tb);
}

static void test_failed_build_is_error_with_apt_message(void **state)
{
    fx *f = *state;
    template_builder *tb = open_tb(f, 0);
    terr err = {{0}};
    assert_int_equal(build(tb, "tpl-b", "bad", &err), AGENT_OK);
    tb_info info = wait_done(tb, "tpl-b", 10000);
    assert_int_equal(info.status, TB_ERROR);
    assert_string_equal(info.error, "E: Unable to locate package bad");
    assert_false(linked(f, "tpl-b"));
    char *log = NULL;
    size_t len = 0;
    assert_int_equal(tb_get(tb, "tpl-b", 1 << 20, &info, &log, &len, &err), AGENT_OK);
    assert_non_null(strstr(log, "E: Unable to locate package bad"));
    free(log);
    tb_close(tb);
}

static void test_invalid_requests_change_nothing(void **state)
{
    fx *f = *state;
    template_builder *tb = open_tb(f, 0);
    terr err = {{0}};
    tb_info info;
    const char *bad_pkg[] = {"jq;reboot"};
    assert_int_equal(tb_build(tb, "tpl-c", "debian", bad_pkg, 1, NULL, &info, &err),
                     AGENT_INVALID_ARGUMENT);
    assert_int_equal(tb_build(tb, "Bad", "debian", NULL, 0, NULL, &info, &err),
                     AGENT_INVALID_ARGUMENT);
    assert_int_equal(tb_build(tb, "tpl-c", "minimal", NULL, 0, NULL, &info, &err),
                     AGENT_INVALID_ARGUMENT);
    assert_int_equal(tb_get(tb, "tpl-c", 0, &info, NULL, NULL, &err), AGENT_NOT_FOUND);
    tb_info *all;
    size_t n;
    assert_int_equal(tb_list(tb, &all, &n, &err), 0);
    assert_int_equal(n, 0);
    free(all);
    tb_close(tb);
}

static void test_build_over_time_limit_is_killed(void **state)
{
    fx *f = *state;
    template_builder *tb = open_tb(f, 1);
    terr err = {{0}};
    int64_t t0 = mono_ms();
    assert_int_equal(build(tb, "tpl-d", "slow", &err), AGENT_OK);
    tb_info info = wait_done(tb, "tpl-d", 10000);
    assert_true(mono_ms() - t0 < 8000);
    assert_int_equal(info.status, TB_ERROR);
    assert_non_null(strstr(info.error, "timed out"));
    assert_false(linked(f, "tpl-d"));
    tb_close(tb);
}

static void test_stop_mid_build_is_error_after_reopen(void **state)
{
    fx *f = *state;
    template_builder *tb = open_tb(f, 0);
    terr err = {{0}};
    assert_int_equal(build(tb, "tpl-e", "slow", &err), AGENT_OK);
    usleep(300 * 1000);
    int64_t t0 = mono_ms();
    tb_close(tb); /* kills the build */
    assert_true(mono_ms() - t0 < 5000);
    tb = open_tb(f, 0);
    tb_info info;
    assert_int_equal(tb_get(tb, "tpl-e", 0, &info, NULL, NULL, &err), AGENT_OK);
    assert_int_equal(info.status, TB_ERROR);
    assert_false(linked(f, "tpl-e"));
    tb_close(tb);
}

static void test_crash_mid_build_leaves_no_usable_image(void **state)
{
    fx *f = *state;
    /* What a SIGKILLed agent leaves: state "building" and, at worst, a link. */
    char cmd[2048];
    snprintf(
        cmd, sizeof cmd,
        "mkdir -p %s/template-builds/tpl-f && printf 'building\\n0\\n-\\n1\\n' > %s/template-builds/tpl-f/state "
        "&& mkdir -p %s/.half && touch %s/.half/vmlinux %s/.half/initramfs.cpio.gz && ln -s %s/.half %s/tpl-f",
        f->state, f->state, f->images, f->images, f->images, f->images, f->images);
    assert_int_equal(system(cmd), 0);
    assert_true(linked(f, "tpl-f"));
    template_builder *tb = open_tb(f, 0);
    tb_info info;
    terr err = {{0}};
    assert_int_equal(tb_get(tb, "tpl-f", 0, &info, NULL, NULL, &err), AGENT_OK);
    assert_int_equal(info.status, TB_ERROR);
    assert_non_null(strstr(info.error, "interrupted"));
    assert_false(linked(f, "tpl-f"));
    tb_close(tb);
}

/* True while pid runs (a zombie or no process counts as gone). */
static bool running(pid_t pid)
{
    char p[64], st[512];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return false;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = '\0';
    const char *rp = strrchr(st, ')');
    return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

/* True once pid's environment holds the entry marker ("KEY=VALUE"). */
static bool environ_holds(pid_t pid, const char *marker)
{
    char p[64], env[8192];
    snprintf(p, sizeof p, "/proc/%d/environ", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return false;
    size_t n = fread(env, 1, sizeof env, f);
    fclose(f);
    for (size_t i = 0; i < n; i += strnlen(env + i, n - i) + 1)
        if (strnlen(env + i, n - i) == strlen(marker) && !memcmp(env + i, marker, strlen(marker)))
            return true;
    return false;
}

static void test_crash_mid_build_kills_what_the_recipe_left_running(void **state)
{
    fx *f = *state;
    /* What a SIGKILLed agent leaves: the recipe's leader died with it, its
     * child (mmdebstrap) runs on in the build's process group. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t leader = fork();
    if (leader == 0) {
        setpgid(0, 0);
        pid_t g = fork();
        if (g == 0) {
            char *const env[] = {"TORPOR_TEMPLATE_BUILD=tpl-i", NULL};
            execle("/bin/sleep", "sleep", "300", (char *)NULL, env);
            _exit(127);
        }
        if (write(fds[1], &g, sizeof g) != (ssize_t)sizeof g) _exit(1);
        _exit(0);
    }
    pid_t orphan = 0;
    assert_int_equal(read(fds[0], &orphan, sizeof orphan), (ssize_t)sizeof orphan);
    close(fds[0]);
    close(fds[1]);
    waitpid(leader, NULL, 0);
    assert_true(running(orphan));
    /* Until it has exec'd, the child is a copy of this process, without the
     * build's marker: the builder would rightly leave it alone. */
    int64_t until = mono_ms() + 10000;
    while (!environ_holds(orphan, "TORPOR_TEMPLATE_BUILD=tpl-i") && mono_ms() < until)
        usleep(5 * 1000);
    assert_true(environ_holds(orphan, "TORPOR_TEMPLATE_BUILD=tpl-i"));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/template-builds/tpl-i && printf 'building\\n0\\n-\\n1\\n' > "
             "%s/template-builds/tpl-i/state && echo %d > %s/template-builds/tpl-i/pgid",
             f->state, f->state, (int)leader, f->state);
    assert_int_equal(system(cmd), 0);
    template_builder *tb = open_tb(f, 0);
    int64_t end = mono_ms() + 5000;
    while (running(orphan) && mono_ms() < end) usleep(20 * 1000);
    bool alive = running(orphan);
    if (alive) kill(orphan, SIGKILL);
    assert_false(alive);
    tb_info info;
    terr err = {{0}};
    assert_int_equal(tb_get(tb, "tpl-i", 0, &info, NULL, NULL, &err), AGENT_OK);
    assert_int_equal(info.status, TB_ERROR);
    tb_close(tb);
}

static void test_crash_recovery_kills_nothing_else(void **state)
{
    fx *f = *state;
    /* A group of that id whose processes are not the build's (reused id). */
    pid_t other = fork();
    if (other == 0) {
        setpgid(0, 0);
        execl("/bin/sleep", "sleep", "300", (char *)NULL);
        _exit(127);
    }
    setpgid(other, other);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/template-builds/tpl-j && printf 'building\\n0\\n-\\n1\\n' > "
             "%s/template-builds/tpl-j/state && echo %d > %s/template-builds/tpl-j/pgid",
             f->state, f->state, (int)other, f->state);
    assert_int_equal(system(cmd), 0);
    template_builder *tb = open_tb(f, 0);
    usleep(200 * 1000);
    bool alive = running(other);
    kill(other, SIGKILL);
    waitpid(other, NULL, 0);
    assert_true(alive);
    tb_close(tb);
}

static void test_delete_and_builtin_images(void **state)
{
    fx *f = *state;
    /* A complete image the builder did not make: builtin, ready, not deletable. */
    char cmd[2048];
    snprintf(
        cmd, sizeof cmd,
        "mkdir -p %s/minimal && echo k > %s/minimal/vmlinux && echo i > %s/minimal/initramfs.cpio.gz",
        f->images, f->images, f->images);
    assert_int_equal(system(cmd), 0);
    template_builder *tb = open_tb(f, 0);
    terr err = {{0}};
    tb_info info;
    assert_int_equal(tb_get(tb, "minimal", 0, &info, NULL, NULL, &err), AGENT_OK);
    assert_true(info.builtin);
    assert_int_equal(info.status, TB_READY);
    assert_int_equal(tb_delete(tb, "minimal", &err), AGENT_FAILED_PRECONDITION);
    assert_int_equal(build(tb, "minimal", "ok", &err), AGENT_ALREADY_EXISTS);

    assert_int_equal(build(tb, "tpl-g", "ok", &err), AGENT_OK);
    wait_done(tb, "tpl-g", 10000);
    tb_info *all;
    size_t n;
    assert_int_equal(tb_list(tb, &all, &n, &err), 0);
    assert_int_equal(n, 2);
    free(all);
    assert_int_equal(tb_delete(tb, "tpl-g", &err), AGENT_OK);
    assert_false(linked(f, "tpl-g"));
    assert_int_equal(tb_get(tb, "tpl-g", 0, &info, NULL, NULL, &err), AGENT_NOT_FOUND);
    assert_int_equal(tb_delete(tb, "tpl-g", &err), AGENT_NOT_FOUND);
    char p[256];
    snprintf(p, sizeof p, "%s/template-builds/tpl-g", f->state);
    assert_int_equal(access(p, F_OK), -1);
    /* The name is free again. */
    assert_int_equal(build(tb, "tpl-g", "ok", &err), AGENT_OK);
    assert_int_equal(wait_done(tb, "tpl-g", 10000).status, TB_READY);
    tb_close(tb);
}

static void test_delete_refused_while_building(void **state)
{
    fx *f = *state;
    template_builder *tb = open_tb(f, 0);
    terr err = {{0}};
    assert_int_equal(build(tb, "tpl-h", "slow", &err), AGENT_OK);
    assert_int_equal(tb_delete(tb, "tpl-h", &err), AGENT_FAILED_PRECONDITION);
    tb_close(tb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_build_ends_ready_with_digest_and_size, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_build_is_error_with_apt_message, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_invalid_requests_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_over_time_limit_is_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_mid_build_is_error_after_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_mid_build_leaves_no_usable_image, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_crash_mid_build_kills_what_the_recipe_left_running,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_recovery_kills_nothing_else, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_and_builtin_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_refused_while_building, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
