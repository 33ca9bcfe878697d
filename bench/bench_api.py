#!/usr/bin/env python3
"""bench_api: what a REST client sees, end to end: HTTP -> torpor-cp
(PostgreSQL) -> gRPC -> torpor-agent -> QEMU VM, on a throwaway stack started
by test/e2e/harness.py (its own PostgreSQL, agent, control plane, state dir;
all stopped and removed on exit).

Sections, one sandbox at a time unless the name says otherwise:
  sequential   per round: create, pings, first exec `echo hi` after create,
               more (warm) execs, files/write and files/read of a file,
               pause, resume, first exec after resume, destroy (the very
               first create is reported on its own: it boots the template
               and snapshots it)
  concurrency  K threads ping sandbox B while sandbox A is paused (and then
               resumed) through the API: a ping must not wait for the pause
  burst        B sandboxes created at the same moment (B threads)
  autopause    a sandbox with timeout_sec=1, pinged once, then left alone:
               last ping -> reaper picks it -> agent paused -> DB row paused
               (reconciler) -> GET reads "paused" (polled every 50 ms);
               rounds start at evenly spread phases of the reaper's and the
               reconciler's ticks, so the figures show their distribution.
               With --short-intervals the autopause section runs again on a
               second stack with --reaper-interval 0.2 / --reconcile-interval 0.5.

Prints one table (step, n, median, p90, p99, min, max in ms; nearest-rank
percentiles, so with n=10 p99 is the max) and the agent's own phase timings
from its log. Figures only: nothing passes or fails on time. Exit 0 unless
the stack broke (an API call failed or a state was never reached).

  python3 bench/bench_api.py [--build-dir build] [--rounds 10] [--memory-mb 128[,1024]]
                             [--short-intervals] [--markdown]   (--help: every option)
"""

import argparse
import base64
import datetime
import fractions
import math
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS_DIR = os.path.join(SOURCE_DIR, "test", "e2e")

