#!/usr/bin/env python3
"""bench_network: what sandbox networking costs (docs/network.md, issue 9).

Starts a throwaway stack (test/e2e/harness.py) and the test namespace of
test/e2e/test_network.py (traffic only goes there), then prints:
  - net_setup at create (namespace + veth + tap + nft, from the agent's
    event=net_setup built=1 lines) and at resume (rules re-applied, built=0),
    next to the whole create/resume as the REST client sees it;
  - egress throughput from the guest to a discarding TCP server inside the
    test namespace (guest -> tap -> netns NAT -> veth -> host -> veth).
Figures only; exits non-zero only when something it drives broke.
--setup-only stops after the net_setup figures (with the phases the agent
logs: build_us = namespace + links in-process, rules_us = the nft exec, which
runs while the links and the state file are made).
--auto-resume N only measures auto-resume through the proxy: N rounds of
paused (REST pause of an `auto_resume` sandbox serving busybox httpd) ->
first proxied answer, next to a REST resume + the same GET done apart.

usage: python3 bench/bench_network.py [--build-dir build] [--n 5] [--mib 32] [--setup-only]
                                     [--auto-resume N]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "e2e"))


# One client: N sequential GETs (new connection each, as busybox httpd closes),
# then 4 threads for the throughput; prints JSON. Run on the host (proxied) or
# inside the sandbox's namespace (direct).
CLIENT = r"""
import http.client, json, sys, threading, time
host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
hdrs = json.loads(sys.argv[5])
def one():
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", path, headers=hdrs)
    r = c.getresponse(); r.read(); c.close()
    assert r.status == 200, r.status
lat = []
for _ in range(n):
    t0 = time.perf_counter(); one(); lat.append((time.perf_counter() - t0) * 1000)
lat.sort()
done = [0]
def worker(k):
    for _ in range(k): one(); done[0] += 1
t0 = time.perf_counter()
ts = [threading.Thread(target=worker, args=(n // 4,)) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({"p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99) - 1],
                  "rps": done[0] / (time.perf_counter() - t0)}))
