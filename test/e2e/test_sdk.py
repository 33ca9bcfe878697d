#!/usr/bin/env python3
"""The Python SDK (clients/python, package torpor) against the real stack:
create -> exec -> files write/read -> pause -> resume -> kill, connect()
resuming a paused sandbox, list filters, timeout/ping, the context manager,
settings from TORPOR_URL / TORPOR_API_KEY, and errors as exceptions carrying
the API's code and HTTP status. Every answer the SDK receives is also checked
against docs/openapi.yaml (the SDK's client is wrapped with the checker)."""

import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SOURCE_DIR, Stack, run_tests  # noqa: E402
import openapi_check  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))
import torpor  # noqa: E402
from torpor import Client, Sandbox  # noqa: E402

SMALL = {"template": "minimal", "memory_mb": 128}
FILE_DATA = b"sdk line\n\x00\xff\xfe binary \xc3\xa9\n" * 100
ctx = {}


def client(s, key=None):
    """A Client for the stack whose every answer (errors included) is checked
    against docs/openapi.yaml."""
    c = Client(f"http://127.0.0.1:{s.http_port}", key or s.key_a)
    c.on_response = openapi_check.default_checker().check
    return c


def test_create_returns_running_sandbox_with_requested_shape(s):
    sbx = Sandbox.create(template="minimal", memory_mb=128, timeout=600, client=client(s))
    ctx["sbx"] = sbx
    assert sbx.status == "running", sbx
    assert (sbx.template, sbx.memory_mb, sbx.timeout_sec, sbx.vcpus) == ("minimal", 128, 600, 1), sbx.data
    assert s.status_of(sbx.id) == "running"


