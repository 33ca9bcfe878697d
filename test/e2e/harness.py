"""End-to-end test harness: a real Torpor stack in a temp dir.

Contract:
  with Stack(name, reconcile_interval=5, reaper_interval=2) as s:
      status, body = s.request("POST", "/v1/sandboxes", {"template": "minimal", "memory_mb": 128})
  starts a throwaway PostgreSQL (scripts/lib/pg.sh), torpor-agent on an
  ephemeral port with a temp state dir and the image of the build dir,
  torpor-cp on an ephemeral port against both, and creates API keys for two
  teams (s.key_a, s.key_b). s.restart_agent() SIGKILLs the agent and starts
  it again on the same state dir and port (s.restart_agent(state_dir=D) on
  another one, e.g. to give the host a new agent identity; such dirs are
  swept for QEMU processes on exit too); s.stop_cp()/s.start_cp() likewise;
  s.stop_pg()/s.start_pg() stop and start its PostgreSQL (same data, same
  URL); s.cp_rss_kb() is torpor-cp's resident set size.
  On exit it stops everything it started -- including the QEMU processes
  whose command line or working directory is in its state dir -- and
  removes the temp dir. The components' logs are printed when a test failed.
  Both services run their metrics listener on an ephemeral loopback port
  (--metrics-addr 127.0.0.1:0; s.agent_metrics_port, s.cp_metrics_port from
  their ready lines, 0 when a test turned it off); s.scrape("cp"|"agent")
  returns the text of GET /metrics.

  run_tests(stack_factory, [test functions]) runs each test(stack) in order,
  prints a traceback per failure and a closing line "N passed, M failed",
  and returns the process exit code (0 only if all passed).

Binaries come from $TORPOR_BUILD_DIR (default <source>/build); the source
tree from $TORPOR_SOURCE_DIR. $TORPOR_ACCEL (auto|kvm|tcg) is passed to the
agent. Every answer request() receives is checked against docs/openapi.yaml
(openapi_check.py; a violation is an AssertionError); a test that talks HTTP
by other means (a raw socket, a streamed read) checks its answers with
check_answer(). That needs
python3-yaml and python3-jsonschema, the rest is the Python stdlib.
"""

import base64
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import openapi_check