"""


def proxy_vs_direct(s, sid, n):
    import json as js
    r = s.exec(sid, "mkdir -p /tmp/www && echo 'small page' > /tmp/www/index.html && httpd -p 8080 -h /tmp/www")
    assert r["exit_code"] == 0, r
    direct = js.loads(subprocess.run(["ip", "netns", "exec", f"torpor-{sid}", "python3", "-c", CLIENT, "10.0.0.2",
                                      "8080", "/index.html", str(n), "{}"],
                                     check=True, capture_output=True, text=True).stdout)
    proxied = js.loads(subprocess.run(["python3", "-c", CLIENT, "127.0.0.1", str(s.http_port),
                                       f"/v1/sandboxes/{sid}/ports/8080/index.html", str(n),
                                       js.dumps({"X-API-Key": s.key_a})],
                                      check=True, capture_output=True, text=True).stdout)
    print(f"GET small page, direct (host -> guest, in the sandbox's namespace): p50 {direct['p50']:.2f} ms, "
          f"p99 {direct['p99']:.2f} ms, {direct['rps']:.0f} req/s (4 threads)")
    print(f"GET small page, proxied (cp -> agent tunnel -> guest): p50 {proxied['p50']:.2f} ms, "
          f"p99 {proxied['p99']:.2f} ms, {proxied['rps']:.0f} req/s (4 threads)")
    print(f"proxied/direct throughput: {proxied['rps'] / direct['rps']:.2f}; added at p50: "
          f"{proxied['p50'] - direct['p50']:.2f} ms")


def auto_resume(s, rounds):
    """Paused -> first proxied answer (auto_resume), and the same split in
    its two steps (REST resume, then the GET) for comparison."""
    import http.client
    sb = s.create({"template": "minimal", "memory_mb": 128, "auto_resume": True})
    sid, token = sb["id"], sb["access_token"]
    r = s.exec(sid, "mkdir -p /tmp/www && echo hi > /tmp/www/index.html && httpd -p 8080 -h /tmp/www")
    assert r["exit_code"] == 0, r

    def get():
        c = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=60)
        c.request("GET", f"/v1/sandboxes/{sid}/ports/8080/index.html", headers={"X-Access-Token": token})
        resp = c.getresponse()
        body = resp.read()
        c.close()
        assert resp.status == 200 and body == b"hi\n", (resp.status, body)

    get()
    woken, resume, first_get = [], [], []
    for _ in range(rounds):
        st, _ = s.request("POST", f"/v1/sandboxes/{sid}/pause")
        assert st == 200
        t0 = time.monotonic()
        get()
        woken.append((time.monotonic() - t0) * 1000)
        st, _ = s.request("POST", f"/v1/sandboxes/{sid}/pause")
        assert st == 200
        t0 = time.monotonic()
        st, _ = s.request("POST", f"/v1/sandboxes/{sid}/resume")
        assert st == 200
        t1 = time.monotonic()
        get()
        resume.append((t1 - t0) * 1000)
        first_get.append((time.monotonic() - t1) * 1000)
    med = statistics.median
    q = lambda v: sorted(v)[max(0, int(len(v) * 0.9 + 0.5) - 1)]  # noqa: E731
    print(f"auto-resume: paused -> first proxied answer: median {med(woken):.0f} ms, p90 {q(woken):.0f} ms "
          f"(n={rounds}; all: {[round(x) for x in woken]})")
    print(f"  apart: REST resume median {med(resume):.0f} ms + first GET after it median {med(first_get):.0f} ms")
    s.destroy(sid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--setup-only", action="store_true")
    ap.add_argument("--auto-resume", type=int, default=0, metavar="N")
    a = ap.parse_args()
    os.environ["TORPOR_BUILD_DIR"] = os.path.abspath(a.build_dir)
    import test_network as t  # noqa: E402  (after TORPOR_BUILD_DIR)
    s = t.NetStack("bench-network")
    s.__enter__()
    try:
        if a.auto_resume:
            auto_resume(s, a.auto_resume)
            return 0
        ids, create_ms, resume_ms = [], [], []
        for _ in range(a.n):
            t0 = time.monotonic()
            ids.append(s.create({"template": "minimal", "memory_mb": 128})["id"])
            create_ms.append((time.monotonic() - t0) * 1000)
        for sid in ids:
            st, _ = s.request("POST", f"/v1/sandboxes/{sid}/pause")
            assert st == 200
            t0 = time.monotonic()
            st, _ = s.request("POST", f"/v1/sandboxes/{sid}/resume")
            assert st == 200
            resume_ms.append((time.monotonic() - t0) * 1000)
        log = s.agent.log_text()
        built = [int(m) for m in re.findall(r"event=net_setup [^\n]*built=1 [^\n]*duration_ms=(\d+)", log)]
        again = [int(m) for m in re.findall(r"event=net_setup [^\n]*built=0 [^\n]*duration_ms=(\d+)", log)]
        med = statistics.median
        print(f"create (REST, first one builds the template): {[round(x) for x in create_ms]} ms")
        print(f"net_setup at create: median {med(built)} ms, max {max(built)} ms (n={len(built)})")
        print(f"resume (REST): median {med(resume_ms):.0f} ms; net_setup at resume: median {med(again)} ms, "
              f"max {max(again)} ms (n={len(again)})")
        for field in ("build_us", "write_us", "rules_us", "total_us"):
            v = [int(m) for m in re.findall(rf"event=net_setup [^\n]*built=1 [^\n]*{field}=(\d+)", log)]
            if v:
                print(f"  {field}: median {med(v) / 1000:.1f} ms, max {max(v) / 1000:.1f} ms")
        if a.setup_only:
            for sid in ids:
                s.destroy(sid)
            return 0

        # egress throughput to a discarding server in the test namespace
        sink = subprocess.Popen(["ip", "netns", "exec", t.NS, "python3", "-c",
                                 "import socket\n"
                                 "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                                 f"s.bind(('{t.SERVER}', 9000)); s.listen(4)\n"
                                 "while True:\n"
                                 "  c,_=s.accept()\n"
                                 "  while c.recv(1<<16): pass\n"
                                 "  c.close()\n"])
        try:
            time.sleep(1)
            sid = ids[0]
            base = []
            for _ in range(3):
                t0 = time.monotonic()
                s.exec(sid, "true")
                base.append(time.monotonic() - t0)
            runs = []
            for _ in range(3):
                t0 = time.monotonic()
                r = s.exec(sid, f"dd if=/dev/zero bs=65536 count={a.mib * 16} 2>/dev/null | nc -w 5 {t.SERVER} 9000",
                           timeout_sec=120)
                assert r["exit_code"] == 0, r
                runs.append(time.monotonic() - t0 - min(base))
            print(f"egress guest -> test namespace: {a.mib} MiB in median {med(runs):.2f} s = "
                  f"{a.mib / med(runs):.1f} MiB/s (runs {[round(x, 2) for x in runs]})")
        finally:
            sink.kill()
            sink.wait()
        proxy_vs_direct(s, ids[0], a.requests)
        for sid in ids:
            s.destroy(sid)
    finally:
        s.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
