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
import re
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
        # At once: a ping that asked the frozen agent would wait for its
        # 10 s deadline (AGENT_DEADLINE_SHORT_MS); 5 s leaves room for a
        # loaded machine.
        took = time.monotonic() - t0
        assert took < 5.0, f"host_unreachable must be answered at once, took {took:.1f}s"
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


COUNTER = ("(i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.tmp && mv /tmp/counter.tmp /tmp/counter; "
           "sleep 0.5; done) </dev/null >/dev/null 2>&1 &")


def counter(s, sid, started=True):
    """The counter's value; with started=False, 0 while the loop (just
    put in the background) has not written its first value yet."""
    r = s.exec(sid, "cat /tmp/counter")
    if not started and r["exit_code"] != 0 and "No such file" in r["stderr"]:
        return 0
    assert r["exit_code"] == 0, f"counter unreadable: {r}"
    return int(r["stdout"].strip())


def state_dir_of(s, host):
    return s.state_dir if host == "default" else os.path.join(s.tmp, f"state-{host}")


def holders(s, sid):
    """Hosts whose state dir holds the sandbox's directory (committed)."""
    return [h for h in ("default", "h2", "h3")
            if os.path.isdir(os.path.join(state_dir_of(s, h), "sandboxes", sid))]


def prepared_paused(s, big_mb=0):
    """A sandbox with a counter, a marker file (and big_mb of random data in
    its RAM-backed /tmp), paused; returns (id, counter value, marker)."""
    sid = s.create({"template": "minimal", "memory_mb": MEM})["id"]
    marker = os.urandom(8).hex()
    assert s.exec(sid, f"echo {marker} > /tmp/mark && " + COUNTER)["exit_code"] == 0
    if big_mb:
        r = s.exec(sid, f"head -c {big_mb * 1000000} /dev/urandom > /tmp/big", timeout_sec=120)
        assert r["exit_code"] == 0, r
    wait_until(lambda: counter(s, sid, started=False) >= 3, 60, interval=0.5, what="counter >= 3")
    value = counter(s, sid)
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200 and body["status"] == "paused", f"pause: {st} {body}"
    return sid, value, marker


def assert_resumes_intact(s, sid, value, marker, host):
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and body["status"] == "running" and body["host_id"] == host, f"resume: {st} {body}"
    r = s.exec(sid, "cat /tmp/mark")
    assert r["exit_code"] == 0 and r["stdout"].strip() == marker, f"marker lost: {r}"
    after = counter(s, sid)
    assert after >= value, f"counter went back: {value} -> {after}"
    wait_until(lambda: counter(s, sid) > after, 30, interval=0.5, what="the counter running on")


def test_move_keeps_memory_and_files(s):
    sid, value, marker = prepared_paused(s)
    src = sandbox(s, sid)["host_id"]
    dst = "h3" if src != "h3" else "h2"
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": dst}), 403, "forbidden",
                 "move with a team key")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": src}, key=ctx["admin"]), 409,
                 "invalid_state", "move to its own host")
    t0 = time.monotonic()
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": dst}, key=ctx["admin"])
    assert st == 200 and body["status"] == "paused" and body["host_id"] == dst, f"move: {st} {body}"
    print(f"     moved {src} -> {dst} in {time.monotonic() - t0:.1f}s")
    assert holders(s, sid) == [dst], f"after the move the files are on {holders(s, sid)}"
    assert_resumes_intact(s, sid, value, marker, dst)
    s.destroy(sid)