def test_exec_returns_stdout_stderr_and_exit_code(s):
    r = ctx["sbx"].exec("echo out; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out) == ("out\n", "err\n", 3, False), r
    r = ctx["sbx"].exec("printf", args=["%s|%s", "a b", "$HOME"])
    assert r.stdout == "a b|$HOME" and r.exit_code == 0, r  # args are not shell-expanded


def test_exec_passes_env_cwd_and_stdin(s):
    r = ctx["sbx"].exec("echo $GREETING; pwd; cat", env={"GREETING": "hi there"}, cwd="/tmp",
                        stdin=b"from stdin\n")
    assert r.stdout == "hi there\n/tmp\nfrom stdin\n", r
    r = ctx["sbx"].exec("wc", args=["-c"], stdin=b"12345")
    assert r.stdout.strip() == "5", r


def test_exec_timeout_kills_the_command(s):
    r = ctx["sbx"].exec("sleep 30", timeout=1)
    assert r.timed_out and r.exit_code == -1, r


def test_files_write_then_read_roundtrips_bytes(s):
    files = ctx["sbx"].files
    files.write("/tmp/sdk.bin", FILE_DATA)
    assert files.read("/tmp/sdk.bin") == FILE_DATA
    files.write("/tmp/empty", b"")
    assert files.read("/tmp/empty") == b""
    files.write("/tmp/sdk.txt", "text é")
    assert files.read_text("/tmp/sdk.txt") == "text é"
    assert ctx["sbx"].exec("wc -c < /tmp/sdk.bin").stdout.strip() == str(len(FILE_DATA))
    big = os.urandom(3 * 1024 * 1024)  # several 1 MiB chunks through PUT files/content
    files.write("/tmp/big.bin", big)
    assert files.read("/tmp/big.bin") == big
    # A binary file object is streamed (chunked request body).
    assert files.write("/tmp/from-file.bin", io.BytesIO(big[:1500000]), mode=0o600) == 1500000
    assert files.read("/tmp/from-file.bin") == big[:1500000]


def test_files_upload_and_download_stream_file_objects(s):
    """upload() from a regular file (sent with Content-Length) and from a
    pipe (chunked), download() into a file, with progress reported per
    chunk; a failed download writes nothing."""
    files = ctx["sbx"].files
    data = os.urandom(2 * 1024 * 1024 + 12345)
    path = os.path.join(s.tmp, "sdk-up.bin")
    with open(path, "wb") as f:
        f.write(data)
    seen = []
    with open(path, "rb") as f:
        assert files.upload("/tmp/up.bin", f, on_progress=lambda n, total: seen.append((n, total))) == len(data)
    assert seen[-1] == (len(data), len(data)) and len(seen) == 3, seen
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pr:
        with os.fdopen(w, "wb") as pw:
            pw.write(data[:50000])
        assert files.upload("/tmp/piped.bin", pr, mode=0o600) == 50000
    down = []
    with open(path + ".back", "wb") as f:
        assert files.download("/tmp/up.bin", f, on_progress=lambda n, total: down.append((n, total))) == len(data)
    with open(path + ".back", "rb") as f:
        assert f.read() == data
    assert down[-1] == (len(data), len(data)), down[-3:]
    assert files.read("/tmp/piped.bin") == data[:50000]
    sink = io.BytesIO()
    try:
        files.download("/tmp/no-such.bin", sink)
    except torpor.NotFound:
        assert sink.getvalue() == b""
    else:
        raise AssertionError("download of a missing file did not raise NotFound")


def test_files_list_returns_sorted_entries(s):
    files = ctx["sbx"].files
    files.write("/tmp/lst/b.txt", b"bb")
    files.write("/tmp/lst/a.txt", b"a", mode=0o600)
    ctx["sbx"].exec("mkdir -p /tmp/lst/sub")
    entries = files.list("/tmp/lst")
    got = [(e["name"], e["type"], e["size"]) for e in entries]
    assert got == [("a.txt", "file", 1), ("b.txt", "file", 2), ("sub", "dir", got[2][2])], entries
    assert entries[0]["mode"] == 0o600, entries[0]
    try:
        files.list("/tmp/lst/a.txt")
    except torpor.InvalidRequest as e:
        assert e.status == 400, vars(e)
    else:
        raise AssertionError("files.list of a file did not raise InvalidRequest")


def test_pause_then_resume_keeps_files(s):
    sbx = ctx["sbx"]
    sbx.pause()
    assert sbx.status == "paused" and s.status_of(sbx.id) == "paused", sbx
    sbx.resume()
    assert sbx.status == "running" and s.status_of(sbx.id) == "running", sbx
    assert sbx.files.read("/tmp/sdk.bin") == FILE_DATA


def test_connect_resumes_a_paused_sandbox(s):
    sbx = ctx["sbx"]
    sbx.pause()
    again = Sandbox.connect(sbx.id, client=client(s))
    assert again.id == sbx.id and again.status == "running", again
    assert again.exec("cat /tmp/sdk.txt").stdout == "text é"
    sbx.refresh()
    assert sbx.status == "running"


def test_list_filters_by_status(s):
    sbx = ctx["sbx"]
    c = client(s)
    assert sbx.id in [x.id for x in Sandbox.list(client=c)]
    assert sbx.id in [x.id for x in Sandbox.list(status="running", client=c)]
    assert sbx.id in [x.id for x in Sandbox.list(status=["paused", "running"], client=c)]
    assert sbx.id not in [x.id for x in Sandbox.list(status="paused", client=c)]


def test_set_timeout_and_ping(s):
    sbx = ctx["sbx"]
    before = s.request("GET", f"/v1/sandboxes/{sbx.id}")[1]["last_active_at"]
    sbx.set_timeout(0)
    assert sbx.timeout_sec == 0 and s.request("GET", f"/v1/sandboxes/{sbx.id}")[1]["timeout_sec"] == 0
    time.sleep(1.1)  # last_active_at is written at most once a second (docs/api.md)
    sbx.ping()
    after = s.request("GET", f"/v1/sandboxes/{sbx.id}")[1]["last_active_at"]
    assert after > before, (before, after)


def test_errors_carry_api_code_and_status(s):
    sbx = ctx["sbx"]
    cases = [
        (lambda: sbx.resume(), torpor.InvalidState, "invalid_state", 409),
        (lambda: Sandbox.get("sb-0000000000000000", client=client(s)), torpor.NotFound, "not_found", 404),
        (lambda: Sandbox.get(sbx.id, client=client(s, s.key_b)), torpor.NotFound, "not_found", 404),
        (lambda: Sandbox.create(memory_mb=1, client=client(s)), torpor.InvalidRequest, "invalid_request", 400),
        # env names are checked on create.
        (lambda: Sandbox.create(template="minimal", env={"1A": "1"}, client=client(s)), torpor.InvalidRequest,
         "invalid_request", 400),
        (lambda: Sandbox.list(client=client(s, "tpk_" + "0" * 32)), torpor.Unauthorized, "unauthorized", 401),
        (lambda: sbx.files.read("/tmp/does-not-exist"), torpor.NotFound, "not_found", 404),
        (lambda: torpor.template_log("no-such-template", client=client(s)), torpor.NotFound, "not_found", 404),
    ]
    for call, cls, code, status in cases:
        try:
            call()
        except torpor.TorporError as e:
            assert isinstance(e, cls) and e.code == code and e.status == status and e.message, \
                f"expected {cls.__name__} {code} {status}, got {type(e).__name__} {e.code} {e.status} {e.message!r}"
        else:
            raise AssertionError(f"expected {cls.__name__} ({code}), nothing raised")
    try:
        Sandbox.list(client=Client("http://127.0.0.1:1", s.key_a))
    except torpor.ConnectionFailed as e:
        assert e.code == "connection_error" and e.status == 0
    else:
        raise AssertionError("no ConnectionFailed for a closed port")


def test_templates_build_wait_get_log_delete(s):
    """The template calls against the server's /v1/templates routes, with the
    cheapest real build: a package apt cannot find ends in `error` within
    seconds (docs/api.md)."""
    c = client(s)
    t = torpor.build_template("sdk-broken", packages=["no-such-package-sdk"], client=c)
    assert (t["name"], t["status"], t["packages"]) == ("sdk-broken", "building", ["no-such-package-sdk"]), t
    polls = []
    t = torpor.wait_template("sdk-broken", client=c, timeout=300, interval=0.5, on_poll=polls.append)
    assert t["status"] == "error" and "no-such-package-sdk" in (t["error"] or ""), t
    assert polls and polls[-1] == t, polls
    assert torpor.get_template("sdk-broken", client=c)["status"] == "error"
    assert "Unable to locate package no-such-package-sdk" in torpor.template_log("sdk-broken", client=c)
    names = [x["name"] for x in torpor.list_templates(client=c)]
    assert "sdk-broken" in names and "minimal" in names, names
    torpor.delete_template("sdk-broken", client=c)
    for call, code, status in ((lambda: torpor.get_template("sdk-broken", client=c), "not_found", 404),
                               (lambda: torpor.delete_template("minimal", client=c), "forbidden", 403)):
        try:
            call()
        except torpor.TorporError as e:
            assert (e.code, e.status) == (code, status), vars(e)
        else:
            raise AssertionError(f"expected {code}, nothing raised")


def test_kill_stops_the_sandbox(s):
    sbx = ctx["sbx"]
    sbx.kill()
    assert s.status_of(sbx.id) == "stopped"
    assert not s.qemu_pids(sbx.id), "QEMU still runs after kill"
    sbx.kill()  # idempotent


def test_context_manager_destroys_on_exit(s):
    with Sandbox.create(**SMALL, client=client(s)) as sbx:
        assert sbx.exec("true").exit_code == 0
        sid = sbx.id
    assert s.status_of(sid) == "stopped"
    try:
        with Sandbox.create(**SMALL, client=client(s)) as sbx:
            sid = sbx.id
            raise KeyError("boom")
    except KeyError:
        pass
    assert s.status_of(sid) == "stopped", "a sandbox left by an exception was not destroyed"


def test_settings_come_from_environment(s):
    old = {k: os.environ.get(k) for k in ("TORPOR_URL", "TORPOR_API_KEY")}
    os.environ["TORPOR_URL"] = f"http://127.0.0.1:{s.http_port}"
    os.environ["TORPOR_API_KEY"] = s.key_b
    try:
        sbx = Sandbox.create(**SMALL)
        try:
            # Team B's key came from the environment: team A does not see it.
            assert s.request("GET", f"/v1/sandboxes/{sbx.id}")[0] == 404
            assert s.request("GET", f"/v1/sandboxes/{sbx.id}", key=s.key_b)[0] == 200
        finally:
            sbx.kill()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


TESTS = [
    test_create_returns_running_sandbox_with_requested_shape,
    test_exec_returns_stdout_stderr_and_exit_code,
    test_exec_passes_env_cwd_and_stdin,
    test_exec_timeout_kills_the_command,
    test_files_write_then_read_roundtrips_bytes,
    test_files_upload_and_download_stream_file_objects,
    test_files_list_returns_sorted_entries,
    test_pause_then_resume_keeps_files,
    test_connect_resumes_a_paused_sandbox,
    test_list_filters_by_status,
    test_set_timeout_and_ping,
    test_errors_carry_api_code_and_status,
    test_templates_build_wait_get_log_delete,
    test_kill_stops_the_sandbox,
    test_context_manager_destroys_on_exit,
    test_settings_come_from_environment,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("sdk"), TESTS))
