#!/usr/bin/env python3
"""Sandbox networking (issue 9, docs/network.md): egress under the sandbox's
policy, refused ranges, the host's own addresses refused, PUT .../network at
runtime with its bad-input answers, the policy kept across pause/resume and
an agent restart.

Traffic goes only to addresses inside a network namespace this test creates
("tn-<pid>", a veth to the host with 198.18.N.0/24 on it; 198.18.0.0/15 is
not in any refused range) and to an address it places inside a refused range
(10.99.N.1 in the same namespace), plus one listener on the host side of its
own veth (a host address). Nothing else is ever a target."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, expect_error, run_tests, wait_until  # noqa: E402

N = os.getpid() % 200 + 20
NS = f"tn-{os.getpid()}"
VETH = f"tnt{os.getpid() % 100000}"
HOST_SIDE = f"198.18.{N}.254"       # on the host: a host address
SERVER = f"198.18.{N}.1"            # in the test namespace: a public-range server
SERVER2 = f"198.18.{N}.2"           # a second one, for allow-list precision
REFUSED = f"10.99.{N}.1"            # in the test namespace, inside 10.0.0.0/8
PORT = 8000
ctx = {}


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def start_server(addr, port, ns=True):
    cmd = ["python3", "-m", "http.server", "--bind", addr, str(port), "--directory", ctx["www"]]
    if ns:
        cmd = ["ip", "netns", "exec", NS] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx.setdefault("procs", []).append(p)
    # ready when it answers from its own side
    probe = ["python3", "-c", f"import urllib.request as u; u.urlopen('http://{addr}:{port}/hello.txt', timeout=1)"]
    if ns:
        probe = ["ip", "netns", "exec", NS] + probe
    wait_until(lambda: subprocess.run(probe, capture_output=True).returncode == 0, 20,
               what=f"test server {addr}:{port}")


def setup_test_net():
    import tempfile
    ctx["www"] = tempfile.mkdtemp(prefix="torpor-net-www-")
    with open(os.path.join(ctx["www"], "hello.txt"), "w") as f:
        f.write("hello from the test namespace\n")
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NS)
    sh("ip", "addr", "add", f"{HOST_SIDE}/24", "dev", VETH)
    sh("ip", "link", "set", VETH, "up")
    for a in (f"{SERVER}/24", f"{SERVER2}/24"):
        sh("ip", "-n", NS, "addr", "add", a, "dev", "eth0")
    sh("ip", "-n", NS, "addr", "add", f"{REFUSED}/32", "dev", "lo")
    sh("ip", "-n", NS, "link", "set", "lo", "up")
    sh("ip", "-n", NS, "link", "set", "eth0", "up")
    sh("ip", "-n", NS, "route", "add", "default", "via", HOST_SIDE)
    sh("ip", "route", "add", f"{REFUSED}/32", "via", SERVER)
    for a in (SERVER, SERVER2, REFUSED):
        start_server(a, PORT)
    start_server(HOST_SIDE, PORT, ns=False)


def teardown_test_net():
    for p in ctx.get("procs", []):
        p.kill()
        p.wait()
    sh("ip", "route", "del", f"{REFUSED}/32", check=False)
    sh("ip", "link", "del", VETH, check=False)
    sh("ip", "netns", "del", NS, check=False)


class NetStack(Stack):
    def __enter__(self):
        setup_test_net()
        try:
            return super().__enter__()
        except BaseException:
            teardown_test_net()
            raise

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            teardown_test_net()


def reaches(s, sid, addr, port=PORT):
    """True when the guest fetches hello.txt from addr:port (3 s timeout)."""
    # busybox nc (numeric address, no resolver); -w 3: connect and read timeout
    r = s.exec(sid, f"printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {port}", timeout_sec=15)
    ok = r["exit_code"] == 0 and "hello from the test namespace" in r["stdout"]
    return ok


def test_guest_has_its_fixed_address(s):
    sb = s.create({"template": "minimal", "memory_mb": 128})
    ctx["id"] = sid = sb["id"]
    r = s.exec(sid, "ip -4 addr show eth0")
    assert "inet 10.0.0.2/24" in r["stdout"], r


def test_default_policy_reaches_a_public_range_server(s):
    assert reaches(s, ctx["id"], SERVER), "default policy: the test server must be reachable"


def test_refused_range_server_is_unreachable(s):
    assert not reaches(s, ctx["id"], REFUSED), f"{REFUSED} (10.0.0.0/8) must be refused"


def test_host_address_is_unreachable(s):
    assert not reaches(s, ctx["id"], HOST_SIDE), f"the host's own address {HOST_SIDE} must be refused"


def test_namespace_gateway_is_unreachable(s):
    # a listener the test places in the sandbox's own namespace, on its gateway address
    ns = "torpor-" + ctx["id"]
    p = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-m", "http.server", "--bind", "10.0.0.1",
                          str(PORT), "--directory", ctx["www"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx["procs"].append(p)
    probe = ["ip", "netns", "exec", ns, "python3", "-c",
             f"import urllib.request as u; u.urlopen('http://10.0.0.1:{PORT}/hello.txt', timeout=1)"]
    wait_until(lambda: subprocess.run(probe, capture_output=True).returncode == 0, 20, what="gateway server")
    assert not reaches(s, ctx["id"], "10.0.0.1"), "the sandbox namespace's own address must be refused"


def put_network(s, sid, policy):
    return s.request("PUT", f"/v1/sandboxes/{sid}/network", policy)


def test_create_shows_the_default_policy(s):
    st, sb = s.request("GET", f"/v1/sandboxes/{ctx['id']}")
    assert st == 200 and sb["network"] == {"egress": "allow", "allow": [], "deny": []}, sb
    assert sb["auto_resume"] is False, sb


def test_create_with_egress_deny_reaches_nothing(s):
    sb = s.create({"template": "minimal", "memory_mb": 128, "network": {"egress": "deny"}})
    ctx["deny_id"] = sb["id"]
    assert sb["network"] == {"egress": "deny", "allow": [], "deny": []}, sb
    assert not reaches(s, sb["id"], SERVER), "egress deny: the test server must be unreachable"


def test_allow_entry_lets_exactly_that_through(s):
    sid = ctx["deny_id"]
    st, sb = put_network(s, sid, {"egress": "deny", "allow": [f"{SERVER}:{PORT}"]})
    assert st == 200, (st, sb)
    assert sb["network"]["allow"] == [f"{SERVER}/32:{PORT}"], sb
    assert reaches(s, sid, SERVER), "the allowed address:port must be reachable"
    assert not reaches(s, sid, SERVER2), "an address next to the allowed one must stay unreachable"


def test_deny_entry_wins_over_default_allow(s):
    sid = ctx["id"]
    st, sb = put_network(s, sid, {"egress": "allow", "deny": [f"{SERVER}/32"]})
    assert st == 200, (st, sb)
    assert not reaches(s, sid, SERVER), "a denied address must be unreachable"
    assert reaches(s, sid, SERVER2), "other addresses stay reachable"


def test_allow_entry_opens_a_refused_range(s):
    sid = ctx["id"]
    st, sb = put_network(s, sid, {"allow": [f"{REFUSED}/32"]})
    assert st == 200, (st, sb)
    assert sb["network"] == {"egress": "allow", "allow": [f"{REFUSED}/32"], "deny": []}, sb
    assert reaches(s, sid, REFUSED), "an allow entry naming a refused range must let it through"
    assert reaches(s, sid, SERVER), "the earlier deny entry is gone with the replaced policy"


def test_another_sandbox_is_unreachable_even_when_its_range_is_allowed(s):
    """A listener the test places in sandbox B's namespace, on B's transit
    address (the only address of B routable from the host); A allows all of
    10.0.0.0/8, so only the host's sandbox-to-sandbox rule stands between."""
    a, b = ctx["id"], ctx["deny_id"]
    out = sh("ip", "-n", f"torpor-{b}", "-4", "-o", "addr", "show", "eth0").stdout
    b_addr = out.split("inet ")[1].split("/")[0]
    ns = f"torpor-{b}"
    p = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-m", "http.server", "--bind", b_addr,
                          str(PORT), "--directory", ctx["www"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx["procs"].append(p)
    probe = ["ip", "netns", "exec", ns, "python3", "-c",
             f"import urllib.request as u; u.urlopen('http://{b_addr}:{PORT}/hello.txt', timeout=1)"]
    wait_until(lambda: subprocess.run(probe, capture_output=True).returncode == 0, 20, what="server in B's namespace")
    st, sb = put_network(s, a, {"allow": ["10.0.0.0/8"]})
    assert st == 200, (st, sb)
    assert reaches(s, a, REFUSED), "the allow entry is in force (10.99.x.1 now reachable)"
    assert not reaches(s, a, b_addr), f"sandbox B ({b_addr}) must be unreachable from sandbox A"
    p.kill()
    p.wait()


def test_bad_policy_is_400_and_changes_nothing(s):
    sid = ctx["deny_id"]
    st, before = s.request("GET", f"/v1/sandboxes/{sid}")
    for bad in ({"allow": ["10.0.0.0/33"]}, {"allow": ["300.1.1.1"]}, {"allow": ["1.2.3.4:0"]},
                {"deny": ["1.2.3.4:65536"]}, {"allow": ["10.0.0.1/8"]}, {"egress": "maybe"},
                {"egress": "deny", "rules": []}, {"allow": "1.2.3.4"}, {"allow": [5]}):
        expect_error(put_network(s, sid, bad), 400, "invalid_request", f"PUT network {bad}")
    st, after = s.request("GET", f"/v1/sandboxes/{sid}")
    assert after["network"] == before["network"], (before, after)
    assert reaches(s, sid, SERVER) and not reaches(s, sid, SERVER2), "the rules must be unchanged"
    st, body = s.request("POST", "/v1/sandboxes", {"network": {"allow": ["nonsense"]}})
    expect_error((st, body), 400, "invalid_request", "create with a bad policy")


def test_policy_survives_pause_and_resume(s):
    sid = ctx["deny_id"]
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200, (st, body)
    # while paused the policy can still change; the resumed VM has the new one
    st, sb = put_network(s, sid, {"egress": "deny", "allow": [f"{SERVER2}/32"]})
    assert st == 200 and sb["status"] == "paused", (st, sb)
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200, (st, body)
    r = s.exec(sid, "ip -4 addr show eth0")
    assert "inet 10.0.0.2/24" in r["stdout"], r
    assert reaches(s, sid, SERVER2), "policy set while paused must hold after resume"
    assert not reaches(s, sid, SERVER), "egress deny must hold after resume"


def test_policy_survives_agent_restart(s):
    s.restart_agent()
    sid = ctx["deny_id"]
    wait_until(lambda: s.request("POST", f"/v1/sandboxes/{sid}/ping")[0] == 204, 60, what="ping after restart")
    assert reaches(s, sid, SERVER2) and not reaches(s, sid, SERVER), "policy must hold after an agent restart"
    st, sb = put_network(s, sid, {"egress": "allow"})
    assert st == 200, (st, sb)
    assert reaches(s, sid, SERVER), "a change after the restart applies"


def test_agent_start_removes_namespaces_of_agents_that_are_gone(s):
    """A namespace and slot of a sandbox whose agent's state dir no longer
    exists (a removed test stack) are removed at the next agent start; those
    of a live agent (this one) are kept."""
    fake_id = f"sb-fee{os.getpid():013x}"[:19]
    ns = f"torpor-{fake_id}"
    sh("ip", "netns", "add", ns)
    slot = "/run/torpor-net/slots/16383"
    assert not os.path.exists(slot), "slot 16383 is in use; pick another for this test"
    with open(slot, "w") as f:
        f.write(f"{fake_id}\n/nonexistent/torpor-gone-{os.getpid()}/net\n")
    try:
        s.restart_agent()
        assert not os.path.exists(f"/run/netns/{ns}"), "the orphan namespace must be removed"
        assert not os.path.exists(slot), "the orphan slot must be released"
        assert os.path.exists(f"/run/netns/torpor-{ctx['id']}"), "a live agent's namespace must stay"
        assert reaches(s, ctx["id"], SERVER), "and keep working"
    finally:
        sh("ip", "netns", "del", ns, check=False)
        if os.path.exists(slot):
            os.unlink(slot)


def test_policy_on_a_stopped_sandbox_is_409(s):
    sid = ctx["deny_id"]
    s.destroy(sid)
    expect_error(put_network(s, sid, {"egress": "allow"}), 409, "invalid_state", "PUT network on a stopped sandbox")
    assert not os.path.exists(f"/run/netns/torpor-{sid}"), "destroy must remove the namespace"


def test_auto_resume_exec_wakes_an_auto_paused_sandbox(s):
    sb = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": 3, "auto_resume": True})
    sid = ctx["ar_id"] = sb["id"]
    assert sb["auto_resume"] is True, sb
    s.wait_status(sid, "paused", 60)
    r = s.exec(sid, "echo awake")
    assert r["stdout"] == "awake\n", r
    assert s.status_of(sid) == "running"
    assert reaches(s, sid, SERVER), "network works after an auto-resume"


def test_auto_resume_concurrent_callers_resume_once(s):
    import threading
    sid = ctx["ar_id"]
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200, (st, body)
    before = s.cp.log_text().count(f"event=sandbox_auto_resumed sandbox_id={sid}")
    results = []

    def call(i):
        results.append(s.request("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": f"echo {i}"}))
    ts = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(st == 200 for st, _ in results), results
    after = s.cp.log_text().count(f"event=sandbox_auto_resumed sandbox_id={sid}")
    assert after - before == 1, f"expected one auto-resume, saw {after - before}"