def test_move_keeps_the_network_policy(s):
    """The policy lives in the row and in the source agent's state; the move
    carries the files, and the first resume on the target applies the row's
    policy there (before, the target started the VM with the default one)."""
    sid = s.create({"template": "minimal", "memory_mb": MEM})["id"]
    policy = {"egress": "deny", "allow": ["198.18.7.7:8080"], "deny": []}
    st, body = s.request("PUT", f"/v1/sandboxes/{sid}/network", policy)
    assert st == 200, f"PUT network: {st} {body}"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200, f"pause: {st} {body}"
    dst = "h3" if sandbox(s, sid)["host_id"] != "h3" else "h2"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": dst}, key=ctx["admin"])
    assert st == 200 and body["host_id"] == dst, f"move: {st} {body}"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and body["status"] == "running", f"resume: {st} {body}"
    assert body["network"]["egress"] == "deny", body
    with open(os.path.join(state_dir_of(s, dst), "net", sid)) as f:
        stored = f.read()
    assert "egress deny" in stored and "198.18.7.7" in stored, f"target stored: {stored!r}"
    rules = subprocess.run(["ip", "netns", "exec", f"torpor-{sid}", "nft", "list", "ruleset"],
                           capture_output=True, text=True, check=True).stdout
    assert "198.18.7.7" in rules, f"the target's rules do not name the allowed address:\n{rules}"
    # Back again, and a policy change while it is paused on a host that has
    # no state for it yet: stored there, applied by the resume.
    src = dst
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200, f"pause: {st} {body}"
    dst = "h3" if src != "h3" else "h2"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": dst}, key=ctx["admin"])
    assert st == 200 and body["host_id"] == dst, f"move back: {st} {body}"
    policy["allow"] = ["198.18.7.8:8080"]
    st, body = s.request("PUT", f"/v1/sandboxes/{sid}/network", policy)
    assert st == 200, f"PUT network on a moved, paused sandbox: {st} {body}"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and body["status"] == "running", f"resume: {st} {body}"
    rules = subprocess.run(["ip", "netns", "exec", f"torpor-{sid}", "nft", "list", "ruleset"],
                           capture_output=True, text=True, check=True).stdout
    assert "198.18.7.8" in rules and "198.18.7.7" not in rules, f"rules after the change:\n{rules}"
    s.destroy(sid)


def test_stray_copy_of_a_moved_sandbox_is_destroyed(s):
    """What an interrupted move can leave (a committed copy on a host the row
    does not name, or the source's copy when its delete failed), made by
    hand: the sandbox's directory copied back onto "default", whose agent
    then recovers it paused. Its reconciler destroys it; the row and the
    real copy are untouched."""
    import shutil
    sid, value, marker = prepared_paused(s)
    owner = sandbox(s, sid)["host_id"]
    if owner == "default":
        st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": "h3"}, key=ctx["admin"])
        assert st == 200, f"move to h3: {st} {body}"
        owner = "h3"
    stray = os.path.join(s.state_dir, "sandboxes", sid)
    shutil.copytree(os.path.join(state_dir_of(s, owner), "sandboxes", sid), stray)
    offset = len(s.cp.log_text())
    s.restart_agent(signal.SIGTERM)
    wait_until(lambda: not os.path.exists(stray), 10 * RECONCILE + 20, what="the stray copy destroyed")
    log = s.cp.log_text()[offset:] + "".join(c.log_text() for c in s.extra if c.name == "torpor-cp-2")
    assert f"event=orphan_destroyed sandbox_id={sid} host_id=default" in log, "no orphan_destroyed line"
    sb = sandbox(s, sid)
    assert sb["status"] == "paused" and sb["host_id"] == owner, sb
    assert holders(s, sid) == [owner]
    assert_resumes_intact(s, sid, value, marker, owner)
    s.destroy(sid)


def test_drain_moves_every_sandbox_off_the_host(s):
    sid, value, marker = prepared_paused(s)
    running = ctx["by_host"]["h2"]  # running on h2 since the placement test
    if sandbox(s, sid)["host_id"] != "h2":
        st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": "h2"}, key=ctx["admin"])
        assert st == 200, f"move to h2: {st} {body}"
    out = subprocess.run([s.cp_bin, "hosts", "remove", "--id", "h2", "--database-url", s.db_url],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"still holds (\d+) sandbox", out.stderr)
    assert out.returncode == 1 and m and int(m.group(1)) >= 2, f"hosts remove: {out.returncode} {out.stderr}"
    print(cp_cli(s, "hosts", "drain", "--id", "h2").strip().replace("\n", "; "))
    assert host_status(s, "h2") == "draining"
    assert hosts(s)["h2"]["sandboxes"] == 0
    for x in (sid, running):
        sb = sandbox(s, x)
        assert sb["status"] == "paused" and sb["host_id"] != "h2", f"{x} after the drain: {sb}"
        assert holders(s, x) == [sb["host_id"]], f"{x} files on {holders(s, x)}"
    assert_resumes_intact(s, sid, value, marker, sandbox(s, sid)["host_id"])
    st, body = s.request("POST", f"/v1/sandboxes/{running}/resume")
    assert st == 200 and body["status"] == "running", f"resume {running}: {st} {body}"
    ctx["by_host"]["moved_from_h2"] = running
    s.destroy(sid)
    cp_cli(s, "hosts", "undrain", "--id", "h2")


