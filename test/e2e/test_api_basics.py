#!/usr/bin/env python3
"""REST API basics over HTTP, through the real gRPC hop, real PostgreSQL and
real QEMU VMs (issue 2's "Done when"): create / get / list / ping / exec /
pause / resume / destroy, every 409, 404 across teams, 401s, bad input (400,
nothing created), 413 and /healthz. Then the reconciler's repairs: VMs whose
row is gone or stopped are destroyed (orphan sweep), and a paused sandbox its
host lost reads stopped (through a resume, or by the reconciler alone)."""

import hashlib
import os
import re
import shutil
import signal
import sys
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import KEY_A, Stack, expect_error, run_tests, b64, wait_until  # noqa: E402

RECONCILE = 5
SLACK = float(os.environ.get("TORPOR_E2E_SLACK", "10"))

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
SANDBOX_KEYS = {"id", "status", "template", "vcpus", "memory_mb", "disk_mb", "timeout_sec", "host_id",
                "created_at", "started_at", "last_active_at", "last_updated"}
MAX_TIMEOUT = 30 * 24 * 3600
FILE_DATA = b"line one\n\x00\xff binary \xc3\xa9\n"

# Shared between the tests of this file, in order.
ctx = {}


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def db_sandbox_count(s):
    return int(s.sql("SELECT count(*) FROM sandboxes")[0][0])


def check_sandbox_shape(sb, what):
    assert isinstance(sb, dict), f"{what}: not an object: {sb!r}"
    missing = SANDBOX_KEYS - sb.keys()
    assert not missing, f"{what}: missing fields {sorted(missing)} in {sb}"
    assert re.fullmatch(r"sb-[0-9a-f]+", sb["id"]), f"{what}: bad id {sb['id']!r}"
    for k in ("vcpus", "memory_mb", "timeout_sec", "disk_mb"):
        assert isinstance(sb[k], int) and not isinstance(sb[k], bool), f"{what}: {k} not an int: {sb[k]!r}"
    assert isinstance(sb["host_id"], str) and sb["host_id"], f"{what}: host_id empty: {sb!r}"
    for k in ("created_at", "last_updated"):
        assert isinstance(sb[k], str) and RFC3339_UTC.match(sb[k]), f"{what}: {k} not RFC 3339 UTC: {sb[k]!r}"
    for k in ("started_at", "last_active_at"):
        assert sb[k] is None or (isinstance(sb[k], str) and RFC3339_UTC.match(sb[k])), \
            f"{what}: {k} not RFC 3339 UTC or null: {sb[k]!r}"


def test_healthz_without_key(s):
    st, _ = s.request("GET", "/healthz", key=None)
    assert st == 200, f"/healthz: {st}"


def test_unauthorized(s):
    before = db_sandbox_count(s)
    expect_error(s.request("GET", "/v1/sandboxes", key=None), 401, "unauthorized", "list without key")
    expect_error(s.request("GET", "/v1/sandboxes", key="tpk_" + "0" * 32), 401, "unauthorized",
                 "list with a wrong key")
    expect_error(s.request("GET", "/v1/sandboxes", key="garbage"), 401, "unauthorized",
                 "list with a malformed key")
    expect_error(s.request("POST", "/v1/sandboxes", {}, key=None), 401, "unauthorized", "create without key")
    expect_error(s.request("POST", "/v1/sandboxes", {}, key="tpk_" + "f" * 32), 401, "unauthorized",
                 "create with a wrong key")
    expect_error(s.request("GET", "/v1/sandboxes/sb-00000000", key=None), 401, "unauthorized",
                 "get without key")
    assert db_sandbox_count(s) == before, "an unauthorized create wrote a row"


