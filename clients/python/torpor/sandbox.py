"""Sandboxes: create, connect, list, run commands, move files, pause/resume.

    from torpor import Sandbox
    with Sandbox.create(template="minimal", memory_mb=128) as sbx:
        r = sbx.exec("echo hello")
        print(r.stdout, r.exit_code)
        sbx.files.write("/tmp/a.txt", "data")
        sbx.pause()
        sbx.resume()
    # destroyed here

Every method is one or a few REST calls (docs/api.md); failures raise a
torpor.TorporError with the API's error code and HTTP status.
"""

from __future__ import annotations

import base64
import io
import os
import shlex
import stat
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .client import Client, path_segment
from .errors import InvalidState, TorporError

STATUSES = ("pending", "running", "pausing", "paused", "resuming", "stopped", "error")


@dataclass
class ExecResult:
    """What a command did. stdout/stderr are text (undecodable bytes replaced);
    stdout_bytes/stderr_bytes are the exact bytes. exit_code is -1 when the
    command was killed (timeout or signal)."""

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    timed_out: bool
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: bytes
    stderr_bytes: bytes

    @classmethod
    def from_api(cls, d: Mapping[str, Any]) -> "ExecResult":
        if d.get("encoding") == "base64":
            out, err = base64.b64decode(d["stdout"]), base64.b64decode(d["stderr"])
        else:
            out, err = d["stdout"].encode(), d["stderr"].encode()
        return cls(stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                   exit_code=d["exit_code"], duration_ms=d.get("duration_ms", 0),
                   timed_out=d.get("timed_out", False), stdout_truncated=d.get("stdout_truncated", False),
                   stderr_truncated=d.get("stderr_truncated", False), stdout_bytes=out, stderr_bytes=err)


