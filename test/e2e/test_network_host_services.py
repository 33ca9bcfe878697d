#!/usr/bin/env python3
"""The host's services are out of a sandbox's reach as in production (issue
9 "Done when"): the agent (gRPC, mutual TLS) and the control plane (HTTP)
listen on every address (0.0.0.0), and the control plane dials the agent at
a non-loopback address the test gives the host (198.18.N.254, the host side
of a veth to a network namespace the test creates). From a guest, real TCP
connections to the agent's port and to the control plane's port, at that
address and at the host end of the sandbox's own veth, to another
sandbox's namespace, and to a server the test places inside a refused range
(10.99.N.1 in its namespace) all fail, while the allowed test server
(198.18.N.1 in that namespace) answers. Each failing target is first shown
to be listening from the host. Traffic goes only to those addresses."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SOURCE_DIR, run_tests, wait_until  # noqa: E402
import test_network as tn  # noqa: E402  (the test namespace, its servers, reaches())

GEN_CERTS = os.path.join(SOURCE_DIR, "scripts", "gen-certs")
HOST = tn.HOST_SIDE
ctx = tn.ctx


def tls(prefix):
    c = ctx["certs"]
    return ["--tls-cert", os.path.join(c, f"{prefix}.pem"), "--tls-key", os.path.join(c, f"{prefix}.key"),
            "--tls-ca", os.path.join(c, "ca.pem")]


class HostServicesStack(tn.NetStack):
    """Agent and control plane on 0.0.0.0; the control plane dials the agent
    at HOST over mutual TLS (flags given last win over the harness's)."""

    def start_agent(self, state_dir=None):
        self.agent_extra = ["--listen", f"0.0.0.0:{self.agent_port or 0}"] + tls("agent")
        super().start_agent(state_dir)

    def start_cp(self):
        self.cp_extra = ["--http-addr", f"0.0.0.0:{self.http_port or 0}",
                         "--agent-addr", f"{HOST}:{self.agent_port}"] + tls("cp")
        super().start_cp()


def listening_from_host(addr, port):
    try:
        with socket.create_connection((addr, port), timeout=3):
            return True
    except OSError:
        return False


def connects(s, sid, addr, port):
    """True when a TCP connection from the guest to addr:port is established
    (busybox nc, 3 s connect timeout; stdin closed at once)."""
    r = s.exec(sid, f"nc -w 3 {addr} {port} </dev/null; echo rc=$?", timeout_sec=15)
    return "rc=0" in r["stdout"]


def transit_gateway(sid):
    """The host end of the sandbox's veth (its namespace's default route)."""
    out = tn.sh("ip", "-n", f"torpor-{sid}", "-4", "route", "show", "default").stdout
    return out.split("via ")[1].split()[0]


def test_services_listen_on_a_host_address_not_loopback(s):
    assert listening_from_host(HOST, s.agent_port), f"agent gRPC on {HOST}:{s.agent_port}"
    assert listening_from_host(HOST, s.http_port), f"control plane HTTP on {HOST}:{s.http_port}"
    log = open(os.path.join(s.tmp, "cp.log")).read()
    assert f"{HOST}:{s.agent_port}" in log, "the control plane dials the agent at the host address"
    sb = s.create({"template": "minimal", "memory_mb": 128})
    ctx["a"] = sb["id"]
    assert s.exec(sb["id"], "echo up")["stdout"] == "up\n", "the agent serves the control plane over mTLS"


def test_allowed_server_answers(s):
    assert tn.reaches(s, ctx["a"], tn.SERVER), "the allowed test server must answer (the checks below can pass)"
    assert connects(s, ctx["a"], tn.SERVER, tn.PORT), "and nc connects to it"


def test_agent_and_control_plane_are_unreachable_from_the_guest(s):
    sid = ctx["a"]
    gw = transit_gateway(sid)
    for addr in (HOST, gw):
        for what, port in (("agent gRPC", s.agent_port), ("control plane HTTP", s.http_port)):
            assert listening_from_host(addr, port), f"{what} listens on {addr}:{port} (from the host)"
            assert not connects(s, sid, addr, port), f"the guest must not reach the {what} port at {addr}:{port}"


def test_host_address_stays_refused_even_when_allowed(s):
    sid = ctx["a"]
    st, sb = s.request("PUT", f"/v1/sandboxes/{sid}/network", {"allow": [f"{HOST}/32", "10.0.0.0/8"]})
    assert st == 200, (st, sb)
    assert tn.reaches(s, sid, tn.REFUSED), "the allow entries are in force (10.99.x.1 now reachable)"
    assert not connects(s, sid, HOST, s.http_port), "the host's own address stays refused"
    assert not connects(s, sid, HOST, s.agent_port), "the host's own address stays refused"
    st, sb = s.request("PUT", f"/v1/sandboxes/{sid}/network", {"egress": "allow"})
    assert st == 200, (st, sb)


def test_refused_range_server_is_unreachable(s):
    assert listening_from_host(tn.REFUSED, tn.PORT), f"the test server at {tn.REFUSED} listens (from the host)"
    assert not tn.reaches(s, ctx["a"], tn.REFUSED), f"{tn.REFUSED} (10.0.0.0/8) must be refused"
    assert not connects(s, ctx["a"], tn.REFUSED, tn.PORT), f"no TCP connection to {tn.REFUSED} either"


def test_another_sandbox_is_unreachable(s):
    """A listener in sandbox B's namespace on B's transit address (the only
    address of B routable from the host); A allows all of 10.0.0.0/8, so
    only the host's sandbox-to-sandbox rule stands between."""
    b = s.create({"template": "minimal", "memory_mb": 128})["id"]
    ns = f"torpor-{b}"
    b_addr = tn.sh("ip", "-n", ns, "-4", "-o", "addr", "show", "eth0").stdout.split("inet ")[1].split("/")[0]
    p = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-m", "http.server", "--bind", b_addr,
                          str(tn.PORT), "--directory", ctx["www"]], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ctx["procs"].append(p)
    probe = ["ip", "netns", "exec", ns, "python3", "-c",
             f"import urllib.request as u; u.urlopen('http://{b_addr}:{tn.PORT}/hello.txt', timeout=1)"]
    wait_until(lambda: subprocess.run(probe, capture_output=True).returncode == 0, 20, what="server in B's namespace")
    st, sb = s.request("PUT", f"/v1/sandboxes/{ctx['a']}/network", {"allow": ["10.0.0.0/8"]})
    assert st == 200, (st, sb)
    assert not connects(s, ctx["a"], b_addr, tn.PORT), f"sandbox B ({b_addr}) must be unreachable from A"
    s.destroy(b)


TESTS = [
    test_services_listen_on_a_host_address_not_loopback,
    test_allowed_server_answers,
    test_agent_and_control_plane_are_unreachable_from_the_guest,
    test_host_address_stays_refused_even_when_allowed,
    test_refused_range_server_is_unreachable,
    test_another_sandbox_is_unreachable,
]


def main():
    certs = tempfile.mkdtemp(prefix="torpor-e2e-certs-")
    try:
        r = subprocess.run(["bash", GEN_CERTS, certs, f"IP:{HOST}"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"gen-certs: {r.stderr.strip()}")
        ctx["certs"] = certs
        return run_tests(lambda: HostServicesStack("hostsvc"), TESTS)
    finally:
        shutil.rmtree(certs, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