BAD_CREATE_BODIES = [
    ("malformed JSON", "{"),
    ("not JSON", "hello"),
    ("trailing garbage", '{"vcpus": 1} x'),
    ("array instead of object", "[]"),
    ("string instead of object", '"x"'),
    ("vcpus as string", {"vcpus": "1"}),
    ("memory_mb as bool", {"memory_mb": True}),
    ("template as number", {"template": 5}),
    ("timeout_sec as string", {"timeout_sec": "3"}),
    ("vcpus 0", {"vcpus": 0}),
    ("vcpus 65", {"vcpus": 65}),
    ("vcpus -1", {"vcpus": -1}),
    ("memory_mb 63", {"memory_mb": 63}),
    ("memory_mb 65537", {"memory_mb": 65537}),
    ("timeout_sec -1", {"timeout_sec": -1}),
    ("timeout_sec > 30 days", {"timeout_sec": MAX_TIMEOUT + 1}),
    ("timeout_sec 1.5", {"timeout_sec": 1.5}),
    ("vcpus 1.5", {"vcpus": 1.5}),
    ("huge number", '{"memory_mb": 1e300}'),
    ("unknown template", {"template": "no-such-template"}),
    # env is encoded before the template image is looked up (the sanitizer run checks it is freed)
    ("unknown template image with env", {"template": "tpl-0123456789abcdef", "env": {"A": "1"}}),
    ("disk_mb 511", {"template": "minimal", "disk_mb": 511}),
    ("disk_mb 65537", {"template": "minimal", "disk_mb": 65537}),
    ("disk_mb as string", {"template": "minimal", "disk_mb": "1024"}),
    ("env as array", {"template": "minimal", "env": ["A=1"]}),
    ("env name with a digit first", {"template": "minimal", "env": {"1A": "x"}}),
    ("env name with '='", {"template": "minimal", "env": {"A=B": "x"}}),
    ("env value not a string", {"template": "minimal", "env": {"A": 1}}),
    ("env with 65 entries", {"template": "minimal", "env": {f"V{i}": "x" for i in range(65)}}),
    ("env over 32 KiB", {"template": "minimal", "env": {"BIG": "x" * (32 * 1024)}}),
]


def test_bad_create_input_is_400_and_creates_nothing(s):
    left_rows = []
    for what, body in BAD_CREATE_BODIES:
        before = db_sandbox_count(s)
        expect_error(s.request("POST", "/v1/sandboxes", body), 400, "invalid_request", f"create with {what}")
        if db_sandbox_count(s) != before:
            left_rows.append(what)
    rows = s.sql("SELECT id, status, template FROM sandboxes")
    assert not left_rows, f"rejected creates left rows in the sandboxes table ({', '.join(left_rows)}): {rows}"
    st, lst = s.request("GET", "/v1/sandboxes")
    assert st == 200 and lst == [], f"list after rejected creates: {st} {lst}"


def test_body_over_1mib_is_413(s):
    before = db_sandbox_count(s)
    big = '{"template": "' + "x" * (1024 * 1024 + 16) + '"}'
    try:
        res = s.request("POST", "/v1/sandboxes", big)
    except (ConnectionResetError, BrokenPipeError) as e:
        raise AssertionError(f"body > 1 MiB: connection dropped instead of a 413 answer ({e})")
    expect_error(res, 413, "too_large", "create with a body > 1 MiB")
    assert db_sandbox_count(s) == before, "a 413 create wrote a row"
    # Just under the limit is not "too large" (it is a bad template instead).
    small = '{"template": "' + "x" * (1024 * 1024 - 64) + '"}'
    expect_error(s.request("POST", "/v1/sandboxes", small), 400, "invalid_request", "create with a 1 MiB - 50 B body")


def test_create_defaults(s):
    # The default template (debian) is tested with the Debian userland
    # (test_files_debian.py); here only the other defaults, on `minimal`.
    sb = s.create({"template": "minimal"})
    check_sandbox_shape(sb, "create {template: minimal}")
    assert sb["status"] == "running", sb
    assert (sb["template"], sb["vcpus"], sb["memory_mb"], sb["timeout_sec"], sb["disk_mb"]) == \
        ("minimal", 1, 512, 0, 4096), f"defaults: {sb}"
    assert sb["started_at"] and sb["last_active_at"], f"started_at/last_active_at unset on a running sandbox: {sb}"
    ctx["a1"] = sb["id"]
    rows = s.sql(f"SELECT status FROM sandboxes WHERE id = '{sb['id']}'")
    assert rows == [["running"]], f"DB row of {sb['id']}: {rows}"


