#!/usr/bin/env python3
"""The metrics listeners of torpor-agent and torpor-cp (issue 12,
Operations): after real activity on the minimal template (two 128 MiB
sandboxes: create, exec, pause, resume, exec, one auto-pause, a 404) both
GET /metrics answers parse with prometheus_client's text parser, every
family is there, histogram buckets are cumulative with +Inf = _count, the
operation counts equal the activity, the HTTP families are labelled with
route patterns only (never a raw path), and the sandbox gauges match the
states the API reports. With PostgreSQL stopped, the DB error counter grows
and the sandbox gauges are absent rather than stale; they come back with it."""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PG_SH, Component, Stack, run_tests, wait_until  # noqa: E402

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # a python3 other than Debian's (pyenv): the package is in dist-packages
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

REAPER = 1
RECONCILE = 1
TTL = 2
SLACK = float(os.environ.get("TORPOR_E2E_SLACK", "10"))
ROUTE_PATTERNS = {
    "/healthz", "/v1/sandboxes", "/v1/sandboxes/{id}", "/v1/sandboxes/{id}/pause", "/v1/sandboxes/{id}/resume",
    "/v1/sandboxes/{id}/ping", "/v1/sandboxes/{id}/timeout", "/v1/sandboxes/{id}/exec",
    "/v1/sandboxes/{id}/files/write", "/v1/sandboxes/{id}/files/read", "/v1/openapi.json", "/", "/ui/*",
    "unmatched",
}

ctx = {}


def families(text):
    """{family name: Metric} of a scrape (the parser drops a counter's _total)."""
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams, f"nothing parsed from:\n{text[:500]}"
    return fams


