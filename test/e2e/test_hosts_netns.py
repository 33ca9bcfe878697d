#!/usr/bin/env python3
"""Several hosts as in production (issue 11's "done when"): three agents in
network namespaces this test creates (n1, n2, n3: veth pairs, agents
listening on 10.199.N.2, not loopback), mutual TLS on every agent
connection (scripts/gen-certs), and two control-plane replicas on one
database, both reconciling every RECONCILE s. The stack's own agent
(host "default", TLS on loopback) stays registered but is drained before
anything is placed, so every sandbox of the scenario lives in a namespace.

  - the three namespaced hosts read ready over mTLS with their agent ids;
  - placement spreads (three creates, three hosts) and honours a host's
    memory cap (`hosts add --max-memory-mb`); every host full -> 503
    no_capacity;
  - a frozen agent (SIGSTOP): creates right away and later, through either
    replica, succeed on another host within a few seconds; the host reads
    unreachable within two intervals (bound below); its sandbox keeps its
    status and shows host_status unreachable; thawed, it settles back;
  - `hosts drain` pauses the host's running sandbox and moves it and an
    already paused one; both resume on their target with their files and a
    running counter that continues;
  - a move whose target, then whose source, agent is SIGKILLed while the
    files stream (seen: the target's .incoming-<id> holds data, and the
    control plane logs the streaming step as the one that failed) leaves
    the sandbox paused and resumable on exactly one host, the source;
  - a replica SIGKILLed mid-pass, while it writes an auto-pause notice into
    the sandbox's row (held there by a row lock this test takes), loses no
    notice: the other replica records the pause and acknowledges it.

Needs root (ip netns); fails, never skips, when namespaces cannot be made.
Minimal template, 128 MiB guests."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SOURCE_DIR, Component, Stack, expect_error, run_tests, wait_until  # noqa: E402
import test_hosts as th  # noqa: E402  (shared helpers: hosts, counter, prepared_paused, assert_resumes_intact)

RECONCILE = 1.0
# AGENT_DEADLINE_PROBE_MS (controlplane/agent_client.h): the health call's
# deadline, all a probe of a frozen agent can cost.
PROBE = 1.0
# "Unreachable within two intervals": a host reads unreachable at its
# DB_HOST_UNREACHABLE_FAILURES (2) consecutive failed probe, and a failure
# counts once no replica heard the agent for an interval. Worst case for
# one replica, SIGSTOP lands right after its probe was answered: its next
# pass starts within RECONCILE and its probe fails after PROBE (the last
# answer is then >= PROBE = RECONCILE old: it counts), the pass after that
# starts RECONCILE later and fails after PROBE again. So 2 x (RECONCILE +
# PROBE), plus a margin for the rest of each pass (the other three hosts'
# probe, ListSandboxes and transaction) on a loaded 2-core machine and this
# test's polling. The second replica and the creates' own probes only make
# it sooner.
UNREACHABLE_MARGIN = 2.0
UNREACHABLE_BOUND = 2 * (RECONCILE + PROBE) + UNREACHABLE_MARGIN
# A create while a host is frozen: a normal create (boot of a minimal guest,
# a few seconds under TCG on a loaded machine) plus at most one PROBE spent
# on the frozen host; one that waited on it would take its create deadline
# (AGENT_DEADLINE_CREATE_MS, 120 s).
CREATE_BOUND = 15.0
MEM = 128
GEN_CERTS = os.path.join(SOURCE_DIR, "scripts", "gen-certs")
TAG = f"tp{os.getpid() % 100000}"
NETS = {f"n{i}": (f"10.199.{i}.1", f"10.199.{i}.2") for i in (1, 2, 3)}
HOSTS = ("default",) + tuple(NETS)
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


def cp_tls_cli(s, *args):
    """torpor-cp CLI for commands that call agents (drain): with the control
    plane's client certificate."""
    return th.cp_cli(s, *args, *tls("cp"))


def state_dir_of(s, host):
    return s.state_dir if host == "default" else os.path.join(s.tmp, f"state-{host}")