def test_create_explicit_fields(s):
    sb = s.create({"template": "minimal", "vcpus": 1, "memory_mb": 128, "timeout_sec": 0, "disk_mb": 1024,
                   "env": {"GREETING": "from create", "SHARED": "create"}})
    check_sandbox_shape(sb, "create explicit")
    assert (sb["memory_mb"], sb["timeout_sec"], sb["status"], sb["disk_mb"]) == (128, 0, "running", 1024), sb
    assert "env" not in sb, f"the create env (may hold secrets) is echoed: {sb}"
    assert sb["id"] != ctx["a1"]
    ctx["a2"] = sb["id"]


def test_get(s):
    st, sb = s.request("GET", f"/v1/sandboxes/{ctx['a1']}")
    assert st == 200, (st, sb)
    check_sandbox_shape(sb, "get")
    assert sb["id"] == ctx["a1"] and sb["status"] == "running", sb
    expect_error(s.request("GET", "/v1/sandboxes/sb-00000000"), 404, "not_found", "get unknown id")


def test_list_newest_first_and_team_scoped(s):
    st, lst = s.request("GET", "/v1/sandboxes")
    assert st == 200 and isinstance(lst, list), (st, lst)
    ids = [x["id"] for x in lst]
    assert ids == [ctx["a2"], ctx["a1"]], f"list (newest first) expected {[ctx['a2'], ctx['a1']]}, got {ids}"
    for x in lst:
        check_sandbox_shape(x, "list item")
    st, lst_b = s.request("GET", "/v1/sandboxes", key=s.key_b)
    assert st == 200 and lst_b == [], f"team B sees team A's sandboxes: {st} {lst_b}"


def test_ping(s):
    st, before = s.request("GET", f"/v1/sandboxes/{ctx['a1']}")
    st, body = s.request("POST", f"/v1/sandboxes/{ctx['a1']}/ping")
    assert st == 204 and not body, f"ping: {st} {body!r}"
    st, after = s.request("GET", f"/v1/sandboxes/{ctx['a1']}")
    assert ts(after["last_active_at"]) >= ts(before["last_active_at"]), (before, after)
    expect_error(s.request("POST", "/v1/sandboxes/sb-00000000/ping"), 404, "not_found", "ping unknown id")


def test_exec(s):
    sid = ctx["a1"]
    r = s.exec(sid, "echo hello")
    assert r["stdout"] == "hello\n" and r["exit_code"] == 0, r
    assert r["sandbox_id"] == sid and r["cmd"] == "echo hello", r
    assert r["stderr"] == "", r
    assert isinstance(r["duration_ms"], int) and r["duration_ms"] >= 0, r
    assert r.get("encoding", "utf-8") == "utf-8", r
    r = s.exec(sid, "echo oops >&2; exit 3")
    assert (r["stdout"], r["stderr"], r["exit_code"]) == ("", "oops\n", 3), r
    r = s.exec(sid, "/bin/echo", args=["a  b", "c"])
    assert r["stdout"] == "a  b c\n", f"exec with args: {r}"
    for what, body in [("no cmd", {}), ("cmd not a string", {"cmd": 5}), ("empty cmd", {"cmd": ""}),
                       ("args not a list", {"cmd": "echo", "args": "x"}),
                       ("args with a number", {"cmd": "echo", "args": [1]}),
                       ("timeout_sec negative", {"cmd": "echo", "timeout_sec": -1}),
                       ("malformed JSON", "{")]:
        expect_error(s.request("POST", f"/v1/sandboxes/{sid}/exec", body), 400, "invalid_request",
                     f"exec with {what}")


