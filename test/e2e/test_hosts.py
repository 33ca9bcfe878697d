#!/usr/bin/env python3
"""Several hosts and two control-plane replicas (issue 11), on loopback:
three agents (the stack's, registered as host "default", plus h2 and h3 with
their own state dirs) and two torpor-cp replicas on one database, both
reconciling every RECONCILE s.

  - GET /v1/hosts lists the three hosts ready with their agent ids and
    capacity, for an admin key only (403 for a team key); `hosts list`
    prints them;
  - placement spreads (three creates land on three hosts) and honours a
    host's memory cap (`hosts add --max-memory-mb`);
  - a frozen agent (SIGSTOP): a create sent right away still succeeds on
    another host within a few seconds (the 1 s probe skips the frozen one);
    the host reads unreachable within two passes; its sandbox keeps its
    status, shows host_status unreachable, and a ping answers 503
    host_unreachable at once; thawed (SIGCONT), the host is ready again and
    the sandbox answers;
  - a drained host gets no new sandboxes; all full -> 503 no_capacity;
  - a replica SIGKILLed while both reconcile loses no auto-pause notice: the
    other records the pause.

Minimal template, 128 MiB guests."""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Component, Stack, expect_error, run_tests, wait_until  # noqa: E402

RECONCILE = 1.0
MEM = 128
ctx = {}


def cp_cli(s, *args):
    out = subprocess.run([s.cp_bin, *args, "--database-url", s.db_url], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"torpor-cp {' '.join(args)}: exit {out.returncode}: {out.stderr}"
    return out.stdout


def start_extra_agent(s, name):
    state = os.path.join(s.tmp, f"state-{name}")
    os.makedirs(state)
    s.other_state_dirs.append(state)
    argv = [s.agent_bin, "--listen", "127.0.0.1:0", "--state-dir", state, "--image-dir", s.image_dir,
            "--accel", os.environ.get("TORPOR_ACCEL", "auto"), "--reaper-interval", str(s.reaper_interval),
            "--metrics-addr", "off"]
    comp = Component(f"torpor-agent-{name}", argv, os.path.join(s.tmp, f"agent-{name}.log"))
    s.extra.append(comp)
    comp.start()
    m = comp.wait_log(r"event=agent_ready\b[^\n]*\bport=(\d+)", 120, what=f"{name} agent_ready")
    return comp, int(m.group(1))


def hosts(s, key=None):
    st, body = s.request("GET", "/v1/hosts", key=key or ctx["admin"])
    assert st == 200, f"GET /v1/hosts: {st} {body}"
    return {h["id"]: h for h in body}


def host_status(s, hid):
    return hosts(s)[hid]["status"]


def sandbox(s, sid, port=None):
    st, body = s.request("GET", f"/v1/sandboxes/{sid}", port=port)
    assert st == 200, f"GET {sid}: {st} {body}"
    return body


def create_timed(s, port=None):
    t0 = time.monotonic()
    st, body = s.request("POST", "/v1/sandboxes", {"template": "minimal", "memory_mb": MEM}, port=port)
    return st, body, time.monotonic() - t0


def test_hosts_are_listed_for_admin_keys(s):
    ctx["admin"] = cp_cli(s, "keys", "create", "--team", "ops", "--admin").strip().splitlines()[-1]
    ctx["agents"] = {}
    for name in ("h2", "h3"):
        comp, port = start_extra_agent(s, name)
        ctx["agents"][name] = comp
        cp_cli(s, "hosts", "add", "--id", name, "--addr", f"127.0.0.1:{port}")
    ctx["replica_port"] = s.start_extra_cp("torpor-cp-2", ["--reconcile-interval", str(RECONCILE)])

    def all_ready():
        hs = hosts(s)
        return len(hs) == 3 and all(h["status"] == "ready" and h["agent_id"] and h["last_seen_age_sec"] is not None
                                    for h in hs.values()) and hs
    hs = wait_until(all_ready, 30, what="three hosts ready with an agent id")
    for h in hs.values():
        assert h["memory_total_mb"] > 0 and h["vcpus"] > 0 and h["disk_free_mb"] > 0, f"capacity not reported: {h}"
        assert h["failures"] == 0 and h["sandboxes"] == 0, h
    expect_error(s.request("GET", "/v1/hosts"), 403, "forbidden", "GET /v1/hosts with a team key")
    expect_error(s.request("GET", "/v1/hosts", key=None), 401, "unauthorized", "GET /v1/hosts without a key")
    out = cp_cli(s, "hosts", "list")
    for hid in ("default", "h2", "h3"):
        line = next((ln for ln in out.splitlines() if ln.startswith(hid + " ")), None)
        assert line and " ready " in line and hs[hid]["agent_id"] in line, f"hosts list, {hid}:\n{out}"
    # Either replica serves the same view.
    st, body = s.request("GET", "/v1/hosts", key=ctx["admin"], port=ctx["replica_port"])
    assert st == 200 and {h["id"] for h in body} == {"default", "h2", "h3"}, body


def test_placement_spreads_and_honours_the_memory_cap(s):
    placed = []
    for _ in range(3):
        sb = s.create({"template": "minimal", "memory_mb": MEM})
        assert sb["host_status"] == "ready", sb
        placed.append(sb)
    assert sorted(sb["host_id"] for sb in placed) == ["default", "h2", "h3"], \
        f"three creates should land on three hosts: {[sb['host_id'] for sb in placed]}"
    ctx["by_host"] = {sb["host_id"]: sb["id"] for sb in placed}
    # h3 full at one 128 MiB guest; the next two go elsewhere.
    cp_cli(s, "hosts", "add", "--id", "h3", "--addr", s.sql("SELECT address FROM hosts WHERE id = 'h3'")[0][0],
           "--max-memory-mb", str(MEM + 64))
    more = [s.create({"template": "minimal", "memory_mb": MEM}) for _ in range(2)]
    assert all(sb["host_id"] != "h3" for sb in more), f"placed on a full host: {[sb['host_id'] for sb in more]}"
    assert hosts(s)["h3"]["memory_used_mb"] == MEM
    for sb in more:
        s.destroy(sb["id"])
    cp_cli(s, "hosts", "add", "--id", "h3", "--addr", s.sql("SELECT address FROM hosts WHERE id = 'h3'")[0][0],
           "--max-memory-mb", "none")


def test_frozen_agent_is_skipped_and_reads_unreachable(s):
    frozen = ctx["agents"]["h2"]
    sid = ctx["by_host"]["h2"]
    frozen.proc.send_signal(signal.SIGSTOP)
    t_freeze = time.monotonic()
    try:
        # Creates right away, before any pass noticed: each probes h2 (if
        # it is next) for at most 1 s and goes elsewhere.
        for _ in range(2):
            st, body, took = create_timed(s)
            assert st == 201, f"create during the freeze: {st} {body}"
            assert body["host_id"] != "h2", f"created on the frozen host: {body}"
            assert took < 15, f"create during the freeze took {took:.1f}s"
            ctx.setdefault("during_freeze", []).append(body["id"])
        wait_until(lambda: host_status(s, "h2") == "unreachable", 2 * RECONCILE + 2 * 1.0 + 4,
                   what="h2 unreachable")
        took_unreachable = time.monotonic() - t_freeze
        print(f"     h2 read unreachable {took_unreachable:.1f}s after SIGSTOP")
        sb = sandbox(s, sid)
        assert sb["status"] == "running" and sb["host_status"] == "unreachable", sb
        t0 = time.monotonic()
        expect_error(s.request("POST", f"/v1/sandboxes/{sid}/ping"), 503, "host_unreachable", "ping on h2")
        assert time.monotonic() - t0 < 1.0, "host_unreachable must be answered at once"
        st, body, took = create_timed(s, port=ctx["replica_port"])
        assert st == 201 and body["host_id"] != "h2" and took < 15, f"create on the replica: {st} {body} {took:.1f}s"
        ctx["during_freeze"].append(body["id"])
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: host_status(s, "h2") == "ready", 2 * RECONCILE + 10, what="h2 ready again")
    sb = sandbox(s, sid)
    assert sb["status"] == "running" and sb["host_status"] == "ready", sb
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/ping")
    assert st == 204, f"ping after the thaw: {st} {body}"
    for x in ctx["during_freeze"]:
        s.destroy(x)


