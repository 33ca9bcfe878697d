#!/usr/bin/env python3
"""A hostile guest (issue 10, agent side), real QEMU, minimal template, 128 MiB:
a guest whose torpor-guest stops reading its channel (kill -STOP from inside)
cannot block the agent: a 4 MiB files/write to it fails within its deadline,
another sandbox's exec answers meanwhile, later calls to it fail fast with a
clear error, its pause and destroy still work, and SIGTERM of the agent
returns within --shutdown-timeout while such a write is in flight; after an
agent restart such a VM is listed as recovering (503 unavailable) while it is
re-attached, with Retry-After, and the agent is ready before that ends."""

import http.client
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, b64, check_answer, expect_error, run_tests, wait_until  # noqa: E402

SHUTDOWN_TIMEOUT = 10   # --shutdown-timeout of this stack's agent (s)
FILES_DEADLINE = 10     # this stack's torpor-cp --files-timeout (default 60 s)
BIG = os.urandom(4 * 1024 * 1024)
# From inside: stop torpor-guest a second after this exec has returned (the
# exec itself runs through it).
STOP_GUEST = ("pid=$(pidof torpor-guest); [ -n \"$pid\" ] || exit 3; "
              "(sleep 1; kill -STOP $pid) </dev/null >/dev/null 2>&1 & echo $pid")

ctx = {}


def stop_guest(s, sid):
    r = s.exec(sid, STOP_GUEST)
    assert r["exit_code"] == 0 and r["stdout"].strip(), f"could not find torpor-guest: {r}"
    time.sleep(3)  # the kill has landed


def write_big(s, sid, out):
    t0 = time.monotonic()
    try:
        out["result"] = s.request("POST", f"/v1/sandboxes/{sid}/files/write",
                                  {"path": "/root/big.bin", "content_base64": b64(BIG)}, timeout=300)
    except Exception as e:  # noqa: BLE001 - the connection may be cut (agent stopped)
        out["result"] = ("exception", repr(e))
    out["took"] = time.monotonic() - t0


def test_write_to_a_guest_that_stops_reading_fails_within_its_deadline(s):
    a = s.create({"template": "minimal", "memory_mb": 128})["id"]
    b = s.create({"template": "minimal", "memory_mb": 128})["id"]
    ctx["a"], ctx["b"] = a, b
    stop_guest(s, a)

    out = {}
    th = threading.Thread(target=write_big, args=(s, a, out))
    th.start()
    time.sleep(2)
    # Another sandbox is not held up by the stuck one.
    t0 = time.monotonic()
    r = s.exec(b, "echo still-here")
    took_b = time.monotonic() - t0
    assert r["stdout"] == "still-here\n", r
    assert took_b < 15, f"the other sandbox's exec took {took_b:.1f}s"
    th.join(FILES_DEADLINE + 30)
    assert not th.is_alive(), "files/write to the stopped guest never returned"
    st, body = out["result"]
    print(f"    4 MiB write to the stopped guest: {st} after {out['took']:.1f}s: {body}")
    assert st != 204 and st >= 500, f"the write cannot have succeeded: {st} {body}"
    assert out["took"] <= FILES_DEADLINE + 5, f"took {out['took']:.1f}s, deadline {FILES_DEADLINE}s"


def test_later_calls_fail_fast_with_a_clear_error(s):
    a = ctx["a"]
    t0 = time.monotonic()
    st, body = s.request("POST", f"/v1/sandboxes/{a}/exec", {"cmd": "echo hi"})
    took = time.monotonic() - t0
    print(f"    exec after the broken write: {st} in {took:.1f}s: {body}")
    assert st >= 500, f"{st} {body}"
    assert took < 5, f"a call on a broken channel took {took:.1f}s"
    assert "broken" in body["error"]["message"], body


def test_pause_and_destroy_of_the_stuck_sandbox_work(s):
    a = ctx["a"]
    st, body = s.request("POST", f"/v1/sandboxes/{a}/pause")
    assert st == 200 and body["status"] == "paused", f"pause: {st} {body}"
    s.destroy(a)
    wait_until(lambda: not s.qemu_pids(a), 20, what=f"QEMU of {a} gone")


