#!/usr/bin/env python3
"""torpor-cp's static answers, embedded in the binary at build time:
GET /v1/openapi.json is docs/openapi.yaml as JSON, and the dashboard (GET /
and its assets under /ui/) comes with its Content-Type and security headers;
none needs a key, and an unknown asset is 404. (The dashboard's behaviour in
a browser is test_dashboard.py.)"""

import http.client
import os
import re
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SOURCE_DIR, Stack, check_answer, expect_error, run_tests  # noqa: E402


def raw_get(s, path, headers=None):
    """GET without the harness's parsing: (status, headers dict (lowercase
    names), bytes); the answer is checked against the spec all the same."""
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        hdrs, raw = {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
    check_answer("GET", path, resp.status, hdrs, raw)
    return resp.status, hdrs, raw


def test_openapi_json_equals_the_yaml_spec(s):
    st, served = s.request("GET", "/v1/openapi.json", key=None)
    assert st == 200, f"GET /v1/openapi.json: {st} {served!r:.200}"
    with open(os.path.join(SOURCE_DIR, "docs", "openapi.yaml")) as f:
        spec = yaml.safe_load(f)
    assert served == spec, "the served spec differs from docs/openapi.yaml parsed"
    assert "/v1/openapi.json" in served["paths"] and "/" in served["paths"]


def test_openapi_json_needs_no_key_and_ignores_a_bad_one(s):
    st, served = s.request("GET", "/v1/openapi.json", key="tpk_" + "0" * 32)
    assert st == 200 and served["openapi"].startswith("3.1."), (st, served)


def test_dashboard_page_is_html_with_strict_headers(s):
    st, hdrs, body = raw_get(s, "/")
    assert st == 200, st
    assert hdrs["content-type"] == "text/html; charset=utf-8", hdrs
    assert hdrs["cache-control"] == "no-store", hdrs
    assert hdrs["x-content-type-options"] == "nosniff", hdrs
    csp = hdrs["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'", csp
    assert directives["script-src"] == "'self'", csp  # no 'unsafe-inline', no other origin
    assert directives["style-src"] == "'self'", csp
    assert directives["connect-src"] == "'self'", csp
    assert directives["frame-ancestors"] == "'none'", csp
    html = body.decode()
    assert '<script src="/ui/dashboard.js"' in html, html[:300]
    # No inline script: every <script> has a src and an empty body.
    for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, re.S):
        assert "src=" in m.group(1) and not m.group(2).strip(), m.group(0)[:200]
    assert not re.search(r"\son[a-z]+=", html), "inline event handler in the page"
    assert " style=" not in html, "inline style in the page"
    s.request("GET", "/", key=None)  # and the spec describes the answer


def test_assets_are_served_with_their_type(s):
    for name, ctype, needle in [("dashboard.js", "text/javascript; charset=utf-8", b"/v1/sandboxes"),
                                ("dashboard.css", "text/css; charset=utf-8", b".state-running")]:
        st, hdrs, body = raw_get(s, f"/ui/{name}")
        assert st == 200, (name, st)
        assert hdrs["content-type"] == ctype, (name, hdrs)
        assert hdrs["x-content-type-options"] == "nosniff", (name, hdrs)
        assert hdrs["cache-control"] == "no-cache", (name, hdrs)
        with open(os.path.join(SOURCE_DIR, "controlplane", "dashboard", name), "rb") as f:
            assert body == f.read(), f"{name}: served bytes differ from the source file"
        assert needle in body
        s.request("GET", f"/ui/{name}", key=None)


def test_unknown_asset_is_404(s):
    for path in ["/ui/nothing.js", "/ui/index.html", "/ui/dashboard.js.map", "/ui/..%2Fopenapi.json"]:
        expect_error(s.request("GET", path, key=None), 404, "not_found", f"GET {path}")
    st, hdrs, _ = raw_get(s, "/ui/nothing.js")
    assert st == 404 and hdrs["x-content-type-options"] == "nosniff", (st, hdrs)
    expect_error(s.request("GET", "/index.html", key=None), 404, "not_found", "GET /index.html")
    expect_error(s.request("POST", "/", {}, key=None), 405, "method_not_allowed", "POST /")


def main():
    return run_tests(lambda: Stack("static"), [
        test_openapi_json_equals_the_yaml_spec,
        test_openapi_json_needs_no_key_and_ignores_a_bad_one,
        test_dashboard_page_is_html_with_strict_headers,
        test_assets_are_served_with_their_type,
        test_unknown_asset_is_404,
    ])


if __name__ == "__main__":
    sys.exit(main())
