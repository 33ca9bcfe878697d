#!/usr/bin/env python3
"""bench_files: files through REST (issue 8): write and read of one file of
--mib MiB (default 100) with PUT / GET /v1/sandboxes/{id}/files/content, on
a `debian` sandbox of a throwaway stack (test/e2e/harness.py), --rounds times.
Reports MB/s (MiB/s, wall time of the whole request as the client sees it)
and the peak RSS of torpor-agent and torpor-cp during each transfer
(VmRSS sampled every 20 ms), next to their RSS before it. The client
generates and hashes the data in 1 MiB pieces; the file's sha256 is checked
in the guest and on the way back, so a fast wrong answer is not a figure.

  python3 bench/bench_files.py [--build-dir build] [--mib 100] [--rounds 3] [--memory-mb 256] [--markdown]
Needs the debian image (make image-debian). Figures only, not in CI."""

import argparse
import hashlib
import http.client
import os
import statistics
import sys
import threading
import time

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1024 * 1024


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRss:
    """Samples VmRSS of some pids every 20 ms while in a with-block."""

    def __init__(self, pids):
        self.pids = pids
        self.before = {p: rss_kib(p) for p in pids}
        self.peak = dict(self.before)
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            for p in self.pids:
                self.peak[p] = max(self.peak[p], rss_kib(p))
            time.sleep(0.02)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def chunks(total, seed):
    block = hashlib.sha512(seed).digest() * (MiB // 64)
    for i in range(total // MiB):
        yield bytes([i & 0xff]) + block[1:]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default=os.environ.get("TORPOR_BUILD_DIR", os.path.join(SOURCE_DIR, "build")))
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory-mb", type=int, default=256)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    os.environ["TORPOR_BUILD_DIR"] = os.path.abspath(args.build_dir)
    sys.path.insert(0, os.path.join(SOURCE_DIR, "test", "e2e"))
    from harness import Stack  # noqa: E402

    size = args.mib * MiB
    rows = {"write": [], "read": []}
    with Stack("bench-files") as s:
        s.openapi_check = False
        agent_pid, cp_pid = s.agent.proc.pid, s.cp.proc.pid
        sb = s.create({"template": "debian", "memory_mb": args.memory_mb})
        sid = sb["id"]
        for rnd in range(args.rounds):
            seed = f"round{rnd}".encode()
            want = hashlib.sha256()
            for c in chunks(size, seed):
                want.update(c)
            path = f"/root/bench-{rnd}.bin"
            with PeakRss([agent_pid, cp_pid]) as pr:
                t0 = time.monotonic()
                st, res = s.request("PUT", f"/v1/sandboxes/{sid}/files/content?path={path}", chunks(size, seed),
                                    timeout=3600)
                dt = time.monotonic() - t0
            assert st == 200 and res["size"] == size, (st, res)
            rows["write"].append((size / MiB / dt, pr.before[agent_pid], pr.peak[agent_pid],
                                  pr.before[cp_pid], pr.peak[cp_pid]))
            r = s.exec(sid, f"sha256sum {path}", timeout_sec=600)
            assert r["stdout"].split()[0] == want.hexdigest(), r
            with PeakRss([agent_pid, cp_pid]) as pr:
                t0 = time.monotonic()
                conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=3600)
                conn.request("GET", f"/v1/sandboxes/{sid}/files/content?path={path}",
                             headers={"X-API-Key": s.key_a})
                resp = conn.getresponse()
                assert resp.status == 200, resp.status
                got, n = hashlib.sha256(), 0
                while True:
                    piece = resp.read(MiB)
                    if not piece:
                        break
                    got.update(piece)
                    n += len(piece)
                conn.close()
                dt = time.monotonic() - t0
            assert n == size and got.hexdigest() == want.hexdigest(), "read back differs"
            rows["read"].append((size / MiB / dt, pr.before[agent_pid], pr.peak[agent_pid],
                                 pr.before[cp_pid], pr.peak[cp_pid]))
            s.exec(sid, f"rm -f {path}")
            print(f"round {rnd}: write {rows['write'][-1][0]:.1f} MiB/s, read {rows['read'][-1][0]:.1f} MiB/s",
                  file=sys.stderr)
        s.destroy(sid)

    hdr = ("direction", "n", "median MiB/s", "min", "max", "agent RSS before → peak (MiB)",
           "cp RSS before → peak (MiB)")
    out = []
    for d, rs in rows.items():
        speeds = [r[0] for r in rs]
        out.append((f"{d} {args.mib} MiB", str(len(rs)), f"{statistics.median(speeds):.1f}", f"{min(speeds):.1f}",
                    f"{max(speeds):.1f}", f"{max(r[1] for r in rs) / 1024:.0f} → {max(r[2] for r in rs) / 1024:.0f}",
                    f"{max(r[3] for r in rs) / 1024:.0f} → {max(r[4] for r in rs) / 1024:.0f}"))
    if args.markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for r in out:
            print("| " + " | ".join(r) + " |")
    else:
        for r in [hdr] + out:
            print("  ".join(r))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