def test_sigterm_returns_within_shutdown_timeout_with_a_stuck_write(s):
    c = s.create({"template": "minimal", "memory_mb": 128})["id"]
    stop_guest(s, c)
    out = {}
    th = threading.Thread(target=write_big, args=(s, c, out))
    th.start()
    time.sleep(3)  # the write is now stuck in the agent
    t0 = time.monotonic()
    code = s.agent.stop(signal.SIGTERM, timeout=SHUTDOWN_TIMEOUT + 30)
    took = time.monotonic() - t0
    print(f"    agent exit code {code} after {took:.1f}s")
    assert took <= SHUTDOWN_TIMEOUT + 5, f"SIGTERM took {took:.1f}s (timeout {SHUTDOWN_TIMEOUT}s)"
    assert code is not None and code >= 0, f"the agent was killed, not stopped: {code}"
    th.join(FILES_DEADLINE + 30)
    s.start_agent()
    # The re-attached sandbox can still be destroyed; the other one works.
    wait_until(lambda: s.request("DELETE", f"/v1/sandboxes/{c}")[0] == 204, 90, interval=2,
               what=f"destroy of {c} after the restart")
    assert s.exec(ctx["b"], "echo after-restart")["stdout"] == "after-restart\n"
    s.destroy(ctx["b"])


def test_restart_lists_a_silent_guest_as_recovering_and_answers_503(s):
    """An agent restart with a VM whose guest does not answer: the agent is
    ready before that VM is re-attached (not after its 30 s guest timeout),
    and calls to it answer 503 unavailable meanwhile (the next two tests
    go on with this sandbox while it is still recovering)."""
    d = s.create({"template": "minimal", "memory_mb": 128})["id"]
    ctx["recovering"] = d
    stop_guest(s, d)
    t0 = time.monotonic()
    s.agent.stop(signal.SIGKILL)
    s.start_agent()
    ready = time.monotonic() - t0
    ctx["restarted_at"] = t0
    print(f"    agent ready {ready:.1f}s after the restart")
    assert ready < 25, f"the agent waited for the silent guest: ready after {ready:.1f}s"
    st, body = s.request("POST", f"/v1/sandboxes/{d}/exec", {"cmd": "true"})
    print(f"    exec while recovering: {st} {body}")
    expect_error((st, body), 503, "unavailable", "exec on a recovering sandbox")
    assert "recovering" in body["error"]["message"], body


def test_recovering_sandbox_503_carries_retry_after(s):
    """The 503 unavailable of a sandbox still being re-attached says when to
    retry: Retry-After, a whole number of seconds > 0 (docs/api.md)."""
    d = ctx["recovering"]
    path = f"/v1/sandboxes/{d}/exec"
    c = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=60)
    try:
        c.request("POST", path, body=b'{"cmd":"true"}',
                  headers={"X-API-Key": s.key_a, "Content-Type": "application/json"})
        r = c.getresponse()
        raw = r.read()
        retry = r.getheader("Retry-After")
        body = check_answer("POST", path, r.status, r.getheaders(), raw)
    finally:
        c.close()
    print(f"    exec while recovering ({time.monotonic() - ctx['restarted_at']:.1f}s after the restart): "
          f"{r.status}, Retry-After {retry!r}")
    expect_error((r.status, body), 503, "unavailable", "exec on a recovering sandbox")
    assert "recovering" in body["error"]["message"], body
    assert retry is not None, "503 unavailable for a recovering sandbox without Retry-After"
    assert retry.isdigit() and int(retry) > 0, f"Retry-After must be whole seconds > 0: {retry!r}"


def test_reconciler_keeps_a_recovering_sandbox_and_it_is_destroyed_once_reattached(s):
    d = ctx["recovering"]
    time.sleep(s.reconcile_interval * 2 + 1)
    assert s.status_of(d) == "running", "the reconciler must not take a recovering sandbox for gone"
    s.agent.wait_log(r"event=table_recovered", 90, what="re-attach done")
    s.destroy(d)

TESTS = [
    test_write_to_a_guest_that_stops_reading_fails_within_its_deadline,
    test_later_calls_fail_fast_with_a_clear_error,
    test_pause_and_destroy_of_the_stuck_sandbox_work,
    test_sigterm_returns_within_shutdown_timeout_with_a_stuck_write,
    test_restart_lists_a_silent_guest_as_recovering_and_answers_503,
    test_recovering_sandbox_503_carries_retry_after,
    test_reconciler_keeps_a_recovering_sandbox_and_it_is_destroyed_once_reattached,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("hguest", agent_args=["--shutdown-timeout", str(SHUTDOWN_TIMEOUT)],
                                     cp_args=["--files-timeout", str(FILES_DEADLINE)]),
                       TESTS))