def samples(fam, name, **labels):
    """Values of fam's samples called name whose labels include `labels`."""
    return [s.value for s in fam.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def one(fam, name, **labels):
    vals = samples(fam, name, **labels)
    assert len(vals) == 1, f"{name}{labels}: expected one sample, got {vals}"
    return vals[0]


def check_histogram(fam):
    """Each series: buckets ascending in le, cumulative counts never
    decrease, +Inf equals _count, _sum >= 0. Returns {labels: count}."""
    assert fam.type == "histogram", f"{fam.name} is a {fam.type}"
    series = {}
    for s in fam.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        series.setdefault(key, {"buckets": [], "count": None, "sum": None})
        if s.name.endswith("_bucket"):
            series[key]["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            series[key]["count"] = s.value
        elif s.name.endswith("_sum"):
            series[key]["sum"] = s.value
    assert series, f"{fam.name} has no series"
    out = {}
    for key, h in series.items():
        les = [le for le, _ in h["buckets"]]
        assert les == sorted(les) and les[-1] == float("inf"), f"{fam.name}{key}: bucket bounds {les}"
        counts = [c for _, c in h["buckets"]]
        assert all(a <= b for a, b in zip(counts, counts[1:])), f"{fam.name}{key}: not cumulative {counts}"
        assert counts[-1] == h["count"], f"{fam.name}{key}: +Inf {counts[-1]} != _count {h['count']}"
        assert h["sum"] is not None and h["sum"] >= 0, f"{fam.name}{key}: _sum {h['sum']}"
        out[dict(key).get("operation") or key] = h["count"]
    return out


def test_activity(s):
    a = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": 0})
    ctx["a"] = a["id"]
    for cmd in ("echo one", None):
        if cmd is None:
            st, body = s.request("POST", f"/v1/sandboxes/{a['id']}/pause")
            assert st == 200 and body["status"] == "paused", f"pause: {st} {body}"
            st, body = s.request("POST", f"/v1/sandboxes/{a['id']}/resume")
            assert st == 200 and body["status"] == "running", f"resume: {st} {body}"
            cmd = "echo two"
        st, body = s.request("POST", f"/v1/sandboxes/{a['id']}/exec", {"cmd": cmd})
        assert st == 200 and body["exit_code"] == 0, f"exec {cmd}: {st} {body}"
    b = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": TTL})
    ctx["b"] = b["id"]
    s.wait_status(b["id"], "paused", TTL + REAPER + RECONCILE + SLACK + 20)
    s.cp.wait_log(rf"event=auto_pause_acked sandbox_id={b['id']}\b", RECONCILE + SLACK,
                  what="the auto-pause notice acknowledged")
    st, _ = s.request("GET", "/no/such/route")
    assert st == 404, st


def test_agent_metrics_parse_and_match_the_activity(s):
    fams = families(s.scrape("agent"))
    for name in ("torpor_agent_operation_duration_seconds", "torpor_agent_auto_pauses", "torpor_agent_reaper_ticks",
                 "torpor_agent_reaper_lag_seconds", "torpor_agent_sandboxes", "torpor_agent_pause_queue_depth",
                 "torpor_agent_journal_backlog"):
        assert name in fams, f"agent family {name} missing; have {sorted(fams)}"
    ops = fams["torpor_agent_operation_duration_seconds"]
    check_histogram(ops)
    name = "torpor_agent_operation_duration_seconds_count"
    assert one(ops, name, operation="create", result="ok") == 2
    assert one(ops, name, operation="pause", result="ok") == 1
    assert one(ops, name, operation="resume", result="ok") == 1
    assert one(ops, name, operation="exec", result="ok") == 2
    assert one(ops, name, operation="auto_pause", result="ok") == 1
    ap = fams["torpor_agent_auto_pauses"]
    assert ap.type == "counter"
    assert one(ap, "torpor_agent_auto_pauses_total", result="paused") == 1
    assert one(ap, "torpor_agent_auto_pauses_total", result="failed") == 0
    sb = fams["torpor_agent_sandboxes"]
    assert sb.type == "gauge"
    assert one(sb, "torpor_agent_sandboxes", state="running") == 1
    assert one(sb, "torpor_agent_sandboxes", state="paused") == 1
    assert one(sb, "torpor_agent_sandboxes", state="pausing") == 0
    assert one(fams["torpor_agent_pause_queue_depth"], "torpor_agent_pause_queue_depth") == 0
    assert one(fams["torpor_agent_journal_backlog"], "torpor_agent_journal_backlog") == 0  # acked above
    ticks = one(fams["torpor_agent_reaper_ticks"], "torpor_agent_reaper_ticks_total")
    assert ticks >= 2, f"reaper ticks {ticks}"
    lag = one(fams["torpor_agent_reaper_lag_seconds"], "torpor_agent_reaper_lag_seconds")
    assert 0 <= lag < 30, f"reaper lag {lag}s"
    # Counters only grow: a second scrape after one more tick.
    wait_until(lambda: one(families(s.scrape("agent"))["torpor_agent_reaper_ticks"],
                           "torpor_agent_reaper_ticks_total") > ticks, REAPER + SLACK, what="another reaper tick")


def test_cp_metrics_parse_and_match_the_activity(s):
    fams = families(s.scrape("cp"))
    for name in ("torpor_cp_http_requests", "torpor_cp_http_request_duration_seconds", "torpor_cp_db_errors",
                 "torpor_cp_reconcile_duration_seconds", "torpor_cp_sandboxes"):
        assert name in fams, f"cp family {name} missing; have {sorted(fams)}"
    req = fams["torpor_cp_http_requests"]
    assert req.type == "counter"
    routes = {x.labels["route"] for x in req.samples}
    assert routes <= ROUTE_PATTERNS, f"route labels that are not patterns: {routes - ROUTE_PATTERNS}"
    assert not any(ctx["a"] in r or ctx["b"] in r for r in routes), routes
    total = "torpor_cp_http_requests_total"
    assert one(req, total, method="POST", route="/v1/sandboxes", status="201") == 2
    assert one(req, total, method="POST", route="/v1/sandboxes/{id}/pause", status="200") == 1
    assert one(req, total, method="POST", route="/v1/sandboxes/{id}/resume", status="200") == 1
    assert one(req, total, method="POST", route="/v1/sandboxes/{id}/exec", status="200") == 2
    assert one(req, total, method="GET", route="unmatched", status="404") >= 1
    dur = fams["torpor_cp_http_request_duration_seconds"]
    check_histogram(dur)
    # The histogram's _count and the counter agree, series by series.
    for x in req.samples:
        assert one(dur, "torpor_cp_http_request_duration_seconds_count", **x.labels) == x.value, x
    sb = fams["torpor_cp_sandboxes"]
    states = {x.labels["state"] for x in sb.samples if x.labels["host"] == "default"}
    assert states == {"pending", "running", "pausing", "paused", "resuming", "stopped", "error", "moving"}, states
    assert one(sb, "torpor_cp_sandboxes", host="default", state="running") == 1
    assert one(sb, "torpor_cp_sandboxes", host="default", state="paused") == 1
    rec = fams["torpor_cp_reconcile_duration_seconds"]
    check_histogram(rec)
    assert one(rec, "torpor_cp_reconcile_duration_seconds_count", host="default", result="ok") >= 2
    errors = one(fams["torpor_cp_db_errors"], "torpor_cp_db_errors_total")
    assert errors >= 0, errors
    print(f"    cp: {len(req.samples)} request series, db errors {errors:g}")


def test_metrics_listener_has_one_path(s):
    import http.client
    for port in (s.cp_metrics_port, s.agent_metrics_port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/v1/sandboxes")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 404, f"metrics port {port} answered {resp.status} for /v1/sandboxes"
    text = s.scrape("cp")
    assert re.search(r"^# TYPE torpor_cp_http_requests_total counter$", text, re.M), text[:300]


def test_db_outage_counts_errors_and_drops_the_sandbox_gauges(s):
    def db_errors(fams):
        return one(fams["torpor_cp_db_errors"], "torpor_cp_db_errors_total")

    def sandbox_samples(fams):
        fam = fams.get("torpor_cp_sandboxes")
        return [] if fam is None else fam.samples

    before = db_errors(families(s.scrape("cp")))
    out = subprocess.run(["bash", PG_SH, "stop", s.pg_dir], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    try:
        st, body = s.request("GET", "/v1/sandboxes")
        # 503 unavailable since the control plane tells a database outage
        # apart from a failure (issue 10).
        assert st == 503 and body["error"]["code"] == "unavailable", \
            f"GET /v1/sandboxes without PostgreSQL: {st} {body}"
        fams = families(s.scrape("cp"))
        assert db_errors(fams) > before, f"db errors {db_errors(fams)} (before {before})"
        assert sandbox_samples(fams) == [], f"stale sandbox gauges: {sandbox_samples(fams)}"
    finally:
        out = subprocess.run(["bash", PG_SH, "start", s.pg_dir], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    wait_until(lambda: s.request("GET", "/v1/sandboxes")[0] == 200, 30, what="the API back after PostgreSQL")
    fams = families(s.scrape("cp"))
    assert one(fams["torpor_cp_sandboxes"], "torpor_cp_sandboxes", host="default", state="running") == 1


def test_metrics_addr_off_and_a_taken_port(s):
    def cp(name, metrics_addr):
        argv = [s.cp_bin, "--http-addr", "127.0.0.1:0", "--database-url", s.db_url, "--agent-addr",
                f"127.0.0.1:{s.agent_port}", "--reconcile-interval", "3600", "--metrics-addr", metrics_addr]
        comp = Component(name, argv, os.path.join(s.tmp, f"{name}.log"))
        s.extra.append(comp)
        comp.start()
        return comp
    off = cp("cp-metrics-off", "off")
    off.wait_log(r"event=cp_ready\b[^\n]*\bmetrics_addr=off metrics_port=0\b", 60, what="cp_ready without metrics")
    taken = cp("cp-metrics-taken", f"127.0.0.1:{s.cp_metrics_port}")
    assert taken.proc.wait(60) == 1, f"exit code {taken.proc.returncode} with a taken metrics port"
    log = taken.log_text()
    assert "stage=metrics" in log and "event=cp_ready" not in log, log


if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("metrics", reconcile_interval=RECONCILE, reaper_interval=REAPER),
                       [test_activity, test_agent_metrics_parse_and_match_the_activity,
                        test_cp_metrics_parse_and_match_the_activity, test_metrics_listener_has_one_path,
                        test_metrics_addr_off_and_a_taken_port,
                        test_db_outage_counts_errors_and_drops_the_sandbox_gauges]))