# ---------------------------------------------------------------- arguments


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="End-to-end REST benchmark of Torpor (figures only, never pass/fail on time).")
    ap.add_argument("--build-dir", default=os.environ.get("TORPOR_BUILD_DIR", os.path.join(SOURCE_DIR, "build")),
                    help="build dir with agent/torpor-agent, controlplane/torpor-cp, image/ "
                         "(default $TORPOR_BUILD_DIR or <source>/build)")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of each section (default 10)")
    ap.add_argument("--template", default="minimal",
                    help="template of every sandbox: minimal (default) or debian (needs the image: "
                         "cmake --build BUILD --target image-debian)")
    ap.add_argument("--memory-mb", default="128",
                    help="guest memory in MiB; a comma list (128,1024) runs every section per size "
                         "(default 128)")
    ap.add_argument("--pings-per-round", type=int, default=20, help="sequential pings per round (default 20)")
    ap.add_argument("--execs-per-round", type=int, default=2,
                    help="`echo hi` execs per round after the first one (default 2)")
    ap.add_argument("--file-kib", type=int, default=1024, help="size of files/write + files/read (default 1024)")
    ap.add_argument("--pingers", type=int, default=4, help="ping threads in the concurrency section (default 4)")
    ap.add_argument("--burst", type=int, default=5, help="sandboxes created at once (default 5)")
    ap.add_argument("--burst-rounds", type=int, default=None, help="rounds of the burst (default: --rounds)")
    ap.add_argument("--autopause-rounds", type=int, default=None, help="rounds of autopause (default: --rounds)")
    ap.add_argument("--short-intervals", action="store_true",
                    help="also run autopause on a stack with reaper 0.2 s / reconciler 0.5 s")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: "
                    "sequential,concurrency,burst,autopause")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.memory_mb.split(",")]
    except ValueError:
        ap.error(f"--memory-mb: not a comma list of integers: {args.memory_mb!r}")
    if not args.sizes or min(args.sizes) < 64:
        ap.error("--memory-mb: every size must be >= 64 (MiB)")
    for name in ("rounds", "pings_per_round", "execs_per_round", "pingers", "burst"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.file_kib < 0:
        ap.error("--file-kib must be >= 0")
    if min(args.burst_rounds or 0, args.autopause_rounds or 0) < 0:
        ap.error("--burst-rounds / --autopause-rounds must be >= 0")
    args.burst_rounds = args.rounds if args.burst_rounds is None else args.burst_rounds
    args.autopause_rounds = args.rounds if args.autopause_rounds is None else args.autopause_rounds
    args.skip = {x for x in args.skip.split(",") if x}
    unknown = args.skip - {"sequential", "concurrency", "burst", "autopause"}
    if unknown:
        ap.error(f"--skip: unknown section(s) {sorted(unknown)}")
    return args


# ---------------------------------------------------------------- figures


class StackBroke(Exception):
    """An API call answered something else than the API promises."""


def percentile(sorted_vals, q):
    """Nearest-rank percentile of an ascending list."""
    k = max(1, math.ceil(q * len(sorted_vals)))
    return sorted_vals[k - 1]


class Figures:
    """Named series of milliseconds, in the order they were first recorded."""

    def __init__(self):
        self.series = {}
        self.counts = {}
        self.lock = threading.Lock()

    def add(self, step, ms):
        with self.lock:
            self.series.setdefault(step, []).append(ms)

    def count(self, what, n):
        with self.lock:
            self.counts.setdefault(what, []).append(n)

    def rows(self):
        for step, vals in self.series.items():
            v = sorted(vals)
            yield (step, len(v), percentile(v, 0.5), percentile(v, 0.9), percentile(v, 0.99), v[0], v[-1])


def print_table(title, header, rows, markdown):
    print()
    print(f"## {title}" if markdown else title)
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        for r in rows:
            print("| " + " | ".join(str(c) for c in r) + " |")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    for r in [header] + list(rows):
        print("  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                        for i, c in enumerate(r)))


def fmt(ms):
    return f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


# ---------------------------------------------------------------- API calls


class Api:
    """Thin, checked wrappers over Stack.request: each returns the body and
    raises StackBroke on an unexpected status."""

    def __init__(self, stack, figures):
        self.s = stack
        self.fig = figures

    def call(self, step, method, path, body=None, status=200):
        t0 = time.perf_counter()
        st, out = self.s.request(method, path, body)
        ms = (time.perf_counter() - t0) * 1000.0
        if st != status:
            raise StackBroke(f"{step}: {method} {path} answered {st} (expected {status}): {out!r}"[:600])
        if step:
            self.fig.add(step, ms)
        return out, ms

    def create(self, step, body):
        sb, ms = self.call(step, "POST", "/v1/sandboxes", body, 201)
        if not isinstance(sb, dict) or sb.get("status") != "running":
            raise StackBroke(f"create answered 201 but not a running sandbox: {sb!r}")
        return sb["id"], ms

    def ping(self, step, sid):
        return self.call(step, "POST", f"/v1/sandboxes/{sid}/ping", None, 204)[1]

    def exec_echo(self, step, sid):
        res, ms = self.call(step, "POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "echo hi"})
        if res.get("stdout") != "hi\n" or res.get("exit_code") != 0:
            raise StackBroke(f"exec `echo hi` in {sid}: {res!r}")
        return ms

    def destroy(self, step, sid):
        return self.call(step, "DELETE", f"/v1/sandboxes/{sid}", None, 204)[1]

    def status(self, sid):
        sb, _ = self.call(None, "GET", f"/v1/sandboxes/{sid}")
        return sb["status"]


# ---------------------------------------------------------------- logs

LOG_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


def parse_log(text):
    """Log lines (key=value) as dicts; ts becomes epoch seconds (float)."""
    out = []
    for line in text.splitlines():
        kv = {k: v.strip('"') for k, v in LOG_FIELD.findall(line)}
        if "event" not in kv or "ts" not in kv:
            continue
        try:
            kv["ts"] = datetime.datetime.strptime(kv["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            continue
        out.append(kv)
    return out


def first_event(lines, event, sid, **match):
    for kv in lines:
        if kv["event"] == event and kv.get("sandbox_id") == sid and \
                all(kv.get(k) == v for k, v in match.items()):
            return kv
    return None


def log_breakdown(log_lines, ids, events):
    """{event: {field: [values]}} of the numeric *_ms/*_bytes fields of the
    given events (agent or control plane) about the given sandboxes (ids
    None: any)."""
    ids = None if ids is None else set(ids)
    out = {}
    for kv in log_lines:
        if kv["event"] not in events or (ids is not None and kv.get("sandbox_id") not in ids):
            continue
        for k, v in kv.items():
            if (k.endswith("_ms") or k.endswith("_bytes")) and re.fullmatch(r"-?\d+", v):
                out.setdefault(kv["event"], {}).setdefault(k, []).append(int(v))
    return out


# ---------------------------------------------------------------- sections


def python_steps(api, path, r):
    """python3 started twice (the second warm) and pip installing a local
    wheel (no index, no internet), as a user's first steps in a sandbox."""
    from harness import tiny_wheel
    for step in ("python3 -c print (first)", "python3 -c print (warm)"):
        res, _ = api.call(step, "POST", path + "/exec", {"cmd": "python3 -c 'print(6 * 7)'"})
        if res.get("stdout") != "42\n":
            raise StackBroke(f"python3 in the sandbox: {res!r}")
    name = f"benchpkg{r}"
    whl = f"/root/{name}-1.0-py3-none-any.whl"
    api.call(None, "POST", path + "/files/write",
             {"path": whl, "content_base64": base64.b64encode(tiny_wheel(name)).decode()}, 204)
    res, _ = api.call("pip install of a local wheel", "POST", path + "/exec",
                      {"cmd": f"python3 -m pip install -q --no-index --no-deps --break-system-packages {whl}",
                       "timeout_sec": 300})
    if res.get("exit_code") != 0:
        raise StackBroke(f"pip install in the sandbox: {res!r}")


def section_sequential(api, args, ids_out):
    fig = api.fig
    mem = args.memory_mb
    payload = os.urandom(args.file_kib * 1024)
    payload_b64 = base64.b64encode(payload).decode()
    kib = f"{args.file_kib} KiB" if args.file_kib < 1024 else f"{args.file_kib // 1024} MiB"
    for r in range(args.rounds):
        sid, _ = api.create("create", {"template": args.template, "memory_mb": mem})
        ids_out.append(sid)
        path = f"/v1/sandboxes/{sid}"
        for _ in range(args.pings_per_round):
            api.ping("ping", sid)
        # The first exec in a new VM runs cold (TCG translates the guest's
        # code afresh in every QEMU process): reported apart from the rest.
        api.exec_echo("first exec after create", sid)
        for _ in range(args.execs_per_round):
            api.exec_echo("exec `echo hi` (warm)", sid)
        api.call(f"files/write {kib}", "POST", path + "/files/write",
                 {"path": "/tmp/bench.bin", "content_base64": payload_b64}, 204)
        back, _ = api.call(f"files/read {kib}", "POST", path + "/files/read", {"path": "/tmp/bench.bin"})
        if (back or b"") != payload:
            raise StackBroke(f"files/read returned {len(back or b'')} bytes, not the {len(payload)} written")
        if args.template != "minimal":  # templates with Python (debian and its children)
            python_steps(api, path, r)
        sb, _ = api.call("pause", "POST", path + "/pause")
        if sb.get("status") != "paused":
            raise StackBroke(f"pause answered {sb!r}")
        sb, t_resume = api.call("resume", "POST", path + "/resume")
        if sb.get("status") != "running":
            raise StackBroke(f"resume answered {sb!r}")
        t_exec = api.exec_echo("first exec after resume", sid)
        fig.add("resume + first exec", t_resume + t_exec)
        api.destroy("destroy", sid)
        progress(f"sequential round {r + 1}/{args.rounds} done")


def pings_during(api, ping_sid, action, pingers):
    """Run action() while `pingers` threads ping ping_sid back to back.
    Returns (action ms, [ms of every ping whose span overlapped the action],
    number of pings sent and answered while the action was in flight,
    number of overlapping pings that took >= 80 % of the action's time)."""
    spans, errors = [], []
    stop = threading.Event()
    started = threading.Barrier(pingers + 1)

    def pinger():
        first = True
        while not stop.is_set() or first:
            t0 = time.perf_counter()
            try:
                st, body = api.s.request("POST", f"/v1/sandboxes/{ping_sid}/ping")
                if st != 204:
                    errors.append(f"ping answered {st}: {body!r}")
            except Exception as e:  # reported below, not swallowed
                errors.append(f"ping: {e}")
            t1 = time.perf_counter()
            spans.append((t0, t1))
            if first:
                first = False
                started.wait(60)  # every pinger has one ping done before the action starts
            if errors:
                return

    threads = [threading.Thread(target=pinger, daemon=True) for _ in range(pingers)]
    for t in threads:
        t.start()
    started.wait(60)
    a0 = time.perf_counter()
    try:
        action()
    finally:
        a1 = time.perf_counter()
        stop.set()
        for t in threads:
            t.join(60)
    if errors:
        raise StackBroke(f"concurrent ping failed: {errors[0]}")
    overlapping = [(t1 - t0) * 1000.0 for (t0, t1) in spans if t0 < a1 and t1 > a0]
    # Pings that began after the action began and were answered before it
    # was: only possible if the two calls are served side by side.
    inside = sum(1 for (t0, t1) in spans if t0 >= a0 and t1 <= a1)
    # Pings as slow as the action itself: queued behind it somewhere.
    held = sum(1 for (t0, t1) in spans if t0 < a1 and t1 > a0 and (t1 - t0) >= 0.8 * (a1 - a0))
    return (a1 - a0) * 1000.0, overlapping, inside, held


def section_concurrency(api, args, ids_out):
    mem = args.memory_mb
    k = args.pingers
    a, _ = api.create(None, {"template": args.template, "memory_mb": mem})
    b, _ = api.create(None, {"template": args.template, "memory_mb": mem})
    ids_out.extend([a, b])
    path = f"/v1/sandboxes/{a}"
    for r in range(args.rounds):
        def pause():
            sb, _ = api.call(None, "POST", path + "/pause")
            if sb.get("status") != "paused":
                raise StackBroke(f"pause answered {sb!r}")

        def resume():
            sb, _ = api.call(None, "POST", path + "/resume")
            if sb.get("status") != "running":
                raise StackBroke(f"resume answered {sb!r}")
        for what, action in (("pause", pause), ("resume", resume)):
            ms, pings, inside, held = pings_during(api, b, action, k)
            api.fig.add(f"{what} A, {k} threads pinging B", ms)
            for p in pings:
                api.fig.add(f"  ping B during that {what}", p)
            api.fig.count(f"pings of B sent and answered inside one {what} of A", inside)
            api.fig.count(f"pings of B that took >= 80 % of that {what}", held)
        progress(f"concurrency round {r + 1}/{args.rounds} done")
    api.destroy(None, a)
    api.destroy(None, b)


def section_burst(api, args, ids_out):
    n = args.burst
    for r in range(args.burst_rounds):
        barrier = threading.Barrier(n)
        results = [None] * n

        def one(i):
            try:
                barrier.wait(60)
                t0 = time.perf_counter()
                sid, ms = api.create(None, {"template": args.template, "memory_mb": args.memory_mb})
                results[i] = (sid, ms, t0, time.perf_counter())
            except Exception as e:
                results[i] = e
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        errs = [x for x in results if not isinstance(x, tuple)]
        good = [x for x in results if isinstance(x, tuple)]
        ids_out.extend(x[0] for x in good)
        for x in good:
            api.fig.add(f"create, {n} at once: each", x[1])
        if not errs:
            # From the first request sent to the last answer received.
            api.fig.add(f"create, {n} at once: all {n} done",
                        (max(x[3] for x in good) - min(x[2] for x in good)) * 1000.0)
        for x in good:
            api.exec_echo("exec `echo hi` after the burst", x[0])
        for x in good:
            api.destroy(None, x[0])
        if errs:
            raise StackBroke(f"burst create: {errs[0]!r}")
        progress(f"burst round {r + 1}/{args.burst_rounds} done")


def tick_period(a, b, cap=60.0):
    """Least common multiple of two intervals in seconds (fractions allowed):
    after it, the reaper's and the reconciler's ticks line up again."""
    fa = fractions.Fraction(str(a)).limit_denominator(1000)
    fb = fractions.Fraction(str(b)).limit_denominator(1000)
    num = math.lcm(fa.numerator * fb.denominator, fb.numerator * fa.denominator)
    return min(cap, float(fractions.Fraction(num, fa.denominator * fb.denominator)))


def section_autopause(api, args, label, ids_out):
    """Per round: create (timeout_sec=1), one ping = the last activity, then
    poll GET every 50 ms until paused; the agent's and the control plane's
    log lines give the times in between.

    Each round would start right after the previous one saw "paused", i.e.
    right after a reconciler tick, so back-to-back rounds all land at about
    the same phase of the reaper's and the reconciler's ticks and measure one
    point of the distribution. So round r starts at a fixed phase of the
    period after which both ticks line up (a golden-ratio sequence, which
    spreads the phases evenly modulo either interval too)."""
    fig = api.fig
    poll = 0.05
    bound = 1 + api.s.reaper_interval + api.s.reconcile_interval + 60  # never reached on a healthy stack
    period = tick_period(api.s.reaper_interval, api.s.reconcile_interval)
    golden = (math.sqrt(5) - 1) / 2
    t_ref = time.monotonic()
    for r in range(args.autopause_rounds):
        # Start at phase ((r+1)*golden mod 1) of the period (see above).
        phase = ((r + 1) * golden % 1.0) * period
        now = time.monotonic()
        target = t_ref + phase + max(0, math.ceil((now - t_ref - phase) / period)) * period
        time.sleep(max(0.0, target - now))
        sid, _ = api.create(None, {"template": args.template, "memory_mb": args.memory_mb, "timeout_sec": 1})
        ids_out.append(sid)
        # The agent's inactivity clock restarts while the ping is in flight
        # (before the control plane's DB write and answer): measure from the
        # moment it was sent, wall clock to compare with the logs' ts=.
        t_last = time.time()
        api.ping(None, sid)
        deadline = time.monotonic() + bound
        while True:
            st = api.status(sid)
            if st == "paused":
                t_rest = time.time()
                break
            if st not in ("running", "pausing"):
                raise StackBroke(f"autopause: {sid} went {st}, not paused")
            if time.monotonic() > deadline:
                raise StackBroke(f"autopause: {sid} not paused {bound:.0f}s after its last ping")
            time.sleep(poll)
        agent = parse_log(api.s.agent.log_text())
        cp = parse_log(api.s.cp.log_text())
        start = first_event(agent, "auto_pause_start", sid)
        paused = first_event(agent, "sandbox_paused", sid, reason="inactivity")
        db = first_event(cp, "reconcile_change", sid, to="paused")
        if not paused or not db:
            raise StackBroke(f"autopause: {sid} reads paused but the agent/cp log lacks "
                             f"sandbox_paused reason=inactivity / reconcile_change to=paused")
        if start:
            fig.add(f"autopause ({label}): last ping -> reaper starts pause", (start["ts"] - t_last) * 1000)
        fig.add(f"autopause ({label}): last ping -> agent paused", (paused["ts"] - t_last) * 1000)
        fig.add(f"autopause ({label}): agent paused -> DB paused", (db["ts"] - paused["ts"]) * 1000)
        fig.add(f"autopause ({label}): last ping -> REST reads paused", (t_rest - t_last) * 1000)
        api.destroy(None, sid)
        progress(f"autopause ({label}) round {r + 1}/{args.autopause_rounds} done")


# ---------------------------------------------------------------- report


def progress(msg):
    print(f"bench_api: {msg}", file=sys.stderr, flush=True)


def sh(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_facts():
    facts = {}
    commit = sh(["git", "-C", SOURCE_DIR, "rev-parse", "--short=12", "HEAD"]) or "unknown"
    dirty = sh(["git", "-C", SOURCE_DIR, "status", "--porcelain"])
    facts["git commit"] = commit + (" + uncommitted changes" if dirty else "")
    facts["date (UTC)"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    facts["nproc"] = str(os.cpu_count())
    facts["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            facts["cpu"] = m.group(1) if m else "?"
        with open("/proc/meminfo") as f:
            m = re.search(r"^MemTotal:\s*(\d+)", f.read(), re.M)
            facts["memory"] = f"{int(m.group(1)) // 1024} MiB" if m else "?"
    except OSError:
        pass
    facts["kernel"] = platform.release()
    facts["qemu"] = (sh(["qemu-system-x86_64", "--version"]).splitlines() or ["?"])[0]
    return facts


def print_breakdown(title, log_lines, ids, events, markdown):
    bd = log_breakdown(log_lines, ids, events)
    rows = []
    for ev in events:
        for field, vals in bd.get(ev, {}).items():
            v = sorted(vals)
            rows.append((f"{ev} {field}", len(v), percentile(v, 0.5), percentile(v, 0.9), v[0], v[-1]))
    if rows:
        print_table(title, ("log field", "n", "median", "p90", "min", "max"), rows, markdown)


def run_size(s, args, mem, results):
    """All selected sections on stack s for guests of mem MiB; figures and
    sandbox ids go into results (kept even if a section breaks)."""
    sargs = argparse.Namespace(**{**vars(args), "memory_mb": mem})
    api = Api(s, results["fig"])
    ids = results["ids"]
    progress(f"{mem} MiB: first create builds the template")
    sid, _ = api.create("create (first: builds the template)", {"template": args.template, "memory_mb": mem})
    api.exec_echo(None, sid)
    api.destroy(None, sid)
    if "sequential" not in args.skip:
        section_sequential(api, sargs, ids["sequential"])
    if "concurrency" not in args.skip:
        section_concurrency(api, sargs, ids["concurrency"])
    if "burst" not in args.skip:
        section_burst(api, sargs, ids["burst"])
    if "autopause" not in args.skip:
        section_autopause(api, sargs, f"reaper {s.reaper_interval:g} s, reconciler "
                          f"{s.reconcile_interval:g} s", ids["autopause"])


def print_size(mem, results, agent_lines, cp_lines, markdown):
    fig, ids = results["fig"], results["ids"]
    rows = [(step, n) + tuple(fmt(x) for x in vals) for step, n, *vals in fig.rows()]
    print_table(f"REST round trips, {mem} MiB guests (ms)",
                ("step", "n", "median", "p90", "p99", "min", "max"), rows, markdown)
    if fig.counts:
        print_table(f"Counts, {mem} MiB", ("what", "rounds", "min", "median", "max"),
                    [(w, len(v), min(v), sorted(v)[len(v) // 2], max(v)) for w, v in fig.counts.items()],
                    markdown)
    print_breakdown(f"Agent side of the sequential section, {mem} MiB (ms, bytes), from the agent's log",
                    agent_lines, ids["sequential"],
                    ["sandbox_created", "create_done", "sandbox_paused", "pause_done",
                     "sandbox_resumed", "resume_done", "destroy_done"], markdown)
    print_breakdown(f"Control-plane side of the sequential section, {mem} MiB (from its log: "
                    "handler start to answer)", cp_lines, ids["sequential"], ["sandbox_created"], markdown)
    print_breakdown(f"Agent side of the burst creates, {mem} MiB", agent_lines, ids["burst"],
                    ["create_done"], markdown)
    print_breakdown(f"Control-plane side of the burst creates, {mem} MiB", cp_lines, ids["burst"],
                    ["sandbox_created"], markdown)
    print_breakdown(f"Agent side of the auto-pauses (default intervals), {mem} MiB", agent_lines,
                    ids["autopause"], ["sandbox_paused", "pause_done"], markdown)


def main(argv):
    args = parse_args(argv)
    os.environ["TORPOR_BUILD_DIR"] = os.path.abspath(args.build_dir)
    sys.path.insert(0, HARNESS_DIR)
    from harness import Stack  # noqa: E402  (reads TORPOR_BUILD_DIR at import)

    # SIGTERM (e.g. a timeout) unwinds like Ctrl-C, so the harness still
    # stops PostgreSQL, the agent, the control plane and the VMs.
    def on_term(signum, frame):
        raise SystemExit(f"bench_api: signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    facts = machine_facts()
    results = {mem: {"fig": Figures(), "ids": {k: [] for k in ("sequential", "concurrency", "burst",
                                                                "autopause")}}
               for mem in args.sizes}
    agent_lines, cp_lines = [], []
    t_start = time.monotonic()
    try:
        with Stack("bench") as s:
            ro = next((kv for kv in parse_log(s.agent.log_text()) if kv["event"] == "runtime_open"), {})
            facts["accelerator"] = f"{ro.get('accel', '?')} ({ro.get('reason', '')})".replace(" ()", "")
            progress(f"stack up (agent port {s.agent_port}, cp port {s.http_port})")
            try:
                for mem in args.sizes:
                    run_size(s, args, mem, results[mem])
            finally:
                agent_lines = parse_log(s.agent.log_text())
                cp_lines = parse_log(s.cp.log_text())
        if args.short_intervals and "autopause" not in args.skip:
            with Stack("bench-short", reconcile_interval=0.5, reaper_interval=0.2) as s2:
                for mem in args.sizes:
                    api2 = Api(s2, results[mem]["fig"])
                    sid, _ = api2.create(None, {"template": args.template, "memory_mb": mem})  # template build, not measured
                    api2.destroy(None, sid)
                    section_autopause(api2, argparse.Namespace(**{**vars(args), "memory_mb": mem}),
                                      "reaper 0.2 s, reconciler 0.5 s", [])
    except StackBroke as e:
        print(f"bench_api: the stack broke: {e}", file=sys.stderr)
        return 1
    except (AssertionError, RuntimeError, OSError) as e:
        print(f"bench_api: the stack broke: {type(e).__name__}: {e}", file=sys.stderr)
        return 1

    print()
    print_table("Machine and build", ("fact", "value"), list(facts.items()), args.markdown)
    for mem in args.sizes:
        print_size(mem, results[mem], agent_lines, cp_lines, args.markdown)
    print_breakdown("Template builds", agent_lines, None, ["template_built"], args.markdown)
    print(f"\ntotal run time {time.monotonic() - t_start:.0f} s; load average at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
