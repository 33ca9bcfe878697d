#!/usr/bin/env python3
"""Moving a `debian` sandbox (issue 11): its qcow2 root-disk overlay travels
with the RAM file, device state and metadata, and the target checks that the
overlay's base image is there with the same digest (built from the same
recipe cache on this machine: it is). Two agents on loopback: a file written
to the root disk and a running counter survive pause -> move -> resume, and
the old host keeps nothing."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, run_tests, wait_until  # noqa: E402
import test_hosts as th  # noqa: E402

ctx = th.ctx


def test_debian_sandbox_moves_with_its_disk(s):
    ctx["admin"] = th.cp_cli(s, "keys", "create", "--team", "ops", "--admin").strip().splitlines()[-1]
    comp, port = th.start_extra_agent(s, "h2")
    ctx["agents"] = {"h2": comp}
    th.cp_cli(s, "hosts", "add", "--id", "h2", "--addr", f"127.0.0.1:{port}")
    wait_until(lambda: th.hosts(s).get("h2", {}).get("status") == "ready" and th.hosts(s)["h2"]["agent_id"], 30,
               what="h2 ready")
    sb = s.create({"template": "debian", "memory_mb": 256})
    sid, src = sb["id"], sb["host_id"]
    marker = os.urandom(8).hex()
    r = s.exec(sid, f"echo {marker} > /root/on-disk && sync && " + th.COUNTER, timeout_sec=60)
    assert r["exit_code"] == 0, r
    # The counter's first write (an exec of mv in the guest) may come after
    # the first read under load: a missing file is "not yet", not a failure.
    wait_until(lambda: int(s.exec(sid, "cat /tmp/counter 2>/dev/null || echo 0")["stdout"].strip() or 0) >= 3,
               60, interval=0.5, what="counter >= 3")
    value = th.counter(s, sid)
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200 and body["status"] == "paused", f"pause: {st} {body}"
    src_dir = os.path.join(th.state_dir_of(s, src), "sandboxes", sid)
    assert os.path.exists(os.path.join(src_dir, "root.qcow2")), os.listdir(src_dir)
    dst = "h2" if src == "default" else "default"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": dst}, key=ctx["admin"])
    assert st == 200 and body["host_id"] == dst and body["status"] == "paused", f"move: {st} {body}"
    assert not os.path.exists(src_dir), "the old host kept the sandbox"
    assert os.path.exists(os.path.join(th.state_dir_of(s, dst), "sandboxes", sid, "root.qcow2"))
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and body["status"] == "running" and body["host_id"] == dst, f"resume: {st} {body}"
    r = s.exec(sid, "cat /root/on-disk")
    assert r["exit_code"] == 0 and r["stdout"].strip() == marker, f"disk file lost: {r}"
    after = th.counter(s, sid)
    assert after >= value, (value, after)
    wait_until(lambda: th.counter(s, sid) > after, 30, interval=0.5, what="the counter running on")
    s.destroy(sid)


if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("movedeb", reconcile_interval=1.0, reaper_interval=1), [
        test_debian_sandbox_moves_with_its_disk,
    ]))