def test_exec_stdin_text_and_base64(s):
    sid = ctx["a1"]
    r = s.exec(sid, "cat; echo; wc -c", stdin="héllo\nwörld")
    assert r["stdout"].startswith("héllo\nwörld\n"), r
    r = s.exec(sid, "wc -c", stdin_base64=b64(b"\0\1\2\xff" * 1000))
    assert r["stdout"].strip() == "4000", r
    r = s.exec(sid, "cat", stdin="")
    assert r["stdout"] == "" and r["exit_code"] == 0, r
    for what, body in [("stdin and stdin_base64", {"cmd": "cat", "stdin": "a", "stdin_base64": b64(b"a")}),
                       ("stdin not a string", {"cmd": "cat", "stdin": 5}),
                       ("stdin_base64 not base64", {"cmd": "cat", "stdin_base64": "@@"})]:
        expect_error(s.request("POST", f"/v1/sandboxes/{sid}/exec", body), 400, "invalid_request",
                     f"exec with {what}")


def test_env_on_create_applies_to_every_exec(s):
    sid = ctx["a2"]
    r = s.exec(sid, 'echo "$GREETING|$SHARED"')
    assert r["stdout"] == "from create|create\n", r
    r = s.exec(sid, 'echo "$GREETING|$SHARED"', env={"SHARED": "exec"})
    assert r["stdout"] == "from create|exec\n", f"the exec's own env must win: {r}"
    r = s.exec(ctx["a1"], 'echo "[$GREETING]"')
    assert r["stdout"] == "[]\n", f"env of another sandbox leaked: {r}"


def test_exec_body_over_1mib_is_413(s):
    sid = ctx["a1"]
    body = '{"cmd": "echo ' + "y" * (1024 * 1024 + 16) + '"}'
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/exec", body), 413, "too_large", "exec with a body > 1 MiB")
    assert s.status_of(sid) == "running"


def test_files_roundtrip(s):
    sid = ctx["a1"]
    data = FILE_DATA
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/files/write",
                         {"path": "/tmp/api-basics.bin", "content_base64": b64(data)})
    assert st == 204, f"files/write: {st} {body!r}"
    st, got = s.request("POST", f"/v1/sandboxes/{sid}/files/read", {"path": "/tmp/api-basics.bin"})
    assert st == 200 and got == data, f"files/read: {st} {got!r}"
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/files/write", {"path": "/tmp/x", "content_base64": "@@"}),
                 400, "invalid_request", "files/write with bad base64")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/files/write", {"content_base64": ""}),
                 400, "invalid_request", "files/write without path")


def multipart(fields, boundary="torpor-e2e-boundary"):
    out = b""
    for name, value in fields:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").encode()
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_files_content_limit_and_paths(s):
    sid = ctx["a1"]
    # A multipart upload is streamed to the guest: over the 64 MiB body limit of JSON is fine.
    big = bytes(range(256)) * (65 * 4096 + 3)
    body, hdrs = multipart([("path", b"/tmp/multi-big.bin"), ("file", big)])
    st, res = s.request("POST", f"/v1/sandboxes/{sid}/files/write", body, headers=hdrs)
    assert st == 204, f"65 MiB multipart files/write: {st} {res!r}"
    del body
    r = s.exec(sid, "md5sum < /tmp/multi-big.bin; rm /tmp/multi-big.bin")
    assert r["stdout"].split()[0] == hashlib.md5(big).hexdigest(), r
    del big
    for what, raw in [("no closing delimiter", b"--torpor-e2e-boundary\r\nContent-Disposition: form-data; name=\"path\""
                                                b"\r\n\r\n/tmp/x\r\n"),
                      ("no file field", multipart([("path", b"/tmp/x")])[0])]:
        expect_error(s.request("POST", f"/v1/sandboxes/{sid}/files/write", raw, headers=hdrs), 400,
                     "invalid_request", f"multipart files/write with {what}")
    body, hdrs = multipart([("path", b"/tmp/multi.bin"), ("file", FILE_DATA)])
    st, res = s.request("POST", f"/v1/sandboxes/{sid}/files/write", body, headers=hdrs)
    assert st == 204, f"multipart files/write: {st} {res!r}"
    st, got = s.request("POST", f"/v1/sandboxes/{sid}/files/read", {"path": "/tmp/multi.bin"})
    assert st == 200 and got == FILE_DATA, f"files/read after multipart write: {st} {got!r}"
    # Control characters in paths are refused (they would reach the guest and the logs).
    forged = "/tmp/x\nts=2026-01-01T00:00:00.000Z level=error event=forged"
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/files/read", {"path": forged}), 400, "invalid_request",
                 "files/read with a newline in the path")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/files/write", {"path": "/tmp/\x1b[31m", "content_base64": ""}),
                 400, "invalid_request", "files/write with an escape in the path")
    body, hdrs = multipart([("path", b"/tmp/a\tb"), ("file", b"x")])
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/files/write", body, headers=hdrs), 400, "invalid_request",
                 "multipart files/write with a tab in the path")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "pwd", "cwd": "/tmp\n"}), 400,
                 "invalid_request", "exec with a newline in cwd")
    # A command with newlines is fine, and no log line of either process was forged.
    r = s.exec(sid, "echo one\necho two")
    assert r["stdout"] == "one\ntwo\n", r
    for comp in (s.cp, s.agent):
        forged_lines = [line for line in comp.log_text().splitlines() if line.startswith("ts=2026-01-01T00:00:00")]
        assert not forged_lines, f"{comp.name} log has a forged line: {forged_lines[:3]}"


