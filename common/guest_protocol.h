/* guest_protocol: the wire format between the host (torpor-agent's QEMU
 * driver) and torpor-guest inside the VM, over one virtio-serial port.
 *
 * Contract:
 * - A frame is a 16-byte little-endian header followed by payload_len bytes:
 *     u32 magic 'TPG1' | u8 version (1) | u8 type | u16 flags (0)
 *     | u32 request_id | u32 payload_len (<= GP_MAX_PAYLOAD)
 *   A bad magic, version, type, flags or length is a decode error: callers
 *   must treat the channel as broken (close and reconnect), never guess.
 * - The host sends requests (PING, EXEC, READ_FILE, WRITE_FILE, SYNC). The
 *   guest never sends unsolicited frames: each frame it sends answers one
 *   request and carries that request's id. Answers may come in any order
 *   (an EXEC runs while later PINGs are answered), so the host matches by id
 *   and ignores ids it is not waiting for (an answer the guest was writing
 *   when the VM was paused can finish on the next connection).
 *   A request the guest cannot decode is answered with ERROR (same id).
 * - Payload fields, in the order listed per message below: u32/i32/u64 are
 *   little-endian; a string or blob is u32 length + bytes (strings carry no
 *   NUL and must not contain one). Trailing bytes after the last field are an
 *   error. Decoders are bounds-checked and never read past the payload.
 * - Decoded messages own their memory (strings are NUL-terminated copies):
 *   release them with the matching gp_*_free(). Encoders only read the
 *   struct; encode appends the payload (no header) to a gp_buf.
 * - Depends only on libc, terr.h and mono_time.h: it is compiled both into
 *   torpor_common (host) and into the static torpor-guest binary.
 * - Nothing here locks: writers sharing one fd must serialise
 *   gp_write_frame(v) themselves (the guest holds a mutex; the host one
 *   writer at a time). */
#ifndef TORPOR_GUEST_PROTOCOL_H
#define TORPOR_GUEST_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "terr.h"

#define GP_MAGIC 0x31475054u /* bytes "TPG1" read as a little-endian u32 */
#define GP_VERSION 1
#define GP_HEADER_SIZE 16
#define GP_MAX_PAYLOAD (64u * 1024 * 1024)
/* Per-stream cap on EXEC output: past it the guest drains and drops the rest
 * and sets the stream's truncated flag. Two capped streams fit one frame. */
#define GP_EXEC_OUTPUT_CAP (16u * 1024 * 1024)
/* Largest file READ_FILE returns / WRITE_FILE accepts (fits in one frame). */
#define GP_FILE_MAX (48u * 1024 * 1024)
/* SYNC must carry at least this many bytes of host randomness. */
#define GP_SYNC_MIN_RANDOM 32
/* The name of the virtio-serial port (QEMU: virtserialport,name=torpor). */
#define GP_PORT_NAME "torpor"

typedef enum gp_type {
    GP_PING = 1,         /* empty */
    GP_PONG = 2,         /* u64 uptime_ns (guest CLOCK_BOOTTIME) */
    GP_EXEC = 3,         /* str cmd, u32 n_args, str args[n], u32 n_env,
                            str env[n] ("K=V"), str cwd, i32 timeout_sec,
                            blob stdin */
    GP_EXEC_RESULT = 4,  /* i32 exit_code, u32 flags (GP_EXEC_F_*),
                            blob stdout, blob stderr */
    GP_READ_FILE = 5,    /* str path */
    GP_READ_RESULT = 6,  /* i32 status, str message, blob data */
    GP_WRITE_FILE = 7,   /* str path, u32 mode, blob content */
    GP_WRITE_RESULT = 8, /* i32 status, str message */
    GP_SYNC = 9,         /* u64 unix_time_ns, blob random (>= 32 bytes) */
    GP_SYNC_RESULT = 10, /* i32 status, str message */
    GP_ERROR = 11,       /* str message */
    /* Files of any size, one bounded chunk per request (see below). */
    GP_WRITE_CHUNK = 12,       /* str path, str upload_id, u64 offset,
                                   u32 mode, u32 flags (GP_CHUNK_F_*),
                                   blob data */
    GP_CHUNK_RESULT = 13,      /* i32 status, str message, u64 size */
    GP_READ_CHUNK = 14,        /* str path, u64 offset, u32 max_len,
                                   u64 expect_ino */
    GP_READ_CHUNK_RESULT = 15, /* i32 status, str message, u64 file_size,
                                   u64 ino, blob data */
    GP_LIST_DIR = 16,          /* str path, u32 max_entries */
    GP_LIST_RESULT = 17,       /* i32 status, str message, u32 truncated,
                                   u32 n, n x (str name, u32 type, u32 mode,
                                   u64 size, i64 mtime_sec) */
} gp_type;
#define GP_TYPE_MIN GP_PING
#define GP_TYPE_MAX GP_LIST_RESULT

