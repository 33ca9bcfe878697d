"""torpor: the command-line client (built on the SDK in this package).

    torpor create [--template T] [--timeout S] [--memory MB] [--vcpus N] [--json]
    torpor ls [--status S] [--json]
    torpor get ID [--json]
    torpor exec ID [--env K=V] [--cwd DIR] [--timeout S] [-i] [--json] -- CMD [ARGS...]
    torpor cp LOCAL ID:PATH | cp ID:PATH LOCAL        (LOCAL may be - for stdin/stdout)
    torpor pause ID | resume ID | ping ID [--json]
    torpor timeout ID SECONDS [--json]
    torpor rm ID...
    torpor templates ls [--json] | get NAME [--json] | log NAME | rm NAME...
    torpor templates build NAME [--base B] [--package P]... [--setup S] [--no-wait] [-q] [--json]

Exit codes (see EXIT_CODES): 0 success; exec returns the command's own exit
code (124 if it timed out, 125 if it was killed otherwise); the others are
listed in the epilog of --help.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import __version__
from .client import Client
from .errors import (ConnectionFailed, InvalidRequest, InvalidState, NotFound, NotSupported, TorporError,
                     Unauthorized)
from .sandbox import STATUSES, Sandbox
from .templates import build_template, delete_template, get_template, list_templates, template_log, wait_template

EXIT_OK = 0
EXIT_ERROR = 1          # any other API error (agent_error, internal_error, too_large, ...)
EXIT_USAGE = 2          # bad command line, or the API said invalid_request (400)
EXIT_NOT_FOUND = 3      # not_found (404): no such sandbox / file
EXIT_INVALID_STATE = 4  # invalid_state (409): e.g. pause of a paused sandbox
EXIT_UNAUTHORIZED = 5   # unauthorized (401): TORPOR_API_KEY missing or wrong
EXIT_UNREACHABLE = 6    # the server could not be reached (TORPOR_URL)
EXIT_NOT_SUPPORTED = 7  # the server has no such route (an older torpor-cp)
EXIT_BUILD_FAILED = 8   # templates build: the build ended in error
EXIT_TIMED_OUT = 124    # exec: the command was killed by its timeout
EXIT_KILLED = 125       # exec: the command was killed otherwise (exit_code -1)

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    success (exec: the command's own exit code instead)
  {EXIT_ERROR}    API error (agent_error, internal_error, too_large, ...)
  {EXIT_USAGE}    bad arguments, or the API answered invalid_request
  {EXIT_NOT_FOUND}    not_found: no such sandbox (or file)
  {EXIT_INVALID_STATE}    invalid_state: the sandbox is not in the state the command needs
  {EXIT_UNAUTHORIZED}    unauthorized: TORPOR_API_KEY missing or unknown
  {EXIT_UNREACHABLE}    the server at TORPOR_URL could not be reached
  {EXIT_NOT_SUPPORTED}    the server does not have this API (an older torpor-cp)
  {EXIT_BUILD_FAILED}    templates build: the build ended in error (its error and log on stderr)
  {EXIT_TIMED_OUT}  exec: the command timed out ({EXIT_KILLED}: killed otherwise)

environment:
  TORPOR_URL       base URL of torpor-cp (default http://127.0.0.1:8080)
  TORPOR_API_KEY   API key (tpk_...), from: torpor-cp keys create --team NAME
"""

REMOTE_RE = re.compile(r"^([A-Za-z0-9._-]{1,63}):(/.*)$")