def holders(s, sid):
    """Hosts whose state dir holds the sandbox's directory (committed)."""
    return [h for h in HOSTS if os.path.isdir(os.path.join(state_dir_of(s, h), "sandboxes", sid))]


def incoming_dir(s, host, sid):
    return os.path.join(state_dir_of(s, host), "sandboxes", f".incoming-{sid}")


def data_bytes(path):
    """Bytes of data (allocated blocks: holes are not sent as data) in the
    regular files of path; 0 when it does not exist."""
    total = 0
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return 0
    for n in names:
        try:
            total += os.stat(os.path.join(path, n)).st_blocks * 512
        except FileNotFoundError:
            pass
    return total


def start_ns_agent(s, name):
    ns = f"{TAG}-{name}"
    state = os.path.join(s.tmp, f"state-{name}")
    os.makedirs(state)
    s.other_state_dirs.append(state)
    ip = NETS[name][1]
    # Not `ip netns exec`: that makes every mount a slave in the agent's
    # mount namespace, so the per-sandbox network namespaces the agent
    # mounts under /run/netns would die with it and a restarted agent could
    # not enter them (resume fails "setns: Invalid argument"); a host's
    # agent mounts them for the host. So: the agent in the namespace's
    # network, in a mount namespace whose /run/netns stays a peer of the
    # host's (the test's `ip netns add` made it shared), with its own
    # /sys (made private first, so the remount stays in there) showing its
    # namespace's links.
    enter = ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--mount", "--propagation", "unchanged",
             "sh", "-c", 'mount --make-rprivate /sys && mount -t sysfs sysfs /sys && exec "$0" "$@"']
    argv = enter + [s.agent_bin, "--listen", f"{ip}:0", "--state-dir", state,
            "--image-dir", s.image_dir, "--accel", os.environ.get("TORPOR_ACCEL", "auto"),
            "--reaper-interval", str(s.reaper_interval), "--metrics-addr", "off"] + tls("agent")
    comp = Component(f"torpor-agent-{name}", argv, os.path.join(s.tmp, f"agent-{name}.log"))
    s.extra.append(comp)
    comp.start()  # nsenter, unshare and sh exec: comp.proc is the agent itself
    m = comp.wait_log(r"event=agent_ready\b[^\n]*\bport=(\d+)", 120, what=f"{name} agent_ready")
    return comp, f"{ip}:{m.group(1)}"


def restart_ns_agent(s, name):
    """SIGKILL the namespaced agent and start it again on its state dir and
    address (the host's registered one)."""
    comp = ctx["agents"][name]
    addr = s.sql(f"SELECT address FROM hosts WHERE id = '{name}'")[0][0]
    comp.stop(signal.SIGKILL)
    comp.argv = [addr if a == f"{NETS[name][1]}:0" else a for a in comp.argv]
    comp.start()
    comp.wait_log(r"event=agent_ready\b", 120, what=f"{name} agent_ready")


def start_replica(s):
    """The second torpor-cp, reconciling like the first; its database
    sessions carry application_name torpor-cp-2 (PGAPPNAME) so the test can
    tell whose session a lock holds. Returns its HTTP port."""
    os.environ["PGAPPNAME"] = "torpor-cp-2"
    try:
        return s.start_extra_cp("torpor-cp-2", ["--reconcile-interval", str(RECONCILE)] + tls("cp"))
    finally:
        del os.environ["PGAPPNAME"]


def replica_comp(s):
    return [c for c in s.extra if c.name == "torpor-cp-2"][-1]


def set_cap(s, host, mb):
    addr = s.sql(f"SELECT address FROM hosts WHERE id = '{host}'")[0][0]
    th.cp_cli(s, "hosts", "add", "--id", host, "--addr", addr, "--max-memory-mb", str(mb))


