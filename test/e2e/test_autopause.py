#!/usr/bin/env python3
"""Auto-pause on inactivity (issue 4's "Done when"), with real VMs: an idle
sandbox reads paused within timeout + reaper + reconcile interval (+ the
pause itself); the TTL survives resume; pings and a long exec keep a sandbox
running; timeout 0 never pauses; POST .../timeout changes the TTL; ping on a
paused sandbox is 409; a VM killed from outside reads stopped; an agent
SIGKILLed right after an auto-pause still leads to paused in the DB."""

import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, expect_error, run_tests, wait_until  # noqa: E402

TTL = 3
REAPER = 2
RECONCILE = 5
# Room for the pause itself, HTTP and polling on a loaded 2-core TCG host.
SLACK = float(os.environ.get("TORPOR_E2E_SLACK", "10"))
PAUSE_BOUND = TTL + REAPER + RECONCILE + SLACK

ctx = {}


def wait_autopaused(s, sid, since):
    """Wait until sid reads paused; returns seconds since `since` (monotonic)."""
    s.wait_status(sid, "paused", PAUSE_BOUND + 5)
    elapsed = time.monotonic() - since
    assert elapsed <= PAUSE_BOUND, \
        f"{sid} read paused only after {elapsed:.1f}s (> {TTL}+{REAPER}+{RECONCILE}+{SLACK:.0f}s)"
    # GETs are not activity, so it cannot pause before its TTL ran out.
    assert elapsed >= TTL - 1, f"{sid} paused after {elapsed:.1f}s, before its {TTL}s TTL"
    return elapsed


def test_idle_sandbox_is_paused(s):
    t0 = time.monotonic()
    sb = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": TTL})
    t_created = time.monotonic()
    ctx["a"] = sid = sb["id"]
    assert sb["status"] == "running" and sb["timeout_sec"] == TTL, sb
    elapsed = wait_autopaused(s, sid, t_created)
    print(f"    create took {t_created - t0:.2f}s; read paused {elapsed:.1f}s after create")
    wait_until(lambda: not s.qemu_pids(sid), 10, what=f"QEMU of {sid} gone")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/ping"), 409, "invalid_state", "ping on auto-paused")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "echo"}), 409, "invalid_state",
                 "exec on auto-paused")
    st, lst = s.request("GET", "/v1/sandboxes?status=paused")
    assert st == 200 and sid in [x["id"] for x in lst], f"?status=paused: {lst}"
    assert s.status_of(sid) == "paused", "a refused ping/exec changed the status"


def test_resume_keeps_ttl_and_pauses_again(s):
    sid = ctx["a"]
    st, sb = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    t_resumed = time.monotonic()
    assert st == 200 and sb["status"] == "running", f"resume: {st} {sb}"
    assert sb["timeout_sec"] == TTL, f"TTL lost on resume: {sb}"
    elapsed = wait_autopaused(s, sid, t_resumed)
    print(f"    paused again {elapsed:.1f}s after resume")
    st, sb = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and sb["timeout_sec"] == TTL, f"second resume: {st} {sb}"
    s.destroy(sid)


def test_pinged_sandbox_stays_running(s):
    ctx["c"] = s.create({"template": "minimal", "memory_mb": 128})["id"]            # timeout 0: never pauses
    ctx["b"] = sid = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": TTL})["id"]
    start = time.monotonic()
    for i in range(1, 21):
        # Pace pings on a deadline schedule (two per second, for 10 s), not
        # by sleep alone: a ping delayed by a loaded host still leaves the
        # gap between two pings well under the TTL.
        delay = start + i * 0.5 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        st, body = s.request("POST", f"/v1/sandboxes/{sid}/ping")
        assert st == 204, f"ping #{i} at {time.monotonic() - start:.1f}s: {st} {body}"
    assert s.status_of(sid) == "running", "pinged twice a second but not running"
    assert len(s.qemu_pids(sid)) == 1, "pinged sandbox lost its QEMU"


def test_timeout_zero_never_pauses(s):
    sid = ctx["c"]
    # c has been idle for the whole ping loop (> TTL + reaper + reconcile).
    st, sb = s.request("GET", f"/v1/sandboxes/{sid}")
    assert sb["status"] == "running" and sb["timeout_sec"] == 0, sb
    assert len(s.qemu_pids(sid)) == 1


def test_long_exec_keeps_it_running(s):
    sid = ctx["b"]
    r = s.exec(sid, "sleep 7; echo done", timeout_sec=60)
    assert (r["stdout"], r["exit_code"]) == ("done\n", 0), f"exec longer than the TTL: {r}"
    assert s.status_of(sid) == "running", "paused during/right after a running exec"
    t_last = time.monotonic()
    elapsed = wait_autopaused(s, sid, t_last)
    print(f"    paused {elapsed:.1f}s after its last exec")
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/ping"), 409, "invalid_state", "ping on paused")
    s.destroy(sid)


