#!/usr/bin/env python3
"""Auto-resume right after an auto-pause (issue 9): the agent's reaper pauses
an idle sandbox at once, but its row reads `running` until the next
reconcile pass hears of it. A call in that window to an `auto_resume`
sandbox must wake it, not answer 409; a sandbox without auto_resume answers
409 `invalid_state` as for any paused sandbox.

The reconcile interval is long (60 s) so the window stays open for the
test; the reaper's is short so the auto-pause comes soon."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, expect_error, run_tests  # noqa: E402

TTL = 2


def auto_paused_but_row_running(s, auto_resume):
    sb = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": TTL,
                   "auto_resume": auto_resume})
    sid = sb["id"]
    s.agent.wait_log(rf"event=sandbox_paused sandbox_id={sid} reason=inactivity", 60,
                     what=f"the agent's auto-pause of {sid}")
    # The window under test: the agent paused it, the row has not heard.
    assert s.status_of(sid) == "running", "the row heard of the auto-pause: nothing tested"
    return sid


def test_exec_in_the_window_wakes_an_auto_resume_sandbox(s):
    sid = auto_paused_but_row_running(s, True)
    r = s.exec(sid, "echo awake")
    assert r["stdout"] == "awake\n" and r["exit_code"] == 0, r
    assert s.status_of(sid) == "running"
    log = s.cp.log_text()
    assert f"event=sandbox_settled sandbox_id={sid} from=running to=paused" in log, \
        "the row was not settled from the agent's answer"
    assert f"event=sandbox_auto_resumed sandbox_id={sid}" in log


def test_file_read_in_the_window_wakes_an_auto_resume_sandbox(s):
    sid = auto_paused_but_row_running(s, True)
    st, body = s.request("GET", f"/v1/sandboxes/{sid}/files?path=/")
    assert st == 200, f"list / in the window: {st} {body}"
    assert "tmp" in [e["name"] for e in body["entries"]], body


def test_exec_in_the_window_without_auto_resume_is_409(s):
    sid = auto_paused_but_row_running(s, False)
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "true"}), 409,
                 "invalid_state", "exec on an auto-paused sandbox without auto_resume")


TESTS = [
    test_exec_in_the_window_wakes_an_auto_resume_sandbox,
    test_file_read_in_the_window_wakes_an_auto_resume_sandbox,
    test_exec_in_the_window_without_auto_resume_is_409,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("arwindow", reconcile_interval=60, reaper_interval=1), TESTS))
