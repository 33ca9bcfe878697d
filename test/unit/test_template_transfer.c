/* Unit tests for the template image copy (agent/template_transfer.c): an
 * image built on one host's builder, exported and written chunk by chunk
 * into another's, is ready there only after a commit that verified it
 * (same digest, same bytes); a damaged or mislabelled copy is refused and
 * leaves nothing under the name; an unfinished import is gone after a
 * restart; imports at once are bounded; deleting a copy removes its
 * content. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mono_time.h"
#include "sandbox_transfer.h"
#include "template_builder.h"

typedef struct fx {
    char root[64];
    char state_a[96], images_a[96], state_b[96], images_b[96];
    char script[96];
    template_builder *a, *b;
} fx;

/* The stand-in recipe ($1 = OUT_LINK): a complete image with a sparse
 * 3 MiB root disk that has data in its middle, so chunks and holes both
 * travel. */
static const char *RECIPE =
    "#!/bin/bash\n"
    "set -e\n"
    "out=$1\n"
    "d=$(dirname \"$out\")/.content-$(basename \"$out\")\n"
    "mkdir -p \"$d\"\n"
    "echo kernel > \"$d/vmlinux\"; echo initrd > \"$d/initramfs.cpio.gz\"\n"
    "truncate -s 3M \"$d/rootfs.img\"\n"
    "printf 'root disk content' | dd of=\"$d/rootfs.img\" bs=1 seek=1500000 conv=notrunc 2>/dev/null\n"
    "sha256sum \"$d/rootfs.img\" | cut -d' ' -f1 > \"$d/rootfs.sha256\"\n"
    "ln -sfn \"$d\" \"$out\"\n";

static template_builder *open_tb(const char *state, const char *images, const char *script)
{
    tb_config cfg = {.state_dir = state,
                     .image_dir = images,
                     .recipe_script = script,
                     .guest_binary = "/bin/true"};
    template_builder *tb = NULL;
    terr err = {{0}};
    if (tb_open(&cfg, &tb, &err) != 0) fail_msg("tb_open: %s", err.msg);
    return tb;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/torpor-tt-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->state_a, sizeof f->state_a, "%s/state-a", f->root);
    snprintf(f->images_a, sizeof f->images_a, "%s/images-a", f->root);
    snprintf(f->state_b, sizeof f->state_b, "%s/state-b", f->root);
    snprintf(f->images_b, sizeof f->images_b, "%s/images-b", f->root);
    snprintf(f->script, sizeof f->script, "%s/recipe.sh", f->root);
    assert_int_equal(mkdir(f->state_a, 0755), 0);
    assert_int_equal(mkdir(f->images_a, 0755), 0);
    assert_int_equal(mkdir(f->state_b, 0755), 0);
    assert_int_equal(mkdir(f->images_b, 0755), 0);
    FILE *s = fopen(f->script, "w");
    assert_non_null(s);
    fputs(RECIPE, s);
    fclose(s);
    f->a = open_tb(f->state_a, f->images_a, f->script);
    f->b = open_tb(f->state_b, f->images_b, f->script);
    /* A ready image on host a. */
    tb_info info;
    terr err = {{0}};
    assert_int_equal(tb_build(f->a, "tpl-a", "debian", NULL, 0, NULL, &info, &err), AGENT_OK);
    int64_t end = mono_ms() + 20000;
    do {
        assert_int_equal(tb_get(f->a, "tpl-a", 0, &info, NULL, NULL, &err), AGENT_OK);
        if (info.status != TB_BUILDING) break;
        usleep(50 * 1000);
    } while (mono_ms() < end);
    assert_int_equal(info.status, TB_READY);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    tb_close(f->a);
    tb_close(f->b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->root);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

typedef enum { COPY_WHOLE, COPY_DAMAGED, COPY_WRONG_DIGEST, COPY_NO_COMMIT } copy_mode;

/* Streams name from a to b like the control plane does; returns the
 * commit's code. */
