#!/usr/bin/env python3
"""An auto-pause that fails while the VM is alive (issue 10), real QEMU: the
sandbox's directory is made immutable (chattr +i: even root cannot create the
snapshot file, like ENOSPC/EMFILE would), so its auto-pause fails; it stays
running (exec works, its QEMU is the same process), the agent logs
auto_pause_failed outcome=still_running, and once the directory is writable
again a later reaper tick (after the back-off) pauses it."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, run_tests, wait_until  # noqa: E402


def chattr(flag, path):
    subprocess.run(["chattr", flag, path], check=True)


def test_failed_autopause_keeps_a_live_vm_running_then_pauses_it(s):
    sid = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": 3})["id"]
    pids = s.qemu_pids(sid)
    assert len(pids) == 1, pids
    d = s.sandbox_dir(sid)
    chattr("+i", d)
    try:
        s.agent.wait_log(rf"event=auto_pause_failed sandbox_id={sid} outcome=still_running", 60,
                         what="a failed auto-pause of a live VM")
        # Still the same VM, still running, still usable.
        assert s.status_of(sid) == "running"
        assert s.qemu_pids(sid) == pids, f"QEMU changed: {pids} -> {s.qemu_pids(sid)}"
        r = s.exec(sid, "echo alive")
        assert r["stdout"] == "alive\n", r
    finally:
        chattr("-i", d)
    t0 = time.monotonic()
    s.wait_status(sid, "paused", 60)
    print(f"    paused {time.monotonic() - t0:.1f}s after the directory became writable again")
    wait_until(lambda: not s.qemu_pids(sid), 20, what=f"QEMU of {sid} gone")
    assert "outcome=vm_gone" not in s.agent.log_text(), "a live VM was treated as gone"
    s.destroy(sid)


TESTS = [test_failed_autopause_keeps_a_live_vm_running_then_pauses_it]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("apfail", reaper_interval=1), TESTS))
