#!/usr/bin/env python3
"""Quota and capacity (issue 10), real stack, minimal template, 128 MiB:
`torpor-cp teams set-quota` limits a team (running + paused) and a create
beyond it is 429 quota_exceeded while another team is unaffected; an agent
whose admission control has no room (a tiny --memory-overcommit) makes a
create 503 no_capacity with Retry-After, and leaves no row behind."""

import http.client
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, check_answer, expect_error, run_tests, wait_until  # noqa: E402


def set_quota(s, team, *args):
    out = subprocess.run([s.cp_bin, "teams", "set-quota", "--team", team, "--database-url", s.db_url, *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"teams set-quota failed: {out.stderr}"


def test_create_beyond_team_quota_is_429(s):
    set_quota(s, "team-a", "--max-sandboxes", "1")
    a = s.create({"template": "minimal", "memory_mb": 128})["id"]
    st, body = s.request("POST", f"/v1/sandboxes/{a}/pause")
    assert st == 200, f"pause: {st} {body}"
    # A paused sandbox still counts.
    expect_error(s.request("POST", "/v1/sandboxes", {"template": "minimal", "memory_mb": 128}), 429, "quota_exceeded",
                 "create over the sandbox quota")
    # Team b has no quota.
    b = s.create({"template": "minimal", "memory_mb": 128}, key=s.key_b)["id"]
    s.destroy(b, key=s.key_b)
    # Memory quota.
    set_quota(s, "team-a", "--max-sandboxes", "10", "--max-memory-mb", "200")
    st, body = s.request("POST", "/v1/sandboxes", {"template": "minimal", "memory_mb": 128})
    expect_error((st, body), 429, "quota_exceeded", "create over the memory quota")
    assert "MiB" in body["error"]["message"], body
    # Lifted.
    set_quota(s, "team-a")
    c = s.create({"template": "minimal", "memory_mb": 128})["id"]
    s.destroy(c)
    s.destroy(a)


def test_create_on_a_full_host_is_503_no_capacity(s):
    s.agent_extra = ["--memory-overcommit", "0.001"]
    s.restart_agent(signal.SIGTERM)
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=180)
    try:
        conn.request("POST", "/v1/sandboxes", body=json.dumps({"template": "minimal", "memory_mb": 128}),
                     headers={"X-API-Key": s.key_a, "Content-Type": "application/json"})
        resp = conn.getresponse()
        body = check_answer("POST", "/v1/sandboxes", resp.status, resp.getheaders(), resp.read())
        retry_after = resp.getheader("Retry-After")
    finally:
        conn.close()
    print(f"    create on a full host: {resp.status} Retry-After={retry_after} {body}")
    assert resp.status == 503 and body["error"]["code"] == "no_capacity", body
    # Refused by the agent's admission control, or already by the scheduler
    # once a probe has recorded the agent's new (tiny) admission limit.
    msg = body["error"]["message"]
    assert "overcommit" in msg or "no host has room" in msg, body
    assert retry_after and int(retry_after) > 0, retry_after
    rows = s.sql("SELECT id, status FROM sandboxes WHERE status = 'pending'")
    assert rows == [], f"a refused create left rows: {rows}"
    s.agent_extra = []
    s.restart_agent(signal.SIGTERM)
    # The scheduler places by the admission limit the agent last reported
    # (GetHostInfo.memory_capacity_mb): the next probe brings the new one.
    wait_until(lambda: int(s.sql("SELECT coalesce(memory_capacity_mb, 0) FROM hosts "
                                 "WHERE id = 'default'")[0][0]) >= 128, 30,
               what="the agent's new admission limit recorded")
    c = s.create({"template": "minimal", "memory_mb": 128})["id"]
    s.destroy(c)


TESTS = [
    test_create_beyond_team_quota_is_429,
    test_create_on_a_full_host_is_503_no_capacity,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("quota"), TESTS))
