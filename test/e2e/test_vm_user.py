#!/usr/bin/env python3
"""QEMU confinement (issue 10): an agent running as root runs every QEMU as
the unprivileged user torpor-vm by default (no flag; the agent creates the
user when it is missing) under seccomp (-sandbox on,...); its sandbox
directory is 0700 and its RAM file 0600, owned by that user (other uids
cannot read them), templates go back to root once built, and create, exec,
files, pause, resume, an agent restart (re-attach) and destroy all still
work. --vm-user none opts out (QEMU as the agent's user, for debugging)."""

import os
import pwd
import signal
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, run_tests, b64  # noqa: E402

USER = "torpor-vm"
ctx = {}


def qemu_uid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line")


def seccomp_mode(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return -1


def check_confined(s, sid):
    if "pw" not in ctx:
        ctx["pw"] = pwd.getpwnam(USER)  # the agent made sure it exists
    pids = s.qemu_pids(sid)
    assert len(pids) == 1, f"QEMU of {sid}: {pids}"
    uids = qemu_uid(pids[0])
    assert uids == [ctx["pw"].pw_uid] * 4, f"QEMU runs as {uids}, expected {ctx['pw'].pw_uid}"
    assert seccomp_mode(pids[0]) == 2, "QEMU is not under a seccomp filter"
    d = s.sandbox_dir(sid)
    st = os.stat(d)
    assert st.st_uid == ctx["pw"].pw_uid and stat.S_IMODE(st.st_mode) == 0o700, \
        f"{d}: uid {st.st_uid} mode {oct(stat.S_IMODE(st.st_mode))}"
    rs = os.stat(os.path.join(d, "ram"))
    assert rs.st_uid == ctx["pw"].pw_uid and stat.S_IMODE(rs.st_mode) == 0o600, \
        f"ram: uid {rs.st_uid} mode {oct(stat.S_IMODE(rs.st_mode))}"


def test_qemu_runs_as_the_vm_user_with_private_files(s):
    sid = s.create({"template": "minimal", "memory_mb": 128})["id"]
    ctx["id"] = sid
    check_confined(s, sid)
    assert s.exec(sid, "echo confined")["stdout"] == "confined\n"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/files/write",
                         {"path": "/root/f.txt", "content_base64": b64(b"kept\n")})
    assert st == 204, f"files/write: {st} {body}"
    tpl = os.path.join(s.state_dir, "templates")
    for name in os.listdir(tpl):
        ts = os.stat(os.path.join(tpl, name))
        assert ts.st_uid == 0, f"template {name} is owned by uid {ts.st_uid}, not root"
        rs = os.stat(os.path.join(tpl, name, "ram"))
        assert rs.st_uid == 0, f"template {name}/ram is owned by uid {rs.st_uid}, not root"


def test_pause_resume_and_restart_work_as_the_vm_user(s):
    sid = ctx["id"]
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200 and body["status"] == "paused", f"pause: {st} {body}"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and body["status"] == "running", f"resume: {st} {body}"
    check_confined(s, sid)
    assert s.exec(sid, "cat /root/f.txt")["stdout"] == "kept\n"
    s.restart_agent(signal.SIGKILL)
    s.agent.wait_log(r"event=table_recovered", 90, what="re-attach done")
    assert s.exec(sid, "cat /root/f.txt")["stdout"] == "kept\n"
    check_confined(s, sid)
    s.destroy(sid)
    assert not os.path.exists(s.sandbox_dir(sid))


def test_vm_user_none_runs_qemu_as_the_agents_user(s):
    s.agent_extra = ["--vm-user", "none"]
    s.restart_agent(signal.SIGTERM)
    sid = s.create({"template": "minimal", "memory_mb": 128})["id"]
    pids = s.qemu_pids(sid)
    assert len(pids) == 1 and qemu_uid(pids[0]) == [0] * 4, f"QEMU of {sid}: {pids}"
    assert seccomp_mode(pids[0]) == 2, "QEMU is still under a seccomp filter"
    s.destroy(sid)


TESTS = [
    test_qemu_runs_as_the_vm_user_with_private_files,
    test_pause_resume_and_restart_work_as_the_vm_user,
    test_vm_user_none_runs_qemu_as_the_agents_user,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("vmuser"), TESTS))