def restart_extra_agent(s, name):
    comp = ctx["agents"][name]
    port = int(s.sql(f"SELECT split_part(address, ':', 2) FROM hosts WHERE id = '{name}'")[0][0])
    comp.stop(signal.SIGKILL)
    comp.argv = [a if a != "127.0.0.1:0" else f"127.0.0.1:{port}" for a in comp.argv]
    comp.start()
    comp.wait_log(r"event=agent_ready\b", 120, what=f"{name} agent_ready")


def interrupted_move(s, victim_side):
    sid, value, marker = prepared_paused(s, big_mb=40)
    src = sandbox(s, sid)["host_id"]
    if src == "default":  # both ends must be restartable extra agents
        st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": "h3"}, key=ctx["admin"])
        assert st == 200, f"move to h3: {st} {body}"
        src = "h3"
    dst = "h2" if src == "h3" else "h3"
    victim = src if victim_side == "source" else dst
    result = {}

    def mover():
        result["answer"] = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": dst}, key=ctx["admin"])
    import threading
    t = threading.Thread(target=mover)
    t.start()
    time.sleep(0.3)
    ctx["agents"][victim].proc.send_signal(signal.SIGKILL)
    t.join(120)
    st, body = result["answer"]
    print(f"     move with the {victim_side} ({victim}) SIGKILLed: {st} {body.get('error', {}).get('code') if isinstance(body, dict) else body}")
    restart_extra_agent(s, victim)
    wait_until(lambda: host_status(s, victim) == "ready", 30, what=f"{victim} ready again")
    sb = wait_until(lambda: (lambda b: b if b["status"] == "paused" else None)(sandbox(s, sid)), 30,
                    what=f"{sid} paused")
    owner = sb["host_id"]
    assert owner in (src, dst), sb
    # Exactly one host keeps it: the other's copy (if any) goes within passes.
    wait_until(lambda: holders(s, sid) == [owner], 10 * RECONCILE + 20, what=f"{sid} files only on {owner}")
    assert_resumes_intact(s, sid, value, marker, owner)
    s.destroy(sid)


def test_move_with_the_target_killed_leaves_one_resumable_copy(s):
    interrupted_move(s, "target")


def test_move_with_the_source_killed_leaves_one_resumable_copy(s):
    interrupted_move(s, "source")


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


def test_hosts_remove_after_drain(s):
    th_sid = s.create({"template": "minimal", "memory_mb": MEM})["id"]  # somewhere
    out = cp_cli(s, "hosts", "drain", "--id", "h2")
    assert hosts(s)["h2"]["sandboxes"] == 0, out
    assert cp_cli(s, "hosts", "remove", "--id", "h2").strip() == "removed h2"
    assert "h2" not in hosts(s)
    assert "h2" not in cp_cli(s, "hosts", "list")
    s.destroy(th_sid)


if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("hosts", reconcile_interval=RECONCILE, reaper_interval=1), [
        test_hosts_are_listed_for_admin_keys,
        test_placement_spreads_and_honours_the_memory_cap,
        test_frozen_agent_is_skipped_and_reads_unreachable,
        test_drained_host_gets_nothing_and_all_full_is_no_capacity,
        test_move_keeps_memory_and_files,
        test_move_keeps_the_network_policy,
        test_stray_copy_of_a_moved_sandbox_is_destroyed,
        test_drain_moves_every_sandbox_off_the_host,
        test_move_with_the_target_killed_leaves_one_resumable_copy,
        test_move_with_the_source_killed_leaves_one_resumable_copy,
        test_killed_replica_loses_no_auto_pause_notice,
        test_hosts_remove_after_drain,
    ]))