class NsStack(Stack):
    """The stack, plus: the network namespaces of the sandboxes still alive
    at the end are deleted after it stopped (the namespaced agents mount
    them where the host sees them, and stopping an agent keeps them)."""

    def close(self):
        ids = []
        if self.tmp:
            try:
                ids = [r[0] for r in self.sql("SELECT id FROM sandboxes")]
            except AssertionError as e:
                print(f"note: sandbox ids for the namespace cleanup: {e}")
        super().close()
        left = [sid for sid in ids if os.path.exists(f"/run/netns/torpor-{sid}")]
        for sid in left:
            sh("ip", "netns", "del", f"torpor-{sid}", check=False)
        gone = [sid for sid in left if not os.path.exists(f"/run/netns/torpor-{sid}")]
        print(f"network namespaces of sandboxes left at the end: {len(left)}, removed {len(gone)}")


def test_namespaced_hosts_are_ready_over_mtls(s):
    ctx["admin"] = th.cp_cli(s, "keys", "create", "--team", "ops", "--admin").strip().splitlines()[-1]
    # The loopback agent takes nothing of the scenario's.
    th.cp_cli(s, "hosts", "drain", "--id", "default")
    ctx["agents"] = {}
    for name in NETS:
        comp, addr = start_ns_agent(s, name)
        assert not addr.startswith("127."), addr
        ctx["agents"][name] = comp
        th.cp_cli(s, "hosts", "add", "--id", name, "--addr", addr)
    ctx["replica_port"] = start_replica(s)

    def all_ready():
        hs = th.hosts(s)
        return (set(hs) == set(HOSTS) and hs["default"]["status"] == "draining"
                and all(hs[n]["status"] == "ready" and hs[n]["agent_id"] for n in NETS) and hs)
    hs = wait_until(all_ready, 30, what="n1, n2, n3 ready over mTLS, default draining")
    assert {n: hs[n]["address"].split(":")[0] for n in NETS} == {n: NETS[n][1] for n in NETS}, hs
    assert len({hs[n]["agent_id"] for n in NETS}) == 3, hs


def test_placement_spreads_and_honours_the_memory_cap(s):
    placed = [s.create({"template": "minimal", "memory_mb": MEM}) for _ in range(3)]
    assert sorted(sb["host_id"] for sb in placed) == ["n1", "n2", "n3"], [sb["host_id"] for sb in placed]
    ctx["by_host"] = {sb["host_id"]: sb["id"] for sb in placed}
    # n3 full at one 128 MiB guest: the next two go to n1 and n2.
    set_cap(s, "n3", MEM + 64)
    more = [s.create({"template": "minimal", "memory_mb": MEM}) for _ in range(2)]
    assert sorted(sb["host_id"] for sb in more) == ["n1", "n2"], f"placed: {[sb['host_id'] for sb in more]}"
    hs = th.hosts(s)
    assert hs["n3"]["memory_used_mb"] == MEM and hs["n3"]["sandboxes"] == 1, hs["n3"]
    # Every host full (default draining): no_capacity, at once.
    for h in ("n1", "n2"):
        set_cap(s, h, 2 * MEM)
    expect_error(s.request("POST", "/v1/sandboxes", {"template": "minimal", "memory_mb": MEM}), 503,
                 "no_capacity", "create with every namespaced host full")
    for h in NETS:
        th.cp_cli(s, "hosts", "add", "--id", h, "--addr", th.hosts(s)[h]["address"], "--max-memory-mb", "none")
    # n1 keeps its second one, so n2 is the least loaded (tie with n3, by
    # id) and the first create of the freeze below picks n2 first.
    for sb in more:
        if sb["host_id"] == "n1":
            ctx["spare"] = sb["id"]
        else:
            s.destroy(sb["id"])


