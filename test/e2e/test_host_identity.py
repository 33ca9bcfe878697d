#!/usr/bin/env python3
"""Agent identity (review MAJOR 2): the control plane records the identity of
the agent that answers for a host and, while a DIFFERENT agent answers at
that address (here: the agent restarted on a new, empty state dir), changes
nothing for the host -- no row goes stopped, nothing is destroyed -- and logs
event=agent_identity_mismatch every pass. When the right agent is back, its
sandboxes are still there and usable. Also: the agent's id persists across a
restart on the same state dir, `torpor-cp hosts reset-identity` lets the next
agent be recorded, and a --transition-grace below the longest agent deadline
is a usage error."""

import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, run_tests, wait_until  # noqa: E402

RECONCILE = 0.5  # short passes: "3 passes" takes seconds
PASSES = 3
ID_RE = r"ag-[0-9a-f]{16}"

ctx = {}


def agent_id_logged(s):
    """The agent_id of the agent's latest start (from its agent_ready line)."""
    m = s.agent.wait_log(r"event=agent_ready\b[^\n]*\bagent_id=(" + ID_RE + ")", 60, what="agent_ready agent_id")
    return m.group(1)


def recorded_id(s):
    # Prefixed: s.sql drops empty lines, and '' is a valid value here.
    rows = s.sql("SELECT 'id:' || agent_id FROM hosts WHERE id = 'default'")
    assert len(rows) == 1 and rows[0][0].startswith("id:"), f"host default: {rows}"
    return rows[0][0][3:]


def cp_log_since(s, offset):
    return s.cp.log_text()[offset:]


def cp_log_len(s):
    return len(s.cp.log_text())


def mismatch_lines(s, offset, got):
    pat = re.compile(r"level=error event=agent_identity_mismatch host_id=default\b[^\n]*\bgot=\"" + got + "\"[^\n]*")
    return pat.findall(cp_log_since(s, offset))


def row_status(s, sid):
    rows = s.sql(f"SELECT status FROM sandboxes WHERE id = '{sid}'")
    assert len(rows) == 1, f"row of {sid}: {rows}"
    return rows[0][0]


def test_identity_is_recorded(s):
    aid = agent_id_logged(s)
    with open(os.path.join(s.state_dir, "agent", "agent_id")) as f:
        assert f.read().strip() == aid, "agent_id file differs from the id the agent reports"
    wait_until(lambda: recorded_id(s) == aid, 30, what=f"hosts.agent_id = {aid}")
    ctx["id"] = aid


def test_identity_persists_across_restart(s):
    s.restart_agent(signal.SIGTERM)
    assert agent_id_logged(s) == ctx["id"], "the agent got a new id on the same state dir"
    with open(os.path.join(s.state_dir, "agent", "agent_id")) as f:
        assert f.read().strip() == ctx["id"]


def test_wrong_agent_changes_nothing(s):
    running = s.create({"template": "minimal", "memory_mb": 128})["id"]
    paused = s.create({"template": "minimal", "memory_mb": 128})["id"]
    assert s.exec(running, "echo before > /tmp/mark")["exit_code"] == 0
    st, body = s.request("POST", f"/v1/sandboxes/{paused}/pause")
    assert st == 200 and body["status"] == "paused", f"pause: {st} {body}"
    ctx["running"], ctx["paused"] = running, paused

    other = os.path.join(s.tmp, "state-other")
    os.makedirs(other)
    offset = cp_log_len(s)
    s.restart_agent(signal.SIGTERM, state_dir=other)
    new_id = agent_id_logged(s)
    assert new_id != ctx["id"], "a new empty state dir must give a new agent id"

    # PASSES consecutive reconcile passes see the wrong agent (which holds
    # nothing): every one must log the mismatch and change nothing.
    wait_until(lambda: len(mismatch_lines(s, offset, new_id)) >= PASSES, 30,
               what=f"{PASSES} agent_identity_mismatch lines")
    log = cp_log_since(s, offset)
    line = mismatch_lines(s, offset, new_id)[0]
    assert f"expected={ctx['id']}" in line and "hosts reset-identity --id default" in line, line
    assert row_status(s, running) == "running", f"{running} changed under a wrong agent"
    assert row_status(s, paused) == "paused", f"{paused} changed under a wrong agent"
    assert recorded_id(s) == ctx["id"], "the wrong agent's id was recorded"
    for bad in ("event=reconcile_change", "event=orphan_destroyed", "event=paused_sandbox_missing",
                "event=auto_pause_acked"):
        assert bad not in log, f"{bad} logged while the wrong agent answered:\n{log}"

    # The right agent again: its sandboxes are still there and usable.
    offset = cp_log_len(s)
    s.restart_agent(signal.SIGTERM)
    assert agent_id_logged(s) == ctx["id"]
    wait_until(lambda: "event=reconcile_recovered host_id=default" in cp_log_since(s, offset), 30,
               what="reconcile_recovered")
    res = s.exec(running, "cat /tmp/mark")
    assert res["exit_code"] == 0 and "before" in res["stdout"], f"state lost: {res}"
    st, body = s.request("POST", f"/v1/sandboxes/{paused}/resume")
    assert st == 200 and body["status"] == "running", f"resume: {st} {body}"
    assert row_status(s, running) == "running" and row_status(s, paused) == "running"
    assert "event=orphan_destroyed" not in cp_log_since(s, offset)


def test_reset_identity(s):
    def cp(*args):
        return subprocess.run([s.cp_bin, *args, "--database-url", s.db_url], capture_output=True, text=True,
                              timeout=60)
    out = cp("hosts", "reset-identity", "--id", "no-such-host")
    assert out.returncode == 1 and "no-such-host" in out.stderr, f"{out.returncode} {out.stderr}"
    offset = cp_log_len(s)
    out = cp("hosts", "reset-identity", "--id", "default")
    assert out.returncode == 0, f"reset-identity: {out.returncode} {out.stderr}"
    # The next pass records the agent that answers now.
    wait_until(lambda: "event=agent_identity_recorded host_id=default agent_id=" + ctx["id"]
               in cp_log_since(s, offset), 30, what="identity recorded again")
    assert recorded_id(s) == ctx["id"]

    out = cp("keys", "create", "--team", "t-grace", "--transition-grace", "10")
    assert out.returncode == 2 and "--transition-grace" in out.stderr, f"{out.returncode} {out.stderr}"
    for sid in (ctx["running"], ctx["paused"]):
        s.destroy(sid)


if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("identity", reconcile_interval=RECONCILE),
                       [test_identity_is_recorded, test_identity_persists_across_restart,
                        test_wrong_agent_changes_nothing, test_reset_identity]))
