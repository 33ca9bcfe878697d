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
    sb = s.create({"memory_mb": 128})
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


TESTS = [
    test_guest_has_its_fixed_address,
    test_default_policy_reaches_a_public_range_server,
    test_refused_range_server_is_unreachable,
    test_host_address_is_unreachable,
    test_namespace_gateway_is_unreachable,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: NetStack("network"), TESTS))