SOURCE_DIR = os.environ.get(
    "TORPOR_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD_DIR = os.environ.get("TORPOR_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
PG_SH = os.path.join(SOURCE_DIR, "scripts", "lib", "pg.sh")
# torpor-cp defaults to the installed migrations (<prefix>/share/torpor);
# every torpor-cp a test starts (serve, keys, hosts) uses the source tree's.
os.environ.setdefault("TORPOR_MIGRATIONS_DIR", os.path.join(SOURCE_DIR, "migrations"))

# Sentinel: "use team A's key" (the default for request()).
KEY_A = object()

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL if this harness dies hard (e.g. a
    ctest timeout), so no agent/cp outlives its test."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def tiny_wheel(name="mypkg", value="from the wheel"):
    """A minimal pure-Python wheel of package `name` (name.VALUE = value),
    written by hand: pip installs it with no internet and no build step.
    Its file name must be f"{name}-1.0-py3-none-any.whl"."""
    import hashlib
    import io
    import zipfile
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n".encode(),
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{name}-1.0.dist-info/WHEEL":
            b"Wheel-Version: 1.0\nGenerator: e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},sha256={b64(hashlib.sha256(data).digest()).rstrip('=').replace('+', '-').replace('/', '_')},"
                     f"{len(data)}\n" for path, data in files.items())
    record += f"{name}-1.0.dist-info/RECORD,,\n"
    files[f"{name}-1.0.dist-info/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return buf.getvalue()


def check_answer(method, path, status, headers, raw, check=None):
    """An answer torpor-cp gave, checked against docs/openapi.yaml like every
    answer of Stack.request, for requests made without it (check: False
    parses only; None: check unless TORPOR_OPENAPI_CHECK=0). headers: a dict
    or (name, value) pairs (only Content-Type is used); raw: the body bytes
    (of a streamed non-JSON body, its first piece is enough: such a body is
    checked by media type only). Returns the body as Stack.request does:
    parsed JSON for JSON answers, bytes otherwise, None when empty."""
    items = headers.items() if isinstance(headers, dict) else headers
    ctype = next((v for k, v in items if k.lower() == "content-type"), "")
    if not raw:
        body = None
    elif "json" in ctype:
        try:
            body = json.loads(raw)
        except ValueError:
            raise AssertionError(f"{method} {path}: invalid JSON body ({ctype}): {raw[:200]!r}")
    else:
        body = raw
    if check is None:
        check = os.environ.get("TORPOR_OPENAPI_CHECK", "1") != "0"
    if check:
        openapi_check.default_checker().check(method, path, status, ctype, body)
    return body


def wait_until(predicate, timeout, interval=0.2, what="condition"):
    """Poll predicate() until it returns a truthy value (returned) or the
    deadline passes (AssertionError naming `what` and the last value)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _cwd(pid):
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def find_processes(*needles, under=None):
    """Pids of live processes whose command line contains every needle and,
    if `under` is given, whose command line or working directory is inside
    that directory (the agent starts QEMU in the sandbox's dir with relative
    paths, so the state dir need not appear in its command line)."""
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        cmd = _cmdline(entry)
        if not cmd or not all(n in cmd for n in needles):
            continue
        if under is not None:
            prefix = under.rstrip("/") + "/"
            if prefix not in cmd and not (_cwd(entry) + "/").startswith(prefix):
                continue
        # A zombie (killed, not yet reaped) no longer counts.
        try:
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        pids.append(int(entry))
    return pids


class Component:
    """One background process with its log file."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc = None
        self.log_offset = 0

    def start(self):
        self.log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         preexec_fn=_die_with_parent)
        finally:
            log.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, since_start=False):
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_log(self, regex, timeout, what=None):
        """Wait for a log line (since the last start) matching regex; returns the match."""
        pat = re.compile(regex)

        def found():
            m = pat.search(self.log_text(since_start=True))
            if m:
                return m
            if not self.alive():
                raise AssertionError(f"{self.name} exited (code {self.proc.returncode}) "
                                     f"while waiting for {what or regex}")
            return None
        return wait_until(found, timeout, what=what or f"{self.name} log /{regex}/")

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Send sig, wait up to timeout, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"harness: {self.name} did not exit {timeout}s after {sig!r}; SIGKILL", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Stack:
    def __init__(self, name, reconcile_interval=5, reaper_interval=2, pause_workers=None,
                 agent_args=(), cp_args=()):
        self.name = name
        self.reconcile_interval = reconcile_interval
        self.reaper_interval = reaper_interval
        self.pause_workers = pause_workers
        self.agent_extra = list(agent_args)
        self.cp_extra = list(cp_args)
        self.agent_bin = os.path.join(BUILD_DIR, "agent", "torpor-agent")
        self.cp_bin = os.path.join(BUILD_DIR, "controlplane", "torpor-cp")
        self.image_dir = os.path.join(BUILD_DIR, "image")
        self.tmp = None
        self.pg_dir = None
        self.state_dir = None
        self.other_state_dirs = []  # used by start_agent(state_dir=...)
        self.db_url = None
        self.agent = None
        self.cp = None
        self.agent_port = None
        self.http_port = None
        self.agent_metrics_port = None
        self.cp_metrics_port = None
        self.key_a = None
        self.key_b = None
        self.extra = []
        self.failed = False
        # request() checks every answer against docs/openapi.yaml
        # (test/e2e/openapi_check.py); TORPOR_OPENAPI_CHECK=0 turns it off.
        self.openapi_check = os.environ.get("TORPOR_OPENAPI_CHECK", "1") != "0"

    # ---- lifecycle -------------------------------------------------------
    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.failed = True
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.failed = True
        self.close()
        return False

    def _start(self):
        for b in (self.agent_bin, self.cp_bin):
            if not os.access(b, os.X_OK):
                raise RuntimeError(f"{b} is not built (TORPOR_BUILD_DIR={BUILD_DIR})")
        if not os.path.isdir(self.image_dir):
            raise RuntimeError(f"guest image dir {self.image_dir} is missing (build target guest-image)")
        # /tmp, not a long path: the PostgreSQL socket path must stay short.
        self.tmp = tempfile.mkdtemp(prefix=f"torpor-e2e-{self.name}-", dir="/tmp")
        os.chmod(self.tmp, 0o755)  # the postgres user must reach pg/
        self.pg_dir = os.path.join(self.tmp, "pg")
        self.state_dir = os.path.join(self.tmp, "state")
        os.makedirs(self.state_dir)
        out = subprocess.run(["bash", PG_SH, "start", self.pg_dir], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {out.stderr.strip()}")
        self.db_url = out.stdout.strip().splitlines()[-1]
        self.start_agent()
        self.start_cp()
        self.key_a = self.create_key("team-a")
        self.key_b = self.create_key("team-b")

    def start_agent(self, state_dir=None):
        """(Re)start the agent on the same state dir (or on state_dir if
        given) and, after the first start, the same port (the control plane
        keeps its address)."""
        state_dir = state_dir or self.state_dir
        if state_dir != self.state_dir and state_dir not in self.other_state_dirs:
            self.other_state_dirs.append(state_dir)
        listen = f"127.0.0.1:{self.agent_port or 0}"
        argv = [self.agent_bin, "--listen", listen, "--state-dir", state_dir,
                "--image-dir", self.image_dir, "--accel", os.environ.get("TORPOR_ACCEL", "auto"),
                "--reaper-interval", str(self.reaper_interval), "--metrics-addr", "127.0.0.1:0"]
        if self.pause_workers:
            argv += ["--pause-workers", str(self.pause_workers)]
        argv += self.agent_extra
        if self.agent is None:
            self.agent = Component("torpor-agent", argv, os.path.join(self.tmp, "agent.log"))
        else:
            self.agent.argv = argv
        self.agent.start()
        m = self.agent.wait_log(r"event=agent_ready\b[^\n]*\bport=(\d+)", 120, what="agent_ready")
        self.agent_port = int(m.group(1))
        m = self.agent.wait_log(r"event=agent_ready\b[^\n]*\bmetrics_port=(\d+)", 10, what="agent metrics_port")
        self.agent_metrics_port = int(m.group(1))

    def kill_agent(self, sig=signal.SIGKILL):
        return self.agent.stop(sig, timeout=60)

    def restart_agent(self, sig=signal.SIGKILL, state_dir=None):
        self.kill_agent(sig)
        self.start_agent(state_dir)

    def start_cp(self):
        """(Re)start the control plane; port 0 the first time (it logs the
        port it got), the same port afterwards."""
        argv = [self.cp_bin, "--http-addr", f"127.0.0.1:{self.http_port or 0}",
                "--database-url", self.db_url,
                "--agent-addr", f"127.0.0.1:{self.agent_port}",
                "--reconcile-interval", str(self.reconcile_interval),
                "--metrics-addr", "127.0.0.1:0"] + self.cp_extra
        if self.cp is None:
            self.cp = Component("torpor-cp", argv, os.path.join(self.tmp, "cp.log"))
        else:
            self.cp.argv = argv
        self.cp.start()
        m = self.cp.wait_log(r"event=cp_ready\b[^\n]*\bport=(\d+)", 60, what="cp_ready")
        self.http_port = int(m.group(1))
        m = self.cp.wait_log(r"event=cp_ready\b[^\n]*\bmetrics_port=(\d+)", 10, what="cp metrics_port")
        self.cp_metrics_port = int(m.group(1))

        def ready():
            if not self.cp.alive():
                raise AssertionError(f"torpor-cp exited with code {self.cp.proc.returncode}")
            try:
                st, _ = self.request("GET", "/healthz", key=None, timeout=2)
                return st == 200
            except OSError:
                return False
        wait_until(ready, 60, what="torpor-cp /healthz")

    def start_extra_cp(self, name, args):
        """Start another torpor-cp on the same database with its own flags
        (e.g. other TLS settings) on an ephemeral port; it is stopped on
        close. Returns its HTTP port."""
        argv = [self.cp_bin, "--http-addr", "127.0.0.1:0", "--database-url", self.db_url,
                "--agent-addr", f"127.0.0.1:{self.agent_port}",
                "--reconcile-interval", "3600", "--metrics-addr", "127.0.0.1:0"] + list(args)
        comp = Component(name, argv, os.path.join(self.tmp, f"{name}.log"))
        self.extra.append(comp)
        comp.start()
        m = comp.wait_log(r"event=cp_ready\b[^\n]*\bport=(\d+)", 60, what=f"{name} cp_ready")
        return int(m.group(1))

    def stop_pg(self):
        out = subprocess.run(["bash", PG_SH, "stop", self.pg_dir], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"pg.sh stop failed: {out.stderr.strip()}")

    def start_pg(self):
        out = subprocess.run(["bash", PG_SH, "start", self.pg_dir], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"pg.sh start failed: {out.stderr.strip()}")

    def cp_rss_kb(self):
        with open(f"/proc/{self.cp.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for torpor-cp")

    def stop_cp(self, sig=signal.SIGTERM):
        return self.cp.stop(sig, timeout=20)

    def create_key(self, team):
        out = subprocess.run([self.cp_bin, "keys", "create", "--team", team, "--database-url", self.db_url],
                             capture_output=True, text=True, timeout=60)
        lines = out.stdout.strip().splitlines()
        if out.returncode != 0 or not lines or not re.fullmatch(r"tpk_[0-9a-f]{32}", lines[-1].strip()):
            raise RuntimeError(f"torpor-cp keys create --team {team} failed (exit {out.returncode}): "
                               f"stdout={out.stdout!r} stderr={out.stderr!r}")
        return lines[-1].strip()

    def close(self):
        errors = []
        if self.failed:
            self.dump_logs()
        for comp, timeout in [(c, 20) for c in self.extra] + [(self.cp, 20), (self.agent, 60)]:
            if comp is not None:
                try:
                    comp.stop(signal.SIGTERM, timeout)
                except Exception as e:  # keep cleaning up
                    errors.append(f"{comp.name}: {e}")
        if self.tmp:
            dirs = [self.state_dir] + self.other_state_dirs
            for pid in [p for d in dirs for p in find_processes(under=d)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                wait_until(lambda: not any(find_processes(under=d) for d in dirs), 10, what="QEMU exit")
            except AssertionError as e:
                errors.append(str(e))
            out = subprocess.run(["bash", PG_SH, "stop", self.pg_dir], capture_output=True, text=True)
            if out.returncode != 0:
                errors.append(f"PostgreSQL stop: {out.stderr.strip()}")
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        if errors:
            print("harness: cleanup problems: " + "; ".join(errors), file=sys.stderr)

    def dump_logs(self, tail_lines=300):
        for comp in [self.agent, self.cp] + self.extra:
            if comp is None:
                continue
            lines = comp.log_text().splitlines()
            print(f"----- {comp.name} log (last {min(len(lines), tail_lines)} of {len(lines)} lines) -----")
            print("\n".join(lines[-tail_lines:]))
        if self.pg_dir and os.path.exists(os.path.join(self.pg_dir, "postgres.log")):
            with open(os.path.join(self.pg_dir, "postgres.log"), errors="replace") as f:
                lines = f.read().splitlines()
            print(f"----- postgres log (last {min(len(lines), 40)} lines) -----")
            print("\n".join(lines[-40:]))
        print("----- end of logs -----")
        sys.stdout.flush()

    # ---- helpers ---------------------------------------------------------
    def scrape(self, which):
        """GET /metrics of "cp" or "agent"; returns the body (asserts 200
        and the Prometheus text content type)."""
        port = {"cp": self.cp_metrics_port, "agent": self.agent_metrics_port}[which]
        assert port, f"the {which} metrics listener is off"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read().decode()
            assert resp.status == 200, f"{which} /metrics answered {resp.status}: {body[:200]!r}"
            ctype = resp.getheader("Content-Type", "")
            assert ctype.startswith("text/plain; version=0.0.4"), f"{which} /metrics content type {ctype!r}"
            return body
        finally:
            conn.close()

    def request(self, method, path, body=None, key=KEY_A, headers=None, timeout=180, port=None):
        """HTTP request to torpor-cp (or to the one on `port`). body:
        dict/list (JSON), str/bytes (raw) or None. Returns
        (status, parsed JSON | bytes | None)."""
        hdrs = dict(headers or {})
        if key is KEY_A:
            key = self.key_a
        if key is not None:
            hdrs["X-API-Key"] = key
        data = None
        if body is not None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            elif isinstance(body, str):
                data = body.encode()
                hdrs.setdefault("Content-Type", "application/json")
            else:
                data = body
        conn = http.client.HTTPConnection("127.0.0.1", port or self.http_port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            resp_headers = resp.getheaders()
        finally:
            conn.close()
        # Every answer must be one docs/openapi.yaml describes.
        return resp.status, check_answer(method, path, resp.status, resp_headers, raw,
                                         check=self.openapi_check)

    def sql(self, query):
        """Run a query on the stack's database; returns rows as lists of strings."""
        out = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", self.db_url, "-c", query],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise AssertionError(f"psql failed: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def sandbox_dir(self, sandbox_id):
        return os.path.join(self.state_dir, "sandboxes", sandbox_id)

    def qemu_pids(self, sandbox_id=None):
        """Live QEMU processes of this stack (of one sandbox if given)."""
        needles = ["qemu-system"]
        if sandbox_id:
            needles.append(f"-name {sandbox_id}")
        return find_processes(*needles, under=self.state_dir)

    def status_of(self, sandbox_id, key=KEY_A):
        st, body = self.request("GET", f"/v1/sandboxes/{sandbox_id}", key=key)
        assert st == 200, f"GET {sandbox_id}: {st} {body}"
        return body["status"]

    def wait_status(self, sandbox_id, wanted, timeout, key=KEY_A):
        wanted = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        seen = []

        def check():
            s = self.status_of(sandbox_id, key)
            if not seen or seen[-1] != s:
                seen.append(s)
            return s if s in wanted else None
        try:
            return wait_until(check, timeout, interval=0.25, what=f"{sandbox_id} status in {wanted}")
        except AssertionError as e:
            raise AssertionError(f"{e}; statuses seen: {seen}") from None

    def create(self, body=None, key=KEY_A):
        st, sb = self.request("POST", "/v1/sandboxes", body if body is not None else {}, key=key)
        assert st == 201, f"create {body}: expected 201, got {st} {sb}"
        return sb

    def destroy(self, sandbox_id, key=KEY_A):
        st, body = self.request("DELETE", f"/v1/sandboxes/{sandbox_id}", key=key)
        assert st == 204, f"DELETE {sandbox_id}: expected 204, got {st} {body}"

    def exec(self, sandbox_id, cmd, key=KEY_A, **extra):
        body = {"cmd": cmd}
        body.update(extra)
        st, res = self.request("POST", f"/v1/sandboxes/{sandbox_id}/exec", body, key=key)
        assert st == 200, f"exec {cmd!r} in {sandbox_id}: expected 200, got {st} {res}"
        return res


def expect_error(result, status, code, what):
    """Assert an error response: status and {"error":{"code","message"}}."""
    st, body = result
    assert st == status, f"{what}: expected {status} {code}, got {st} {body!r}"
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), \
        f"{what}: error body must be {{\"error\":{{...}}}}, got {body!r}"
    assert body["error"].get("code") == code, f"{what}: expected code {code}, got {body!r}"
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], \
        f"{what}: error message missing: {body!r}"


def run_tests(stack_factory, tests):
    """Run tests (functions taking the stack) in order on one stack.
    A failure does not stop the later tests (they may fail as a consequence;
    the first failure is the one to read). Returns the exit code."""
    passed, failed = 0, []
    stack = stack_factory()

    def on_term(signum, frame):
        raise SystemExit(f"harness: signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    try:
        with stack:
            for t in tests:
                t0 = time.monotonic()
                print(f"=== {t.__name__}", flush=True)
                try:
                    t(stack)
                except Exception:
                    failed.append(t.__name__)
                    stack.failed = True
                    print(f"FAIL {t.__name__} ({time.monotonic() - t0:.1f}s)")
                    traceback.print_exc(file=sys.stdout)
                    for comp in (stack.agent, stack.cp):
                        if comp is not None and comp.proc is not None and not comp.alive():
                            print(f"     note: {comp.name} is not running (exit code {comp.proc.returncode})")
                else:
                    passed += 1
                    print(f"ok   {t.__name__} ({time.monotonic() - t0:.1f}s)")
                sys.stdout.flush()
    except Exception:
        print("FAIL stack setup/teardown")
        traceback.print_exc(file=sys.stdout)
        failed.append("<stack>")
    not_run = len(tests) - passed - len([f for f in failed if f != "<stack>"])
    summary = f"{passed} passed, {len(failed)} failed"
    if not_run:
        summary += f", {not_run} not run"
    if failed:
        summary += f" ({', '.join(failed)})"
    print(f"{summary} in {time.monotonic() - started:.0f}s", flush=True)
    return 0 if not failed and not not_run else 1
