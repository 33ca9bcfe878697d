#!/usr/bin/env python3
"""density: how many idle sandboxes one host keeps, and what they cost it
(issue 11, "Real density on this machine").

Starts a throwaway stack through test/e2e/harness.py (its own PostgreSQL,
agent and torpor-cp), creates N idle sandboxes through REST (timeout_sec 0,
so none is auto-paused while measured; --concurrency creates at a time),
then, while they idle for --idle-sec, reads:
  pss        total proportional set size of their QEMU processes
             (/proc/<pid>/smaps_rollup), and per sandbox
  cpu        CPU time of those QEMU processes over the window
             (utime + stime of /proc/<pid>/stat): % of one core in total and
             per idle sandbox; the host's own busy % from /proc/stat over the
             same window is printed too (it includes every other process)
  ping       REST ping latency to a random one of them, back to back with
             --ping-gap-ms between, during the window (p50 / p99)
and the create latency of each of the N (p50 / p99 / max). Destroys them
all at the end. Figures only: nothing passes or fails on time. Not part of
CI: with N = 200 it occupies the machine for minutes.

  python3 bench/density.py [N] [--build-dir build] [--memory-mb 128]
                           [--template minimal] [--idle-sec 30]
                           [--concurrency 4] [--ping-gap-ms 20]
"""

import argparse
import os
import random
import re
import sys
import threading
import time

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS_DIR = os.path.join(SOURCE_DIR, "test", "e2e")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Idle-sandbox density benchmark (figures only).")
    ap.add_argument("n", nargs="?", type=int, default=200, help="idle sandboxes to start (default 200)")
    ap.add_argument("--build-dir", default=os.environ.get("TORPOR_BUILD_DIR", os.path.join(SOURCE_DIR, "build")))
    ap.add_argument("--memory-mb", type=int, default=128, help="guest memory of each (default 128)")
    ap.add_argument("--template", default="minimal", help="template (default minimal)")
    ap.add_argument("--idle-sec", type=float, default=30, help="measurement window (default 30)")
    ap.add_argument("--concurrency", type=int, default=4, help="creates in flight at once (default 4)")
    ap.add_argument("--ping-gap-ms", type=float, default=20, help="pause between pings in the window (default 20)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.idle_sec <= 0:
        ap.error("N and --concurrency must be >= 1, --idle-sec > 0")
    return args


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(1, -(-len(v) * p // 100))
    return v[int(k) - 1]


def qemu_pids(state_dir):
    """QEMU processes of the stack: command line or working directory in its
    state dir (QEMU runs in the sandbox's directory with relative paths)."""
    prefix = state_dir.rstrip("/") + "/"
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            cwd = os.readlink(f"/proc/{d}/cwd") + "/"
        except OSError:
            continue
        if not cmd or b"qemu-system" not in os.path.basename(cmd[0]):
            continue
        if cwd.startswith(prefix) or any(prefix.encode() in a for a in cmd):
            pids.append(int(d))
    return pids


def cpu_ticks(pid):
    """utime + stime of pid in clock ticks (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            m = re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M)
            return int(m.group(1)) if m else 0
    except OSError:
        return 0


def host_busy():
    """(busy, total) jiffies of the whole host from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def main(argv):
    args = parse_args(argv)
    os.environ["TORPOR_BUILD_DIR"] = os.path.abspath(args.build_dir)
    sys.path.insert(0, HARNESS_DIR)
    from harness import Stack  # noqa: E402  (reads TORPOR_BUILD_DIR at import)

    with Stack("density", cp_args=["--team-long-calls", str(max(8, args.concurrency))]) as s:
        body = {"template": args.template, "memory_mb": args.memory_mb, "timeout_sec": 0}
        # The template's first create boots it and takes its snapshot: done
        # once before the measured creates, then destroyed.
        t0 = time.monotonic()
        first = s.create(body)
        print(f"template {args.template} ready (first create {time.monotonic() - t0:.1f} s)", file=sys.stderr)
        s.destroy(first["id"])

        ids, create_ms, failures = [], [], []
        lock = threading.Lock()
        todo = list(range(args.n))

        def creator():
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                b = time.monotonic()
                st, sb = s.request("POST", "/v1/sandboxes", body)
                ms = (time.monotonic() - b) * 1000
                with lock:
                    if st == 201:
                        ids.append(sb["id"])
                        create_ms.append(ms)
                        if len(ids) % 20 == 0:
                            print(f"  {len(ids)} created", file=sys.stderr, flush=True)
                    else:
                        failures.append((st, sb))

        t_create = time.monotonic()
        threads = [threading.Thread(target=creator) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_create = time.monotonic() - t_create
        if failures:
            print(f"{len(failures)} creates failed, first: {failures[0]}", file=sys.stderr)
        if not ids:
            print("no sandbox was created", file=sys.stderr)
            return 1

        time.sleep(2)  # the last guests settle after their wake-up
        pids = qemu_pids(s.state_dir)
        ticks0 = {p: cpu_ticks(p) for p in pids}
        busy0, total0 = host_busy()
        w0 = time.monotonic()
        ping_ms = []
        while time.monotonic() - w0 < args.idle_sec:
            sid = random.choice(ids)
            b = time.monotonic()
            st, _ = s.request("POST", f"/v1/sandboxes/{sid}/ping")
            ping_ms.append((time.monotonic() - b) * 1000)
            assert st == 204, f"ping {sid}: {st}"
            time.sleep(args.ping_gap_ms / 1000)
        window = time.monotonic() - w0
        busy1, total1 = host_busy()
        ticks1 = {p: cpu_ticks(p) for p in pids}
        pss_total = sum(pss_kib(p) for p in pids)
        used = sum(ticks1[p] - ticks0[p] for p in pids if ticks0[p] is not None and ticks1[p] is not None)
        qemu_core_pct = used / CLK_TCK / window * 100
        ncpu = os.cpu_count()
        host_pct = (busy1 - busy0) / max(1, total1 - total0) * 100 * ncpu  # % of one core

        n = len(ids)
        print()
        print(f"| figure | value |")
        print("|---|---|")
        print(f"| idle sandboxes ({args.template}, {args.memory_mb} MiB, timeout_sec 0) | {n} of {args.n} "
              f"(QEMU processes found: {len(pids)}) |")
        print(f"| creates, {args.concurrency} at a time: p50 / p99 / max | {pct(create_ms, 50):.0f} / "
              f"{pct(create_ms, 99):.0f} / {max(create_ms):.0f} ms (all {n} in {t_create:.1f} s) |")
        print(f"| total PSS of the QEMU processes | {pss_total / 1024:.0f} MiB ({pss_total / 1024 / max(1, len(pids)):.1f} "
              f"MiB per sandbox) |")
        print(f"| QEMU CPU over {window:.0f} s idle | {qemu_core_pct:.1f} % of one core in total, "
              f"**{qemu_core_pct / max(1, len(pids)):.3f} % per idle sandbox** |")
        print(f"| host busy over the same window (every process, {ncpu} CPUs) | {host_pct:.0f} % of one core |")
        print(f"| REST ping to a random idle sandbox during the window: p50 / p99 (n={len(ping_ms)}) | "
              f"{pct(ping_ms, 50):.2f} / {pct(ping_ms, 99):.2f} ms |")
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")

        def destroyer(part):
            for sid in part:
                s.request("DELETE", f"/v1/sandboxes/{sid}")
        parts = [ids[i::args.concurrency] for i in range(args.concurrency)]
        threads = [threading.Thread(target=destroyer, args=(p,)) for p in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