def test_drained_host_gets_nothing_and_all_full_is_no_capacity(s):
    cp_cli(s, "hosts", "drain", "--id", "default")
    assert host_status(s, "default") == "draining"
    time.sleep(2 * RECONCILE)  # answers do not end a drain
    assert host_status(s, "default") == "draining"
    sb = s.create({"template": "minimal", "memory_mb": MEM})
    assert sb["host_id"] != "default", sb
    s.destroy(sb["id"])
    addr = {h: s.sql(f"SELECT address FROM hosts WHERE id = '{h}'")[0][0] for h in ("h2", "h3")}
    for h in ("h2", "h3"):
        cp_cli(s, "hosts", "add", "--id", h, "--addr", addr[h], "--max-memory-mb", str(MEM))  # one guest each: full
    st, body = s.request("POST", "/v1/sandboxes", {"template": "minimal", "memory_mb": MEM})
    expect_error((st, body), 503, "no_capacity", "create with every host full or draining")
    for h in ("h2", "h3"):
        cp_cli(s, "hosts", "add", "--id", h, "--addr", addr[h], "--max-memory-mb", "none")
    cp_cli(s, "hosts", "undrain", "--id", "default")
    assert host_status(s, "default") == "ready"


def test_killed_replica_loses_no_auto_pause_notice(s):
    sid = ctx["by_host"]["h3"]
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_sec": 2})
    assert st == 200, f"timeout: {st} {body}"
    s.stop_cp(signal.SIGKILL)  # whatever it was doing, mid-pass or not
    port = ctx["replica_port"]
    wait_until(lambda: sandbox(s, sid, port=port)["status"] == "paused", 30, what=f"{sid} paused via the replica")
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume", port=port)
    assert st == 200 and body["status"] == "running", f"resume: {st} {body}"
    s.start_cp()


if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("hosts", reconcile_interval=RECONCILE, reaper_interval=1), [
        test_hosts_are_listed_for_admin_keys,
        test_placement_spreads_and_honours_the_memory_cap,
        test_frozen_agent_is_skipped_and_reads_unreachable,
        test_drained_host_gets_nothing_and_all_full_is_no_capacity,
        test_killed_replica_loses_no_auto_pause_notice,
    ]))
