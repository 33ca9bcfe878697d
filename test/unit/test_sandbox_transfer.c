/* Unit tests for agent/sandbox_transfer: a paused sandbox's directory
 * exported from one agent core and imported into another (two fixtures, two
 * state dirs) chunk by chunk: the copy is byte-identical with its holes kept
 * and the sandbox held paused on the target; a damaged file, a missing base
 * image and a running sandbox are refused; abort removes the import; a base
 * the target holds by digest at another path is used (overlay rebased). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_fixture.h"
#include "sandbox_transfer.h"

typedef struct tx {
    agent_fx *src, *dst;
} tx;

static int setup(void **state)
{
    tx *t = calloc(1, sizeof *t);
    t->src = fx_new();
    t->dst = fx_new();
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tx *t = *state;
    fx_free(t->src);
    fx_free(t->dst);
    free(t);
    return 0;
}

static void write_file(const char *path, const uint8_t *data, size_t len, off_t hole_at,
                       size_t hole_len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    /* data, except a hole of hole_len at hole_at */
    assert_int_equal(pwrite(fd, data, (size_t)hole_at, 0), hole_at);
    size_t rest = len - (size_t)hole_at - hole_len;
    off_t after = hole_at + (off_t)hole_len;
    assert_int_equal(pwrite(fd, data + after, rest, after), (ssize_t)rest);
    close(fd);
}

/* A paused sandbox id on the source with a 3.5 MiB "ram" (a 1 MiB-aligned
 * hole in the middle) and a "meta"; returns the ram bytes (malloc'd). */
static uint8_t *paused_with_files(tx *t, const char *id, const char *meta_text, size_t *len)
{
    assert_int_equal(fx_create(t->src, id, 0), AGENT_OK);
    lifecycle_info info;
    terr e;
    assert_int_equal(lifecycle_pause(t->src->lc, id, &info, &e), AGENT_OK);
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/sandboxes", t->src->dir);
    mkdir(dir, 0700);
    snprintf(dir, sizeof dir, "%s/sandboxes/%s", t->src->dir, id);
    mkdir(dir, 0700);
    *len = 3 * 1024 * 1024 + 512 * 1024;
    uint8_t *ram = malloc(*len);
    for (size_t i = 0; i < *len; i++) ram[i] = (uint8_t)(i * 7 + 1);
    memset(ram + 1024 * 1024, 0, 1024 * 1024);
    snprintf(path, sizeof path, "%s/ram", dir);
    write_file(path, ram, *len, 1024 * 1024, 1024 * 1024);
    snprintf(path, sizeof path, "%s/meta", dir);
    write_file(path, (const uint8_t *)meta_text, strlen(meta_text), (off_t)strlen(meta_text), 0);
    return ram;
}

/* Copies every file of the manifest from src to dst in chunks; returns the
 * number of zero chunks. */
static int copy_all(tx *t, const char *id, transfer_file *files, size_t *n)
{
    terr e;
    if (transfer_export_manifest(t->src->lc, t->src->dir, id, files, n, &e) != AGENT_OK)
        fail_msg("export: %s", e.msg);
    uint8_t *buf = malloc(TRANSFER_CHUNK_MAX);
    int zeros = 0;
    for (size_t i = 0; i < *n; i++) {
        int64_t off = 0;
        while (off < files[i].size) {
            size_t len;
            bool zero;
            assert_int_equal(transfer_read_chunk(t->src->lc, t->src->dir, id, files[i].name, off, 0,
                                                 buf, &len, &zero, &e),
                             AGENT_OK);
            assert_true(len > 0);
            assert_int_equal(transfer_write_chunk(t->dst->lc, t->dst->dir, id, files[i].name, off,
                                                  zero ? NULL : buf, zero ? 0 : len, zero ? len : 0,
                                                  &e),
                             AGENT_OK);
            zeros += zero;
            off += (int64_t)len;
        }
    }
    free(buf);
    return zeros;
}

static runtime_spec spec_of(const char *id)
{
    runtime_spec s = {.vcpus = 1, .memory_mb = 128};
    snprintf(s.sandbox_id, sizeof s.sandbox_id, "%s", id);
    snprintf(s.template_name, sizeof s.template_name, "minimal");
    return s;
}

