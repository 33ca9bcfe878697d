#!/usr/bin/env python3
"""The port proxy (issue 9, docs/network.md "Inbound"): ANY
/v1/sandboxes/{id}/ports/{port}/{path} reaches busybox httpd in the guest
through control plane -> agent tunnel -> guest; API key and access token
(header and ?token=) work, a wrong or foreign token is 401; nothing
listening is 502 port_closed; a sandbox whose egress is denied is still
served; an unknown sandbox 404; proxied requests, and frames on an open
WebSocket, keep a timeout_sec 3 sandbox running; auto_resume wakes a paused
sandbox for a proxied request; 64 MiB stream up and down without growing
torpor-cp; `python3 -m http.server` in a debian guest answers (so this test
needs the debian image: TORPOR_DEBIAN_TESTS). Traffic: loopback (the
control plane) only."""

import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, openapi_check, run_tests  # noqa: E402

ctx = {}
HTTPD = "mkdir -p /tmp/www && echo 'hello through the proxy' > /tmp/www/index.html && httpd -p 8080 -h /tmp/www"


def proxy(s, sid, path, method="GET", key=None, token=None, query="", body=None, headers=None):
    """Raw request to the proxy route; returns (status, headers dict, body bytes).
    cp-made errors (JSON) are checked against the spec like every other answer."""
    h = dict(headers or {})
    if key:
        h["X-API-Key"] = key
    if token:
        h["X-Access-Token"] = token
    url = f"/v1/sandboxes/{sid}/ports/{path}" + (f"?{query}" if query else "")
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=120)
    try:
        conn.request(method, url, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()
    if "json" in hdrs.get("content-type", "") and r.status >= 400:
        openapi_check.default_checker().check(method, f"/v1/sandboxes/{sid}/ports/8080/x", r.status,
                                              hdrs["content-type"], json.loads(data))
    return r.status, hdrs, data


def start_httpd(s, sid):
    r = s.exec(sid, HTTPD)
    assert r["exit_code"] == 0, r


def test_api_key_reaches_httpd_in_the_guest(s):
    st, sb = s.request("POST", "/v1/sandboxes", {"template": "minimal", "memory_mb": 128})
    assert st == 201 and sb["access_token"].startswith("tpa_"), sb
    ctx["id"], ctx["token"] = sb["id"], sb["access_token"]
    st, body = s.request("GET", f"/v1/sandboxes/{sb['id']}")
    assert "access_token" not in body, "the token is shown once, on create"
    start_httpd(s, ctx["id"])
    st, h, data = proxy(s, ctx["id"], "8080/index.html", key=s.key_a)
    assert st == 200 and data == b"hello through the proxy\n", (st, h, data)
    assert h["content-type"].startswith("text/html"), h


def test_guest_status_passes_through(s):
    st, h, data = proxy(s, ctx["id"], "8080/missing.html", key=s.key_a)
    assert st == 404, (st, data)


def test_access_token_header_and_query_work(s):
    st, _, data = proxy(s, ctx["id"], "8080/index.html", token=ctx["token"])
    assert st == 200 and data == b"hello through the proxy\n", (st, data)
    st, _, data = proxy(s, ctx["id"], "8080/index.html", query=f"token={ctx['token']}")
    assert st == 200 and data == b"hello through the proxy\n", (st, data)


def test_wrong_or_missing_or_foreign_token_is_401(s):
    assert proxy(s, ctx["id"], "8080/index.html", token="tpa_" + "0" * 32)[0] == 401
    assert proxy(s, ctx["id"], "8080/index.html")[0] == 401
    other = s.create({"template": "minimal", "memory_mb": 128})
    ctx["other"] = other["id"]
    assert proxy(s, other["id"], "8080/index.html", token=ctx["token"])[0] == 401, \
        "a sandbox's token must not open another sandbox"
    # and the token grants nothing but the proxy
    st, _ = s.request("GET", f"/v1/sandboxes/{ctx['id']}", key=None, headers={"X-Access-Token": ctx["token"]})
    assert st == 401


def test_nothing_listening_is_502_port_closed(s):
    st, _, data = proxy(s, ctx["id"], "8081/", key=s.key_a)
    assert st == 502 and json.loads(data)["error"]["code"] == "port_closed", (st, data)


def test_proxy_serves_a_sandbox_whose_egress_is_denied(s):
    """The egress policy is outbound only: with {"egress": "deny"} set at
    runtime the proxy still reaches httpd in the guest (the agent connects
    into the sandbox's namespace; the answers are let back in)."""
    sid = s.create({"template": "minimal", "memory_mb": 128})["id"]
    start_httpd(s, sid)
    st, sb = s.request("PUT", f"/v1/sandboxes/{sid}/network", {"egress": "deny"})
    assert st == 200 and sb["network"]["egress"] == "deny", (st, sb)
    st, sb = s.request("GET", f"/v1/sandboxes/{sid}")
    assert sb["network"] == {"egress": "deny", "allow": [], "deny": []}, sb
    for _ in range(3):  # a new tunnel connection each time
        st, _, data = proxy(s, sid, "8080/index.html", key=s.key_a)
        assert st == 200 and data == b"hello through the proxy\n", (st, data)
    s.destroy(sid)


def test_unknown_sandbox_is_404_and_bad_port_400(s):
    st, _, data = proxy(s, "sb-00000000000000ff", "8080/", key=s.key_a)
    assert st == 404, (st, data)
    st, _, data = proxy(s, ctx["id"], "0/", key=s.key_a)
    assert st == 400, (st, data)
    st, _, data = proxy(s, ctx["id"], "70000/", key=s.key_a)
    assert st == 400, (st, data)


def _by_host(port, host, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_proxy_domain_routes_port_dash_id_hosts_to_the_sandbox(s):
    """--proxy-domain: Host {port}-{id}.DOMAIN is the proxy route of that
    port, with the same auth; other hosts are the REST API as before."""
    port = s.start_extra_cp("cp-proxy-domain", ["--proxy-domain", "sbx.test"])
    host = f"8080-{ctx['id']}.sbx.test"
    st, data = _by_host(port, host, f"/index.html?token={ctx['token']}")
    assert st == 200 and data == b"hello through the proxy\n", (st, data)
    st, data = _by_host(port, host + ":443", "/index.html", {"X-API-Key": s.key_a})
    assert st == 200 and data == b"hello through the proxy\n", (st, data)
    assert _by_host(port, host, "/index.html")[0] == 401, "no key, no token"
    st, data = _by_host(port, f"8080-{ctx['other']}.sbx.test", f"/index.html?token={ctx['token']}")
    assert st == 401, "a sandbox's token must not open another sandbox by host either"
    st, data = _by_host(port, "nonsense.sbx.test", "/", {"X-API-Key": s.key_a})
    assert st == 404 and json.loads(data)["error"]["code"] == "not_found", (st, data)
    st, data = _by_host(port, "api.example.com", "/v1/sandboxes", {"X-API-Key": s.key_a})
    assert st == 200 and any(sb["id"] == ctx["id"] for sb in json.loads(data)), st


def test_proxied_requests_keep_a_short_timeout_sandbox_running(s):
    sb = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": 3})
    sid = sb["id"]
    start_httpd(s, sid)
    t_end = time.monotonic() + 10
    while time.monotonic() < t_end:
        st, _, _ = proxy(s, sid, "8080/index.html", key=s.key_a)
        assert st == 200, st
        assert s.status_of(sid) == "running", "proxied requests twice a second must keep it running"
        # Well under the 3 s TTL even when a request is slow on a loaded host.
        time.sleep(0.5)
    s.wait_status(sid, "paused", 30)  # and without them it does pause
    s.destroy(sid)


def test_auto_resume_proxy_wakes_a_paused_sandbox(s):
    sb = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": 3, "auto_resume": True})
    sid = sb["id"]
    start_httpd(s, sid)
    s.wait_status(sid, "paused", 60)
    t0 = time.monotonic()
    st, _, data = proxy(s, sid, "8080/index.html", token=sb["access_token"])
    took = time.monotonic() - t0
    assert st == 200 and data == b"hello through the proxy\n", (st, data)
    assert s.status_of(sid) == "running"
    print(f"     paused -> first proxied answer: {took * 1000:.0f} ms")
    s.destroy(sid)


def test_upgrade_the_guest_refuses_is_an_ordinary_answer(s):
    """busybox httpd ignores Upgrade: its 200 and file come back as for a
    plain request (streamed, not switched)."""
    st, h, data = proxy(s, ctx["id"], "8080/index.html", key=s.key_a,
                        headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert st == 200 and data == b"hello through the proxy\n", (st, h, data)


# A WebSocket handshake server in busybox sh (sha1sum + xxd + base64), then
# `cat`: every byte the client sends comes back (frames echoed as they are).
WS_SH = r"""#!/bin/sh
key=""
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=$(printf '%s' "${line#*:}" | tr -d ' ');; esac
done
acc=$(printf '%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11' "$key" | sha1sum | cut -d' ' -f1 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$acc"
exec cat
"""


def ws_frame(payload, mask=b"\x01\x02\x03\x04"):
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def start_ws_server(s, sid, port=9000):
    """The WS_SH echo server on port, listening when this returns."""
    import base64 as b64m
    st, _ = s.request("POST", f"/v1/sandboxes/{sid}/files/write",
                      {"path": "/tmp/ws.sh", "content_base64": b64m.b64encode(WS_SH.encode()).decode()})
    assert st == 204, st
    # The listener is up before the handshake is sent (nc starts in the
    # background; under load it may not listen yet when exec returns).
    r = s.exec(sid, f"chmod +x /tmp/ws.sh; (nc -ll -p {port} -e /tmp/ws.sh </dev/null >/dev/null 2>&1 &); "
                    f"i=0; while ! netstat -ltn | grep -q ':{port} ' && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done")
    assert r["exit_code"] == 0, r
    # nc listens a moment after the exec returns (later under load)
    r = s.exec(sid, f"for i in $(seq 100); do netstat -ltn | grep -q ':{port} ' && exit 0; usleep 100000; done; exit 1")
    assert r["exit_code"] == 0, f"nc is not listening on {port}: {r}"


def ws_connect(s, sid, token, port=9000):
    """A WebSocket through the proxy (handshake checked); returns (socket,
    bytes already read past the 101's head)."""
    import socket
    c = socket.create_connection(("127.0.0.1", s.http_port), timeout=30)
    c.sendall((f"GET /v1/sandboxes/{sid}/ports/{port}/chat HTTP/1.1\r\nHost: x\r\n"
               f"X-Access-Token: {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = c.recv(4096)
        if not chunk:
            c.close()
            raise AssertionError(f"connection closed during the handshake: {head!r}")
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head, head
    return c, rest


def ws_echo(c, rest, msg):
    """Sends one frame and reads its echo; returns the bytes read past it."""
    frame = ws_frame(msg)
    c.sendall(frame)
    got = rest
    while len(got) < len(frame):
        chunk = c.recv(4096)
        assert chunk, "connection closed"
        got += chunk
    assert got[:len(frame)] == frame, (got, frame)
    return got[len(frame):]


def test_websocket_echo_through_the_proxy(s):
    sid = ctx["id"]
    start_ws_server(s, sid)
    c, rest = ws_connect(s, sid, ctx["token"])
    try:
        for msg in (b"hello", b"again, a second later"):
            rest = ws_echo(c, rest, msg)
            time.sleep(1)
    finally:
        c.close()


def test_websocket_traffic_keeps_a_short_timeout_sandbox_running(s):
    """Frames both ways on an open WebSocket through the proxy are activity
    (the agent is pinged at most once a second per connection): a
    timeout_sec 3 sandbox stays running for 12 s of them; once the frames
    stop it auto-pauses although the WebSocket is still open."""
    sb = s.create({"template": "minimal", "memory_mb": 128, "timeout_sec": 3})
    sid = sb["id"]
    start_ws_server(s, sid, 9001)
    c, rest = ws_connect(s, sid, sb["access_token"], 9001)
    try:
        t0 = time.monotonic()
        n = 0
        c.settimeout(15)
        while time.monotonic() - t0 < 12:
            try:
                rest = ws_echo(c, rest, f"frame {n}".encode())
            except OSError as e:  # a paused guest echoes nothing
                raise AssertionError(f"no echo of frame {n} {time.monotonic() - t0:.1f}s into WebSocket "
                                     f"traffic ({e!r}); the sandbox is {s.status_of(sid)}") from None
            n += 1
            assert s.status_of(sid) == "running", \
                f"paused {time.monotonic() - t0:.1f}s into WebSocket traffic ({n} frames echoed)"
            time.sleep(0.5)  # well under the 3 s TTL even when a frame is slow on a loaded host
        print(f"     {n} frames over {time.monotonic() - t0:.1f}s: still running")
        # Traffic stops, the connection stays open: the sandbox pauses.
        t_idle = time.monotonic()
        s.wait_status(sid, "paused", 30)
        print(f"     paused {time.monotonic() - t_idle:.1f}s after the last frame")
    finally:
        c.close()
    s.destroy(sid)

def test_python_http_server_in_debian_answers_through_the_proxy(s):
    """`python3 -m http.server` in a debian guest, started in the background
    by an exec that returns at once, serves a file through the proxy
    byte-identical, with the API key and with the access token; a wrong
    token is 401 (issue 9's done-when)."""
    sb = s.create({"template": "debian", "memory_mb": 512})
    sid = sb["id"]
    blob = os.urandom(300 * 1024)
    st, body = s.request("PUT", f"/v1/sandboxes/{sid}/files/content?path=/srv/www/blob.bin", blob)
    assert st == 200 and body["size"] == len(blob), (st, body)
    r = s.exec(sid, "cd /srv/www && setsid nohup python3 -m http.server 8000 </dev/null >/tmp/http.log 2>&1 &",
               timeout_sec=30)
    assert r["exit_code"] == 0, r
    # Until python has started (seconds under TCG) nothing listens: 502.
    deadline = time.monotonic() + 90
    while True:
        st, h, data = proxy(s, sid, "8000/blob.bin", key=s.key_a)
        if st != 502 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert st == 200, (st, h, data[:300], s.exec(sid, "cat /tmp/http.log")["stdout"])
    assert data == blob, f"{len(data)} bytes back, not the {len(blob)} written"
    assert "SimpleHTTP" in h.get("server", ""), h
    st, _, data = proxy(s, sid, "8000/blob.bin", token=sb["access_token"])
    assert st == 200 and data == blob, (st, len(data))
    assert proxy(s, sid, "8000/blob.bin", token="tpa_" + "0" * 32)[0] == 401
    s.destroy(sid)


def test_agent_sigterm_ends_live_tunnels_and_exits_cleanly(s):
    """SIGTERM with a WebSocket open through the agent's tunnel: the agent
    ends the tunnel, exits 0 (no thread left using the closed lifecycle),
    and the client sees the end of the stream."""
    import signal
    import socket
    sid = ctx["id"]
    c = socket.create_connection(("127.0.0.1", s.http_port), timeout=30)
    try:
        c.sendall((f"GET /v1/sandboxes/{sid}/ports/9000/ HTTP/1.1\r\nHost: x\r\nX-API-Key: {s.key_a}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = c.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        t0 = time.monotonic()
        rc = s.kill_agent(signal.SIGTERM)
        assert rc == 0, f"agent exit code {rc} after SIGTERM with a live tunnel"
        assert time.monotonic() - t0 < 20, "the agent took too long to stop"
        c.settimeout(10)
        assert c.recv(4096) == b"", "the client must see the stream end"
    finally:
        c.close()
        s.start_agent()


# busybox httpd CGI: the request body (CONTENT_LENGTH bytes) hashed as it
# streams through a pipe, never stored in the guest.
UPLOAD_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
head -c "$CONTENT_LENGTH" | sha256sum | cut -d' ' -f1
"""
BIG = 64 * 1024 * 1024


def test_64_mib_up_and_down_stream_in_bounded_memory(s):
    """64 MiB each way through the proxy, sha256 equal at both ends, while
    torpor-cp's RSS grows by less than 20 MB: nothing is buffered whole."""
    import base64 as b64m
    import hashlib
    import threading
    sb = s.create({"template": "minimal", "memory_mb": 256})
    sid = sb["id"]
    st, _ = s.request("POST", f"/v1/sandboxes/{sid}/files/write",
                      {"path": "/tmp/up.cgi", "content_base64": b64m.b64encode(UPLOAD_CGI.encode()).decode()})
    assert st == 204, st
    r = s.exec(sid, "mkdir -p /tmp/big/cgi-bin && mv /tmp/up.cgi /tmp/big/cgi-bin/up && "
                    "chmod +x /tmp/big/cgi-bin/up && "
                    f"head -c {BIG} /dev/urandom > /tmp/big/blob && sha256sum /tmp/big/blob && "
                    "httpd -p 8090 -h /tmp/big", timeout_sec=300)
    assert r["exit_code"] == 0, r
    guest_sha = r["stdout"].split()[0]
    # warm-up (the first request's allocations), and the CGI works
    st, _, data = proxy(s, sid, "8090/cgi-bin/up", method="POST", key=s.key_a, body=b"abc")
    assert st == 200 and data.strip().decode() == hashlib.sha256(b"abc").hexdigest(), (st, data)
    rss0 = s.cp_rss_kb()
    peak = [rss0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], s.cp_rss_kb())
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        up = os.urandom(BIG)
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=300)
        conn.request("POST", f"/v1/sandboxes/{sid}/ports/8090/cgi-bin/up", body=up,
                     headers={"X-API-Key": s.key_a, "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        t_up = time.monotonic() - t0
        assert resp.status == 200, (resp.status, data[:300])
        assert data.strip().decode() == hashlib.sha256(up).hexdigest(), "upload: sha256 differs"
        del up
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=300)
        conn.request("GET", f"/v1/sandboxes/{sid}/ports/8090/blob", headers={"X-API-Key": s.key_a})
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        h, n = hashlib.sha256(), 0
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        conn.close()
        t_down = time.monotonic() - t0
    finally:
        done.set()
        th.join()
    assert n == BIG, f"download: {n} bytes, want {BIG}"
    assert h.hexdigest() == guest_sha, "download: sha256 differs"
    grew = peak[0] - rss0
    print(f"     64 MiB up {BIG / t_up / 1e6:.1f} MB/s, down {BIG / t_down / 1e6:.1f} MB/s; "
          f"torpor-cp RSS {rss0} kB, peak +{grew} kB")
    assert grew < 20 * 1024, f"torpor-cp's RSS grew by {grew} kB moving 64 MiB each way"
    s.destroy(sid)


TESTS = [
    test_api_key_reaches_httpd_in_the_guest,
    test_guest_status_passes_through,
    test_access_token_header_and_query_work,
    test_wrong_or_missing_or_foreign_token_is_401,
    test_nothing_listening_is_502_port_closed,
    test_proxy_serves_a_sandbox_whose_egress_is_denied,
    test_unknown_sandbox_is_404_and_bad_port_400,
    test_proxy_domain_routes_port_dash_id_hosts_to_the_sandbox,
    test_proxied_requests_keep_a_short_timeout_sandbox_running,
    test_auto_resume_proxy_wakes_a_paused_sandbox,
    test_upgrade_the_guest_refuses_is_an_ordinary_answer,
    test_websocket_echo_through_the_proxy,
    test_websocket_traffic_keeps_a_short_timeout_sandbox_running,
    test_64_mib_up_and_down_stream_in_bounded_memory,
    test_python_http_server_in_debian_answers_through_the_proxy,
    test_agent_sigterm_ends_live_tunnels_and_exits_cleanly,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("port-proxy"), TESTS))