def test_files_content_put_get_and_list(s):
    sid = ctx["a1"]
    base = f"/v1/sandboxes/{sid}/files"
    st, res = s.request("PUT", f"{base}/content?path=/tmp/put/small.bin&mode=600", FILE_DATA)
    assert st == 200 and res == {"path": "/tmp/put/small.bin", "size": len(FILE_DATA)}, (st, res)
    st, got = s.request("GET", f"{base}/content?path=/tmp/put/small.bin")
    assert st == 200 and got == FILE_DATA, (st, got)
    big = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, not a multiple of the chunk size
    st, res = s.request("PUT", f"{base}/content?path=%2Ftmp%2Fput%2Fbig%20file.bin", big)
    assert st == 200 and res["size"] == len(big), (st, res)
    st, got = s.request("GET", f"{base}/content?path=/tmp/put/big%20file.bin")
    assert st == 200 and got == big, (st, len(got) if isinstance(got, bytes) else got)
    # A chunked request body (no Content-Length).
    st, res = s.request("PUT", f"{base}/content?path=/tmp/put/chunked.bin",
                        iter([b"a" * 70000, b"b" * 1024 * 1024, b"c"]))
    assert st == 200 and res["size"] == 70000 + 1024 * 1024 + 1, (st, res)
    r = s.exec(sid, "md5sum < /tmp/put/chunked.bin")
    expect = hashlib.md5(b"a" * 70000 + b"b" * 1024 * 1024 + b"c").hexdigest()
    assert r["stdout"].split()[0] == expect, r
    st, res = s.request("PUT", f"{base}/content?path=/tmp/put/empty", b"")
    assert st == 200 and res["size"] == 0, (st, res)
    st, got = s.request("GET", f"{base}/content?path=/tmp/put/empty")
    assert st == 200 and not got, (st, got)
    st, lst = s.request("GET", f"{base}?path=/tmp/put")
    assert st == 200 and lst["path"] == "/tmp/put" and lst["truncated"] is False, (st, lst)
    got = [(e["name"], e["type"], e["size"]) for e in lst["entries"]]
    assert got == [("big file.bin", "file", len(big)), ("chunked.bin", "file", 70000 + 1024 * 1024 + 1),
                   ("empty", "file", 0), ("small.bin", "file", len(FILE_DATA))], lst
    assert lst["entries"][3]["mode"] == 0o600, lst
    st, lst = s.request("GET", f"{base}?path=/tmp/put&limit=2")
    assert st == 200 and len(lst["entries"]) == 2 and lst["truncated"] is True, (st, lst)
    r = s.exec(sid, "ls -a /tmp/put | grep -c torpor-up || true")
    assert r["stdout"].strip() == "0", f"upload temp files left behind: {r}"