def test_frozen_agent_reads_unreachable_and_creates_go_elsewhere(s):
    comp = ctx["agents"]["n2"]
    sid = ctx["by_host"]["n2"]
    extra = []

    def create_elsewhere(port=None, when=""):
        st, body, took = th.create_timed(s, port=port)
        assert st == 201 and body["host_id"] not in ("n2", "default"), f"create {when}: {st} {body}"
        assert took < CREATE_BOUND, f"create {when} took {took:.1f}s (bound {CREATE_BOUND}s)"
        extra.append(body["id"])
        print(f"     create {when}: on {body['host_id']} in {took:.1f}s")
    seen = {}

    def watch():  # polls from the SIGSTOP on, while the create below runs
        while time.monotonic() - t0 < UNREACHABLE_BOUND + 30:
            if th.host_status(s, "n2") == "unreachable":
                seen["after"] = time.monotonic() - t0
                return
            time.sleep(0.1)
    comp.proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # Right away, before any pass noticed: n2 is the least loaded, not
        # heard from since the freeze, so the create probes it (at most
        # PROBE) and goes elsewhere.
        create_elsewhere(when="right after SIGSTOP")
        watcher.join()
        assert "after" in seen, "n2 never read unreachable"
        print(f"     n2 read unreachable {seen['after']:.1f}s after SIGSTOP (bound {UNREACHABLE_BOUND}s)")
        assert seen["after"] <= UNREACHABLE_BOUND, \
            f"n2 read unreachable {seen['after']:.1f}s after SIGSTOP, more than {UNREACHABLE_BOUND}s"
        sb = th.sandbox(s, sid)
        assert sb["status"] == "running" and sb["host_status"] == "unreachable", sb
        sb = th.sandbox(s, sid, port=ctx["replica_port"])
        assert sb["status"] == "running" and sb["host_status"] == "unreachable", f"via the replica: {sb}"
        t1 = time.monotonic()
        expect_error(s.request("POST", f"/v1/sandboxes/{sid}/ping"), 503, "host_unreachable", "ping on n2")
        assert time.monotonic() - t1 < 5.0, "host_unreachable must be answered at once, not after a deadline"
        create_elsewhere(when="n2 unreachable")
        create_elsewhere(port=ctx["replica_port"], when="n2 unreachable, via the replica")
    finally:
        comp.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: th.host_status(s, "n2") == "ready", 2 * RECONCILE + 20, what="n2 ready again")
    sb = th.sandbox(s, sid)
    assert sb["status"] == "running" and sb["host_status"] == "ready", sb
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/ping")
    assert st == 204, f"ping after the thaw: {st} {body}"
    for x in extra:
        s.destroy(x)


def test_drain_moves_sandboxes_that_resume_with_memory_and_files(s):
    # n2's running sandbox gets a counter and a marker; the drain pauses it.
    running = ctx["by_host"]["n2"]
    marker_r = os.urandom(8).hex()
    assert s.exec(running, f"echo {marker_r} > /tmp/mark && " + th.COUNTER)["exit_code"] == 0
    # And one already paused on n2.
    paused, value_p, marker_p = th.prepared_paused(s)
    if th.sandbox(s, paused)["host_id"] != "n2":
        st, body = s.request("POST", f"/v1/sandboxes/{paused}/move", {"host_id": "n2"}, key=ctx["admin"])
        assert st == 200 and body["host_id"] == "n2", f"move to n2: {st} {body}"
    wait_until(lambda: th.counter(s, running, started=False) >= 3, 60, interval=0.5, what="counter >= 3")
    value_r = th.counter(s, running)
    out = cp_tls_cli(s, "hosts", "drain", "--id", "n2")
    print("     " + out.strip().replace("\n", "; "))
    assert f"paused {running}" in out and f"moved {running} to" in out and f"moved {paused} to" in out, out
    hs = th.hosts(s)
    assert hs["n2"]["status"] == "draining" and hs["n2"]["sandboxes"] == 0, hs["n2"]
    for sid, value, marker in ((running, value_r, marker_r), (paused, value_p, marker_p)):
        sb = th.sandbox(s, sid)
        assert sb["status"] == "paused" and sb["host_id"] in ("n1", "n3"), f"{sid} after the drain: {sb}"
        assert holders(s, sid) == [sb["host_id"]], f"{sid} files on {holders(s, sid)}"
        th.assert_resumes_intact(s, sid, value, marker, sb["host_id"])
    ctx["by_host"]["n2"] = running  # now running elsewhere
    s.destroy(paused)
    th.cp_cli(s, "hosts", "undrain", "--id", "n2")
    assert th.host_status(s, "n2") == "ready"


