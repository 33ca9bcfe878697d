/* torpor-guest end to end, two ways:
 * 1. the real binary on the host, serving one end of a socketpair (--fd):
 *    PING, EXEC (shell, argv, binary output, stdin, env, cwd, exit codes,
 *    not found, timeout, output cap, background children), concurrency (a
 *    blocked EXEC does not hold up PING or file requests), READ/WRITE_FILE,
 *    malformed requests and a garbage header.
 * 2. the real image in QEMU/TCG over virtio-serial: PING, EXEC, WRITE/READ,
 *    SYNC (clock set), and a reconnect of the host side.
 * Both need the build's guest/torpor-guest and image/minimal; a missing one
 * is a failure, never a skip (they are part of ALL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest_protocol.h"
#include "mono_time.h"

/* <build>/test/test_guest_exec -> <build>/<rel> */
static void build_path(const char *rel, char *out, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(len > 0);
    exe[len] = '\0';
    char *dir = dirname(exe);   /* <build>/test */
    char *build = dirname(dir); /* <build> */
    snprintf(out, n, "%s/%s", build, rel);
}

typedef struct client {
    int fd;
    pid_t pid; /* the guest process (host mode) or QEMU */
    uint32_t next_id;
} client;

static void send_req(client *c, uint8_t type, const gp_buf *p, uint32_t *id)
{
    terr err;
    *id = c->next_id++;
    if (gp_write_frame(c->fd, type, *id, p ? p->data : NULL, p ? p->len : 0, &err) < 0)
        fail_msg("send %s: %s", gp_type_name(type), err.msg);
}

static uint8_t *recv_ans(client *c, uint32_t id, uint8_t type, size_t *len)
{
    gp_header h;
    uint8_t *payload;
    terr err;
    if (gp_read_frame(c->fd, &h, &payload, &err) < 0) fail_msg("read answer: %s", err.msg);
    if (h.type == GP_ERROR && type != GP_ERROR) {
        gp_error e;
        assert_int_equal(gp_decode_error(payload, h.payload_len, &e, &err), 0);
        fail_msg("guest answered ERROR: %s", e.message);
    }
    assert_int_equal(h.request_id, id);
    assert_string_equal(gp_type_name(h.type), gp_type_name(type));
    *len = h.payload_len;
    return payload;
}

static uint8_t *call(client *c, uint8_t type, const gp_buf *p, uint8_t want, size_t *len)
{
    uint32_t id;
    send_req(c, type, p, &id);
    return recv_ans(c, id, want, len);
}

static void ping(client *c)
{
    size_t n;
    uint8_t *p = call(c, GP_PING, NULL, GP_PONG, &n);
    gp_pong pong;
    terr err;
    assert_int_equal(gp_decode_pong(p, n, &pong, &err), 0);
    assert_true(pong.uptime_ns > 0);
    free(p);
}

static void run(client *c, const gp_exec_req *req, gp_exec_result *res)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    assert_int_equal(gp_encode_exec(&b, req, &err), 0);
    size_t n;
    uint8_t *p = call(c, GP_EXEC, &b, GP_EXEC_RESULT, &n);
    if (gp_decode_exec_result(p, n, res, &err) < 0) fail_msg("%s", err.msg);
    free(p);
    gp_buf_free(&b);
}

static void run_sh(client *c, const char *cmd, gp_exec_result *res)
{
    gp_exec_req req = {.cmd = cmd, .timeout_sec = 60};
    run(c, &req, res);
}

static void assert_out(const gp_exec_result *r, const char *want)
{
    size_t n = strlen(want);
    if (r->out_len != n || memcmp(r->out, want, n) != 0)
        fail_msg("stdout \"%.*s\" (stderr \"%.*s\"), want \"%s\"", (int)r->out_len,
                 (const char *)r->out, (int)r->err_len, (const char *)r->err, want);
}

static int write_file(client *c, const char *path, const void *data, size_t len, unsigned mode,
                      gp_status_result *st)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_write_file_req w = {.path = path, .mode = mode, .content = data, .len = len};
    assert_int_equal(gp_encode_write_file(&b, &w, &err), 0);
    size_t n;
    uint8_t *p = call(c, GP_WRITE_FILE, &b, GP_WRITE_RESULT, &n);
    assert_int_equal(gp_decode_status_result(p, n, st, &err), 0);
    free(p);
    gp_buf_free(&b);
    return st->status;
}

