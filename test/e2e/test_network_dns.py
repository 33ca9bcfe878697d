#!/usr/bin/env python3
"""DNS in sandboxes (issue 9, docs/network.md "DNS"): the guest's resolver is
the agent's forwarder on its gateway 10.0.0.1, which asks the upstream given
with --dns-upstream; names resolve when the sandbox's egress policy allows
DNS and do not when it is deny, an allow entry naming the resolver opens it,
a policy change applies at once, and the forwarder comes back after an agent
restart. A name whose answer does not fit UDP (TC set) resolves over TCP to
10.0.0.1:53, whole; with egress deny TCP gets no answer either.

The only upstream is a tiny DNS server (stdlib UDP and TCP sockets, one fixed
A record, and a name with BIG_RECORDS A records) that this test places
inside a network namespace it creates ("td-<pid>", 198.18.N.53 on a veth to
the host). Nothing else is a target."""

import os
import struct
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
BIG_NAME = "big.torpor.test"
BIG_RECORDS = 40  # 16 bytes each: 673 bytes in all, over UDP's 512
BIG_ANSWERS = [f"198.18.{N}.{100 + k}" for k in range(BIG_RECORDS)]
ctx = {}

# A DNS server answering NAME with ANSWER (A), BIG_NAME with BIG_RECORDS A
# records (over UDP only the header with TC set: the client must ask again
# over TCP), NOERROR/empty for their other types and NXDOMAIN for anything
# else, over UDP and TCP (port 53 both); it counts the queries it answered
# (all, and those over TCP).
SERVER = r"""
import socket, struct, sys, threading
addr, name, answer, big, count_file = sys.argv[1:6]
big_answers = [socket.inet_aton(answer.rsplit(".", 1)[0] + "." + str(100 + k)) for k in range(40)]
lock = threading.Lock()
counts = [0, 0]

def answer_for(q, tcp):
    if len(q) < 12:
        return None
    off, labels = 12, []
    while off < len(q) and q[off]:
        labels.append(q[off + 1:off + 1 + q[off]].decode(errors="replace"))
        off += 1 + q[off]
    qtype = struct.unpack("!H", q[off + 1:off + 3])[0]
    question = q[12:off + 5]
    asked = ".".join(labels).lower()
    flags = 0x8180
    if asked == name and qtype == 1:
        body = struct.pack("!HHHH", 1, 1, 0, 0) + question
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(answer)
    elif asked == big and qtype == 1 and not tcp:
        body = struct.pack("!HHHH", 1, 0, 0, 0) + question
        flags = 0x8380  # TC
    elif asked == big and qtype == 1:
        body = struct.pack("!HHHH", 1, len(big_answers), 0, 0) + question
        for a in big_answers:
            body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + a
    else:
        body = struct.pack("!HHHH", 1, 0, 0, 0) + question
        flags = 0x8180 if asked in (name, big) else 0x8183
    with lock:
        counts[0] += 1
        counts[1] += tcp
        with open(count_file, "w") as f:
            f.write("%d %d" % (counts[0], counts[1]))
    return q[:2] + struct.pack("!H", flags) + body

def recv_exact(c, n):
    b = b""
    while len(b) < n:
        r = c.recv(n - len(b))
        if not r:
            return None
        b += r
    return b

def tcp_conn(c):
    with c:
        c.settimeout(10)
        try:
            while True:
                l = recv_exact(c, 2)
                q = l and recv_exact(c, struct.unpack("!H", l)[0])
                a = q and answer_for(q, 1)
                if not a:
                    return
                c.sendall(struct.pack("!H", len(a)) + a)
        except OSError:
            pass

def tcp_server():
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, 53))
    t.listen(16)
    while True:
        c, _ = t.accept()
        threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
threading.Thread(target=tcp_server, daemon=True).start()
while True:
    q, peer = s.recvfrom(4096)
    a = answer_for(q, 0)
    if a:
        s.sendto(a, peer)
"""


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def answered_counts():
    """(all queries, queries over TCP) the test's upstream answered."""
    try:
        with open(ctx["count"]) as f:
            a, t = f.read().split()
            return int(a), int(t)
    except (FileNotFoundError, ValueError):
        return 0, 0


def queries_answered():
    return answered_counts()[0]


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
                                      BIG_NAME, ctx["count"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def dns_query(name, qid):
    """A standard query for name, type A, with one question (no EDNS0)."""
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def tcp_lookup(s, sid, name, qid=0x1234):
    """Asks 10.0.0.1:53 over TCP from the guest: busybox nc sends the framed
    query (printf, octal escapes) and the answer comes back as hex (od).
    The answer's A records as dotted quads, or None without an answer."""
    q = dns_query(name, qid)
    framed = struct.pack("!H", len(q)) + q
    octal = "".join("\\%03o" % b for b in framed)
    r = s.exec(sid, f"printf '{octal}' | timeout 10 nc -w 5 10.0.0.1 53 | od -An -v -tx1", timeout_sec=30)
    raw = bytes.fromhex("".join(r["stdout"].split()))
    if len(raw) < 14:
        return None
    n = struct.unpack("!H", raw[:2])[0]
    m = raw[2:2 + n]
    assert len(m) == n, f"a framed answer of {n} bytes must come whole, got {len(m)}"
    assert struct.unpack("!H", m[:2])[0] == qid, "the answer carries the guest's own id"
    ancount = struct.unpack("!H", m[6:8])[0]
    off = 12 + len(q) - 12  # the question, echoed
    addrs = []
    for _ in range(ancount):
        off += 2  # a compression pointer to the question's name
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", m[off:off + 10])
        off += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(".".join(str(b) for b in m[off:off + 4]))
        off += rdlen
    return addrs


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


def test_large_answer_resolves_over_tcp(s):
    before_tcp = answered_counts()[1]
    addrs = tcp_lookup(s, ctx["id"], BIG_NAME)
    assert addrs == BIG_ANSWERS, f"{BIG_NAME} over TCP must give all {BIG_RECORDS} records, got {addrs}"
    assert answered_counts()[1] > before_tcp, "the forwarder must ask the upstream over TCP"
    assert tcp_lookup(s, ctx["id"], NAME) == [ANSWER], "a small answer over TCP too"


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


def test_tcp_dns_gets_no_answer_when_egress_is_deny(s):
    before = queries_answered()
    assert tcp_lookup(s, ctx["deny_id"], BIG_NAME) is None, "egress deny: no DNS over TCP"
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
    assert tcp_lookup(s, sid, BIG_NAME) == BIG_ANSWERS, "and DNS over TCP too"
    assert not resolves(s, ctx["deny_id"]), "and a sandbox without DNS stays without"


TESTS = [
    test_guest_resolver_is_the_gateway,
    test_name_resolves_when_egress_allows,
    test_large_answer_resolves_over_tcp,
    test_unknown_name_is_nxdomain_not_a_timeout,
    test_name_does_not_resolve_when_egress_is_deny,
    test_tcp_dns_gets_no_answer_when_egress_is_deny,
    test_allow_entry_naming_the_resolver_opens_dns,
    test_deny_entry_naming_the_resolver_closes_dns,
    test_dns_works_after_pause_resume_and_agent_restart,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: DnsStack("network-dns", agent_args=["--dns-upstream", RESOLVER]), TESTS))
