#!/usr/bin/env python3
"""bench_http: the control plane's HTTP layer under load, with wrk.

Starts a throwaway stack through test/e2e/harness.py (its own PostgreSQL,
agent and torpor-cp), creates one sandbox, and then drives with wrk, for
each torpor-cp binary given (the build's, and optionally others started on
the same database, e.g. one built from an older commit) and, with --proto,
bench/proto_bev_http (the bufferevent + http_parser prototype, on the same
database, with the same key cache time):
  healthz   GET /healthz                       (no key, no database; torpor-cp
                                                and the prototype answer it on
                                                their I/O thread)
  get       GET /v1/sandboxes/{id} + X-API-Key (on a worker: the key check -
                                                one PostgreSQL query, or none
                                                while the key cache holds the
                                                key - and one row read)
  ping      POST /v1/sandboxes/{id}/ping       (torpor-cp only: key check, row
                                                + host read, the agent's
                                                PingSandbox over gRPC,
                                                last_active_at write)
Before measuring, the prototype's answers on healthz and get are checked to
equal torpor-cp's. Servers are measured in turns per route, --rounds times,
their order reversed every other round, so a change in the machine's load
hits them alike; the 1-minute load average is recorded before each run.
Prints each run, then per server and route the medians over the rounds
(req/s, p50, p99, and the server process's own CPU time and context
switches per request, read from /proc, which the machine's load moves less
than req/s) and the
prototype/build ratios. Figures only: nothing passes or fails on time.

  python3 bench/bench_http.py [--build-dir build] [--other NAME=PATH ...]
                              [--proto build/bench/proto_bev_http]
                              [--routes healthz,get,ping] [--key-cache SEC]
                              [--duration 10] [--connections 32] [--rounds 2]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import urllib.error
import urllib.request

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS_DIR = os.path.join(SOURCE_DIR, "test", "e2e")


def parse_args(argv):
    ap = argparse.ArgumentParser(description="HTTP-layer benchmark of torpor-cp (figures only).")
    ap.add_argument("--build-dir", default=os.environ.get("TORPOR_BUILD_DIR", os.path.join(SOURCE_DIR, "build")))
    ap.add_argument("--other", action="append", default=[], metavar="NAME=PATH",
                    help="another torpor-cp binary to measure on the same database (repeatable)")
    ap.add_argument("--proto", metavar="PATH",
                    help="also measure bench/proto_bev_http (the bufferevent + http_parser prototype) "
                         "on healthz and get")
    ap.add_argument("--routes", default="healthz,get,ping",
                    help="comma-separated subset of healthz,get,ping (default all; the prototype has no ping)")
    ap.add_argument("--key-cache", type=float, metavar="SEC",
                    help="torpor-cp --key-cache, and the prototype's key cache time (default: torpor-cp's)")
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


def cpu_sec(pid):
    """User + system CPU seconds of process pid so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ctx_switches(pid):
    """Context switches (voluntary + not) of all of process pid's threads so far."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                n += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except FileNotFoundError:
            pass
    return n


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
    total = int(re.search(r"(\d+) requests in", out).group(1))
    pct = {p: to_ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "n": total, "p50": pct.get("50"), "p90": pct.get("90"), "p99": pct.get("99"),
            "bad": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(0) if errors else ""}


def fetch(port, path, key):
    """Status and JSON body of one GET (to check both servers answer alike)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main(argv):
    args = parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench_http: wrk is not installed")
    os.environ["TORPOR_BUILD_DIR"] = os.path.abspath(args.build_dir)
    sys.path.insert(0, HARNESS_DIR)
    from harness import Component, Stack  # noqa: E402  (reads TORPOR_BUILD_DIR at import)

    cp_common = ["--http-threads", str(args.http_threads)]
    if args.key_cache is not None:
        cp_common += ["--key-cache", str(args.key_cache)]
    routes_wanted = args.routes.split(",")
    with Stack("bench-http", reconcile_interval=3600, cp_args=cp_common) as s:
        sb = s.create({"template": "minimal", "memory_mb": 128})
        sid = sb["id"]
        all_routes = {"healthz": ("/healthz", None, None), "get": (f"/v1/sandboxes/{sid}", s.key_a, None),
                      "ping": (f"/v1/sandboxes/{sid}/ping", s.key_a, "POST")}
        targets = [("build", s.http_port)]
        pids = {"build": s.cp.proc.pid}
        for spec in args.other:
            name, path = spec.split("=", 1)
            argv_ = [os.path.abspath(path), "--http-addr", "127.0.0.1:0", "--database-url", s.db_url,
                     "--agent-addr", f"127.0.0.1:{s.agent_port}", "--reconcile-interval", "3600"] + cp_common
            # No metrics listener (its default port may be taken; older binaries ignore the variable).
            comp = Component(f"cp-{name}", argv_, os.path.join(s.tmp, f"cp-{name}.log"),
                             env=dict(os.environ, TORPOR_METRICS_ADDR="off"))
            s.extra.append(comp)
            comp.start()
            m = comp.wait_log(r"event=cp_ready\b[^\n]*\bport=(\d+)", 60, what=f"{name} cp_ready")
            targets.append((name, int(m.group(1))))
            pids[name] = comp.proc.pid
        proto = None
        if args.proto:
            # torpor-cp's key cache time (its default unless --key-cache) for the prototype too.
            cache_ms = round((args.key_cache if args.key_cache is not None else 2.0) * 1000)
            proto = subprocess.Popen([os.path.abspath(args.proto), "--threads", str(args.http_threads),
                                      "--database-url", s.db_url, "--key-cache-ms", str(cache_ms)],
                                     stdout=subprocess.PIPE, text=True)
            port = int(re.fullmatch(r"port=(\d+)", proto.stdout.readline().strip()).group(1))
            targets.append(("proto-bev", port))
            pids["proto-bev"] = proto.pid
            # Same answers on the routes both serve (the prototype serves healthz and get).
            for label in ("healthz", "get"):
                path, key, _ = all_routes[label]
                want, got = fetch(s.http_port, path, key), fetch(port, path, key)
                if want != got:
                    sys.exit(f"bench_http: {label}: torpor-cp answered {want}, the prototype {got}")
            if fetch(port, all_routes["get"][0], "tpk_" + "0" * 32)[0] != 401:
                sys.exit("bench_http: the prototype accepted an unknown key")
        rows = []
        for rnd in range(args.rounds):
            # Servers interleaved per route, their order reversed every other round.
            order = targets if rnd % 2 == 0 else targets[::-1]
            for label in routes_wanted:
                path, key, method = all_routes[label]
                for name, port in order:
                    if name == "proto-bev" and label == "ping":
                        continue
                    load = os.getloadavg()[0]
                    cpu0, cs0 = cpu_sec(pids[name]), ctx_switches(pids[name])
                    r = run_wrk(args, f"http://127.0.0.1:{port}{path}", key, method, s.tmp)
                    r["load"] = load
                    # The server's own CPU per request (its threads, not PostgreSQL's): less
                    # moved by the machine's load than req/s.
                    r["cpu_us"] = (cpu_sec(pids[name]) - cpu0) * 1e6 / max(r["n"], 1)
                    r["cs"] = (ctx_switches(pids[name]) - cs0) / max(r["n"], 1)
                    rows.append((rnd, name, label, r))
                    print(f"round {rnd} {name:>9} {label:>8}: {r['rps']:9.0f} req/s  p50 {r['p50']:.2f} ms  "
                          f"p90 {r['p90']:.2f} ms  p99 {r['p99']:.2f} ms  cpu/req {r['cpu_us']:.0f} us  ctxsw/req {r['cs']:.1f}  "
                          f"non-2xx {r['bad']}  load {load:.1f} "
                          f"{r['errors']}", file=sys.stderr, flush=True)
        print("\n| server | route | round | req/s | p50 ms | p90 ms | p99 ms | server CPU us/req | ctx switches/req | non-2xx | load avg |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rnd, name, label, r in rows:
            print(f"| {name} | {label} | {rnd} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p90']:.2f} | "
                  f"{r['p99']:.2f} | {r['cpu_us']:.0f} | {r['cs']:.1f} | {r['bad']} | {r['load']:.1f} |")
        print(f"\nMedians over {args.rounds} rounds (p99: the median of the rounds' p99, and the worst):\n")
        print("| server | route | req/s | p50 ms | p99 ms | worst p99 ms | server CPU us/req | ctx switches/req |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        med = {}
        for label in routes_wanted:
            for name, _ in targets:
                rs = [r for _, n, l, r in rows if n == name and l == label]
                if not rs:
                    continue
                m = {k: median([r[k] for r in rs]) for k in ("rps", "p50", "p99", "cpu_us", "cs")}
                med[(name, label)] = m
                print(f"| {name} | {label} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | "
                      f"{max(r['p99'] for r in rs):.2f} | {m['cpu_us']:.0f} | {m['cs']:.1f} |")
        if proto:
            print("\nprototype / build (median req/s; median p99; median server CPU per request):")
            for label in routes_wanted:
                a, b = med.get(("proto-bev", label)), med.get(("build", label))
                if a and b:
                    print(f"  {label}: req/s x{a['rps'] / b['rps']:.2f}; p99 x{a['p99'] / b['p99']:.2f}; "
                          f"CPU/req x{a['cpu_us'] / b['cpu_us']:.2f}")
            proto.terminate()
            proto.wait()
        loads = [r["load"] for *_, r in rows]
        print(f"\nwrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s; --http-threads "
              f"{args.http_threads}; key cache {args.key_cache if args.key_cache is not None else 'default'}; "
              f"{os.cpu_count()} CPUs; load average (1 min) {min(loads):.1f}-{max(loads):.1f} before the runs, "
              f"{os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