static int read_file(client *c, const char *path, gp_read_result *rr)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_read_file_req r = {.path = path};
    assert_int_equal(gp_encode_read_file(&b, &r, &err), 0);
    size_t n;
    uint8_t *p = call(c, GP_READ_FILE, &b, GP_READ_RESULT, &n);
    assert_int_equal(gp_decode_read_result(p, n, rr, &err), 0);
    free(p);
    gp_buf_free(&b);
    return rr->status;
}

/* ---------- host mode: torpor-guest --fd over a socketpair ---------- */

typedef struct host_fixture {
    client c;
    char dir[64];
} host_fixture;

static int host_setup(void **state)
{
    char bin[PATH_MAX];
    build_path("guest/torpor-guest", bin, sizeof bin);
    if (access(bin, X_OK) != 0) fail_msg("torpor-guest not built at %s", bin);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = dup(sv[1]); /* without CLOEXEC */
        char arg[16];
        snprintf(arg, sizeof arg, "%d", fd);
        execl(bin, "torpor-guest", "--fd", arg, (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    host_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->c = (client){.fd = sv[0], .pid = pid, .next_id = 1000};
    snprintf(f->dir, sizeof f->dir, "/tmp/torpor-guest-test.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int host_teardown(void **state)
{
    host_fixture *f = *state;
    close(f->c.fd); /* the guest exits on EOF */
    int st;
    assert_int_equal(waitpid(f->c.pid, &st, 0), f->c.pid);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void test_host_ping(void **state)
{
    host_fixture *f = *state;
    ping(&f->c);
    ping(&f->c);
}

static void test_host_exec_basics(void **state)
{
    host_fixture *f = *state;
    gp_exec_result r;

    run_sh(&f->c, "echo hi", &r);
    assert_int_equal(r.exit_code, 0);
    assert_out(&r, "hi\n");
    assert_false(r.timed_out);
    gp_exec_result_free(&r);

    run_sh(&f->c, "echo out; echo err >&2; exit 3", &r);
    assert_int_equal(r.exit_code, 3);
    assert_out(&r, "out\n");
    assert_int_equal(r.err_len, 4);
    assert_memory_equal(r.err, "err\n", 4);
    gp_exec_result_free(&r);

    /* argv form: no shell, so the metacharacters stay literal. */
    const char *args[] = {"a b", "$HOME;", ""};
    gp_exec_req req = {.cmd = "printf",
                       .args = (const char *const[]){"[%s]", args[0], args[1], args[2]},
                       .n_args = 4,
                       .timeout_sec = 10};
    run(&f->c, &req, &r);
    assert_int_equal(r.exit_code, 0);
    assert_out(&r, "[a b][$HOME;][]");
    gp_exec_result_free(&r);

    /* Binary output, NULs included. */
    run_sh(&f->c, "printf '\\000\\377\\001x\\000'", &r);
    assert_int_equal(r.out_len, 5);
    assert_memory_equal(r.out, "\0\377\001x\0", 5);
    gp_exec_result_free(&r);

    /* Killed by a signal: -1. */
    run_sh(&f->c, "kill -9 $$", &r);
    assert_int_equal(r.exit_code, -1);
    assert_false(r.timed_out);
    gp_exec_result_free(&r);
}

static void test_host_exec_env_cwd_stdin(void **state)
{
    host_fixture *f = *state;
    gp_exec_result r;
    const char *env[] = {"TORPOR_T1=one two", "HOME=/nowhere"};
    gp_exec_req req = {.cmd = "echo \"$TORPOR_T1|$HOME\"; pwd",
                       .env = env,
                       .n_env = 2,
                       .cwd = f->dir,
                       .timeout_sec = 10};
    run(&f->c, &req, &r);
    char want[256];
    snprintf(want, sizeof want, "one two|/nowhere\n%s\n", f->dir);
    assert_int_equal(r.exit_code, 0);
    assert_out(&r, want);
    gp_exec_result_free(&r);

    /* 1 MiB of binary stdin comes back unchanged through cat. */
    size_t n = 1 << 20;
    uint8_t *in = malloc(n);
    assert_non_null(in);
    for (size_t i = 0; i < n; i++) in[i] = (uint8_t)(i * 13 + (i >> 8));
    gp_exec_req cat = {.cmd = "cat", .stdin_data = in, .stdin_len = n, .timeout_sec = 30};
    run(&f->c, &cat, &r);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(r.out_len, n);
    assert_memory_equal(r.out, in, n);
    gp_exec_result_free(&r);

    /* A command that ignores its stdin still finishes normally. */
    gp_exec_req ign = {.cmd = "true", .stdin_data = in, .stdin_len = n, .timeout_sec = 30};
    run(&f->c, &ign, &r);
    assert_int_equal(r.exit_code, 0);
    gp_exec_result_free(&r);
    free(in);

    /* A bad cwd and a missing program are clear errors, not crashes. */
    gp_exec_req badcwd = {.cmd = "true", .cwd = "/no/such/dir", .timeout_sec = 10};
    run(&f->c, &badcwd, &r);
    assert_int_equal(r.exit_code, 126);
    assert_non_null(memmem(r.err, r.err_len, "/no/such/dir", 12));
    gp_exec_result_free(&r);

    gp_exec_req missing = {.cmd = "torpor-no-such-program",
                           .args = (const char *const[]){"x"},
                           .n_args = 1,
                           .timeout_sec = 10};
    run(&f->c, &missing, &r);
    assert_int_equal(r.exit_code, 127);
    assert_non_null(memmem(r.err, r.err_len, "not found", 9));
    gp_exec_result_free(&r);

    /* An env entry without '=' is refused with an ERROR answer. */
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_exec_req badenv = {.cmd = "true", .env = (const char *const[]){"NOEQUALS"}, .n_env = 1};
    assert_int_equal(gp_encode_exec(&b, &badenv, &err), 0);
    size_t len;
    uint8_t *p = call(&f->c, GP_EXEC, &b, GP_ERROR, &len);
    gp_error e;
    assert_int_equal(gp_decode_error(p, len, &e, &err), 0);
    assert_non_null(strstr(e.message, "KEY=VALUE"));
    gp_error_free(&e);
    free(p);
    gp_buf_free(&b);
}

static void test_host_exec_timeout_and_cap(void **state)
{
    host_fixture *f = *state;
    gp_exec_result r;
    /* The child and its own child are killed as a group at the deadline. */
    gp_exec_req req = {.cmd = "echo started; sleep 30 & sleep 30", .timeout_sec = 1};
    run(&f->c, &req, &r);
    assert_true(r.timed_out);
    assert_int_equal(r.exit_code, -1);
    assert_out(&r, "started\n");
    gp_exec_result_free(&r);

    /* Output past the cap is drained and dropped, and flagged. */
    run_sh(&f->c, "head -c 17000000 /dev/zero; echo small >&2", &r);
    assert_int_equal(r.exit_code, 0);
    assert_int_equal(r.out_len, GP_EXEC_OUTPUT_CAP);
    assert_true(r.stdout_truncated);
    assert_false(r.stderr_truncated);
    assert_int_equal(r.err_len, 6);
    gp_exec_result_free(&r);
}

static void test_host_exec_background_child(void **state)
{
    host_fixture *f = *state;
    gp_exec_result r;
    /* The background sleep keeps stdout open; the answer still comes once
     * the shell exits, and the sleep keeps running (it is not killed). */
    run_sh(&f->c, "sleep 30 & echo $!", &r);
    assert_int_equal(r.exit_code, 0);
    assert_true(r.out_len > 1);
    char buf[32] = "";
    memcpy(buf, r.out, r.out_len < sizeof buf - 1 ? r.out_len : sizeof buf - 1);
    pid_t bg = (pid_t)atoi(buf);
    assert_true(bg > 0);
    assert_int_equal(kill(bg, 0), 0);
    assert_int_equal(kill(bg, SIGKILL), 0);
    gp_exec_result_free(&r);
}

/* The number in the file at path, or 0 when it is missing or being rewritten. */
static long read_counter(const char *path)
{
    long v = 0;
    FILE *fp = fopen(path, "r");
    if (fp) {
        if (fscanf(fp, "%ld", &v) != 1) v = 0;
        fclose(fp);
    }
    return v;
}

/* A background child that keeps writing to the exec's stdout after the exec
 * returned is not killed by SIGPIPE: the guest drains the pipe for it. */
static void test_host_exec_background_writer_survives(void **state)
{
    host_fixture *f = *state;
    gp_exec_result r;
    char count[64], cmd[300];
    snprintf(count, sizeof count, "/tmp/torpor-bgw-%d", (int)getpid());
    snprintf(
        cmd, sizeof cmd,
        "sh -c 'i=0; while :; do i=$((i+1)); echo tick; echo $i > %s; sleep 0.02; done' & echo $!",
        count);
    run_sh(&f->c, cmd, &r);
    assert_int_equal(r.exit_code, 0);
    char buf[32] = "";
    memcpy(buf, r.out, r.out_len < sizeof buf - 1 ? r.out_len : sizeof buf - 1);
    pid_t bg = (pid_t)atoi(buf);
    assert_true(bg > 0);
    gp_exec_result_free(&r);
    /* It keeps counting well after the answer (a zombie would pass kill(0),
     * so the counter is the proof): each write to its stdout would have been
     * its death by SIGPIPE. The writer truncates the file before each write,
     * so a read can find it empty: poll until the count is seen to grow. */
    long first = 0, later = 0;
    for (int tries = 0; tries < 500 && later <= first; tries++) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        long v = read_counter(count);
        if (first == 0) first = v;
        else if (v > first) later = v;
    }
    kill(bg, SIGKILL);
    unlink(count);
    assert_true(first > 0);
    assert_true(later > first);
}

static void test_host_concurrency(void **state)
{
    host_fixture *f = *state;
    char flag[128], cmd[400];
    snprintf(flag, sizeof flag, "%s/flag", f->dir);
    /* This EXEC cannot finish before the flag file exists; meanwhile PING
     * and WRITE_FILE (which creates the flag) must be answered. */
    snprintf(cmd, sizeof cmd,
             "i=0; while [ ! -e '%s' ]; do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.05; done; "
             "cat '%s'",
             flag, flag);
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_exec_req req = {.cmd = cmd, .timeout_sec = 60};
    assert_int_equal(gp_encode_exec(&b, &req, &err), 0);
    uint32_t exec_id;
    send_req(&f->c, GP_EXEC, &b, &exec_id);
    gp_buf_free(&b);

    ping(&f->c);
    gp_status_result st;
    assert_int_equal(write_file(&f->c, flag, "go", 2, 0644, &st), 0);
    gp_status_result_free(&st);

    size_t n;
    uint8_t *p = recv_ans(&f->c, exec_id, GP_EXEC_RESULT, &n);
    gp_exec_result r;
    assert_int_equal(gp_decode_exec_result(p, n, &r, &err), 0);
    assert_int_equal(r.exit_code, 0);
    assert_out(&r, "go");
    gp_exec_result_free(&r);
    free(p);
}

static void test_host_files(void **state)
{
    host_fixture *f = *state;
    char path[200];
    snprintf(path, sizeof path, "%s/a/b/c.bin", f->dir);
    uint8_t data[3000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i ^ (i >> 3));
    gp_status_result st;
    assert_int_equal(write_file(&f->c, path, data, sizeof data, 0640, &st), 0);
    gp_status_result_free(&st);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0640);
    assert_int_equal(sb.st_size, sizeof data);

    gp_read_result rr;
    assert_int_equal(read_file(&f->c, path, &rr), 0);
    assert_int_equal(rr.len, sizeof data);
    assert_memory_equal(rr.data, data, sizeof data);
    gp_read_result_free(&rr);

    /* Overwrite: replaced whole, mode updated, no temp files left. */
    assert_int_equal(write_file(&f->c, path, "new", 3, 0600, &st), 0);
    gp_status_result_free(&st);
    assert_int_equal(read_file(&f->c, path, &rr), 0);
    assert_int_equal(rr.len, 3);
    assert_memory_equal(rr.data, "new", 3);
    gp_read_result_free(&rr);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s/a/b' | wc -l) -eq 1", f->dir);
    assert_int_equal(system(cmd), 0);

    /* Empty file. */
    assert_int_equal(write_file(&f->c, path, NULL, 0, 0644, &st), 0);
    gp_status_result_free(&st);
    assert_int_equal(read_file(&f->c, path, &rr), 0);
    assert_int_equal(rr.len, 0);
    gp_read_result_free(&rr);

    /* Errors: status + message naming the path. */
    char missing[200];
    snprintf(missing, sizeof missing, "%s/missing", f->dir);
    assert_int_equal(read_file(&f->c, missing, &rr), ENOENT);
    assert_non_null(strstr(rr.message, "no such file"));
    assert_non_null(strstr(rr.message, missing));
    gp_read_result_free(&rr);

    assert_int_equal(read_file(&f->c, f->dir, &rr), EISDIR);
    gp_read_result_free(&rr);

    char fifo[200];
    snprintf(fifo, sizeof fifo, "%s/fifo", f->dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(read_file(&f->c, fifo, &rr), EINVAL); /* and no hang */
    gp_read_result_free(&rr);

    assert_int_equal(write_file(&f->c, "relative/path", "x", 1, 0644, &st), EINVAL);
    assert_non_null(strstr(st.message, "absolute"));
    gp_status_result_free(&st);

    /* Writing over a directory fails cleanly. */
    assert_int_equal(write_file(&f->c, f->dir, "x", 1, 0644, &st) != 0, 1);
    gp_status_result_free(&st);

    /* A regular file where a parent directory should be. */
    char under_file[240];
    snprintf(under_file, sizeof under_file, "%s/x", path);
    assert_int_equal(write_file(&f->c, under_file, "x", 1, 0644, &st), ENOTDIR);
    gp_status_result_free(&st);
}

static int write_chunk(client *c, const char *path, const char *id, uint64_t off, const void *data,
                       size_t len, uint32_t flags, gp_chunk_result *res)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_write_chunk_req w = {.path = path,
                            .upload_id = id,
                            .offset = off,
                            .mode = 0640,
                            .flags = flags,
                            .data = data,
                            .len = len};
    assert_int_equal(gp_encode_write_chunk(&b, &w, &err), 0);
    size_t n;
    uint8_t *p = call(c, GP_WRITE_CHUNK, &b, GP_CHUNK_RESULT, &n);
    assert_int_equal(gp_decode_chunk_result(p, n, res, &err), 0);
    free(p);
    gp_buf_free(&b);
    return res->status;
}

static int read_chunk(client *c, const char *path, uint64_t off, uint32_t max, uint64_t ino,
                      gp_read_chunk_result *res)
{
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_read_chunk_req r = {.path = path, .offset = off, .max_len = max, .expect_ino = ino};
    assert_int_equal(gp_encode_read_chunk(&b, &r, &err), 0);
    size_t n;
    uint8_t *p = call(c, GP_READ_CHUNK, &b, GP_READ_CHUNK_RESULT, &n);
    assert_int_equal(gp_decode_read_chunk_result(p, n, res, &err), 0);
    free(p);
    gp_buf_free(&b);
    return res->status;
}

static void file_text(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    size_t k = fread(out, 1, n - 1, f);
    out[k] = '\0';
    fclose(f);
}

/* WRITE_CHUNK: the old file stays until the commit renames the temp file
 * over it; a repeated chunk is harmless; a gap, a directory, a missing
 * session are errors that leave no temp file. READ_CHUNK: offsets, EOF,
 * inode check. LIST_DIR: sorted entries, truncation, errors. */
static void test_host_chunked_files(void **state)
{
    host_fixture *f = *state;
    client *c = &f->c;
    char path[128], text[64];
    gp_chunk_result cr;
    snprintf(path, sizeof path, "%s/sub/f.txt", f->dir);
    assert_int_equal(write_chunk(c, path, "u1", 0, "old", 3, GP_CHUNK_F_COMMIT, &cr), 0);
    gp_chunk_result_free(&cr);
    assert_int_equal(write_chunk(c, path, "u2", 0, "new ", 4, 0, &cr), 0);
    gp_chunk_result_free(&cr);
    file_text(path, text, sizeof text);
    assert_string_equal(text, "old"); /* not committed yet */
    assert_int_equal(write_chunk(c, path, "u2", 4, "conte", 5, 0, &cr), 0);
    gp_chunk_result_free(&cr);
    assert_int_equal(write_chunk(c, path, "u2", 4, "conte", 5, 0, &cr), 0); /* repeated */
    gp_chunk_result_free(&cr);
    assert_int_equal(write_chunk(c, path, "u2", 20, "x", 1, 0, &cr),
                     EINVAL); /* gap: session dropped */
    gp_chunk_result_free(&cr);
    assert_int_equal(write_chunk(c, path, "u2", 9, "nt", 2, GP_CHUNK_F_COMMIT, &cr), ESTALE);
    gp_chunk_result_free(&cr);
    file_text(path, text, sizeof text);
    assert_string_equal(text, "old");
    assert_int_equal(write_chunk(c, path, "u3", 0, "new ", 4, 0, &cr), 0);
    gp_chunk_result_free(&cr);
    assert_int_equal(write_chunk(c, path, "u3", 4, "content", 7, GP_CHUNK_F_COMMIT, &cr), 0);
    assert_true(cr.size == 11);
    gp_chunk_result_free(&cr);
    file_text(path, text, sizeof text);
    assert_string_equal(text, "new content");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    /* abort drops the temp file; a directory is EISDIR at once */
    assert_int_equal(write_chunk(c, path, "u4", 0, "zz", 2, 0, &cr), 0);
    gp_chunk_result_free(&cr);
    assert_int_equal(write_chunk(c, path, "u4", 0, NULL, 0, GP_CHUNK_F_ABORT, &cr), 0);
    gp_chunk_result_free(&cr);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/sub", f->dir);
    assert_int_equal(write_chunk(c, dir, "u5", 0, "x", 1, GP_CHUNK_F_COMMIT, &cr), EISDIR);
    gp_chunk_result_free(&cr);

    gp_read_chunk_result rr;
    assert_int_equal(read_chunk(c, path, 4, 3, 0, &rr), 0);
    assert_true(rr.file_size == 11 && rr.len == 3);
    assert_memory_equal(rr.data, "con", 3);
    uint64_t ino = rr.ino;
    gp_read_chunk_result_free(&rr);
    assert_int_equal(read_chunk(c, path, 11, 100, ino, &rr), 0);
    assert_int_equal(rr.len, 0);
    gp_read_chunk_result_free(&rr);
    assert_int_equal(read_chunk(c, dir, 0, 100, 0, &rr), EISDIR);
    gp_read_chunk_result_free(&rr);
    assert_int_equal(read_chunk(c, "/no/such/file", 0, 100, 0, &rr), ENOENT);
    gp_read_chunk_result_free(&rr);
    assert_int_equal(write_chunk(c, path, "u6", 0, "x", 1, GP_CHUNK_F_COMMIT, &cr),
                     0); /* new inode */
    gp_chunk_result_free(&cr);
    assert_int_equal(read_chunk(c, path, 0, 100, ino, &rr), ESTALE);
    gp_read_chunk_result_free(&rr);

    /* A new upload removes stale temp files of cut-short uploads (older
     * than GUEST_UPLOAD_STALE_SEC), not fresh ones. */
    char stale[160], fresh[160];
    snprintf(stale, sizeof stale, "%s/sub/.torpor-up.old1", f->dir);
    snprintf(fresh, sizeof fresh, "%s/sub/.torpor-up.live1", f->dir);
    FILE *sf = fopen(stale, "we");
    FILE *ff = fopen(fresh, "we");
    assert_non_null(sf);
    assert_non_null(ff);
    fclose(sf);
    fclose(ff);
    struct timespec old[2] = {{.tv_sec = time(NULL) - 7200}, {.tv_sec = time(NULL) - 7200}};
    assert_int_equal(utimensat(AT_FDCWD, stale, old, 0), 0);
    assert_int_equal(write_chunk(c, path, "u7", 0, "x", 1, GP_CHUNK_F_COMMIT, &cr), 0);
    gp_chunk_result_free(&cr);
    assert_int_equal(access(stale, F_OK), -1);
    assert_int_equal(access(fresh, F_OK), 0);
    assert_int_equal(unlink(fresh), 0);

    /* LIST_DIR */
    char p2[160];
    snprintf(p2, sizeof p2, "%s/sub/a", f->dir);
    assert_int_equal(mkdir(p2, 0700), 0);
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    gp_list_dir_req l = {.path = dir, .max_entries = 10};
    assert_int_equal(gp_encode_list_dir(&b, &l, &err), 0);
    size_t n;
    uint8_t *p = call(c, GP_LIST_DIR, &b, GP_LIST_RESULT, &n);
    gp_list_result lr;
    assert_int_equal(gp_decode_list_result(p, n, &lr, &err), 0);
    free(p);
    assert_int_equal(lr.status, 0);
    assert_int_equal(lr.n, 2); /* no .torpor-up.* left behind */
    assert_string_equal(lr.entries[0].name, "a");
    assert_int_equal(lr.entries[0].type, GP_ENTRY_DIR);
    assert_int_equal(lr.entries[0].mode, 0700);
    assert_string_equal(lr.entries[1].name, "f.txt");
    assert_true(lr.entries[1].size == 1 && !lr.truncated);
    gp_list_result_free(&lr);
    gp_buf_reset(&b);
    l.max_entries = 1;
    assert_int_equal(gp_encode_list_dir(&b, &l, &err), 0);
    p = call(c, GP_LIST_DIR, &b, GP_LIST_RESULT, &n);
    assert_int_equal(gp_decode_list_result(p, n, &lr, &err), 0);
    free(p);
    assert_true(lr.truncated && lr.n == 1);
    gp_list_result_free(&lr);
    gp_buf_reset(&b);
    l = (gp_list_dir_req){.path = path, .max_entries = 10};
    assert_int_equal(gp_encode_list_dir(&b, &l, &err), 0);
    p = call(c, GP_LIST_DIR, &b, GP_LIST_RESULT, &n);
    assert_int_equal(gp_decode_list_result(p, n, &lr, &err), 0);
    free(p);
    assert_int_equal(lr.status, ENOTDIR);
    gp_list_result_free(&lr);
    gp_buf_free(&b);
}

static void test_host_bad_requests(void **state)
{
    host_fixture *f = *state;
    size_t n;
    terr err;
    gp_error e;

    /* A truncated EXEC payload: ERROR with the same request id. */
    gp_buf b = {0};
    uint8_t junk[3] = {9, 0, 0};
    assert_int_equal(gp_buf_append(&b, junk, sizeof junk, &err), 0);
    uint8_t *p = call(&f->c, GP_EXEC, &b, GP_ERROR, &n);
    assert_int_equal(gp_decode_error(p, n, &e, &err), 0);
    assert_non_null(strstr(e.message, "EXEC"));
    gp_error_free(&e);
    free(p);
    gp_buf_free(&b);

    /* A PING with a payload, and a non-request type. */
    assert_int_equal(gp_buf_append(&b, junk, 1, &err), 0);
    p = call(&f->c, GP_PING, &b, GP_ERROR, &n);
    free(p);
    gp_buf_free(&b);
    p = call(&f->c, GP_PONG, NULL, GP_ERROR, &n);
    assert_int_equal(gp_decode_error(p, n, &e, &err), 0);
    assert_non_null(strstr(e.message, "not a request"));
    gp_error_free(&e);
    free(p);

    /* Still serving. */
    ping(&f->c);

    /* A garbage header: ERROR (id 0), then the guest drops the stream
     * (in --fd mode it exits; in the VM it reopens the port). */
    assert_int_equal(write(f->c.fd, "GARBAGE-GARBAGE!", 16), 16);
    gp_header h;
    assert_int_equal(gp_read_frame(f->c.fd, &h, &p, &err), 0);
    assert_int_equal(h.type, GP_ERROR);
    assert_int_equal(h.request_id, 0);
    assert_int_equal(gp_decode_error(p, h.payload_len, &e, &err), 0);
    assert_non_null(strstr(e.message, "magic"));
    gp_error_free(&e);
    free(p);
    int st;
    assert_int_equal(waitpid(f->c.pid, &st, 0), f->c.pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    f->c.pid = -1;
}

static int host_teardown_after_exit(void **state)
{
    host_fixture *f = *state;
    if (f->c.pid > 0) return host_teardown(state);
    close(f->c.fd);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---------- VM mode: the real image under QEMU/TCG ---------- */

typedef struct vm_fixture {
    client c;
    char dir[64];
    char sock[128];
} vm_fixture;

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    assert_true(n < sizeof a.sun_path);
    memcpy(a.sun_path, path, n + 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Connects once QEMU created the socket (polling deadline: 30 s). */
static int connect_vm(vm_fixture *f)
{
    int64_t deadline = mono_ms() + 30000;
    for (;;) {
        int fd = connect_unix(f->sock);
        if (fd >= 0) return fd;
        int st;
        if (waitpid(f->c.pid, &st, WNOHANG) == f->c.pid) fail_msg("QEMU exited early");
        if (mono_ms() > deadline) fail_msg("QEMU socket %s never appeared", f->sock);
        usleep(20000);
    }
}

static int vm_setup(void **state)
{
    char img[PATH_MAX], kernel[PATH_MAX + 16], initrd[PATH_MAX + 32], cmdline_path[PATH_MAX + 16];
    build_path("image/minimal", img, sizeof img);
    snprintf(kernel, sizeof kernel, "%s/vmlinux", img);
    snprintf(initrd, sizeof initrd, "%s/initramfs.cpio.gz", img);
    snprintf(cmdline_path, sizeof cmdline_path, "%s/cmdline", img);
    if (access(kernel, R_OK) || access(initrd, R_OK) || access(cmdline_path, R_OK))
        fail_msg("guest image missing under %s (target guest-image)", img);
    char cmdline[512] = "";
    FILE *cf = fopen(cmdline_path, "r");
    assert_non_null(cf);
    assert_non_null(fgets(cmdline, sizeof cmdline, cf));
    fclose(cf);
    cmdline[strcspn(cmdline, "\n")] = '\0';

    vm_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/torpor-guest-vm.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof f->sock, "%s/tg.sock", f->dir);
    char chardev[200];
    snprintf(chardev, sizeof chardev, "socket,id=tg,path=%s,server=on,wait=off", f->sock);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        execlp("qemu-system-x86_64", "qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-m", "128",
               "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
               "-kernel", kernel, "-initrd", initrd, "-append", cmdline, "-device",
               "virtio-serial-pci", "-chardev", chardev, "-device",
               "virtserialport,chardev=tg,name=torpor", (char *)NULL);
        _exit(127);
    }
    f->c = (client){.fd = -1, .pid = pid, .next_id = 1};
    f->c.fd = connect_vm(f);
    *state = f;
    return 0;
}

static int vm_teardown(void **state)
{
    vm_fixture *f = *state;
    if (f->c.fd >= 0) close(f->c.fd);
    kill(f->c.pid, SIGKILL);
    int st;
    waitpid(f->c.pid, &st, 0);
    unlink(f->sock);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void test_vm_guest(void **state)
{
    vm_fixture *f = *state;
    /* The first PING is answered once the guest has booted (~3 s on TCG);
     * the read blocks until then, bounded by the socket timeout. */
    struct timeval tv = {.tv_sec = 60};
    assert_int_equal(setsockopt(f->c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    ping(&f->c);

    gp_exec_result r;
    run_sh(&f->c, "echo hi; id -u", &r);
    assert_int_equal(r.exit_code, 0);
    assert_out(&r, "hi\n0\n");
    gp_exec_result_free(&r);

    run_sh(&f->c, "printf '\\000\\377'; exit 4", &r);
    assert_int_equal(r.exit_code, 4);
    assert_int_equal(r.out_len, 2);
    assert_memory_equal(r.out, "\0\377", 2);
    gp_exec_result_free(&r);

    gp_status_result st;
    assert_int_equal(write_file(&f->c, "/root/dir/file.txt", "payload\n", 8, 0600, &st), 0);
    gp_status_result_free(&st);
    gp_read_result rr;
    assert_int_equal(read_file(&f->c, "/root/dir/file.txt", &rr), 0);
    assert_int_equal(rr.len, 8);
    assert_memory_equal(rr.data, "payload\n", 8);
    gp_read_result_free(&rr);
    run_sh(&f->c, "stat -c %a /root/dir/file.txt", &r);
    assert_out(&r, "600\n");
    gp_exec_result_free(&r);

    /* SYNC: the guest clock jumps to what the host sends. */
    uint8_t rnd[64];
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t)(rand() & 0xff);
    const uint64_t t2030 = 1893456000ull; /* 2030-01-01T00:00:00Z */
    gp_sync_req s = {
        .unix_time_ns = t2030 * 1000000000ull, .random = rnd, .random_len = sizeof rnd};
    gp_buf b;
    gp_buf_init(&b);
    terr err;
    assert_int_equal(gp_encode_sync(&b, &s, &err), 0);
    size_t n;
    uint8_t *p = call(&f->c, GP_SYNC, &b, GP_SYNC_RESULT, &n);
    assert_int_equal(gp_decode_status_result(p, n, &st, &err), 0);
    if (st.status != 0) fail_msg("SYNC failed: %s", st.message);
    gp_status_result_free(&st);
    free(p);
    gp_buf_free(&b);
    run_sh(&f->c, "date -u +%Y", &r);
    assert_out(&r, "2030\n");
    gp_exec_result_free(&r);

    /* The host side goes away and comes back: the guest serves the new
     * connection (as after every resume). */
    close(f->c.fd);
    f->c.fd = connect_vm(f);
    assert_int_equal(setsockopt(f->c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    ping(&f->c);
    assert_int_equal(read_file(&f->c, "/root/dir/file.txt", &rr), 0);
    assert_int_equal(rr.len, 8);
    gp_read_result_free(&rr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_host_ping, host_setup, host_teardown),
        cmocka_unit_test_setup_teardown(test_host_exec_basics, host_setup, host_teardown),
        cmocka_unit_test_setup_teardown(test_host_exec_env_cwd_stdin, host_setup, host_teardown),
        cmocka_unit_test_setup_teardown(test_host_exec_timeout_and_cap, host_setup, host_teardown),
        cmocka_unit_test_setup_teardown(test_host_exec_background_child, host_setup, host_teardown),
        cmocka_unit_test_setup_teardown(test_host_exec_background_writer_survives, host_setup,
                                        host_teardown),
        cmocka_unit_test_setup_teardown(test_host_concurrency, host_setup, host_teardown),
        cmocka_unit_test_setup_teardown(test_host_files, host_setup, host_teardown),
        cmocka_unit_test_setup_teardown(test_host_chunked_files, host_setup, host_teardown),
        cmocka_unit_test_setup_teardown(test_host_bad_requests, host_setup,
                                        host_teardown_after_exit),
        cmocka_unit_test_setup_teardown(test_vm_guest, vm_setup, vm_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