def test_auto_resume_streamed_file_routes_wake_a_paused_sandbox(s):
    sid = ctx["ar_id"]
    data = b"auto-resume streamed upload\n" * 100
    for method, path, body in (
            ("PUT", "files/content?path=/tmp/ar.bin", data),
            ("GET", "files/content?path=/tmp/ar.bin", None),
            ("GET", "files?path=/tmp", None)):
        st, out = s.request("POST", f"/v1/sandboxes/{sid}/pause")
        assert st == 200, (st, out)
        st, out = s.request(method, f"/v1/sandboxes/{sid}/{path}", body)
        assert st == 200, f"{method} {path} on a paused auto_resume sandbox: {st} {out}"
        if method == "GET" and path.startswith("files/content"):
            assert out == data, f"read back {len(out)} bytes"
        if path.startswith("files?"):
            assert "ar.bin" in [e["name"] for e in out["entries"]], out
        assert s.status_of(sid) == "running"


def test_without_auto_resume_exec_on_paused_is_409(s):
    sb = s.create({"template": "minimal", "memory_mb": 128})
    sid = sb["id"]
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200, (st, body)
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "true"}), 409, "invalid_state",
                 "exec on a paused sandbox without auto_resume")
    s.destroy(sid)


TESTS = [
    test_guest_has_its_fixed_address,
    test_default_policy_reaches_a_public_range_server,
    test_refused_range_server_is_unreachable,
    test_host_address_is_unreachable,
    test_namespace_gateway_is_unreachable,
    test_create_shows_the_default_policy,
    test_create_with_egress_deny_reaches_nothing,
    test_allow_entry_lets_exactly_that_through,
    test_deny_entry_wins_over_default_allow,
    test_allow_entry_opens_a_refused_range,
    test_another_sandbox_is_unreachable_even_when_its_range_is_allowed,
    test_bad_policy_is_400_and_changes_nothing,
    test_policy_survives_pause_and_resume,
    test_policy_survives_agent_restart,
    test_agent_start_removes_namespaces_of_agents_that_are_gone,
    test_policy_on_a_stopped_sandbox_is_409,
    test_auto_resume_exec_wakes_an_auto_paused_sandbox,
    test_auto_resume_concurrent_callers_resume_once,
    test_auto_resume_streamed_file_routes_wake_a_paused_sandbox,
    test_without_auto_resume_exec_on_paused_is_409,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: NetStack("network"), TESTS))