def test_files_content_errors(s):
    sid = ctx["a1"]
    base = f"/v1/sandboxes/{sid}/files"
    s.exec(sid, "mkdir -p /tmp/adir && echo keep > /tmp/afile")
    cases = [
        ("GET", f"{base}/content?path=/tmp/no-such-file", None, 404, "not_found"),
        ("GET", f"{base}/content?path=/tmp/adir", None, 400, "invalid_request"),
        ("PUT", f"{base}/content?path=/tmp/adir", b"x", 400, "invalid_request"),
        ("PUT", f"{base}/content?path=/tmp/afile/below", b"x", 400, "invalid_request"),
        ("GET", f"{base}/content", None, 400, "invalid_request"),
        ("GET", f"{base}/content?path=tmp/relative", None, 400, "invalid_request"),
        ("GET", f"{base}/content?path=/tmp/a%0Ab", None, 400, "invalid_request"),
        ("GET", f"{base}/content?path=/tmp/afile%00x", None, 400, "invalid_request"),
        ("GET", f"{base}/content?path=/tmp/a%zz", None, 400, "invalid_request"),
        ("PUT", f"{base}/content?path=/tmp/x&mode=999", b"x", 400, "invalid_request"),
        ("GET", f"{base}?path=/tmp/no-such-dir", None, 404, "not_found"),
        ("GET", f"{base}?path=/tmp/afile", None, 400, "invalid_request"),
        ("GET", f"{base}?path=/tmp&limit=0", None, 400, "invalid_request"),
        ("GET", f"{base}/content?path=/tmp/afile", None, 404, "not_found"),  # another team
    ]
    for i, (method, path, body, status, code) in enumerate(cases):
        key = s.key_b if i == len(cases) - 1 else KEY_A
        expect_error(s.request(method, path, body, key=key), status, code, f"{method} {path}")
    r = s.exec(sid, "cat /tmp/afile; ls /tmp/adir | wc -l")
    assert r["stdout"] == "keep\n0\n", f"a refused write changed something: {r}"


def test_other_team_gets_404_everywhere(s):
    sid = ctx["a1"]
    kb = s.key_b
    routes = [
        ("GET", f"/v1/sandboxes/{sid}", None),
        ("DELETE", f"/v1/sandboxes/{sid}", None),
        ("POST", f"/v1/sandboxes/{sid}/pause", None),
        ("POST", f"/v1/sandboxes/{sid}/resume", None),
        ("POST", f"/v1/sandboxes/{sid}/ping", None),
        ("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "echo hi"}),
        ("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_sec": 5}),
        ("POST", f"/v1/sandboxes/{sid}/files/write", {"path": "/tmp/evil", "content_base64": b64("x")}),
        ("POST", f"/v1/sandboxes/{sid}/files/read", {"path": "/tmp/api-basics.bin"}),
    ]
    for method, path, body in routes:
        expect_error(s.request(method, path, body, key=kb), 404, "not_found", f"team B {method} {path}")
    st, sb = s.request("GET", f"/v1/sandboxes/{sid}")
    assert st == 200 and sb["status"] == "running" and sb["timeout_sec"] == 0, \
        f"team B's calls changed team A's sandbox: {sb}"
    r = s.exec(sid, "test -e /tmp/evil && echo yes || echo no")
    assert r["stdout"] == "no\n", f"team B wrote a file into team A's sandbox: {r}"


