#!/usr/bin/env python3
"""Several hosts as in production (issue 11): two agents in network
namespaces this test creates (veth pairs, addresses 10.199.N.2 that are not
loopback), mutual TLS on every agent connection (scripts/gen-certs), plus
the stack's own agent ("default", TLS on loopback) and two control-plane
replicas. Shows over real addresses: hosts ready with their agent ids,
placement spreading over the three hosts, a frozen namespaced agent read
unreachable while creates go elsewhere, settling back after SIGCONT, and a
paused sandbox moved between the two namespaced hosts resuming with its
memory and files. Needs root (ip netns); skipped (exit 0 with a note) when
namespaces cannot be created."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SOURCE_DIR, Component, Stack, expect_error, run_tests, wait_until  # noqa: E402
import test_hosts as th  # noqa: E402  (shared helpers: counter, prepared_paused, assert_resumes_intact)

RECONCILE = 1.0
MEM = 128
GEN_CERTS = os.path.join(SOURCE_DIR, "scripts", "gen-certs")
TAG = f"tp{os.getpid() % 100000}"
NETS = {"n2": ("10.199.2.1", "10.199.2.2"), "n3": ("10.199.3.1", "10.199.3.2")}
ctx = th.ctx


def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


def make_netns(name, host_ip, ns_ip):
    ns = f"{TAG}-{name}"
    veth_h, veth_n = f"{TAG}{name}h", f"{TAG}{name}n"
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", veth_h, "type", "veth", "peer", "name", veth_n)
    sh("ip", "link", "set", veth_n, "netns", ns)
    sh("ip", "addr", "add", f"{host_ip}/30", "dev", veth_h)
    sh("ip", "link", "set", veth_h, "up")
    sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", veth_n)
    sh("ip", "netns", "exec", ns, "ip", "link", "set", veth_n, "up")
    sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    return ns


def remove_netns():
    for name in NETS:
        sh("ip", "netns", "del", f"{TAG}-{name}", check=False)
        sh("ip", "link", "del", f"{TAG}{name}h", check=False)


def tls(prefix):
    c = ctx["certs"]
    return ["--tls-cert", c[f"{prefix}.pem"], "--tls-key", c[f"{prefix}.key"], "--tls-ca", c["ca.pem"]]


def start_ns_agent(s, name):
    ns = f"{TAG}-{name}"
    state = os.path.join(s.tmp, f"state-{name}")
    os.makedirs(state)
    s.other_state_dirs.append(state)
    ip = NETS[name][1]
    argv = ["ip", "netns", "exec", ns, s.agent_bin, "--listen", f"{ip}:0", "--state-dir", state,
            "--image-dir", s.image_dir, "--accel", os.environ.get("TORPOR_ACCEL", "auto"),
            "--reaper-interval", str(s.reaper_interval), "--metrics-addr", "off"] + tls("agent")
    comp = Component(f"torpor-agent-{name}", argv, os.path.join(s.tmp, f"agent-{name}.log"))
    s.extra.append(comp)
    comp.start()
    m = comp.wait_log(r"event=agent_ready\b[^\n]*\bport=(\d+)", 120, what=f"{name} agent_ready")
    return comp, f"{ip}:{m.group(1)}"


def test_namespaced_hosts_are_ready_over_mtls(s):
    ctx["admin"] = th.cp_cli(s, "keys", "create", "--team", "ops", "--admin").strip().splitlines()[-1]
    ctx["agents"] = {}
    for name in NETS:
        comp, addr = start_ns_agent(s, name)
        assert not addr.startswith("127."), addr
        ctx["agents"][name] = comp
        th.cp_cli(s, "hosts", "add", "--id", name, "--addr", addr)
    ctx["replica_port"] = s.start_extra_cp("torpor-cp-2", ["--reconcile-interval", str(RECONCILE)] + tls("cp"))

    def all_ready():
        hs = th.hosts(s)
        return len(hs) == 3 and all(h["status"] == "ready" and h["agent_id"] for h in hs.values()) and hs
    hs = wait_until(all_ready, 30, what="three hosts ready over mTLS")
    assert {hs[n]["address"].split(":")[0] for n in NETS} == {NETS[n][1] for n in NETS}, hs


def test_placement_spreads_over_the_namespaces(s):
    placed = [s.create({"template": "minimal", "memory_mb": MEM}) for _ in range(3)]
    assert sorted(sb["host_id"] for sb in placed) == ["default", "n2", "n3"], [sb["host_id"] for sb in placed]
    ctx["by_host"] = {sb["host_id"]: sb["id"] for sb in placed}


def test_frozen_namespaced_agent(s):
    comp = ctx["agents"]["n2"]
    sid = ctx["by_host"]["n2"]
    comp.proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        st, body, took = th.create_timed(s)
        assert st == 201 and body["host_id"] != "n2" and took < 15, f"create during the freeze: {st} {body} {took:.1f}s"
        extra = body["id"]
        wait_until(lambda: th.host_status(s, "n2") == "unreachable", 2 * RECONCILE + 6, what="n2 unreachable")
        print(f"     n2 read unreachable {time.monotonic() - t0:.1f}s after SIGSTOP")
        sb = th.sandbox(s, sid)
        assert sb["status"] == "running" and sb["host_status"] == "unreachable", sb
        expect_error(s.request("POST", f"/v1/sandboxes/{sid}/ping"), 503, "host_unreachable", "ping on n2")
    finally:
        comp.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: th.host_status(s, "n2") == "ready", 2 * RECONCILE + 10, what="n2 ready again")
    st, _ = s.request("POST", f"/v1/sandboxes/{sid}/ping")
    assert st == 204, st
    s.destroy(extra)


def test_move_between_namespaces(s):
    sid, value, marker = th.prepared_paused(s)
    src = th.sandbox(s, sid)["host_id"]
    if src == "default":
        st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": "n2"}, key=ctx["admin"])
        assert st == 200, f"move to n2: {st} {body}"
        src = "n2"
    dst = "n3" if src == "n2" else "n2"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": dst}, key=ctx["admin"])
    assert st == 200 and body["host_id"] == dst and body["status"] == "paused", f"move: {st} {body}"
    th.assert_resumes_intact(s, sid, value, marker, dst)
    s.destroy(sid)


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root for ip netns")
        return 0
    remove_netns()
    try:
        for name, (hip, nip) in NETS.items():
            make_netns(name, hip, nip)
    except (RuntimeError, OSError) as e:
        remove_netns()
        print(f"SKIP: cannot create network namespaces: {e}")
        return 0
    certs_dir = tempfile.mkdtemp(prefix="torpor-e2e-certs-")
    try:
        r = subprocess.run(["bash", GEN_CERTS, certs_dir] + [f"IP:{nip}" for _, nip in NETS.values()],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"gen-certs: {r.stderr.strip()}")
        ctx["certs"] = {n: os.path.join(certs_dir, n) for n in ("ca.pem", "agent.pem", "agent.key", "cp.pem", "cp.key")}
        th.ctx["admin"] = None
        return run_tests(lambda: Stack("hostsns", reconcile_interval=RECONCILE, reaper_interval=1,
                                       agent_args=tls("agent"), cp_args=tls("cp")), [
            test_namespaced_hosts_are_ready_over_mtls,
            test_placement_spreads_over_the_namespaces,
            test_frozen_namespaced_agent,
            test_move_between_namespaces,
        ])
    finally:
        shutil.rmtree(certs_dir, ignore_errors=True)
        remove_netns()


if __name__ == "__main__":
    sys.exit(main())