/* GP_EXEC_RESULT flags */
#define GP_EXEC_F_TIMED_OUT 0x1u
#define GP_EXEC_F_STDOUT_TRUNCATED 0x2u
#define GP_EXEC_F_STDERR_TRUNCATED 0x4u

typedef struct gp_header {
    uint32_t magic;
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint32_t request_id;
    uint32_t payload_len;
} gp_header;

/* Growable byte buffer. A zeroed struct is a valid empty buffer. */
typedef struct gp_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} gp_buf;

void gp_buf_init(gp_buf *b);
void gp_buf_free(gp_buf *b);
void gp_buf_reset(gp_buf *b); /* len = 0, keeps the memory */
int gp_buf_append(gp_buf *b, const void *data, size_t len, terr *err);

/* "PING", "EXEC_RESULT", ...; "UNKNOWN" for anything else. */
const char *gp_type_name(int type);

/* Header <-> 16 bytes. decode validates magic, version, type, flags and
 * payload_len and fails with a message naming what was wrong. */
void gp_header_encode(uint8_t out[GP_HEADER_SIZE], uint8_t type, uint32_t request_id,
                      uint32_t payload_len);
int gp_header_decode(const uint8_t in[GP_HEADER_SIZE], gp_header *h, terr *err);

/* Appends a whole frame (header + payload) to b: for callers that write with
 * their own I/O (non-blocking loops). Fails if len > GP_MAX_PAYLOAD. */
int gp_frame_encode(gp_buf *b, uint8_t type, uint32_t request_id, const void *payload, size_t len,
                    terr *err);

/* Frame I/O on a file descriptor: the one writer of the agent's guest
 * channel and of torpor-guest, and the guest's reader (the agent's channel
 * parses a buffered stream with gp_header_decode instead).
 *
 * gp_write_framev writes header + the payload iov[0..n) (n <= GP_IOV_MAX,
 * total <= GP_MAX_PAYLOAD), retrying EINTR and short writes: sendmsg with
 * MSG_NOSIGNAL on a socket (a closed peer is an EPIPE error, not SIGPIPE),
 * writev on anything else (the guest's virtio-serial port). On a
 * non-blocking fd it waits for POLLOUT and gives up when the peer hung up
 * (POLLHUP: a virtio port whose host is gone would otherwise wait for the
 * next connection). gp_write_frame is the same with one payload buffer.
 *
 * gp_read_frame_within fills *h and sets *payload to a malloc'd copy (NULL
 * when the length is 0; the caller frees). timeout_ms >= 0: once called,
 * the whole frame must arrive within it (call it when data is ready, so no
 * timer runs while the peer is idle); < 0: no limit. Returns 0,
 * GP_FRAME_IO (read error or EOF, at the start or mid-frame; the message
 * contains "eof" / "connection closed") or GP_FRAME_BAD (a header that
 * does not decode, no memory for the payload, or the time ran out: the
 * peer is there but the stream is out of step). gp_read_frame: no time
 * limit, -1 on any failure. */
enum { GP_FRAME_IO = -1, GP_FRAME_BAD = -2 };
int gp_write_framev(int fd, uint8_t type, uint32_t request_id, const struct iovec *payload, int n,
                    terr *err);
int gp_write_frame(int fd, uint8_t type, uint32_t request_id, const void *payload, size_t len,
                   terr *err);
int gp_read_frame_within(int fd, gp_header *h, uint8_t **payload, int timeout_ms, terr *err);
int gp_read_frame(int fd, gp_header *h, uint8_t **payload, terr *err);

/* ---- messages ---- */

typedef struct gp_pong {
    uint64_t uptime_ns;
} gp_pong;

typedef struct gp_exec_req {
    const char *cmd;         /* no args: /bin/sh -c cmd; else exec cmd (PATH) */
    const char *const *args; /* argv[1..]; argv[0] is cmd */
    size_t n_args;
    const char *const *env; /* "K=V", added to the guest's base env */
    size_t n_env;
    const char *cwd;           /* NULL or "" = "/" */
    int32_t timeout_sec;       /* <= 0: no timeout */
    const uint8_t *stdin_data; /* may be NULL when stdin_len is 0 */
    size_t stdin_len;
} gp_exec_req;

typedef struct gp_exec_result {
    int32_t exit_code; /* -1 when killed (timeout or signal) */
    bool timed_out;
    bool stdout_truncated;
    bool stderr_truncated;
    const uint8_t *out;
    size_t out_len;
    const uint8_t *err;
    size_t err_len;
} gp_exec_result;

typedef struct gp_read_file_req {
    const char *path;
} gp_read_file_req;