def interrupted_move(s, victim_side):
    sid, value, marker = th.prepared_paused(s, big_mb=40)
    src = th.sandbox(s, sid)["host_id"]
    dst = next(h for h in NETS if h != src)
    victim = src if victim_side == "source" else dst
    src_bytes = data_bytes(os.path.join(state_dir_of(s, src), "sandboxes", sid))
    incoming = incoming_dir(s, dst, sid)
    log_offset = len(s.cp.log_text())
    result = {}

    def mover():
        result["answer"] = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": dst}, key=ctx["admin"])
    t = threading.Thread(target=mover)
    t.start()
    # Under way: the target's import directory holds some data (1 MiB = one
    # chunk), not yet committed (renamed to sandboxes/<id>).
    def streaming():
        n = data_bytes(incoming)
        return n if n >= 1 << 20 else (-1 if not t.is_alive() else 0)
    at_kill = wait_until(streaming, 60, interval=0.01, what=f"{sid} streaming into {incoming}")
    if at_kill != -1:
        ctx["agents"][victim].proc.send_signal(signal.SIGKILL)
    t.join(150)
    assert at_kill != -1, f"the move ended before the test saw it stream: {result.get('answer')}"
    st, body = result["answer"]
    step = "write to the target host" if victim_side == "target" else "read from the source host"
    print(f"     {victim_side} ({victim}) SIGKILLed with {at_kill >> 20} of {src_bytes >> 20} MiB of data "
          f"imported: move answered {st} {body.get('error', {}).get('code') if isinstance(body, dict) else body}")
    assert st != 200, f"the move succeeded: the kill was not mid-transfer: {body}"
    log = s.cp.log_text()[log_offset:]
    m = re.search(rf"event=sandbox_move_failed sandbox_id={sid} from={src} to={dst} step=\"([^\"]*)\"", log)
    assert m and m.group(1) == step, f"the move must fail while streaming ({step}); log: {m and m.group(0)}"
    restart_ns_agent(s, victim)
    wait_until(lambda: th.host_status(s, victim) == "ready", 30, what=f"{victim} ready again")
    sb = th.sandbox(s, sid)
    assert sb["status"] == "paused" and sb["host_id"] == src, f"after the interrupted move: {sb}"
    # Exactly one host holds it, and no import is left on the target.
    wait_until(lambda: holders(s, sid) == [src] and not os.path.exists(incoming), 10 * RECONCILE + 20,
               what=f"{sid} only on {src} (holders {holders(s, sid)}, incoming left: {os.path.exists(incoming)})")
    th.assert_resumes_intact(s, sid, value, marker, src)
    s.destroy(sid)


def test_move_with_the_target_killed_mid_transfer_leaves_one_resumable_copy(s):
    interrupted_move(s, "target")


def test_move_with_the_source_killed_mid_transfer_leaves_one_resumable_copy(s):
    interrupted_move(s, "source")


