#!/usr/bin/env python3
"""The torpor CLI against the real stack, run as installed: clients/python is
pip-installed offline (--no-build-isolation --no-index) into a venv with the
system site packages, and its `torpor` entry point drives the flow
create -> exec (exit code propagates) -> cp both ways -> pause -> resume -> rm
with --json parsed, plus the documented exit codes of failures and --help of
every command."""

import hashlib
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SOURCE_DIR, Stack, run_tests, wait_until  # noqa: E402

# Debian's python3 (python3-venv, python3-pip with wheel, python3-setuptools)
# builds the package without downloading anything.
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
DATA = bytes(range(256)) * 64 + b"\nend\n"
ctx = {}


def install(s):
    """pip install clients/python into a venv in the stack's temp dir; returns
    the path of the installed torpor script."""
    venv = os.path.join(s.tmp, "venv")
    src = os.path.join(s.tmp, "torpor-src")  # a copy: pip's build leaves files next to the sources
    shutil.copytree(os.path.join(SOURCE_DIR, "clients", "python"), src,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    for argv in ([PYTHON, "-m", "venv", "--system-site-packages", venv],
                 [os.path.join(venv, "bin", "python3"), "-m", "pip", "install", "-q", "--no-build-isolation",
                  "--no-index", src]):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{' '.join(argv)} failed ({out.returncode}): {out.stdout} {out.stderr}"
    return os.path.join(venv, "bin", "torpor")


def torpor(s, *args, key=None, stdin=None, check_rc=0):
    env = dict(os.environ, TORPOR_URL=f"http://127.0.0.1:{s.http_port}", TORPOR_API_KEY=key or s.key_a)
    env.pop("PYTHONPATH", None)
    out = subprocess.run([ctx["torpor"], *args], capture_output=True, env=env, input=stdin, timeout=300)
    if check_rc is not None:
        assert out.returncode == check_rc, \
            f"torpor {' '.join(args)}: exit {out.returncode}, expected {check_rc}; " \
            f"stdout={out.stdout[:500]!r} stderr={out.stderr[:500]!r}"
    return out


def torpor_json(s, *args, **kw):
    args = list(args)
    at = args.index("--") if "--" in args else len(args)
    out = torpor(s, *args[:at], "--json", *args[at:], **kw)
    return json.loads(out.stdout)


def test_pip_install_offline_provides_the_torpor_command(s):
    ctx["torpor"] = install(s)
    out = torpor(s, "--version")
    assert out.stdout.decode().startswith("torpor "), out


def readme_block(text, lang, after):
    """The first ```lang fenced block of text after the line containing `after`."""
    m = re.search(re.escape(after) + r".*?^```" + lang + r"\n(.*?)^```", text, re.M | re.S)
    assert m, f"no ```{lang} block after {after!r} in README.md"
    return m.group(1)


def test_readme_first_screen_runs_on_debian(s):
    """README.md's first screen, run as written in a fresh directory (a copy
    of clients/python, .torpor/env as scripts/up writes it) with Debian's
    python3 first on PATH, as on a fresh Debian 12 (PEP 668: its pip refuses
    to install outside a venv): the shell block, then the Python block in
    the same shell. Every sandbox they made is destroyed at the end."""
    with open(os.path.join(SOURCE_DIR, "README.md")) as f:
        readme = f.read()
    shell = readme_block(readme, "sh", "Then, from Python or the shell")
    python = readme_block(readme, "python", "Then, from Python or the shell")
    install = [line for line in shell.splitlines() if "pip install" in line]
    assert len(install) == 1, shell
    with open(os.path.join(SOURCE_DIR, "scripts", "up")) as f:
        assert install[0].split("#")[0].strip() in f.read(), "scripts/up prints another install line than README"
    d = tempfile.mkdtemp(dir=s.tmp)
    shutil.copytree(os.path.join(SOURCE_DIR, "clients"), os.path.join(d, "clients"),
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    os.mkdir(os.path.join(d, ".torpor"))
    with open(os.path.join(d, ".torpor", "env"), "w") as f:
        f.write(f"export TORPOR_URL=http://127.0.0.1:{s.http_port}\nexport TORPOR_API_KEY={s.key_a}\n")
    script = shell + 'echo "SB=$SB"\npython3 - <<\'PY\'\n' + python + \
        'import sys; print("SBX=" + sbx.id, "PY=" + sys.executable)\nPY\n'
    env = {"PATH": os.path.dirname(PYTHON) + ":/usr/bin:/bin:/usr/sbin:/sbin", "HOME": d, "LANG": "C.UTF-8"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=d, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"README first screen failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    ids = re.findall(r"^SBX?=(sb-[0-9a-f]+)", out.stdout, re.M)
    assert len(ids) == 2 and "hello\n" in out.stdout, out.stdout
    assert f"PY={d}/.venv/bin/python3" in out.stdout, out.stdout  # the venv's python runs the SDK
    for sid in ids:
        assert s.status_of(sid) == "stopped", (sid, s.status_of(sid))


def test_help_of_every_command(s):
    for cmd in ([], ["create"], ["ls"], ["get"], ["exec"], ["cp"], ["pause"], ["resume"], ["ping"],
                ["timeout"], ["rm"], ["templates"], ["templates", "ls"], ["templates", "get"],
                ["templates", "build"], ["templates", "log"], ["templates", "rm"]):
        out = torpor(s, *cmd, "--help")
        text = out.stdout.decode()
        assert text.startswith("usage: torpor") and "exit codes:" in text, f"{cmd}: {text[:300]}"


def test_create_prints_id_and_json(s):
    sid = torpor(s, "create", "--template", "minimal", "--memory", "128").stdout.decode().strip()
    assert sid.startswith("sb-") and s.status_of(sid) == "running", sid
    ctx["id"] = sid
    sb = torpor_json(s, "create", "--template", "minimal", "--memory", "128", "--timeout", "600")
    assert (sb["status"], sb["memory_mb"], sb["timeout_sec"]) == ("running", 128, 600), sb
    ctx["id2"] = sb["id"]


def test_exec_propagates_exit_code_and_output(s):
    sid = ctx["id"]
    out = torpor(s, "exec", sid, "--", "echo out; echo err >&2; exit 7", check_rc=7)
    assert (out.stdout, out.stderr) == (b"out\n", b"err\n"), out
    out = torpor(s, "exec", sid, "--env", "X=1 2", "--cwd", "/tmp", "--", "printf", "%s:%s", "$X", "a b")
    assert out.stdout == b"$X:a b", out  # several words: executed directly, no shell
    out = torpor(s, "exec", sid, "--env", "X=1 2", "--cwd", "/tmp", "--", 'echo "$X" $(pwd)')
    assert out.stdout == b"1 2 /tmp\n", out
    out = torpor(s, "exec", "-i", sid, "--", "tr a-z A-Z", stdin=b"shout\n")
    assert out.stdout == b"SHOUT\n", out
    res = torpor_json(s, "exec", sid, "--", "exit 3", check_rc=3)
    assert res["exit_code"] == 3 and res["timed_out"] is False, res
    torpor(s, "exec", sid, "--timeout", "1", "--", "sleep 20", check_rc=124)


def test_cp_both_ways(s):
    sid = ctx["id"]
    d = tempfile.mkdtemp(dir=s.tmp)
    local = os.path.join(d, "up.bin")
    with open(local, "wb") as f:
        f.write(DATA)
    torpor(s, "cp", local, f"{sid}:/tmp/cli.bin")
    assert torpor(s, "exec", sid, "--", "wc -c < /tmp/cli.bin").stdout.strip() == str(len(DATA)).encode()
    back = os.path.join(d, "down.bin")
    torpor(s, "cp", f"{sid}:/tmp/cli.bin", back)
    with open(back, "rb") as f:
        assert f.read() == DATA
    torpor(s, "cp", f"{sid}:/tmp/cli.bin", d)  # into a directory: keeps the name
    with open(os.path.join(d, "cli.bin"), "rb") as f:
        assert f.read() == DATA
    torpor(s, "cp", "-", f"{sid}:/tmp/stdin.txt", stdin=b"piped")
    assert torpor(s, "cp", f"{sid}:/tmp/stdin.txt", "-").stdout == b"piped"
    torpor(s, "cp", local, os.path.join(d, "x"), check_rc=2)  # no sandbox side


BIG_MIB = 64
# Runs argv[2:] and writes its peak RSS in KiB (ru_maxrss of the waited
# child) to the file argv[1]; exits with its exit code.
PEAK_RSS = ("import resource, subprocess, sys\n"
            "rc = subprocess.run(sys.argv[2:]).returncode\n"
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
            "sys.exit(rc)\n")


def torpor_peak_rss_kib(s, *args):
    """Runs torpor ARGS (exit 0 expected) and returns its peak RSS in KiB."""
    env = dict(os.environ, TORPOR_URL=f"http://127.0.0.1:{s.http_port}", TORPOR_API_KEY=s.key_a)
    env.pop("PYTHONPATH", None)
    fd, path = tempfile.mkstemp(dir=s.tmp)
    os.close(fd)
    out = subprocess.run([PYTHON, "-c", PEAK_RSS, path, ctx["torpor"], *args], capture_output=True, env=env,
                         timeout=900)
    assert out.returncode == 0, f"torpor {' '.join(args)}: exit {out.returncode}: {out.stderr[-1000:]!r}"
    with open(path) as f:
        return int(f.read())


def test_cp_streams_large_files_in_bounded_memory(s):
    """A 64 MiB file copied up to a `minimal` sandbox and back arrives intact
    (sha256 on both sides), and neither copy makes the CLI's peak RSS grow
    by more than 16 MiB over `torpor --version`'s: the file is streamed in
    1 MiB chunks, never held whole."""
    sid = torpor(s, "create", "--template", "minimal", "--memory", "512").stdout.decode().strip()
    d = tempfile.mkdtemp(dir=s.tmp)
    local, back = os.path.join(d, "big.bin"), os.path.join(d, "big-back.bin")
    h = hashlib.sha256()
    with open(local, "wb") as f:
        for i in range(BIG_MIB):
            block = (i.to_bytes(4, "big") + bytes(range(256))) * (1024 * 1024 // 260) + b"\n" * 4
            block += b"\0" * (1024 * 1024 - len(block))
            h.update(block)
            f.write(block)
    digest = h.hexdigest()
    try:
        base = torpor_peak_rss_kib(s, "--version")
        up = torpor_peak_rss_kib(s, "cp", local, f"{sid}:/tmp/big.bin")
        r = torpor(s, "exec", sid, "--timeout", "300", "--", "wc -c < /tmp/big.bin; sha256sum /tmp/big.bin")
        r = r.stdout.decode().split()
        assert r[:2] == [str(BIG_MIB << 20), digest], (r, digest)
        down = torpor_peak_rss_kib(s, "cp", f"{sid}:/tmp/big.bin", back)
        with open(back, "rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == digest
        print(f"peak RSS: --version {base} KiB, cp up {up} KiB, cp down {down} KiB ({BIG_MIB} MiB file)")
        for what, kib in (("cp up", up), ("cp down", down)):
            assert kib - base < 16 * 1024, f"{what} of {BIG_MIB} MiB: peak RSS {kib} KiB vs {base} KiB at rest"
        # A failed download leaves no partial file behind.
        torpor(s, "cp", f"{sid}:/tmp/no-such-file", os.path.join(d, "missing.bin"), check_rc=3)
        assert sorted(os.listdir(d)) == ["big-back.bin", "big.bin"], os.listdir(d)
    finally:
        torpor(s, "rm", sid)


def test_pause_resume_ls_get(s):
    sid = ctx["id"]
    assert torpor_json(s, "pause", sid)["status"] == "paused"
    assert sid in [x["id"] for x in torpor_json(s, "ls", "--status", "paused")]
    assert sid not in [x["id"] for x in torpor_json(s, "ls", "--status", "running")]
    table = torpor(s, "ls").stdout.decode().splitlines()
    assert table[0].split()[:3] == ["ID", "STATUS", "TEMPLATE"], table
    assert any(line.split()[:2] == [sid, "paused"] for line in table[1:]), table
    assert torpor(s, "resume", sid).stdout.decode().split() == [sid, "running"]
    assert torpor_json(s, "get", sid)["status"] == "running"
    assert torpor(s, "exec", sid, "--", "cat /tmp/stdin.txt").stdout == b"piped"
    torpor(s, "ping", sid)
    assert torpor_json(s, "timeout", sid, "30")["timeout_sec"] == 30


def test_templates_ls_lists_public_templates(s):
    out = torpor(s, "templates", "ls")
    assert re.search(rb"^minimal\s+ready\b", out.stdout, re.M), out.stdout
    rows = json.loads(torpor(s, "templates", "ls", "--json").stdout)
    assert any(t["name"] == "minimal" and t["public"] for t in rows), rows


def run_on_tty(s, *args, timeout=600):
    """Runs torpor with stdout and stderr on a pseudo-terminal; returns
    (exit code, everything it wrote there)."""
    master, slave = pty.openpty()
    env = dict(os.environ, TORPOR_URL=f"http://127.0.0.1:{s.http_port}", TORPOR_API_KEY=s.key_a)
    env.pop("PYTHONPATH", None)
    p = subprocess.Popen([ctx["torpor"], *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=max(1, deadline - time.monotonic())), out.decode(errors="replace")


def test_templates_build_waits_and_fails_with_exit_8(s):
    """A package apt cannot find: the build ends in error within seconds.
    build waits for it, streams the build log (apt's message) to stderr,
    names the error and exits 8; on a terminal the spinner shows the status
    and the seconds elapsed."""
    out = torpor(s, "templates", "build", "cli-broken", "--package", "no-such-package-cli", check_rc=8)
    err = out.stderr.decode()
    assert "Unable to locate package no-such-package-cli" in err, err[-2000:]
    assert re.search(r"^torpor: template cli-broken failed: .*no-such-package-cli", err, re.M), err[-2000:]
    assert out.stdout == b"", out.stdout
    # --quiet --json: the Template on stdout; still the end of the log and the error on stderr.
    torpor(s, "templates", "rm", "cli-broken")
    out = torpor(s, "templates", "build", "cli-broken", "--package", "no-such-package-cli", "-q", "--json",
                 check_rc=8)
    t = json.loads(out.stdout)
    assert (t["name"], t["status"]) == ("cli-broken", "error") and "no-such-package-cli" in t["error"], t
    assert "Unable to locate package no-such-package-cli" in out.stderr.decode(), out.stderr[-2000:]
    rc, text = run_on_tty(s, "templates", "build", "cli-tty", "--package", "no-such-package-tty")
    assert rc == 8, (rc, text[-2000:])
    assert re.search(r"[|/\\-] template cli-tty: building \(\d+ s\)", text), text[-3000:]
    assert "Unable to locate package no-such-package-tty" in text, text[-2000:]
    assert "torpor: template cli-tty failed:" in text, text[-2000:]
    torpor(s, "templates", "rm", "cli-broken", "cli-tty")


def test_templates_build_waits_until_ready(s):
    """The cheapest build that succeeds: no packages and no setup is the
    `debian` recipe, already in the image cache. build returns only once the
    template is ready, printing NAME ready DIGEST SIZE; --no-wait returns at
    once with the template building."""
    out = torpor(s, "templates", "build", "cli-plain")
    name, status, digest, size = out.stdout.decode().split()
    assert (name, status) == ("cli-plain", "ready") and re.fullmatch(r"[0-9a-f]{64}", digest), out.stdout
    assert int(size) > 0, out.stdout
    assert "build-rootfs:" in out.stderr.decode(), out.stderr[-2000:]  # the build log, streamed
    t = torpor_json(s, "templates", "get", "cli-plain")
    assert (t["status"], t["digest"]) == ("ready", digest), t
    t = torpor_json(s, "templates", "build", "cli-nowait", "--no-wait")
    assert (t["name"], t["status"]) == ("cli-nowait", "building"), t
    wait_until(lambda: torpor_json(s, "templates", "get", "cli-nowait")["status"] != "building", 600,
               interval=1, what="cli-nowait leaves building")
    assert torpor(s, "templates", "rm", "cli-plain", "cli-nowait").stdout.decode().split() == \
        ["cli-plain", "cli-nowait"]
    torpor(s, "templates", "get", "cli-plain", check_rc=3)


def test_failures_have_documented_exit_codes(s):
    sid = ctx["id"]
    torpor(s, "resume", sid, check_rc=4)                       # invalid_state: it is running
    torpor(s, "get", "sb-0000000000000000", check_rc=3)          # not_found
    torpor(s, "get", sid, key=s.key_b, check_rc=3)               # another team's
    torpor(s, "ls", key="tpk_" + "0" * 32, check_rc=5)           # unauthorized
    torpor(s, "create", "--memory", "1", check_rc=2)             # invalid_request
    torpor(s, "ls", "--status", "sleeping", check_rc=2)          # usage
    torpor(s, "templates", "log", "minimal", check_rc=3)         # not_found: built in, no build log
    torpor(s, "templates", "log", "no-such-template", check_rc=3)
    env = dict(os.environ, TORPOR_URL="http://127.0.0.1:1", TORPOR_API_KEY=s.key_a)
    out = subprocess.run([ctx["torpor"], "ls"], capture_output=True, env=env, timeout=60)
    assert out.returncode == 6, out                              # unreachable


def test_rm_destroys_every_id(s):
    out = torpor(s, "rm", ctx["id"], ctx["id2"])
    assert out.stdout.decode().split() == [ctx["id"], ctx["id2"]], out
    for sid in (ctx["id"], ctx["id2"]):
        assert s.status_of(sid) == "stopped"
    torpor(s, "rm", "sb-0000000000000000", check_rc=3)


TESTS = [
    test_pip_install_offline_provides_the_torpor_command,
    test_readme_first_screen_runs_on_debian,
    test_help_of_every_command,
    test_create_prints_id_and_json,
    test_exec_propagates_exit_code_and_output,
    test_cp_both_ways,
    test_cp_streams_large_files_in_bounded_memory,
    test_pause_resume_ls_get,
    test_templates_ls_lists_public_templates,
    test_templates_build_waits_and_fails_with_exit_8,
    test_templates_build_waits_until_ready,
    test_failures_have_documented_exit_codes,
    test_rm_destroys_every_id,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("cli"), TESTS))