/* status: 0 = ok, else a Linux errno value (ENOENT, EISDIR, EFBIG...) with a
 * human message such as "no such file: /x". */
typedef struct gp_read_result {
    int32_t status;
    const char *message; /* "" on success */
    const uint8_t *data;
    size_t len;
} gp_read_result;

typedef struct gp_write_file_req {
    const char *path; /* absolute; parents are created (0755) */
    uint32_t mode;    /* permission bits, e.g. 0644 */
    const uint8_t *content;
    size_t len;
} gp_write_file_req;

/* Answer to WRITE_FILE and SYNC: status 0 or errno, message on failure. */
typedef struct gp_status_result {
    int32_t status;
    const char *message;
} gp_status_result;

typedef struct gp_sync_req {
    uint64_t unix_time_ns; /* host CLOCK_REALTIME */
    const uint8_t *random; /* >= GP_SYNC_MIN_RANDOM bytes */
    size_t random_len;
} gp_sync_req;

typedef struct gp_error {
    const char *message;
} gp_error;

/* Encoders append the payload to b; they fail (ENOMEM, or a field/payload
 * too large, or a NULL string where one is required) with a message.
 * NULL strings for optional fields (cwd, message) encode as "". */
int gp_encode_pong(gp_buf *b, const gp_pong *m, terr *err);
int gp_encode_exec(gp_buf *b, const gp_exec_req *m, terr *err);
int gp_encode_exec_result(gp_buf *b, const gp_exec_result *m, terr *err);
int gp_encode_read_file(gp_buf *b, const gp_read_file_req *m, terr *err);
int gp_encode_read_result(gp_buf *b, const gp_read_result *m, terr *err);
int gp_encode_write_file(gp_buf *b, const gp_write_file_req *m, terr *err);
int gp_encode_status_result(gp_buf *b, const gp_status_result *m, terr *err);
int gp_encode_sync(gp_buf *b, const gp_sync_req *m, terr *err);
int gp_encode_error(gp_buf *b, const gp_error *m, terr *err);

/* Zero-copy form of the two answers that carry bulk data, for a writer
 * that sends with writev: fills iov[0..n) with exactly the bytes
 * gp_encode_exec_result / gp_encode_read_result would produce, pointing into
 * m's buffers and into *scratch (both must outlive the iov). Returns n
 * (<= GP_IOV_MAX) and sets *total, or -1 if the payload is too large. */
#define GP_IOV_MAX 5
typedef struct gp_iov_scratch {
    uint8_t b[32];
} gp_iov_scratch;
int gp_exec_result_iov(const gp_exec_result *m, gp_iov_scratch *scratch,
                       struct iovec iov[GP_IOV_MAX], size_t *total, terr *err);
int gp_read_result_iov(const gp_read_result *m, gp_iov_scratch *scratch,
                       struct iovec iov[GP_IOV_MAX], size_t *total, terr *err);

/* Decoders parse a whole payload. On success *out owns copies of every
 * string/blob (strings NUL-terminated, blobs non-NULL even when empty);
 * free with the matching gp_*_free (safe on a zeroed or failed struct).
 * On failure *out is left zeroed. gp_decode_empty checks a PING payload. */
int gp_decode_empty(const uint8_t *p, size_t len, terr *err);
int gp_decode_pong(const uint8_t *p, size_t len, gp_pong *out, terr *err);
int gp_decode_exec(const uint8_t *p, size_t len, gp_exec_req *out, terr *err);
int gp_decode_exec_result(const uint8_t *p, size_t len, gp_exec_result *out, terr *err);
int gp_decode_read_file(const uint8_t *p, size_t len, gp_read_file_req *out, terr *err);
int gp_decode_read_result(const uint8_t *p, size_t len, gp_read_result *out, terr *err);
int gp_decode_write_file(const uint8_t *p, size_t len, gp_write_file_req *out, terr *err);
int gp_decode_status_result(const uint8_t *p, size_t len, gp_status_result *out, terr *err);
int gp_decode_sync(const uint8_t *p, size_t len, gp_sync_req *out, terr *err);
int gp_decode_error(const uint8_t *p, size_t len, gp_error *out, terr *err);

