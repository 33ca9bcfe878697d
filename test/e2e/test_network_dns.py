#!/usr/bin/env python3
"""DNS in sandboxes (issue 9, docs/network.md "DNS"): the guest's resolver is
the agent's forwarder on its gateway 10.0.0.1, which asks the upstream given
with --dns-upstream; names resolve when the sandbox's egress policy allows
DNS and do not when it is deny, an allow entry naming the resolver opens it,
a policy change applies at once, and the forwarder comes back after an agent
restart.

The only upstream is a tiny DNS server (stdlib UDP socket, one fixed A
record) that this test places inside a network namespace it creates
("td-<pid>", 198.18.N.53 on a veth to the host). Nothing else is a target."""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, run_tests, wait_until  # noqa: E402

N = os.getpid() % 200 + 20
NS = f"td-{os.getpid()}"
VETH = f"tdt{os.getpid() % 100000}"
HOST_SIDE = f"198.18.{N}.254"
RESOLVER = f"198.18.{N}.53"
NAME = "hello.torpor.test"
ANSWER = f"198.18.{N}.7"
ctx = {}

# A DNS server answering NAME with ANSWER (A), NOERROR/empty for NAME's other
# types and NXDOMAIN for anything else; it counts the queries it answered.
SERVER = r"""
import socket, struct, sys
addr, name, answer, count_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
n = 0
while True:
    q, peer = s.recvfrom(4096)
    if len(q) < 12:
        continue
    off, labels = 12, []
    while off < len(q) and q[off]:
        labels.append(q[off + 1:off + 1 + q[off]].decode(errors="replace"))
        off += 1 + q[off]
    qtype = struct.unpack("!H", q[off + 1:off + 3])[0]
    question = q[12:off + 5]
    asked = ".".join(labels).lower()
    if asked == name and qtype == 1:
        body = struct.pack("!HHHH", 1, 1, 0, 0) + question
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(answer)
        flags = 0x8180
    else:
        body = struct.pack("!HHHH", 1, 0, 0, 0) + question
        flags = 0x8180 if asked == name else 0x8183
    s.sendto(q[:2] + struct.pack("!H", flags) + body, peer)
    n += 1
    with open(count_file, "w") as f:
        f.write(str(n))
"""


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def queries_answered():
    try:
        with open(ctx["count"]) as f:
            return int(f.read() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def setup_test_net():
    ctx["tmp"] = tempfile.mkdtemp(prefix="torpor-dns-")
    ctx["count"] = os.path.join(ctx["tmp"], "count")
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NS)
    sh("ip", "addr", "add", f"{HOST_SIDE}/24", "dev", VETH)
    sh("ip", "link", "set", VETH, "up")
    sh("ip", "-n", NS, "addr", "add", f"{RESOLVER}/24", "dev", "eth0")
    sh("ip", "-n", NS, "link", "set", "lo", "up")
    sh("ip", "-n", NS, "link", "set", "eth0", "up")
    script = os.path.join(ctx["tmp"], "dns.py")
    with open(script, "w") as f:
        f.write(SERVER)
    ctx["server"] = subprocess.Popen(["ip", "netns", "exec", NS, "python3", script, RESOLVER, NAME, ANSWER,
                                      ctx["count"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # ready when it answers a query from the host side
    probe = ["python3", "-c",
             "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1);"
             f"s.sendto(b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x01x\\x00\\x00\\x01\\x00\\x01',"
             f"('{RESOLVER}',53)); sys.exit(0 if s.recv(512)[:2]==b'\\x12\\x34' else 1)"]
    wait_until(lambda: subprocess.run(probe, capture_output=True).returncode == 0, 20, what="test DNS server")


def teardown_test_net():
    p = ctx.get("server")
    if p:
        p.kill()
        p.wait()
    sh("ip", "link", "del", VETH, check=False)
    sh("ip", "netns", "del", NS, check=False)


class DnsStack(Stack):
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


def resolves(s, sid):
    """True when NAME resolves to ANSWER in the guest (busybox nslookup,
    which reads the guest's /etc/resolv.conf)."""
    r = s.exec(sid, f"timeout 8 nslookup -type=a {NAME}", timeout_sec=20)
    return r["exit_code"] == 0 and ANSWER in r["stdout"]


def put_network(s, sid, policy):
    st, sb = s.request("PUT", f"/v1/sandboxes/{sid}/network", policy)
    assert st == 200, (st, sb)


def test_guest_resolver_is_the_gateway(s):
    sb = s.create({"template": "minimal", "memory_mb": 128})
    ctx["id"] = sb["id"]
    r = s.exec(sb["id"], "cat /etc/resolv.conf")
    assert r["stdout"].split() == ["nameserver", "10.0.0.1"], r


def test_name_resolves_when_egress_allows(s):
    before = queries_answered()
    assert resolves(s, ctx["id"]), f"{NAME} must resolve to {ANSWER} under the default policy"
    assert queries_answered() > before, "the answer must come from the test's upstream"


def test_unknown_name_is_nxdomain_not_a_timeout(s):
    t0 = time.monotonic()
    r = s.exec(ctx["id"], "timeout 8 nslookup -type=a nothing.torpor.test", timeout_sec=20)
    assert r["exit_code"] != 0 and ANSWER not in r["stdout"], r
    assert time.monotonic() - t0 < 6, "an NXDOMAIN answer comes back, not a timeout"


def test_name_does_not_resolve_when_egress_is_deny(s):
    sb = s.create({"template": "minimal", "memory_mb": 128, "network": {"egress": "deny"}})
    ctx["deny_id"] = sb["id"]
    before = queries_answered()
    assert not resolves(s, sb["id"]), "egress deny: no DNS"
    assert queries_answered() == before, "no query may reach the upstream"


def test_allow_entry_naming_the_resolver_opens_dns(s):
    sid = ctx["deny_id"]
    put_network(s, sid, {"egress": "deny", "allow": [f"{RESOLVER}/32:53"]})
    assert resolves(s, sid), "an allow entry naming the resolver must open DNS"
    put_network(s, sid, {"egress": "deny", "allow": [f"{HOST_SIDE}/32"]})
    assert not resolves(s, sid), "an allow entry for another address must not"


def test_deny_entry_naming_the_resolver_closes_dns(s):
    sid = ctx["id"]
    put_network(s, sid, {"egress": "allow", "deny": [f"{RESOLVER}/32"]})
    assert not resolves(s, sid), "a deny entry naming the resolver must close DNS"
    put_network(s, sid, {"egress": "allow"})
    assert resolves(s, sid), "and the change back opens it again"


def test_dns_works_after_pause_resume_and_agent_restart(s):
    sid = ctx["id"]
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200, (st, body)
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200, (st, body)
    assert resolves(s, sid), "DNS after resume"
    s.restart_agent()
    wait_until(lambda: s.request("POST", f"/v1/sandboxes/{sid}/ping")[0] == 204, 60, what="ping after restart")
    assert resolves(s, sid), "DNS after an agent restart (the forwarder re-attaches the namespace)"
    assert not resolves(s, ctx["deny_id"]), "and a sandbox without DNS stays without"


TESTS = [
    test_guest_resolver_is_the_gateway,
    test_name_resolves_when_egress_allows,
    test_unknown_name_is_nxdomain_not_a_timeout,
    test_name_does_not_resolve_when_egress_is_deny,
    test_allow_entry_naming_the_resolver_opens_dns,
    test_deny_entry_naming_the_resolver_closes_dns,
    test_dns_works_after_pause_resume_and_agent_restart,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: DnsStack("network-dns", agent_args=["--dns-upstream", RESOLVER]), TESTS))
