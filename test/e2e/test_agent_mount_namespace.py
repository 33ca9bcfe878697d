#!/usr/bin/env python3
"""An agent in a mount namespace of its own (docs/operations.md, "The agent's
mount namespace"): the packaged unit (ProtectSystem=strict, PrivateTmp=yes)
runs torpor-agent in a mount namespace whose root is a slave of the host's,
so the sandbox network namespaces it bind-mounts on /run/netns die with that
mount namespace when the agent restarts, and the successor finds only the
empty mount point files. Here every agent start is `unshare --mount
--propagation slave` like systemd's; the agent is restarted with SIGTERM.

- a paused sandbox resumes after such a restart: its namespace is rebuilt
  (guest address 10.0.0.2), its stored policy applies, DNS and policy
  changes work;
- a running sandbox (its QEMU outlives the agent) keeps DNS, the port proxy
  and policy changes: the agent mounts the namespace again from the VM's
  TAP (pidfd_getfd + TUNGETDEVNETNS).

DNS comes from the tiny upstream of test_network_dns.py (its own network
namespace, 198.18.N.53); nothing else is a target."""

import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Component, run_tests, wait_until  # noqa: E402
from test_network_dns import RESOLVER, DnsStack, put_network, resolves  # noqa: E402
from test_port_proxy import proxy, start_httpd  # noqa: E402

ctx = {}
UNSHARE = ["unshare", "--mount", "--propagation", "slave"]


class MntnsComponent(Component):
    """The agent, started like systemd starts it: in a new mount namespace
    whose mounts are slaves of the host's (unshare execs: proc is the agent)."""

    def start(self):
        plain = self.argv
        self.argv = UNSHARE + plain
        try:
            super().start()
        finally:
            self.argv = plain


class MntnsStack(DnsStack):
    def start_agent(self, state_dir=None):
        if self.agent is None:
            self.agent = MntnsComponent("torpor-agent", [], os.path.join(self.tmp, "agent.log"))
        super().start_agent(state_dir)


def fs_type(path):
    """The file system type of path as the host (this test's mount namespace) sees it."""
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def restart_agent(s):
    s.restart_agent(sig=signal.SIGTERM)


def guest_address(s, sid):
    r = s.exec(sid, "ip -4 addr show eth0")
    return r["stdout"]


def test_paused_sandbox_resumes_after_restart_in_own_mount_namespace(s):
    sb = s.create({"template": "minimal", "memory_mb": 128,
                   "network": {"egress": "deny", "allow": [f"{RESOLVER}/32:53"]}})
    sid = ctx["paused"] = sb["id"]
    assert resolves(s, sid), "DNS before the restart (an allow entry naming the resolver)"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200 and body["status"] == "paused", (st, body)
    # the stored policy, applied by the resume after the restart
    put_network(s, sid, {"egress": "deny"})
    restart_agent(s)
    path = f"/run/netns/torpor-{sid}"
    assert fs_type(path) != "nsfs", \
        f"the shape under test: the agent's mounts do not reach the host ({path} is {fs_type(path)})"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and body["status"] == "running", f"resume after the restart: {st} {body}"
    assert "inet 10.0.0.2/24" in guest_address(s, sid), "the rebuilt namespace gives the same address"
    assert not resolves(s, sid), "the stored policy (egress deny, no allow entry) applies"
    put_network(s, sid, {"egress": "deny", "allow": [f"{RESOLVER}/32:53"]})
    assert resolves(s, sid), "a policy change applies to the rebuilt namespace and DNS works"
    s.destroy(sid)
    wait_until(lambda: not os.path.exists(path), 20, what=f"{path} removed on destroy")


def test_running_sandbox_keeps_dns_and_port_proxy_across_restart(s):
    sb = s.create({"template": "minimal", "memory_mb": 128})
    sid = sb["id"]
    start_httpd(s, sid)
    assert resolves(s, sid), "DNS before the restart"
    st, _, data = proxy(s, sid, "8080/index.html", key=s.key_a)
    assert st == 200 and data == b"hello through the proxy\n", ("proxy before the restart", st, data)
    restart_agent(s)
    path = f"/run/netns/torpor-{sid}"
    assert fs_type(path) != "nsfs", \
        f"the shape under test: the agent's mounts do not reach the host ({path} is {fs_type(path)})"
    wait_until(lambda: s.request("POST", f"/v1/sandboxes/{sid}/ping")[0] == 204, 60, what="ping after restart")
    assert s.status_of(sid) == "running"
    assert resolves(s, sid), "DNS after the restart (the forwarder is back in the namespace)"
    st, _, data = proxy(s, sid, "8080/index.html", key=s.key_a)
    assert st == 200 and data == b"hello through the proxy\n", ("proxy after the restart", st, data)
    assert "event=net_namespace_recovered sandbox_id=" + sid in s.agent.log_text(since_start=True), \
        "the agent mounts the namespace again from the VM"
    put_network(s, sid, {"egress": "deny"})
    assert not resolves(s, sid), "a policy change applies to the running sandbox's namespace"
    put_network(s, sid, {"egress": "allow"})
    assert resolves(s, sid), "and the change back"
    s.destroy(sid)
    wait_until(lambda: not os.path.exists(path), 20, what=f"{path} removed on destroy")


TESTS = [
    test_paused_sandbox_resumes_after_restart_in_own_mount_namespace,
    test_running_sandbox_keeps_dns_and_port_proxy_across_restart,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: MntnsStack("agent-mntns", agent_args=["--dns-upstream", RESOLVER]), TESTS))