class Spinner:
    """A progress indicator on stderr for a long call, shown only when stdout
    is a terminal (so scripts and pipes never see it): a turning bar, the
    label (which the caller may change at any time) and the seconds elapsed.
    write_above() prints lines to stderr above it (plainly when it is off)."""

    def __init__(self, label: str, enabled: Optional[bool] = None):
        self.label = label
        self.enabled = sys.stdout.isatty() and sys.stderr.isatty() if enabled is None else enabled
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._start = time.monotonic()
        self._width = 0

    def _clear(self) -> None:
        if self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            self._width = 0

    def _draw(self, ch: str) -> None:
        line = f"{ch} {self.label} ({time.monotonic() - self._start:.0f} s)"
        sys.stderr.write("\r" + line + " " * max(0, self._width - len(line)))
        self._width = len(line)
        sys.stderr.flush()

    def _run(self) -> None:
        for ch in itertools.cycle("|/-\\"):
            with self._lock:
                self._draw(ch)
            if self._stop.wait(0.15):
                break
        with self._lock:
            self._clear()
            sys.stderr.flush()

    def write_above(self, text: str) -> None:
        """Writes text to stderr; on a terminal, above the spinner's line."""
        if not text:
            return
        with self._lock:
            if self._thread:
                self._clear()
            sys.stderr.write(text)
            sys.stderr.flush()

    def __enter__(self) -> "Spinner":
        self._start = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()
            self._thread = None