static void test_moved_files_are_identical_and_the_sandbox_is_held_paused(void **state)
{
    tx *t = *state;
    size_t len;
    uint8_t *ram = paused_with_files(t, "sb-move1", "rootfs=\nbase_digest=\n", &len);
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n;
    int zeros = copy_all(t, "sb-move1", files, &n);
    assert_int_equal(n, 2);
    assert_int_equal(zeros, 1); /* the hole travelled as a hole */
    terr e;
    runtime_spec spec = spec_of("sb-move1");
    if (transfer_commit(t->dst->lc, t->dst->dir, &spec, files, n, &e) != AGENT_OK)
        fail_msg("commit: %s", e.msg);
    assert_int_equal(fx_status(t->dst, "sb-move1"), SANDBOX_PAUSED);
    char path[600];
    snprintf(path, sizeof path, "%s/sandboxes/sb-move1/ram", t->dst->dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *got = malloc(len + 1);
    assert_int_equal(fread(got, 1, len + 1, f), len);
    fclose(f);
    assert_memory_equal(got, ram, len);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true((size_t)st.st_blocks * 512 < len); /* sparse */
    snprintf(path, sizeof path, "%s/sandboxes/.incoming-sb-move1", t->dst->dir);
    assert_int_not_equal(access(path, F_OK), 0);
    /* A repeated commit (its answer was lost) is fine. */
    assert_int_equal(transfer_commit(t->dst->lc, t->dst->dir, &spec, files, n, &e), AGENT_OK);
    free(got);
    free(ram);
}

static void test_a_damaged_file_is_refused_and_abort_removes_the_import(void **state)
{
    tx *t = *state;
    size_t len;
    free(paused_with_files(t, "sb-move2", "rootfs=\nbase_digest=\n", &len));
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n;
    copy_all(t, "sb-move2", files, &n);
    terr e;
    /* one byte changed on the way */
    assert_int_equal(transfer_write_chunk(t->dst->lc, t->dst->dir, "sb-move2", "ram", 10,
                                          (const uint8_t *)"X", 1, 0, &e),
                     AGENT_OK);
    runtime_spec spec = spec_of("sb-move2");
    assert_int_equal(transfer_commit(t->dst->lc, t->dst->dir, &spec, files, n, &e),
                     AGENT_FAILED_PRECONDITION);
    assert_non_null(strstr(e.msg, "arrived damaged"));
    assert_int_equal(fx_status(t->dst, "sb-move2"), -1);
    assert_int_equal(transfer_abort(t->dst->dir, "sb-move2", &e), AGENT_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/sandboxes/.incoming-sb-move2", t->dst->dir);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(fx_status(t->src, "sb-move2"), SANDBOX_PAUSED); /* the source still holds it */
}

static void test_a_missing_base_image_is_refused(void **state)
{
    tx *t = *state;
    size_t len;
    free(paused_with_files(t, "sb-move3",
                           "rootfs=/nonexistent/torpor/rootfs.img\nbase_digest="
                           "0000000000000000000000000000000000000000000000000000000000000000\n",
                           &len));
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n;
    copy_all(t, "sb-move3", files, &n);
    terr e;
    runtime_spec spec = spec_of("sb-move3");
    assert_int_equal(transfer_commit(t->dst->lc, t->dst->dir, &spec, files, n, &e),
                     AGENT_FAILED_PRECONDITION);
    assert_non_null(strstr(e.msg, "lacks the sandbox's base image"));
    assert_int_equal(fx_status(t->dst, "sb-move3"), -1);
}

/* The base is here by digest (a template copy, docs/templates.md "Copies")
 * but at another path than on the source: the overlay is rebased onto it
 * and the meta names it. */
static void test_a_base_held_by_digest_elsewhere_is_used(void **state)
{
    tx *t = *state;
    const char *digest = "ab00000000000000000000000000000000000000000000000000000000000001";
    char meta[512];
    snprintf(meta, sizeof meta,
             "kernel=/nonexistent/torpor/vmlinux\ninitrd=/nonexistent/torpor/initramfs.cpio.gz\n"
             "rootfs=/nonexistent/torpor/rootfs.img\nbase_digest=%s\n",
             digest);
    size_t len;
    free(paused_with_files(t, "sb-move5", meta, &len));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "qemu-img create -q -f qcow2 -u -F raw -b /nonexistent/torpor/rootfs.img "
             "%s/sandboxes/sb-move5/root.qcow2 4M",
             t->src->dir);
    if (system(cmd) != 0) skip(); /* no qemu-img here */
    /* The target holds the image under template-images/<digest>/. */
    snprintf(cmd, sizeof cmd,
             "set -e; d=%s/template-images/%s; mkdir -p $d; truncate -s 4M $d/rootfs.img; "
             "echo %s > $d/rootfs.sha256; echo k > $d/vmlinux; echo i > $d/initramfs.cpio.gz",
             t->dst->dir, digest, digest);
    assert_int_equal(system(cmd), 0);
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n;
    copy_all(t, "sb-move5", files, &n);
    assert_int_equal(n, 3);
    terr e;
    runtime_spec spec = spec_of("sb-move5");
    if (transfer_commit(t->dst->lc, t->dst->dir, &spec, files, n, &e) != AGENT_OK)
        fail_msg("commit: %s", e.msg);
    assert_int_equal(fx_status(t->dst, "sb-move5"), SANDBOX_PAUSED);
    char want[512], path[600], out[1024] = "";
    snprintf(want, sizeof want, "%s/template-images/%s/rootfs.img", t->dst->dir, digest);
    char *real = realpath(want, NULL);
    assert_non_null(real);
    snprintf(cmd, sizeof cmd, "qemu-img info -U %s/sandboxes/sb-move5/root.qcow2", t->dst->dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    pclose(p);
    assert_non_null(strstr(out, real));
    snprintf(path, sizeof path, "%s/sandboxes/sb-move5/meta", t->dst->dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    got = fread(out, 1, sizeof out - 1, f);
    out[got] = '\0';
    fclose(f);
    char line[600];
    snprintf(line, sizeof line, "rootfs=%s\n", real);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "/vmlinux\n"));
    assert_null(strstr(out, "kernel=/nonexistent"));
    free(real);
}

/* The same digest elsewhere but another one asked for: refused as before. */
static void test_a_base_with_another_digest_is_refused(void **state)
{
    tx *t = *state;
    const char *digest = "ab00000000000000000000000000000000000000000000000000000000000002";
    char meta[512];
    snprintf(meta, sizeof meta, "rootfs=/nonexistent/torpor/rootfs.img\nbase_digest=%s\n", digest);
    size_t len;
    free(paused_with_files(t, "sb-move6", meta, &len));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "set -e; d=%s/template-images/%s; mkdir -p $d; truncate -s 4M $d/rootfs.img; "
             "echo ab00000000000000000000000000000000000000000000000000000000000003 > "
             "$d/rootfs.sha256",
             t->dst->dir, digest);
    assert_int_equal(system(cmd), 0);
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n;
    copy_all(t, "sb-move6", files, &n);
    terr e;
    runtime_spec spec = spec_of("sb-move6");
    assert_int_equal(transfer_commit(t->dst->lc, t->dst->dir, &spec, files, n, &e),
                     AGENT_FAILED_PRECONDITION);
    assert_non_null(strstr(e.msg, "lacks the sandbox's base image"));
}

static void test_a_running_sandbox_is_not_exported(void **state)
{
    tx *t = *state;
    assert_int_equal(fx_create(t->src, "sb-move4", 0), AGENT_OK);
    transfer_file files[TRANSFER_FILES_MAX];
    size_t n;
    terr e;
    assert_int_equal(transfer_export_manifest(t->src->lc, t->src->dir, "sb-move4", files, &n, &e),
                     AGENT_FAILED_PRECONDITION);
    assert_int_equal(transfer_export_manifest(t->src->lc, t->src->dir, "sb-none", files, &n, &e),
                     AGENT_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_moved_files_are_identical_and_the_sandbox_is_held_paused),
        cmocka_unit_test(test_a_damaged_file_is_refused_and_abort_removes_the_import),
        cmocka_unit_test(test_a_missing_base_image_is_refused),
        cmocka_unit_test(test_a_base_held_by_digest_elsewhere_is_used),
        cmocka_unit_test(test_a_base_with_another_digest_is_refused),
        cmocka_unit_test(test_a_running_sandbox_is_not_exported),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