def test_pause_resume_and_409s(s):
    sid = ctx["a1"]
    st, sb = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200 and sb["status"] == "paused", f"pause: {st} {sb}"
    check_sandbox_shape(sb, "pause")
    assert s.status_of(sid) == "paused"
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/pause"), 409, "invalid_state", "pause a paused sandbox")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/ping"), 409, "invalid_state", "ping a paused sandbox")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "echo hi"}), 409, "invalid_state",
                 "exec in a paused sandbox")
    # A streamed upload is refused before its body is stored.
    expect_error(s.request("PUT", f"/v1/sandboxes/{sid}/files/content?path=/tmp/x", b"\0" * 1024),
                 409, "invalid_state", "PUT files/content in a paused sandbox")
    expect_error(s.request("GET", f"/v1/sandboxes/{sid}/files/content?path=/tmp/api-basics.bin"), 409,
                 "invalid_state", "GET files/content in a paused sandbox")
    expect_error(s.request("GET", f"/v1/sandboxes/{sid}/files?path=/tmp"), 409, "invalid_state",
                 "list files in a paused sandbox")
    expect_error(s.request("PUT", "/v1/sandboxes/sb-0000000000000000/files/content?path=/tmp/x", b"x"), 404,
                 "not_found", "PUT files/content of an unknown sandbox")
    st, paused = s.request("GET", "/v1/sandboxes?status=paused")
    assert st == 200 and [x["id"] for x in paused] == [sid], f"?status=paused: {st} {paused}"
    st, sb = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and sb["status"] == "running", f"resume: {st} {sb}"
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/resume"), 409, "invalid_state", "resume a running sandbox")
    r = s.exec(sid, "cat /tmp/api-basics.bin | wc -c")
    assert r["stdout"].strip() == str(len(FILE_DATA)), f"file lost across pause/resume: {r}"
    st, paused = s.request("GET", "/v1/sandboxes?status=paused")
    assert st == 200 and paused == [], f"?status=paused after resume: {st} {paused}"


def test_timeout_route(s):
    sid = ctx["a2"]
    st, sb = s.request("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_sec": 3600})
    assert st in (200, 204), f"timeout: {st} {sb}"
    st, sb = s.request("GET", f"/v1/sandboxes/{sid}")
    assert sb["timeout_sec"] == 3600, sb
    for bad in ({"timeout_sec": -1}, {"timeout_sec": MAX_TIMEOUT + 1}, {"timeout_sec": "5"}, {}, "{"):
        expect_error(s.request("POST", f"/v1/sandboxes/{sid}/timeout", bad), 400, "invalid_request",
                     f"timeout {bad!r}")
    assert s.status_of(sid) == "running"
    st, sb = s.request("GET", f"/v1/sandboxes/{sid}")
    assert sb["timeout_sec"] == 3600, f"a rejected timeout changed it: {sb}"