class Files:
    """File access inside one sandbox (it must be running)."""

    def __init__(self, sandbox: "Sandbox"):
        self._sbx = sandbox

    def read(self, path: str) -> bytes:
        """The bytes of the file at path (GET .../files/content; NotFound if
        it does not exist, InvalidRequest for a directory). The whole file
        is returned in memory: download() streams it to a file object."""
        buf = io.BytesIO()
        self.download(path, buf)
        return buf.getvalue()

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """read() decoded as text."""
        return self.read(path).decode(encoding)

    def download(self, path: str, fileobj: BinaryIO,
                 on_progress: Optional[Callable[[int, Optional[int]], None]] = None) -> int:
        """Streams the file at path into fileobj (a binary file object open
        for writing) in 1 MiB chunks, never holding the whole file: any
        size. Nothing is written if the call fails (NotFound, InvalidRequest
        for a directory, FileChanged, ...). on_progress(bytes_so_far, total)
        after each chunk. Returns the number of bytes written."""
        return self._sbx._client.download(self._sbx._path("/files/content"), fileobj, query={"path": path},
                                          timeout=3600, on_progress=on_progress)

    def write(self, path: str, data: Union[bytes, str, BinaryIO], mode: Optional[int] = None) -> int:
        """Creates or replaces the file at path atomically (PUT
        .../files/content): bytes, str (UTF-8) or a binary file object
        (streamed: see upload()). Any size up to the sandbox's free disk
        (InsufficientStorage beyond). mode: permission bits (default 0o644).
        Returns the size written."""
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return self.upload(path, data, mode=mode)
        ans = self._sbx._client.json("PUT", self._sbx._path("/files/content"), query=self._query(path, mode),
                                     raw=bytes(data), timeout=3600)
        return int(ans["size"]) if isinstance(ans, Mapping) else 0

    def upload(self, path: str, fileobj: BinaryIO, mode: Optional[int] = None, size: Optional[int] = None,
               on_progress: Optional[Callable[[int, Optional[int]], None]] = None) -> int:
        """Creates or replaces the file at path atomically with what is read
        from fileobj (a binary file object open for reading), sent in 1 MiB
        chunks, never holding the whole file: with Content-Length when the
        size is known (size, else the rest of a regular file), chunked
        otherwise (a pipe, stdin, BytesIO). mode: permission bits (default
        0o644). on_progress(bytes_sent, size or None) after each chunk.
        Returns the size written."""
        if size is None:
            size = _remaining_size(fileobj)
        _, ans = self._sbx._client.upload("PUT", self._sbx._path("/files/content"), fileobj,
                                          query=self._query(path, mode), size=size, timeout=3600,
                                          on_progress=on_progress)
        return int(ans["size"]) if isinstance(ans, Mapping) else 0

    @staticmethod
    def _query(path: str, mode: Optional[int]) -> Dict[str, str]:
        query = {"path": path}
        if mode is not None:
            query["mode"] = format(mode, "o")
        return query

    def list(self, path: str = "/", limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Entries of the directory at path, sorted by name: dicts with name,
        type ("file", "dir", "symlink", "other"), size, mode, mtime."""
        query = {"path": path}
        if limit is not None:
            query["limit"] = str(int(limit))
        ans = self._sbx._client.json("GET", self._sbx._path("/files"), query=query)
        return list(ans["entries"])


class Sandbox:
    """One sandbox. Its fields mirror the API's Sandbox object (id, status,
    template, vcpus, memory_mb, timeout_sec, host_id, created_at, started_at,
    last_active_at, last_updated) as of the last call that returned it;
    refresh() reloads them. Used as a context manager it is destroyed on exit."""

    id: str
    status: str
    template: str
    vcpus: int
    memory_mb: int
    timeout_sec: int
    host_id: str
    created_at: str
    started_at: Optional[str]
    last_active_at: Optional[str]
    last_updated: str

    def __init__(self, data: Mapping[str, Any], client: Client):
        self._client = client
        self.files = Files(self)
        self._update(data)

    def _update(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping) or "id" not in data:
            raise TorporError("bad_response", 0, f"expected a Sandbox object, got {data!r:.200}")
        self.data: Dict[str, Any] = dict(data)
        for k, v in data.items():
            setattr(self, k, v)

    def _path(self, suffix: str = "") -> str:
        return f"/v1/sandboxes/{path_segment(self.id)}{suffix}"

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, status={self.status!r}, template={self.template!r})"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    # ---- class methods ---------------------------------------------------
    @classmethod
    def create(cls, template: Optional[str] = None, timeout: int = 0, memory_mb: Optional[int] = None,
               vcpus: Optional[int] = None, env: Optional[Mapping[str, str]] = None,
               disk_mb: Optional[int] = None, auto_resume: Optional[bool] = None, *, url: Optional[str] = None, api_key: Optional[str] = None,
               client: Optional[Client] = None, request_timeout: float = 180.0) -> "Sandbox":
        """Creates a sandbox and returns it running.

        Args:
            template: guest template (server default ``debian``; ``minimal``
                is the tiny busybox one).
            timeout: seconds of inactivity before it is auto-paused; 0 = never.
            memory_mb, vcpus: machine shape (server defaults 512 and 1).
            env: environment of every exec in the sandbox (an exec's own env
                wins). disk_mb: root disk size (server default 4096).
            auto_resume: sent only when given; a server that does not
                know the field answers InvalidRequest.
            url, api_key, client: where to connect (default: TORPOR_URL /
                TORPOR_API_KEY).
            request_timeout: seconds to wait for the answer (the first create
                of a template boots it).
        Only the fields the caller set are sent.
        """
        c = client or Client(url, api_key)
        body: Dict[str, Any] = {}
        if template is not None:
            body["template"] = template
        if timeout:
            body["timeout_sec"] = int(timeout)
        if memory_mb is not None:
            body["memory_mb"] = int(memory_mb)
        if vcpus is not None:
            body["vcpus"] = int(vcpus)
        if env is not None:
            body["env"] = dict(env)
        if disk_mb is not None:
            body["disk_mb"] = int(disk_mb)
        if auto_resume is not None:
            body["auto_resume"] = bool(auto_resume)
        return cls(c.json("POST", "/v1/sandboxes", body, timeout=request_timeout), c)

    @classmethod
    def get(cls, sandbox_id: str, *, url: Optional[str] = None, api_key: Optional[str] = None,
            client: Optional[Client] = None) -> "Sandbox":
        """The sandbox as it is, whatever its status (NotFound if unknown)."""
        c = client or Client(url, api_key)
        return cls(c.json("GET", f"/v1/sandboxes/{path_segment(sandbox_id)}"), c)

    @classmethod
    def connect(cls, sandbox_id: str, *, url: Optional[str] = None, api_key: Optional[str] = None,
                client: Optional[Client] = None, wait: float = 120.0) -> "Sandbox":
        """The sandbox, running: a paused one is resumed (one being paused or
        resumed is waited for, up to `wait` seconds). InvalidState if it is
        stopped or failed."""
        sbx = cls.get(sandbox_id, url=url, api_key=api_key, client=client)
        deadline = time.monotonic() + wait
        while True:
            if sbx.status == "running":
                return sbx
            if sbx.status == "paused":
                try:
                    sbx.resume()
                    return sbx
                except InvalidState:
                    pass  # someone else resumed it meanwhile: look again
            elif sbx.status in ("stopped", "error"):
                raise InvalidState("invalid_state", 409, f"sandbox {sandbox_id} is {sbx.status}")
            if time.monotonic() >= deadline:
                raise InvalidState("invalid_state", 409,
                                   f"sandbox {sandbox_id} is still {sbx.status} after {wait:.0f} s")
            time.sleep(0.5)
            sbx.refresh()

    @classmethod
    def list(cls, status: Union[None, str, Iterable[str]] = None, *, url: Optional[str] = None,
             api_key: Optional[str] = None, client: Optional[Client] = None) -> List["Sandbox"]:
        """The team's sandboxes, newest first. status: one status, a comma
        list or an iterable of them; default every status but stopped/error."""
        c = client or Client(url, api_key)
        query = None
        if status is not None:
            query = {"status": status if isinstance(status, str) else ",".join(status)}
        return [cls(d, c) for d in c.json("GET", "/v1/sandboxes", query=query)]

    # ---- instance methods ------------------------------------------------
    def refresh(self) -> "Sandbox":
        """Reloads the fields from the server."""
        self._update(self._client.json("GET", self._path()))
        return self

    def exec(self, cmd: str, args: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
             cwd: Optional[str] = None, stdin: Union[None, bytes, str] = None,
             timeout: Optional[int] = None) -> ExecResult:
        """Runs a command and waits for it. Without args, cmd goes through
        /bin/sh -c; with args, cmd is executed directly with them. timeout:
        seconds before it is killed (server default 30). stdin: str (sent
        as "stdin") or bytes (sent as "stdin_base64"), fed to the command.
        A non-zero exit code is a result, not an exception."""
        body: Dict[str, Any] = {"cmd": cmd}
        if args is not None:
            body["args"] = list(args)
        if isinstance(stdin, str):
            body["stdin"] = stdin
        elif stdin is not None:
            body["stdin_base64"] = base64.b64encode(bytes(stdin)).decode()
        if env is not None:
            body["env"] = dict(env)
        if cwd is not None:
            body["cwd"] = cwd
        if timeout is not None:
            body["timeout_sec"] = int(timeout)
        wait = (timeout if timeout is not None else 30) + 60
        return ExecResult.from_api(self._client.json("POST", self._path("/exec"), body, timeout=wait))

    def pause(self) -> "Sandbox":
        """Pauses it to disk (it must be running)."""
        self._update(self._client.json("POST", self._path("/pause"), timeout=300))
        return self

    def resume(self) -> "Sandbox":
        """Resumes it from disk (it must be paused)."""
        self._update(self._client.json("POST", self._path("/resume"), timeout=300))
        return self

    def ping(self) -> None:
        """Counts as activity: resets its inactivity clock (it must be running)."""
        self._client.request("POST", self._path("/ping"))

    def set_timeout(self, seconds: int) -> "Sandbox":
        """Sets the inactivity timeout (0 = never auto-pause); running or paused."""
        self._update(self._client.json("POST", self._path("/timeout"), {"timeout_sec": int(seconds)}))
        return self

    def kill(self) -> None:
        """Destroys it (idempotent: killing a stopped sandbox is fine)."""
        self._client.request("DELETE", self._path(), timeout=120)
        self.status = "stopped"
        self.data["status"] = "stopped"


def _remaining_size(f: BinaryIO) -> Optional[int]:
    """Bytes left to read in f when it is a regular file, else None."""
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(0, st.st_size - f.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def shell_join(argv: Sequence[str]) -> str:
    """argv as one /bin/sh command line."""
    return " ".join(shlex.quote(a) for a in argv)