def test_set_timeout_on_running_sandbox(s):
    sid = ctx["c"]
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_sec": TTL})
    t_set = time.monotonic()
    assert st in (200, 204), f"POST timeout: {st} {body}"
    st, sb = s.request("GET", f"/v1/sandboxes/{sid}")
    assert sb["timeout_sec"] == TTL, f"timeout not changed: {sb}"
    elapsed = wait_autopaused(s, sid, t_set)
    print(f"    paused {elapsed:.1f}s after its timeout was set to {TTL}")
    st, sb = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and sb["timeout_sec"] == TTL, f"resume after POST timeout: {st} {sb}"
    s.destroy(sid)


def test_vm_killed_from_outside_reads_stopped(s):
    sid = s.create({"template": "minimal", "memory_mb": 128})["id"]
    pids = s.qemu_pids(sid)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    s.wait_status(sid, "stopped", REAPER + RECONCILE + SLACK + 5)
    st, lst = s.request("GET", "/v1/sandboxes")
    assert sid not in [x["id"] for x in lst], f"list still shows the dead sandbox: {lst}"


def test_agent_sigkilled_after_autopause_keeps_paused(s):
    sid = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": TTL})["id"]
    # With the control plane down, no reconciler can record the auto-pause
    # before the agent dies: only the agent's journal can carry it.
    s.stop_cp()
    # The agent logs this line after the journal append (agent/lifecycle.c).
    s.agent.wait_log(rf"event=sandbox_paused\b[^\n]*sandbox_id={sid}\b[^\n]*reason=inactivity",
                     TTL + REAPER + SLACK + 10, what=f"agent log of the auto-pause of {sid}")
    wait_until(lambda: not s.qemu_pids(sid), 30, what=f"QEMU of {sid} gone")
    # The notice must be on disk before the agent dies: the restarted agent
    # would list the snapshot as paused even without it, so only this shows
    # the journal did its job.
    journal = os.path.join(s.state_dir, "agent", "auto_paused.journal")
    with open(journal, "rb") as f:
        records = f.read().decode(errors="replace").splitlines()
    assert f"P {sid}" in records, f"auto-pause of {sid} not in the journal {journal}: {records}"
    s.kill_agent(signal.SIGKILL)
    migrations = s.sql("SELECT count(*) FROM schema_migrations")
    rows = s.sql(f"SELECT status FROM sandboxes WHERE id = '{sid}'")
    assert rows == [["running"]], f"DB changed while the control plane was down: {rows}"
    s.start_agent()
    s.start_cp()
    assert s.sql("SELECT count(*) FROM schema_migrations") == migrations, \
        "a control-plane restart applied migrations again"
    s.wait_status(sid, "paused", RECONCILE + SLACK + 10)
    # The notice was delivered from the journal and acknowledged only after
    # the paused row was committed (apply -> commit -> ack).
    m = s.cp.wait_log(rf"event=auto_pause_acked sandbox_id={sid}\b", RECONCILE + SLACK,
                      what=f"control plane ack of the auto-pause of {sid}")
    log = s.cp.log_text(since_start=True)
    change = re.search(rf"event=reconcile_change sandbox_id={sid}\b[^\n]*from=running to=paused auto_paused=1",
                       log)
    assert change, f"the reconciler did not record running -> paused from the notice of {sid}"
    assert change.start() < m.start(), "the ack was logged before the paused row was committed"
    # And it stays paused: poll across a whole reconcile interval (a later
    # pass must not turn it into stopped).
    deadline = time.monotonic() + RECONCILE + 1
    while time.monotonic() < deadline:
        assert s.status_of(sid) == "paused", "paused row flipped after a later reconcile"
        time.sleep(0.5)
    st, sb = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and sb["status"] == "running" and sb["timeout_sec"] == TTL, f"resume: {st} {sb}"
    assert s.exec(sid, "echo back")["stdout"] == "back\n"
    s.destroy(sid)


TESTS = [
    test_idle_sandbox_is_paused,
    test_resume_keeps_ttl_and_pauses_again,
    test_pinged_sandbox_stays_running,
    test_timeout_zero_never_pauses,
    test_long_exec_keeps_it_running,
    test_set_timeout_on_running_sandbox,
    test_vm_killed_from_outside_reads_stopped,
    test_agent_sigkilled_after_autopause_keeps_paused,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("autopause", reconcile_interval=RECONCILE, reaper_interval=REAPER),
                       TESTS))
