"""The HTTP client under the SDK: one place that speaks the REST API.

Client(url=None, api_key=None, timeout=60.0) takes the base URL and key from
its arguments, else from the environment (TORPOR_URL, default
http://127.0.0.1:8080; TORPOR_API_KEY). request() sends one call and returns
the parsed answer, or raises a TorporError (see torpor.errors) for an error
status, a connection failure or an answer that is not JSON where JSON is due.
upload() and download() move a body of any size between a file object and
the server in CHUNK_SIZE pieces (Content-Length or chunked), never holding
the whole body in memory.
Standard library only (http.client); http and https URLs.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import uuid
from typing import Any, BinaryIO, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

from .errors import ConnectionFailed, TorporError, error_from_response

DEFAULT_URL = "http://127.0.0.1:8080"
CHUNK_SIZE = 1 << 20  # bytes read or sent at a time by upload() and download()


class Client:
    """Connection settings and the request primitive.

    Args:
        url: base URL of torpor-cp; default ``$TORPOR_URL`` or http://127.0.0.1:8080.
        api_key: ``tpk_...``; default ``$TORPOR_API_KEY``.
        timeout: socket timeout in seconds for calls that do not set their own.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, timeout: float = 60.0):
        self.url = (url or os.environ.get("TORPOR_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("TORPOR_API_KEY")
        self.timeout = timeout
        # Called as on_response(method, path, status, content_type, answer) for
        # every answer received (errors included), before it is interpreted;
        # e.g. to log calls or check them against docs/openapi.yaml.
        self.on_response: Optional[Callable[[str, str, int, str, Any], None]] = None
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"TORPOR_URL must be http(s)://HOST[:PORT], got {self.url!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _prepare(self, path: str, query: Optional[Mapping[str, str]]) -> Tuple[str, Dict[str, str]]:
        url_path = self._prefix + path
        if query:
            url_path += "?" + urlencode(query, safe=",")
        headers: Dict[str, str] = {"Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        return url_path, headers

    def _answer(self, method: str, path: str, url_path: str, status: int, ctype: str, payload: bytes) -> Any:
        """Interprets a complete answer: parsed JSON, bytes, or None; raises
        a TorporError for status >= 400."""
        answer: Any = None
        if payload:
            if "json" in ctype:
                try:
                    answer = json.loads(payload)
                except ValueError:
                    raise TorporError("bad_response", status,
                                      f"{method} {path}: invalid JSON in the answer: {payload[:200]!r}") from None
            else:
                answer = payload
        if self.on_response is not None:
            self.on_response(method, url_path[len(self._prefix):], status, ctype, answer)
        if status >= 400:
            raise error_from_response(status, answer, f"{method} {path}")
        return answer

    def request(self, method: str, path: str, body: Any = None, *, query: Optional[Mapping[str, str]] = None,
                raw: Optional[bytes] = None, content_type: Optional[str] = None,
                timeout: Optional[float] = None) -> Tuple[int, Any]:
        """Sends one API call. body: a JSON value (sent as JSON) or None;
        raw: bytes sent as-is with content_type. Returns (status, answer):
        parsed JSON, bytes for non-JSON answers, None for an empty body.
        Raises a TorporError for status >= 400 or when no answer came."""
        url_path, headers = self._prepare(path, query)
        data = None
        if raw is not None:
            data = raw
            headers["Content-Type"] = content_type or "application/octet-stream"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection(timeout if timeout is not None else self.timeout)
        try:
            conn.request(method, url_path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            ctype = resp.getheader("Content-Type", "") or ""
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionFailed("connection_error", 0, f"{method} {self.url}{path}: {e}") from e
        finally:
            conn.close()
        return resp.status, self._answer(method, path, url_path, resp.status, ctype, payload)

    def upload(self, method: str, path: str, source: BinaryIO, *, query: Optional[Mapping[str, str]] = None,
               size: Optional[int] = None, content_type: str = "application/octet-stream",
               timeout: Optional[float] = None, chunk_size: int = CHUNK_SIZE,
               on_progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Tuple[int, Any]:
        """Sends the bytes read from `source` (a binary file object) as the
        request body, `chunk_size` bytes at a time, so memory stays bounded
        whatever the size: with ``Content-Length: size`` when size is given
        (then exactly size bytes are sent; a source that ends early is
        ValueError), else ``Transfer-Encoding: chunked`` until source ends.
        on_progress(bytes_sent, size) is called after each chunk. Returns
        (status, answer) like request()."""
        url_path, headers = self._prepare(path, query)
        headers["Content-Type"] = content_type
        if size is not None:
            headers["Content-Length"] = str(int(size))
        else:
            headers["Transfer-Encoding"] = "chunked"
        conn = self._connection(timeout if timeout is not None else self.timeout)
        sent = 0
        try:
            try:
                conn.putrequest(method, url_path, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders()
                while size is None or sent < size:
                    want = chunk_size if size is None else min(chunk_size, size - sent)
                    chunk = source.read(want)
                    if not chunk:
                        if size is not None:
                            raise ValueError(f"the source ended after {sent} of {size} bytes")
                        break
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if size is None else chunk)
                    sent += len(chunk)
                    if on_progress is not None:
                        on_progress(sent, size)
                if size is None:
                    conn.send(b"0\r\n\r\n")
            except OSError:
                # The server may have answered early (401, 413, 507) and
                # closed: its answer, if any, says why.
                pass
            resp = conn.getresponse()
            payload = resp.read()
            ctype = resp.getheader("Content-Type", "") or ""
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionFailed("connection_error", 0, f"{method} {self.url}{path}: {e}") from e
        finally:
            conn.close()
        return resp.status, self._answer(method, path, url_path, resp.status, ctype, payload)

    def download(self, path: str, sink: BinaryIO, *, query: Optional[Mapping[str, str]] = None,
                 timeout: Optional[float] = None, chunk_size: int = CHUNK_SIZE,
                 on_progress: Optional[Callable[[int, Optional[int]], None]] = None) -> int:
        """GET `path` and writes the answer's body to `sink` (a binary file
        object) `chunk_size` bytes at a time, so memory stays bounded
        whatever the size. Nothing is written for an error answer (raised as
        a TorporError like request()). on_progress(bytes_received, total or
        None) is called after each chunk. Returns the number of bytes
        written; an answer shorter than its Content-Length raises
        ConnectionFailed."""
        url_path, headers = self._prepare(path, query)
        conn = self._connection(timeout if timeout is not None else self.timeout)
        got = 0
        try:
            try:
                conn.request("GET", url_path, headers=headers)
                resp = conn.getresponse()
                ctype = resp.getheader("Content-Type", "") or ""
                if resp.status >= 400 or "json" in ctype:
                    payload = resp.read()
                else:
                    length = resp.getheader("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    while True:
                        chunk = resp.read(chunk_size)
                        if not chunk:
                            break
                        sink.write(chunk)
                        got += len(chunk)
                        if on_progress is not None:
                            on_progress(got, total)
                    payload = b""
            except (OSError, http.client.HTTPException) as e:
                raise ConnectionFailed("connection_error", 0,
                                       f"GET {self.url}{path}: {e} (after {got} bytes)") from e
        finally:
            conn.close()
        answer = self._answer("GET", path, url_path, resp.status, ctype, payload)
        if answer is not None:
            raise TorporError("bad_response", resp.status, f"GET {path}: expected bytes, got {answer!r:.200}")
        return got

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """request() for calls whose answer is JSON (or empty: None)."""
        status, answer = self.request(method, path, body, **kw)
        if answer is not None and isinstance(answer, (bytes, bytearray)):
            raise TorporError("bad_response", status, f"{method} {path}: expected JSON, got {answer[:200]!r}")
        return answer

    def multipart(self, path: str, fields: Mapping[str, Tuple[Optional[str], bytes]],
                  timeout: Optional[float] = None) -> Tuple[int, Any]:
        """POST multipart/form-data; fields: name -> (filename or None, bytes)."""
        boundary = "torpor-" + uuid.uuid4().hex
        parts = []
        for name, (filename, value) in fields.items():
            disp = f'form-data; name="{name}"'
            if filename is not None:
                disp += f'; filename="{filename}"'
            head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
            if filename is not None:
                head += "Content-Type: application/octet-stream\r\n"
            parts.append(head.encode() + b"\r\n" + value + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, raw=data, content_type=f"multipart/form-data; boundary={boundary}",
                            timeout=timeout)


def path_segment(value: str) -> str:
    """value quoted for use as one URL path segment."""
    return quote(value, safe="")