def test_replica_killed_mid_pass_loses_no_auto_pause_notice(s):
    sid = ctx["by_host"]["n1"]
    host = th.sandbox(s, sid)["host_id"]
    assert th.sandbox(s, sid)["status"] == "running"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_sec": 4})
    assert st == 200, f"timeout: {st} {body}"
    # Hold the sandbox's row: the pass that sees the agent's auto-pause
    # notice blocks writing it, inside its transaction, holding the host.
    locker = subprocess.Popen(["psql", "-X", "-q", "-At", s.db_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    replicas = {"torpor-cp": (s.cp, s.http_port), "torpor-cp-2": (replica_comp(s), ctx["replica_port"])}
    offsets = {n: len(c.log_text()) for n, (c, _) in replicas.items()}
    try:
        locker.stdin.write(f"BEGIN;\nSELECT pg_backend_pid() FROM sandboxes WHERE id = '{sid}' FOR UPDATE;\n")
        locker.stdin.flush()
        lock_pid = int(locker.stdout.readline().strip())

        def blocked():
            rows = s.sql("SELECT application_name, query FROM pg_stat_activity "
                         f"WHERE {lock_pid} = ANY(pg_blocking_pids(pid))")
            return rows and rows[0]
        app, query = wait_until(blocked, 60, interval=0.1, what="a replica's pass blocked on the row")
        assert "UPDATE sandboxes SET status" in query, f"blocked on something else: {query}"
        victim = "torpor-cp-2" if app == "torpor-cp-2" else "torpor-cp"
        survivor = "torpor-cp" if victim == "torpor-cp-2" else "torpor-cp-2"
        assert th.sandbox(s, sid)["status"] == "running", "the notice was recorded before the kill"
        replicas[victim][0].proc.send_signal(signal.SIGKILL)
        replicas[victim][0].proc.wait(30)
        print(f"     {victim} SIGKILLed mid-pass, writing the notice of {sid} on {host}")
    finally:
        locker.stdin.write("ROLLBACK;\n\\q\n")
        locker.stdin.close()
        locker.wait(30)
    comp, port = replicas[survivor]
    wait_until(lambda: th.sandbox(s, sid, port=port)["status"] == "paused", 10 * RECONCILE + 20,
               what=f"{sid} paused, recorded by {survivor}")
    log = comp.log_text()[offsets[survivor]:]
    assert re.search(rf"event=reconcile_change sandbox_id={sid} host_id={host} from=running to=paused "
                     r"auto_paused=1", log), f"{survivor} did not record the auto-pause"
    wait_until(lambda: f"event=auto_pause_acked sandbox_id={sid}" in comp.log_text()[offsets[survivor]:],
               10 * RECONCILE + 20, what=f"{survivor} acknowledging the notice")
    killed_log = replicas[victim][0].log_text()[offsets[victim]:]
    assert f"auto_pause_acked sandbox_id={sid}" not in killed_log, f"{victim} acknowledged before its kill"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume", port=port)
    assert st == 200 and body["status"] == "running", f"resume: {st} {body}"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/timeout", {"timeout_sec": 0}, port=port)
    assert st == 200, f"timeout off: {st} {body}"
    if victim == "torpor-cp":
        s.start_cp()
    else:
        ctx["replica_port"] = start_replica(s)


def main():
    if os.geteuid() != 0:
        print("FAIL: needs root for ip netns (CI runs as root)")
        return 1
    remove_netns()
    try:
        for name, (hip, nip) in NETS.items():
            make_netns(name, hip, nip)
    except (RuntimeError, OSError) as e:
        remove_netns()
        print(f"FAIL: cannot create network namespaces: {e}")
        return 1
    certs_dir = tempfile.mkdtemp(prefix="torpor-e2e-certs-")
    try:
        r = subprocess.run(["bash", GEN_CERTS, certs_dir] + [f"IP:{nip}" for _, nip in NETS.values()],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"gen-certs: {r.stderr.strip()}")
        ctx["certs"] = {n: os.path.join(certs_dir, n) for n in ("ca.pem", "agent.pem", "agent.key", "cp.pem", "cp.key")}
        th.ctx["admin"] = None
        return run_tests(lambda: NsStack("hostsns", reconcile_interval=RECONCILE, reaper_interval=1,
                                         agent_args=tls("agent"), cp_args=tls("cp")), [
            test_namespaced_hosts_are_ready_over_mtls,
            test_placement_spreads_and_honours_the_memory_cap,
            test_frozen_agent_reads_unreachable_and_creates_go_elsewhere,
            test_drain_moves_sandboxes_that_resume_with_memory_and_files,
            test_move_with_the_target_killed_mid_transfer_leaves_one_resumable_copy,
            test_move_with_the_source_killed_mid_transfer_leaves_one_resumable_copy,
            test_replica_killed_mid_pass_loses_no_auto_pause_notice,
        ])
    finally:
        shutil.rmtree(certs_dir, ignore_errors=True)
        remove_netns()


if __name__ == "__main__":
    sys.exit(main())