/* ---- chunked files (any size; the limit is the guest's free disk) ----
 *
 * WRITE_CHUNK writes data at offset of an upload's temp file
 * "<dir of path>/.torpor-up.<upload_id>" (upload_id: 1..64 of
 * [A-Za-z0-9]): offset 0 creates it (and the parents of path, 0755; path
 * being a directory is EISDIR at once), a later offset must be at most the
 * temp file's size (it is cut there first, so a repeated chunk is
 * harmless). COMMIT (may come with the last data) sets mode, fsyncs and
 * renames the temp file over path: a reader sees the old or the new file.
 * ABORT removes the temp file. Any failure (ENOSPC...) removes the temp
 * file too, leaving the old file as it was. CHUNK_RESULT's size is the temp
 * file's (after COMMIT: the file's) size. The guest keeps no state between
 * chunks: the temp file is the session.
 *
 * READ_CHUNK answers up to max_len (<= GP_CHUNK_MAX) bytes at offset of a
 * regular file, with its current size and inode; a non-zero expect_ino
 * that differs from the file's is ESTALE (the file was replaced between
 * two chunks). 0 bytes at offset >= size is the end.
 *
 * LIST_DIR answers up to max_entries entries of a directory (without "."
 * and ".."), sorted by name, lstat'ed; truncated = 1 when there were more. */
#define GP_CHUNK_MAX (4u * 1024 * 1024)
#define GP_CHUNK_F_COMMIT 0x1u
#define GP_CHUNK_F_ABORT 0x2u
#define GP_UPLOAD_ID_MAX 64
#define GP_LIST_MAX_ENTRIES 100000

typedef enum gp_entry_type {
    GP_ENTRY_FILE = 0,
    GP_ENTRY_DIR = 1,
    GP_ENTRY_SYMLINK = 2,
    GP_ENTRY_OTHER = 3,
} gp_entry_type;

typedef struct gp_write_chunk_req {
    const char *path;
    const char *upload_id;
    uint64_t offset;
    uint32_t mode;
    uint32_t flags;
    const uint8_t *data;
    size_t len;
} gp_write_chunk_req;

typedef struct gp_chunk_result {
    int32_t status;
    const char *message;
    uint64_t size;
} gp_chunk_result;

typedef struct gp_read_chunk_req {
    const char *path;
    uint64_t offset;
    uint32_t max_len;
    uint64_t expect_ino;
} gp_read_chunk_req;

typedef struct gp_read_chunk_result {
    int32_t status;
    const char *message;
    uint64_t file_size;
    uint64_t ino;
    const uint8_t *data;
    size_t len;
} gp_read_chunk_result;

typedef struct gp_list_dir_req {
    const char *path;
    uint32_t max_entries;
} gp_list_dir_req;

typedef struct gp_dir_entry {
    const char *name;
    uint32_t type; /* gp_entry_type */
    uint32_t mode; /* permission bits */
    uint64_t size;
    int64_t mtime_sec;
} gp_dir_entry;

typedef struct gp_list_result {
    int32_t status;
    const char *message;
    bool truncated;
    gp_dir_entry *entries;
    size_t n;
} gp_list_result;

bool gp_upload_id_valid(const char *id);
int gp_encode_write_chunk(gp_buf *b, const gp_write_chunk_req *m, terr *err);
int gp_decode_write_chunk(const uint8_t *p, size_t len, gp_write_chunk_req *out, terr *err);
void gp_write_chunk_req_free(gp_write_chunk_req *m);
int gp_encode_chunk_result(gp_buf *b, const gp_chunk_result *m, terr *err);
int gp_decode_chunk_result(const uint8_t *p, size_t len, gp_chunk_result *out, terr *err);
void gp_chunk_result_free(gp_chunk_result *m);
int gp_encode_read_chunk(gp_buf *b, const gp_read_chunk_req *m, terr *err);
int gp_decode_read_chunk(const uint8_t *p, size_t len, gp_read_chunk_req *out, terr *err);
void gp_read_chunk_req_free(gp_read_chunk_req *m);
int gp_encode_read_chunk_result(gp_buf *b, const gp_read_chunk_result *m, terr *err);
int gp_decode_read_chunk_result(const uint8_t *p, size_t len, gp_read_chunk_result *out, terr *err);
void gp_read_chunk_result_free(gp_read_chunk_result *m);
int gp_encode_list_dir(gp_buf *b, const gp_list_dir_req *m, terr *err);
int gp_decode_list_dir(const uint8_t *p, size_t len, gp_list_dir_req *out, terr *err);
void gp_list_dir_req_free(gp_list_dir_req *m);
int gp_encode_list_result(gp_buf *b, const gp_list_result *m, terr *err);
int gp_decode_list_result(const uint8_t *p, size_t len, gp_list_result *out, terr *err);
void gp_list_result_free(gp_list_result *m);

void gp_exec_req_free(gp_exec_req *m);
void gp_exec_result_free(gp_exec_result *m);
void gp_read_file_req_free(gp_read_file_req *m);
void gp_read_result_free(gp_read_result *m);
void gp_write_file_req_free(gp_write_file_req *m);
void gp_status_result_free(gp_status_result *m);
void gp_sync_req_free(gp_sync_req *m);
void gp_error_free(gp_error *m);

#endif