static agent_code copy(template_builder *a, template_builder *b, const char *name, copy_mode mode,
                       long *chunks, long *holes)
{
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n = 0;
    char digest[65];
    terr err = {{0}};
    agent_code c = tb_image_export(a, name, digest, files, TRANSFER_FILES_MAX, &n, &err);
    if (c != AGENT_OK) fail_msg("export: %s", err.msg);
    uint8_t *buf = malloc(TRANSFER_CHUNK_MAX);
    for (size_t i = 0; i < n; i++) {
        for (int64_t off = 0; off < files[i].size;) {
            size_t len = 0;
            bool zero = false;
            assert_int_equal(
                tb_image_read_chunk(a, name, files[i].name, off, 0, buf, &len, &zero, &err),
                AGENT_OK);
            assert_true(len > 0);
            if (mode == COPY_DAMAGED && strcmp(files[i].name, "vmlinux") == 0) buf[0] ^= 1;
            if (zero && holes) (*holes)++;
            if (chunks) (*chunks)++;
            assert_int_equal(tb_image_write_chunk(b, name, files[i].name, off, zero ? NULL : buf,
                                                  zero ? 0 : len, zero ? len : 0, &err),
                             AGENT_OK);
            off += (int64_t)len;
        }
    }
    free(buf);
    if (mode == COPY_NO_COMMIT) return AGENT_OK;
    if (mode == COPY_WRONG_DIGEST) digest[0] = digest[0] == 'a' ? 'b' : 'a';
    tb_info info;
    return tb_image_commit(b, name, digest, files, n, &info, &err);
}

static bool exists(const char *dir, const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return lstat(p, &st) == 0;
}

/* Entries of <state>/template-images (incoming ones included). */
static int images_entries(const char *state)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/template-images", state);
    DIR *d = opendir(p);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_copy_is_ready_with_the_same_digest_and_bytes(void **state)
{
    fx *f = *state;
    long chunks = 0, holes = 0;
    assert_int_equal(copy(f->a, f->b, "tpl-a", COPY_WHOLE, &chunks, &holes), AGENT_OK);
    assert_true(holes >= 1); /* the root disk's empty megabytes did not travel as bytes */
    tb_info ia, ib;
    terr err;
    assert_int_equal(tb_get(f->a, "tpl-a", 0, &ia, NULL, NULL, &err), AGENT_OK);
    assert_int_equal(tb_get(f->b, "tpl-a", 0, &ib, NULL, NULL, &err), AGENT_OK);
    assert_int_equal(ib.status, TB_READY);
    assert_false(ib.builtin);
    assert_string_equal(ib.digest, ia.digest);
    /* The linked image's root disk hashes to the digest, read-only. */
    char p[PATH_MAX], sum[65];
    int64_t size;
    snprintf(p, sizeof p, "%s/tpl-a/rootfs.img", f->images_b);
    assert_int_equal(transfer_file_sha256(p, sum, &size, &err), 0);
    assert_string_equal(sum, ia.digest);
    assert_int_equal(size, 3 * 1024 * 1024);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0444);
    /* QEMU runs as the VM user: the directory and every file of the image
     * must be readable by others, like a built image's. */
    snprintf(p, sizeof p, "%s/tpl-a/", f->images_b);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    snprintf(p, sizeof p, "%s/tpl-a/vmlinux", f->images_b);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0444, 0444);
    assert_int_equal(images_entries(f->state_b), 1); /* <digest>/, no incoming left */
    /* A repeated commit (the control plane retrying) is fine. */
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n;
    char digest[65];
    assert_int_equal(tb_image_export(f->a, "tpl-a", digest, files, TRANSFER_FILES_MAX, &n, &err),
                     AGENT_OK);
    assert_int_equal(tb_image_commit(f->b, "tpl-a", digest, files, n, &ib, &err), AGENT_OK);
    /* The copy can itself be exported (b can serve a third host). */
    assert_int_equal(tb_image_export(f->b, "tpl-a", digest, files, TRANSFER_FILES_MAX, &n, &err),
                     AGENT_OK);
    assert_string_equal(digest, ia.digest);
    /* It survives a restart as ready. */
    tb_close(f->b);
    f->b = open_tb(f->state_b, f->images_b, f->script);
    assert_int_equal(tb_get(f->b, "tpl-a", 0, &ib, NULL, NULL, &err), AGENT_OK);
    assert_int_equal(ib.status, TB_READY);
}

static void test_damaged_copy_is_refused_and_leaves_nothing(void **state)
{
    fx *f = *state;
    assert_int_equal(copy(f->a, f->b, "tpl-a", COPY_DAMAGED, NULL, NULL),
                     AGENT_FAILED_PRECONDITION);
    tb_info info;
    terr err;
    assert_int_equal(tb_get(f->b, "tpl-a", 0, &info, NULL, NULL, &err), AGENT_NOT_FOUND);
    assert_false(exists(f->images_b, "tpl-a"));
    assert_int_equal(tb_image_abort(f->b, "tpl-a", &err), AGENT_OK);
    assert_int_equal(images_entries(f->state_b), 0);
    /* A retry after the failure arrives whole. */
    assert_int_equal(copy(f->a, f->b, "tpl-a", COPY_WHOLE, NULL, NULL), AGENT_OK);
    assert_true(exists(f->images_b, "tpl-a"));
}