# ---- output ---------------------------------------------------------------
def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def print_table(rows: List[Dict[str, Any]], columns: Sequence[tuple]) -> None:
    """columns: (header, function(row) -> str)."""
    cells = [[h for h, _ in columns]] + [[str(f(r)) for _, f in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for line in cells:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n")


def short_time(ts: Optional[str]) -> str:
    if not ts:
        return "-"
    return ts.replace("T", " ")[:19]


SANDBOX_COLUMNS = [
    ("ID", lambda s: s["id"]),
    ("STATUS", lambda s: s["status"]),
    ("TEMPLATE", lambda s: s["template"]),
    ("VCPUS", lambda s: s["vcpus"]),
    ("MEMORY_MB", lambda s: s["memory_mb"]),
    ("TIMEOUT_S", lambda s: s["timeout_sec"]),
    ("HOST", lambda s: s["host_id"]),
    ("CREATED", lambda s: short_time(s["created_at"])),
    ("LAST_ACTIVE", lambda s: short_time(s.get("last_active_at"))),
]


def print_sandbox(sbx: Sandbox, as_json: bool) -> None:
    if as_json:
        print_json(sbx.data)
        return
    width = max(len(k) for k in sbx.data)
    for k, v in sbx.data.items():
        sys.stdout.write(f"{k.ljust(width)}  {'-' if v is None else v}\n")


# ---- commands ---------------------------------------------------------------
def cmd_create(a: argparse.Namespace, c: Client) -> int:
    with Spinner("creating sandbox ..."):
        sbx = Sandbox.create(template=a.template, timeout=a.timeout or 0, memory_mb=a.memory, vcpus=a.vcpus,
                             client=c)
    if a.json:
        print_json(sbx.data)
    else:
        print(sbx.id)
    return EXIT_OK


def cmd_ls(a: argparse.Namespace, c: Client) -> int:
    sandboxes = Sandbox.list(status=a.status, client=c)
    if a.json:
        print_json([s.data for s in sandboxes])
    else:
        print_table([s.data for s in sandboxes], SANDBOX_COLUMNS)
    return EXIT_OK


def cmd_get(a: argparse.Namespace, c: Client) -> int:
    print_sandbox(Sandbox.get(a.id, client=c), a.json)
    return EXIT_OK


def _handle(sandbox_id: str, c: Client) -> Sandbox:
    """A Sandbox object for id without a GET (the call itself reports 404)."""
    return Sandbox({"id": sandbox_id, "status": "unknown"}, c)


def cmd_exec(a: argparse.Namespace, c: Client) -> int:
    argv = getattr(a, "command_argv", None) or list(a.cmd_words)
    if not argv:
        raise UsageError("exec needs a command after --")
    env = {}
    for kv in a.env or []:
        if "=" not in kv or kv.startswith("="):
            raise UsageError(f"--env wants NAME=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        env[k] = v
    stdin = sys.stdin.buffer.read() if a.stdin else None
    sbx = _handle(a.id, c)
    cmd, args = (argv[0], None) if len(argv) == 1 else (argv[0], argv[1:])
    res = sbx.exec(cmd, args=args, env=env or None, cwd=a.cwd, stdin=stdin, timeout=a.timeout)
    if a.json:
        print_json({"stdout": res.stdout, "stderr": res.stderr, "exit_code": res.exit_code,
                    "duration_ms": res.duration_ms, "timed_out": res.timed_out,
                    "stdout_truncated": res.stdout_truncated, "stderr_truncated": res.stderr_truncated})
    else:
        sys.stdout.buffer.write(res.stdout_bytes)
        sys.stdout.flush()
        sys.stderr.buffer.write(res.stderr_bytes)
        sys.stderr.flush()
        if res.stdout_truncated or res.stderr_truncated:
            print("torpor: output was truncated by the server", file=sys.stderr)
    if res.exit_code == -1:
        return EXIT_TIMED_OUT if res.timed_out else EXIT_KILLED
    return res.exit_code & 0xFF if res.exit_code > 255 else res.exit_code


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} B"


def _progress(spinner: Spinner, verb: str) -> Callable[[int, Optional[int]], None]:
    def update(done: int, total: Optional[int]) -> None:
        spinner.label = f"{verb} {_size_text(done)}" + (f" of {_size_text(total)}" if total is not None else "")
    return update


def cmd_cp(a: argparse.Namespace, c: Client) -> int:
    """Streams the file both ways in 1 MiB chunks (Files.upload/download):
    memory stays bounded whatever the file's size."""
    src_remote, dst_remote = REMOTE_RE.match(a.src), REMOTE_RE.match(a.dst)
    if bool(src_remote) == bool(dst_remote):
        raise UsageError("cp copies between the local machine and one sandbox: "
                         "cp LOCAL ID:/PATH or cp ID:/PATH LOCAL")
    if dst_remote:
        sbx = _handle(dst_remote.group(1), c)
        spinner = Spinner("uploading ...")
        with spinner:
            if a.src == "-":
                sbx.files.upload(dst_remote.group(2), sys.stdin.buffer, on_progress=_progress(spinner, "uploading"))
            else:
                with open(a.src, "rb") as f:
                    sbx.files.upload(dst_remote.group(2), f, on_progress=_progress(spinner, "uploading"))
        return EXIT_OK
    sbx = _handle(src_remote.group(1), c)
    spinner = Spinner("downloading ...")
    if a.dst == "-":
        with spinner:
            sbx.files.download(src_remote.group(2), sys.stdout.buffer, on_progress=_progress(spinner, "downloading"))
        sys.stdout.flush()
        return EXIT_OK
    dst = a.dst
    if os.path.isdir(dst):
        dst = os.path.join(dst, os.path.basename(src_remote.group(2).rstrip("/")) or "file")
    # Into a temporary file next to the destination, renamed over it once
    # complete: a failed copy leaves the destination as it was.
    fd, tmp = tempfile.mkstemp(prefix=".torpor-cp-", dir=os.path.dirname(os.path.abspath(dst)))
    try:
        with os.fdopen(fd, "wb") as f, spinner:
            sbx.files.download(src_remote.group(2), f, on_progress=_progress(spinner, "downloading"))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise
    return EXIT_OK


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _state_cmd(action: str, label: str) -> Callable[[argparse.Namespace, Client], int]:
    def run(a: argparse.Namespace, c: Client) -> int:
        sbx = _handle(a.id, c)
        with Spinner(f"{label} {a.id} ..."):
            getattr(sbx, action)()
        if a.json:
            print_json(sbx.data)
        else:
            print(f"{sbx.id} {sbx.status}")
        return EXIT_OK
    return run


def cmd_ping(a: argparse.Namespace, c: Client) -> int:
    _handle(a.id, c).ping()
    return EXIT_OK


def cmd_timeout(a: argparse.Namespace, c: Client) -> int:
    sbx = _handle(a.id, c).set_timeout(a.seconds)
    if a.json:
        print_json(sbx.data)
    else:
        print(f"{sbx.id} timeout_sec={sbx.timeout_sec}")
    return EXIT_OK


def cmd_rm(a: argparse.Namespace, c: Client) -> int:
    rc = EXIT_OK
    for sandbox_id in a.ids:
        try:
            _handle(sandbox_id, c).kill()
            print(sandbox_id)
        except TorporError as e:
            print(f"torpor: rm {sandbox_id}: {e}", file=sys.stderr)
            rc = exit_code_for(e)
    return rc


def cmd_templates_ls(a: argparse.Namespace, c: Client) -> int:
    templates = list_templates(client=c)
    if a.json:
        print_json(templates)
    else:
        keys: List[str] = []
        for t in templates:
            for k in t:
                if k not in keys and not isinstance(t[k], (list, dict)):
                    keys.append(k)
        print_table(templates, [(k.upper(), (lambda r, k=k: "-" if r.get(k) is None else r.get(k)))
                                for k in keys])
    return EXIT_OK


class LogFollower:
    """The new part of a build log on each fetch. The server answers the
    log's last 256 KiB, so once it is longer than that the text slides: the
    last lines already shown are looked up in the new text, and what
    follows them is new. Only complete lines are returned until final."""

    ANCHOR = 4096

    def __init__(self) -> None:
        self._shown = ""  # the text (as last fetched) up to the end of what was shown

    def new_text(self, text: str, final: bool = False) -> str:
        start = 0
        if self._shown:
            if text.startswith(self._shown):
                start = len(self._shown)
            else:
                anchor = self._shown[-self.ANCHOR:]
                i = text.rfind(anchor)
                start = i + len(anchor) if i >= 0 else 0
        end = len(text) if final else text.rfind("\n", start) + 1
        if end <= start:
            self._shown = text[:start]
            return ""
        self._shown = text[:end]
        return text[start:end]


def cmd_templates_build(a: argparse.Namespace, c: Client) -> int:
    with Spinner(f"starting the build of template {a.name} ..."):
        t = build_template(a.name, base=a.base, packages=a.package, setup=a.setup, client=c)
    if not a.wait:
        _print_template(t, a.json)
        return EXIT_OK
    follower = LogFollower()
    spinner = Spinner(f"template {a.name}: {t['status']}")

    def show_log(final: bool = False) -> None:
        if a.quiet:
            return
        try:
            text = template_log(a.name, client=c)
        except TorporError:
            return  # the log is progress only; the status decides
        spinner.write_above(follower.new_text(text, final))

    def on_poll(tpl: Dict[str, Any]) -> None:
        spinner.label = f"template {a.name}: {tpl['status']}"
        if tpl["status"] == "building":
            show_log()

    with spinner:
        t = wait_template(a.name, client=c, interval=a.interval, on_poll=on_poll)
        show_log(final=True)
    if not a.quiet:
        sys.stderr.write("\n" if follower._shown and not follower._shown.endswith("\n") else "")
    if a.json:
        print_json(t)
    if t["status"] != "ready":
        if a.quiet:
            # At least the end of the log: apt's or the setup script's last words.
            try:
                tail = template_log(a.name, client=c).splitlines()[-20:]
            except TorporError:
                tail = []
            for line in tail:
                print(line, file=sys.stderr)
        print(f"torpor: template {a.name} failed: {t.get('error') or 'unknown error'}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    if not a.json:
        print(f"{t['name']} {t['status']} {t.get('digest') or '-'} {t.get('size_bytes', 0)}")
    return EXIT_OK


def _print_template(t: Dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(t)
        return
    width = max(len(k) for k in t)
    for k, v in t.items():
        if isinstance(v, list):
            v = ",".join(map(str, v)) or "-"
        sys.stdout.write(f"{k.ljust(width)}  {'-' if v is None else v}\n")


def cmd_templates_get(a: argparse.Namespace, c: Client) -> int:
    _print_template(get_template(a.name, client=c), a.json)
    return EXIT_OK


def cmd_templates_rm(a: argparse.Namespace, c: Client) -> int:
    rc = EXIT_OK
    for name in a.names:
        try:
            delete_template(name, client=c)
            print(name)
        except TorporError as e:
            print(f"torpor: templates rm {name}: {e}", file=sys.stderr)
            rc = exit_code_for(e)
    return rc


def cmd_templates_log(a: argparse.Namespace, c: Client) -> int:
    sys.stdout.write(template_log(a.name, client=c))
    return EXIT_OK


# ---- parsing -----------------------------------------------------------------
class UsageError(Exception):
    pass


def exit_code_for(e: TorporError) -> int:
    if isinstance(e, NotSupported):
        return EXIT_NOT_SUPPORTED
    if isinstance(e, ConnectionFailed):
        return EXIT_UNREACHABLE
    if isinstance(e, InvalidRequest):
        return EXIT_USAGE
    if isinstance(e, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(e, InvalidState):
        return EXIT_INVALID_STATE
    if isinstance(e, Unauthorized):
        return EXIT_UNAUTHORIZED
    return EXIT_ERROR


def _status_list(value: str) -> str:
    for s in value.split(","):
        if s not in STATUSES:
            raise argparse.ArgumentTypeError(f"unknown status {s!r} (one of {', '.join(STATUSES)})")
    return value


def _non_negative(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return n


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="torpor", formatter_class=fmt,
        description="Command-line client for Torpor sandboxes (QEMU VMs that pause to disk when idle).",
        epilog=EXIT_CODES_HELP)
    p.add_argument("--url", help="torpor-cp base URL (default: $TORPOR_URL or http://127.0.0.1:8080)")
    p.add_argument("--api-key", help="API key (default: $TORPOR_API_KEY)")
    p.add_argument("--version", action="version", version=f"torpor {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_text, description=help_text, formatter_class=fmt,
                               epilog=EXIT_CODES_HELP)
        sp.set_defaults(func=func)
        return sp

    def json_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of text")

    sp = add("create", cmd_create, "Create a sandbox and print its id.")
    sp.add_argument("--template", help="guest template (server default: debian)")
    sp.add_argument("--timeout", type=_non_negative, metavar="S",
                    help="auto-pause after S seconds without activity (default 0: never)")
    sp.add_argument("--memory", type=int, metavar="MB", help="memory in MiB (server default 512)")
    sp.add_argument("--vcpus", type=int, metavar="N", help="virtual CPUs (server default 1)")
    json_flag(sp)

    sp = add("ls", cmd_ls, "List sandboxes (default: all but stopped/error), newest first.")
    sp.add_argument("--status", type=_status_list, metavar="S",
                    help=f"only these statuses (comma list of: {', '.join(STATUSES)})")
    json_flag(sp)

    sp = add("get", cmd_get, "Show one sandbox.")
    sp.add_argument("id")
    json_flag(sp)

    sp = add("exec", cmd_exec, "Run a command in a running sandbox; exits with the command's exit code. "
             "One word after -- runs through /bin/sh -c; several are executed directly.")
    sp.add_argument("id")
    sp.add_argument("--env", action="append", metavar="NAME=VALUE", help="environment variable (repeatable)")
    sp.add_argument("--cwd", metavar="DIR", help="working directory in the sandbox")
    sp.add_argument("--timeout", type=int, metavar="S", help="kill the command after S seconds (default 30)")
    sp.add_argument("-i", "--stdin", action="store_true", help="send this process's stdin to the command")
    json_flag(sp)
    sp.add_argument("cmd_words", nargs="*", metavar="-- CMD [ARGS...]",
                    help="the command; everything after -- is passed on untouched")

    sp = add("cp", cmd_cp, "Copy a file into (cp LOCAL ID:/PATH) or out of (cp ID:/PATH LOCAL) a running "
             "sandbox; LOCAL may be - for stdin/stdout.")
    sp.add_argument("src")
    sp.add_argument("dst")

    for name, action, label, text in (("pause", "pause", "pausing", "Pause a running sandbox to disk."),
                                      ("resume", "resume", "resuming", "Resume a paused sandbox.")):
        sp = add(name, _state_cmd(action, label), text)
        sp.add_argument("id")
        json_flag(sp)

    sp = add("ping", cmd_ping, "Record activity (resets the inactivity timer) of a running sandbox.")
    sp.add_argument("id")

    sp = add("timeout", cmd_timeout, "Set the inactivity timeout (seconds; 0 = never auto-pause).")
    sp.add_argument("id")
    sp.add_argument("seconds", type=_non_negative)
    json_flag(sp)

    sp = add("rm", cmd_rm, "Destroy sandboxes (prints each id destroyed).")
    sp.add_argument("ids", nargs="+", metavar="ID")

    tp = add("templates", None, "Guest templates: ls, get, build (waits for it), log, rm.")
    tsub = tp.add_subparsers(dest="templates_command", metavar="SUBCOMMAND", required=True)
    sp = add("ls", cmd_templates_ls, "List templates (the team's, then the public ones).", tsub)
    json_flag(sp)
    sp = add("get", cmd_templates_get, "Show one template (status: building, ready or error).", tsub)
    sp.add_argument("name")
    json_flag(sp)
    sp = add("build", cmd_templates_build,
             "Build a template from debian plus Debian packages and a setup script, and wait until it is "
             "ready or failed (Ctrl-C stops waiting, not the build). While waiting, the build log's new lines "
             "go to stderr, and on a terminal a spinner shows the status and the time elapsed. "
             "Prints NAME STATUS DIGEST SIZE (--json: the Template); a failed build exits "
             f"{EXIT_BUILD_FAILED} with its error on stderr.", tsub)
    sp.add_argument("name")
    sp.add_argument("--base", help="template to start from (default debian)")
    sp.add_argument("--package", action="append", metavar="PKG", help="Debian package to add (repeatable)")
    sp.add_argument("--setup", metavar="SCRIPT", help="bash script run as root in a VM of the new image")
    sp.add_argument("--no-wait", dest="wait", action="store_false",
                    help="return once the build is started (status building); poll with templates get")
    sp.add_argument("-q", "--quiet", action="store_true",
                    help="do not print the build log while waiting (a failure still prints its last lines)")
    sp.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between polls (default 1)")
    json_flag(sp)
    sp = add("log", cmd_templates_log, "Print a template's build log (so far).", tsub)
    sp.add_argument("name")
    sp = add("rm", cmd_templates_rm, "Delete templates of the team (prints each name deleted).", tsub)
    sp.add_argument("names", nargs="+", metavar="NAME")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is exec's command, never torpor's options.
    rest: Optional[List[str]] = None
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    a = parser.parse_args(argv)
    if rest is not None:
        if a.command != "exec":
            parser.error("-- is only used by exec (torpor exec ID -- CMD ARGS...)")
        a.command = "exec"
        a.command_argv = list(a.__dict__.get("cmd_words") or []) + rest
    try:
        client = Client(a.url, a.api_key)
        return a.func(a, client)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"torpor: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:  # e.g. a malformed TORPOR_URL
        print(f"torpor: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TorporError as e:
        print(f"torpor: {e}", file=sys.stderr)
        return exit_code_for(e)
    except OSError as e:  # local files of cp
        print(f"torpor: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
