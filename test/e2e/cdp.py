"""Headless Chromium driven over the DevTools protocol, standard library only
(a minimal WebSocket client is below), for the dashboard test.

Contract:
  with Browser(width=1280, height=900) as b:
      b.navigate("http://127.0.0.1:8080/")
      b.type_text("#api-key", "tpk_...");  b.click("#key-save")
      b.wait_js("document.querySelector('#app').hidden === false", 10)
      b.screenshot("/path/shot.png")
starts the system Chromium ($TORPOR_CHROMIUM, else chromium /
chromium-browser / google-chrome on PATH) headless (--headless=new; with
--no-sandbox when run as root, as in CI) with a throwaway profile and
--remote-debugging-port=0, attaches to its page target and on exit kills
the browser's process group and removes the profile. evaluate() runs an
expression (promises awaited) and returns its value; a page exception is a
CDPError. b.problems() lists the page's uncaught exceptions and its
security (e.g. Content-Security-Policy) and JavaScript console errors seen
so far. Nothing here needs the network.
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from harness import _die_with_parent


class CDPError(AssertionError):
    pass


def find_chromium():
    cand = [os.environ.get("TORPOR_CHROMIUM")] if os.environ.get("TORPOR_CHROMIUM") else []
    cand += ["chromium", "chromium-browser", "google-chrome"]
    for c in cand:
        path = shutil.which(c)
        if path:
            return path
    raise RuntimeError("no Chromium found (apt-get install chromium; scripts/install-deps installs it)")


class WebSocket:
    """A client WebSocket (RFC 6455) for ws:// URLs: text messages only,
    fragmented messages reassembled, pings answered."""

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url, timeout=30):
        u = urllib.parse.urlparse(url)
        if u.scheme != "ws":
            raise ValueError(f"only ws:// is supported: {url}")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16))
        path = u.path + (("?" + u.query) if u.query else "")
        req = (f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CDPError("WebSocket handshake: connection closed")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise CDPError(f"WebSocket handshake refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        want = base64.b64encode(hashlib.sha1(key + self.GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise CDPError("WebSocket handshake: bad Sec-WebSocket-Accept")

    def _send_frame(self, opcode, payload):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise CDPError("WebSocket closed by the browser")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout):
        """The next text message; socket.timeout when none began in time
        (a message once begun is read whole, so no frame is ever cut)."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            if not parts and not self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("no WebSocket message")
                self.sock.settimeout(left)
                chunk = self.sock.recv(65536)  # socket.timeout propagates
                if not chunk:
                    raise CDPError("WebSocket closed by the browser")
                self.buf += chunk
            self.sock.settimeout(60)
            b0, b1 = self._read(2)
            opcode, fin, n = b0 & 0x0F, b0 & 0x80, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                raise CDPError("WebSocket closed by the browser")
            parts.append(payload)
            if fin:
                return b"".join(parts).decode()

    def close(self):
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class Browser:
    def __init__(self, width=1280, height=900):
        self.width, self.height = width, height
        self.proc = None
        self.profile = None
        self.ws = None
        self.next_id = 0
        self.events = []
        self.log = None

    # ---- lifecycle -------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        binary = find_chromium()
        self.profile = tempfile.mkdtemp(prefix="torpor-chromium-")
        argv = [binary, "--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--password-store=basic",
                "--use-mock-keychain", "--hide-scrollbars", "--force-device-scale-factor=1",
                f"--window-size={self.width},{self.height}"]
        if os.geteuid() == 0:
            argv.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        argv.append("about:blank")
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")
        # Its own process group (killed whole on close), and SIGKILL if the
        # test process dies hard (e.g. a ctest timeout).
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.browser_log()[-2000:]}")
            try:
                with open(port_file) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    port = int(first)
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if port is None:
            raise RuntimeError(f"chromium did not open its DevTools port: {self.browser_log()[-2000:]}")
        page = None
        while time.monotonic() < deadline and page is None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                page = next((t for t in json.load(r) if t.get("type") == "page"), None)
            if page is None:
                time.sleep(0.1)
        if page is None:
            raise RuntimeError("chromium has no page target")
        self.ws = WebSocket(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})

    def browser_log(self):
        try:
            with open(os.path.join(self.profile, "chromium.log"), errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def close(self):
        if self.ws:
            self.ws.close()
            self.ws = None
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    # ---- protocol --------------------------------------------------------
    def call(self, method, params=None, timeout=60):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"{method}: no answer in {timeout}s")
            try:
                msg = json.loads(self.ws.recv(left))
            except socket.timeout:
                continue
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def pump(self, seconds):
        """Collect events for up to `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = json.loads(self.ws.recv(max(0.01, deadline - time.monotonic())))
            except socket.timeout:
                return
            if "method" in msg:
                self.events.append(msg)

    def problems(self):
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif e["method"] == "Log.entryAdded":
                entry = p.get("entry", {})
                if entry.get("source") in ("security", "javascript") or \
                        "Content Security Policy" in entry.get("text", ""):
                    out.append(f"{entry.get('source')}: {entry.get('text')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                        for a in p.get("args", [])))
        return out

    # ---- page helpers ----------------------------------------------------
    def navigate(self, url, timeout=30):
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        res = self.call("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise CDPError(f"navigate {url}: {res['errorText']}")
        deadline = time.monotonic() + timeout
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise CDPError(f"navigate {url}: no load event in {timeout}s")
            self.pump(0.2)

    def evaluate(self, expression):
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True, "userGesture": True})
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise CDPError(f"evaluate {expression!r:.120}: "
                           f"{d.get('exception', {}).get('description') or d.get('text')}")
        return res.get("result", {}).get("value")

    def wait_js(self, expression, timeout, what=None, interval=0.25):
        """Poll expression until it is truthy (returned); CDPError at the deadline."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.evaluate(expression)
            if last:
                return last
            if time.monotonic() > deadline:
                raise CDPError(f"timed out after {timeout}s waiting for {what or expression} (last: {last!r})")
            self.pump(interval)

    def _center(self, selector):
        rect = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" if (!e) return null; e.scrollIntoView({{block: 'center'}});"
            f" const r = e.getBoundingClientRect();"
            f" return {{x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height}}; }})()")
        if not rect or rect["w"] == 0 or rect["h"] == 0:
            raise CDPError(f"{selector}: not found or not visible")
        return rect["x"], rect["y"]

    def click(self, selector):
        """A real mouse click (press + release) in the middle of the element."""
        x, y = self._center(selector)
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def type_text(self, selector, text):
        """Click into the field, select what it holds and type text over it."""
        self.click(selector)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        self.call("Input.insertText", {"text": text})

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path