def test_destroy(s):
    for sid in (ctx["a2"], ctx["a1"]):
        s.destroy(sid)
        st, lst = s.request("GET", "/v1/sandboxes")
        assert st == 200 and sid not in [x["id"] for x in lst], f"list still shows destroyed {sid}: {lst}"
        st, sb = s.request("GET", f"/v1/sandboxes/{sid}")
        assert st == 404 or (st == 200 and sb["status"] == "stopped"), f"GET after destroy: {st} {sb}"
        for method, path, body in [("POST", f"/v1/sandboxes/{sid}/ping", None),
                                   ("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "echo"})]:
            st, body = s.request(method, path, body)
            assert st in (404, 409), f"{method} {path} after destroy: {st} {body}"
    st, lst = s.request("GET", "/v1/sandboxes")
    assert lst == [], lst
    assert s.qemu_pids() == [], f"QEMU processes left after destroying every sandbox: {s.qemu_pids()}"


def test_orphan_vms_are_destroyed(s):
    """A VM whose row went stopped behind the agent's back (what a create that
    lands after its DELETE leaves) is destroyed by the reconciler; a VM
    without any row of the host is someone else's (another control plane's
    database) and is left alone."""
    gone = s.create({"template": "minimal", "memory_mb": 128})["id"]
    stopped = s.create({"template": "minimal", "memory_mb": 128})["id"]
    assert len(s.qemu_pids(gone)) == 1 and len(s.qemu_pids(stopped)) == 1
    s.sql(f"CREATE TABLE saved_row AS SELECT * FROM sandboxes WHERE id = '{gone}'")
    s.sql(f"DELETE FROM sandboxes WHERE id = '{gone}'")
    s.sql(f"UPDATE sandboxes SET status = 'stopped', last_updated = now() WHERE id = '{stopped}'")
    # It needs a second pass that still sees it (a fresh stopped row is younger
    # than the grace), so allow two intervals.
    s.cp.wait_log(rf"event=orphan_destroyed sandbox_id={stopped}\b", 2 * RECONCILE + SLACK,
                  what=f"orphan sweep of {stopped}")
    wait_until(lambda: not s.qemu_pids(stopped), 30, what=f"QEMU of orphan {stopped} gone")
    assert s.status_of(stopped) == "stopped"
    assert f"event=orphan_suspected sandbox_id={stopped} " in s.cp.log_text(since_start=True), \
        f"{stopped} destroyed without first being a suspect"
    # The same passes saw the row-less VM: untouched.
    log = s.cp.log_text(since_start=True)
    for event in ("orphan_suspected", "orphan_destroyed"):
        assert f"event={event} sandbox_id={gone} " not in log, f"{event} for {gone}, which has no row"
    assert len(s.qemu_pids(gone)) == 1, f"the VM of {gone} (no row) was destroyed"
    assert s.sql(f"SELECT count(*) FROM sandboxes WHERE id = '{gone}'") == [["0"]], "the sweep wrote a row"
    s.sql("INSERT INTO sandboxes SELECT * FROM saved_row; DROP TABLE saved_row")
    s.destroy(gone)
    wait_until(lambda: not s.qemu_pids(gone), 30, what=f"QEMU of {gone} gone")


def lose_paused_sandboxes(s, sids):
    """Kill the agent, delete the sandboxes' state (snapshot included) and
    restart it: the host no longer holds them."""
    s.kill_agent(signal.SIGKILL)
    for sid in sids:
        shutil.rmtree(s.sandbox_dir(sid))
    s.start_agent()


def test_lost_paused_sandbox_reads_stopped(s):
    a = s.create({"template": "minimal", "memory_mb": 128})["id"]
    b = s.create({"template": "minimal", "memory_mb": 128})["id"]
    for sid in (a, b):
        st, sb = s.request("POST", f"/v1/sandboxes/{sid}/pause")
        assert st == 200 and sb["status"] == "paused", f"pause {sid}: {st} {sb}"
    lose_paused_sandboxes(s, (a, b))
    # A resume finds out at once; it must not leave the row paused.
    st, body = s.request("POST", f"/v1/sandboxes/{a}/resume")
    assert st in (404, 409), f"resume of a sandbox the host lost: {st} {body}"
    assert s.status_of(a) == "stopped", f"after a failed resume of a lost sandbox: {s.status_of(a)}"
    # Without any request, the reconciler stops it after two passes that agree.
    s.wait_status(b, "stopped", 3 * RECONCILE + SLACK)
    log = s.cp.log_text(since_start=True)
    assert re.search(rf"event=paused_sandbox_missing sandbox_id={b}\b", log), "no first-pass suspicion logged"
    assert re.search(rf"event=reconcile_change sandbox_id={b} \S+ from=paused to=stopped", log), \
        "the reconciler did not record paused -> stopped"
    st, lst = s.request("GET", "/v1/sandboxes?status=paused")
    assert st == 200 and lst == [], f"lost sandboxes still listed paused: {lst}"


TESTS = [
    test_healthz_without_key,
    test_unauthorized,
    test_bad_create_input_is_400_and_creates_nothing,
    test_body_over_1mib_is_413,
    test_create_defaults,
    test_create_explicit_fields,
    test_get,
    test_list_newest_first_and_team_scoped,
    test_ping,
    test_exec,
    test_exec_stdin_text_and_base64,
    test_env_on_create_applies_to_every_exec,
    test_exec_body_over_1mib_is_413,
    test_files_roundtrip,
    test_files_content_limit_and_paths,
    test_files_content_put_get_and_list,
    test_files_content_errors,
    test_other_team_gets_404_everywhere,
    test_pause_resume_and_409s,
    test_timeout_route,
    test_destroy,
    test_orphan_vms_are_destroyed,
    test_lost_paused_sandbox_reads_stopped,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("api", reconcile_interval=RECONCILE), TESTS))
