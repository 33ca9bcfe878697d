#!/usr/bin/env python3
"""bench_http: the control plane's HTTP layer under load, with wrk.

Starts a throwaway stack through test/e2e/harness.py (its own PostgreSQL,
agent and torpor-cp), creates one sandbox, and then drives with wrk, for
each torpor-cp binary given (the build's, and optionally others started on
the same database, e.g. one built from an older commit):
  healthz   GET /healthz                       (no key, no database)
  get       GET /v1/sandboxes/{id} + X-API-Key (key check + one row read:
                                                two PostgreSQL queries)
  ping      POST /v1/sandboxes/{id}/ping       (key check, row + host read, the
                                                agent's PingSandbox over gRPC,
                                                last_active_at write)
Binaries are measured in turns, --rounds times, so a change in the
machine's load hits them alike. Prints requests/s and wrk's latency
percentiles. Figures only: nothing passes or fails on time.

  python3 bench/bench_http.py [--build-dir build] [--other NAME=PATH ...]
                              [--proto build/bench/proto_bev_http]
                              [--duration 10] [--connections 32] [--rounds 2]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS_DIR = os.path.join(SOURCE_DIR, "test", "e2e")


def parse_args(argv):
    ap = argparse.ArgumentParser(description="HTTP-layer benchmark of torpor-cp (figures only).")
    ap.add_argument("--build-dir", default=os.environ.get("TORPOR_BUILD_DIR", os.path.join(SOURCE_DIR, "build")))
    ap.add_argument("--other", action="append", default=[], metavar="NAME=PATH",
                    help="another torpor-cp binary to measure on the same database (repeatable)")
    ap.add_argument("--proto", metavar="PATH",
                    help="also measure /healthz on bench/proto_bev_http (the bufferevent + http_parser prototype)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--http-threads", type=int, default=8, help="torpor-cp --http-threads (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="turns over all binaries (default 2)")
    return ap.parse_args(argv)


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


def run_wrk(args, url, key, method=None, tmp="/tmp"):
    cmd = ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections), "-d", f"{args.duration}s",
           "--latency", url]
    if method:
        script = os.path.join(tmp, f"wrk-{method.lower()}.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "{method}"\n')
        cmd[1:1] = ["-s", script]
    if key:
        cmd[1:1] = ["-H", f"X-API-Key: {key}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {p: to_ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50": pct.get("50"), "p90": pct.get("90"), "p99": pct.get("99"),
            "bad": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(0) if errors else ""}


def main(argv):
    args = parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench_http: wrk is not installed")
    os.environ["TORPOR_BUILD_DIR"] = os.path.abspath(args.build_dir)
    sys.path.insert(0, HARNESS_DIR)
    from harness import Component, Stack  # noqa: E402  (reads TORPOR_BUILD_DIR at import)

    with Stack("bench-http", reconcile_interval=3600,
               cp_args=["--http-threads", str(args.http_threads)]) as s:
        sb = s.create({"template": "minimal", "memory_mb": 128})
        sid = sb["id"]
        targets = [("build", s.http_port)]
        for spec in args.other:
            name, path = spec.split("=", 1)
            argv_ = [os.path.abspath(path), "--http-addr", "127.0.0.1:0", "--database-url", s.db_url,
                     "--agent-addr", f"127.0.0.1:{s.agent_port}", "--reconcile-interval", "3600",
                     "--http-threads", str(args.http_threads)]
            # No metrics listener (its default port may be taken; older binaries ignore the variable).
            comp = Component(f"cp-{name}", argv_, os.path.join(s.tmp, f"cp-{name}.log"),
                             env=dict(os.environ, TORPOR_METRICS_ADDR="off"))
            s.extra.append(comp)
            comp.start()
            m = comp.wait_log(r"event=cp_ready\b[^\n]*\bport=(\d+)", 60, what=f"{name} cp_ready")
            targets.append((name, int(m.group(1))))
        if args.proto:
            proto = subprocess.Popen([os.path.abspath(args.proto), "--threads", str(args.http_threads)],
                                     stdout=subprocess.PIPE, text=True)
            port = int(re.fullmatch(r"port=(\d+)", proto.stdout.readline().strip()).group(1))
            targets.append(("proto-bev", port))
        rows = []
        for rnd in range(args.rounds):
            for name, port in targets:
                routes = [("healthz", "/healthz", None, None), ("get", f"/v1/sandboxes/{sid}", s.key_a, None),
                          ("ping", f"/v1/sandboxes/{sid}/ping", s.key_a, "POST")]
                if name == "proto-bev":
                    routes = routes[:1]
                for label, path, key, method in routes:
                    r = run_wrk(args, f"http://127.0.0.1:{port}{path}", key, method, s.tmp)
                    rows.append((rnd, name, label, r))
                    print(f"round {rnd} {name:>8} {label:>8}: {r['rps']:9.0f} req/s  p50 {r['p50']:.2f} ms  "
                          f"p90 {r['p90']:.2f} ms  p99 {r['p99']:.2f} ms  non-2xx {r['bad']} {r['errors']}",
                          file=sys.stderr, flush=True)
        print(f"\n| binary | route | round | req/s | p50 ms | p90 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for rnd, name, label, r in rows:
            print(f"| {name} | {label} | {rnd} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} |")
        if args.proto:
            proto.terminate()
            proto.wait()
        print(f"\nwrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s; torpor-cp --http-threads "
              f"{args.http_threads}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