static void test_copy_under_another_digest_is_refused(void **state)
{
    fx *f = *state;
    assert_int_equal(copy(f->a, f->b, "tpl-a", COPY_WRONG_DIGEST, NULL, NULL),
                     AGENT_FAILED_PRECONDITION);
    tb_info info;
    terr err;
    assert_int_equal(tb_get(f->b, "tpl-a", 0, &info, NULL, NULL, &err), AGENT_NOT_FOUND);
    assert_false(exists(f->images_b, "tpl-a"));
}

static void test_unfinished_import_is_gone_after_restart(void **state)
{
    fx *f = *state;
    assert_int_equal(copy(f->a, f->b, "tpl-a", COPY_NO_COMMIT, NULL, NULL), AGENT_OK);
    assert_int_equal(images_entries(f->state_b), 1); /* .incoming-tpl-a */
    assert_false(exists(f->images_b, "tpl-a"));
    tb_close(f->b);
    f->b = open_tb(f->state_b, f->images_b, f->script);
    assert_int_equal(images_entries(f->state_b), 0);
    tb_info info;
    terr err;
    assert_int_equal(tb_get(f->b, "tpl-a", 0, &info, NULL, NULL, &err), AGENT_NOT_FOUND);
}

static void test_imports_at_once_are_bounded(void **state)
{
    fx *f = *state;
    terr err;
    uint8_t byte = 1;
    char name[32];
    for (int i = 0; i < TB_IMPORTS_MAX; i++) {
        snprintf(name, sizeof name, "tpl-%d", i);
        assert_int_equal(tb_image_write_chunk(f->b, name, "vmlinux", 0, &byte, 1, 0, &err),
                         AGENT_OK);
    }
    assert_int_equal(tb_image_write_chunk(f->b, "tpl-more", "vmlinux", 0, &byte, 1, 0, &err),
                     AGENT_FAILED_PRECONDITION);
    /* One already under way goes on; an aborted one frees its place. */
    assert_int_equal(tb_image_write_chunk(f->b, "tpl-0", "vmlinux", 1, &byte, 1, 0, &err),
                     AGENT_OK);
    assert_int_equal(tb_image_abort(f->b, "tpl-0", &err), AGENT_OK);
    assert_int_equal(tb_image_write_chunk(f->b, "tpl-more", "vmlinux", 0, &byte, 1, 0, &err),
                     AGENT_OK);
    /* Bad names and a name already an image here never start one. */
    assert_int_equal(tb_image_write_chunk(f->b, "../x", "vmlinux", 0, &byte, 1, 0, &err),
                     AGENT_INVALID_ARGUMENT);
    assert_int_equal(tb_image_write_chunk(f->b, "tpl-1", "../vmlinux", 0, &byte, 1, 0, &err),
                     AGENT_INVALID_ARGUMENT);
    assert_int_equal(tb_image_write_chunk(f->a, "tpl-a", "vmlinux", 0, &byte, 1, 0, &err),
                     AGENT_ALREADY_EXISTS);
}

static void test_delete_of_a_copy_removes_its_content(void **state)
{
    fx *f = *state;
    assert_int_equal(copy(f->a, f->b, "tpl-a", COPY_WHOLE, NULL, NULL), AGENT_OK);
    assert_int_equal(images_entries(f->state_b), 1);
    terr err;
    assert_int_equal(tb_delete(f->b, "tpl-a", &err), AGENT_OK);
    assert_false(exists(f->images_b, "tpl-a"));
    assert_int_equal(images_entries(f->state_b), 0);
    tb_info info;
    assert_int_equal(tb_get(f->b, "tpl-a", 0, &info, NULL, NULL, &err), AGENT_NOT_FOUND);
}

static void test_export_needs_a_ready_image(void **state)
{
    fx *f = *state;
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n;
    char digest[65];
    terr err;
    assert_int_equal(tb_image_export(f->a, "tpl-none", digest, files, TRANSFER_FILES_MAX, &n, &err),
                     AGENT_NOT_FOUND);
    assert_int_equal(tb_image_export(f->b, "tpl-a", digest, files, TRANSFER_FILES_MAX, &n, &err),
                     AGENT_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_copy_is_ready_with_the_same_digest_and_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_damaged_copy_is_refused_and_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_copy_under_another_digest_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unfinished_import_is_gone_after_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_imports_at_once_are_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_of_a_copy_removes_its_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_needs_a_ready_image, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
