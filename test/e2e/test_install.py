#!/usr/bin/env python3
"""Install and package: `cmake --install` of the build dir into a scratch
DESTDIR, and the .deb of scripts/package (CPack, prefix /usr) unpacked with
dpkg -x into a scratch root. Each checks the exact installed file list,
runs --help of torpor-agent, torpor-cp and torpor from the scratch root, checks
that the binaries' default migrations and image dirs are the install
prefix's (not the source tree's) and hold the files, and verifies the
systemd units with systemd-analyze. No stack is started."""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BUILD_DIR, SOURCE_DIR, run_tests  # noqa: E402


class Scratch:
    """A temp dir with the harness's stack interface (run_tests uses it)."""
    agent = cp = None

    def __init__(self):
        self.failed = False
        self.tmp = None

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="torpor-e2e-install-", dir="/tmp")
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def run(argv, env=None, timeout=900, ok=True):
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if ok:
        assert out.returncode == 0, f"{' '.join(argv)}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


def cache_value(build, name):
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(rf"^{name}:[A-Z]+=(.*)$", line.strip())
            if m:
                return m.group(1)
    raise AssertionError(f"{name} not in {build}/CMakeCache.txt")


def expected_files(prefix, sysconfdir, unitdir, build):
    data = f"{prefix}/share/torpor"
    files = {f"{prefix}/bin/torpor-agent", f"{prefix}/bin/torpor-cp", f"{prefix}/bin/torpor",
             f"{unitdir}/torpor-agent.service", f"{unitdir}/torpor-cp.service",
             f"{sysconfdir}/torpor/agent.env", f"{sysconfdir}/torpor/cp.env",
             f"{prefix}/share/man/man8/torpor-agent.8", f"{prefix}/share/man/man8/torpor-cp.8",
             f"{prefix}/share/man/man1/torpor.1"}
    files |= {f"{data}/migrations/{os.path.basename(p)}" for p in glob.glob(f"{SOURCE_DIR}/migrations/*.sql")}
    for p in glob.glob(f"{build}/image/minimal/*"):  # debian is not packaged
        files.add(f"{data}/image/{os.path.relpath(p, build + '/image')}")
    src = f"{SOURCE_DIR}/clients/python/torpor"
    files |= {f"{data}/python/torpor/{n}" for n in os.listdir(src) if n != "__pycache__"}
    return files


def installed_files(root):
    found = set()
    for d, _, names in os.walk(root):
        for n in names:
            found.add("/" + os.path.relpath(os.path.join(d, n), root))
    return found


def check_root(root, prefix, sysconfdir, unitdir, build):
    """The file list, --help of each binary, default dirs, systemd units."""
    want = expected_files(prefix, sysconfdir, unitdir, build)
    got = installed_files(root)
    assert got == want, f"installed files differ: missing {sorted(want - got)}, unexpected {sorted(got - want)}"
    data = f"{prefix}/share/torpor"
    for sql in glob.glob(f"{SOURCE_DIR}/migrations/*.sql"):
        with open(sql, "rb") as a, open(f"{root}{data}/migrations/{os.path.basename(sql)}", "rb") as b:
            assert a.read() == b.read(), f"installed {sql} differs"
    assert os.path.getsize(f"{root}{data}/image/minimal/vmlinux") > 1 << 20, "installed vmlinux too small"

    env = dict(os.environ)
    env.pop("TORPOR_MIGRATIONS_DIR", None)  # set by the harness module for the other tests
    env.pop("TORPOR_IMAGE_DIR", None)
    agent = run([f"{root}{prefix}/bin/torpor-agent", "--help"], env=env)
    text = agent.stdout + agent.stderr
    assert re.search(rf"--image-dir DIR .*\n\s+default {re.escape(data)}/image\)", text), \
        f"torpor-agent's default image dir is not {data}/image:\n{text}"
    cp = run([f"{root}{prefix}/bin/torpor-cp", "--help"], env=env)
    text = cp.stdout + cp.stderr
    assert f"({data}/migrations)" in text, f"torpor-cp's default migrations dir is not {data}/migrations:\n{text}"
    assert SOURCE_DIR not in text, f"torpor-cp --help names the source tree:\n{text}"
    env["PYTHONPATH"] = f"{root}{data}/python"
    cli = run([f"{root}{prefix}/bin/torpor", "--help"], env=env)
    assert cli.stdout.startswith("usage: torpor") and "exit codes:" in cli.stdout, cli.stdout

    for page in ("man8/torpor-agent.8", "man8/torpor-cp.8", "man1/torpor.1"):
        assert os.path.getsize(f"{root}{prefix}/share/man/{page}") > 500, page
        if not shutil.which("man"):
            continue
        out = run(["man", "--warnings", "-l", f"{root}{prefix}/share/man/{page}"],
                  env=dict(env, MANPAGER="cat", MANWIDTH="80"))
        assert not out.stderr.strip(), f"man {page}: {out.stderr}"

    if shutil.which("systemd-analyze"):
        units = tempfile.mkdtemp(dir=os.path.dirname(root))
        for u in ("torpor-agent.service", "torpor-cp.service"):
            with open(f"{root}{unitdir}/{u}") as f:
                text = f.read()
            assert f"ExecStart={prefix}/bin/" in text and f"{sysconfdir}/torpor/" in text, text
            # Point ExecStart into the scratch root so verify finds the binary.
            with open(f"{units}/{u}", "w") as f:
                f.write(text.replace(f"ExecStart={prefix}/bin/", f"ExecStart={root}{prefix}/bin/"))
        out = run(["systemd-analyze", "verify", "--man=no", f"{units}/torpor-agent.service",
                   f"{units}/torpor-cp.service"], ok=False)
        assert out.returncode == 0 and not out.stderr.strip(), f"systemd-analyze verify: {out.stderr}"


def test_cmake_install_into_destdir(s):
    prefix = cache_value(BUILD_DIR, "CMAKE_INSTALL_PREFIX")
    root = os.path.join(s.tmp, "destdir")
    run(["cmake", "--install", BUILD_DIR], env=dict(os.environ, DESTDIR=root))
    sysconfdir = "/etc" if prefix == "/usr" else f"{prefix}/etc"
    unitdir = "/lib/systemd/system" if prefix == "/usr" else f"{prefix}/lib/systemd/system"
    check_root(root, prefix, sysconfdir, unitdir, BUILD_DIR)


def test_deb_package_unpacks_into_scratch_root(s):
    build = os.path.join(BUILD_DIR, "package")
    out = run(["bash", os.path.join(SOURCE_DIR, "scripts", "package")],
              env=dict(os.environ, TORPOR_PACKAGE_BUILD_DIR=build), timeout=1800)
    deb = out.stdout.strip().splitlines()[-1]
    assert re.search(r"/torpor_[0-9.]+_amd64\.deb$", deb) and os.path.isfile(deb), out.stdout
    info = run(["dpkg-deb", "-f", deb, "Package", "Depends"]).stdout
    assert "Package: torpor" in info and "qemu-system-x86" in info, info
    ctl = os.path.join(s.tmp, "control")
    run(["dpkg-deb", "-e", deb, ctl])
    with open(os.path.join(ctl, "conffiles")) as f:
        assert f.read().split() == ["/etc/torpor/agent.env", "/etc/torpor/cp.env"]
    root = os.path.join(s.tmp, "root")
    run(["dpkg", "-x", deb, root])
    check_root(root, "/usr", "/etc", "/lib/systemd/system", build)


TESTS = [
    test_cmake_install_into_destdir,
    test_deb_package_unpacks_into_scratch_root,
]

if __name__ == "__main__":
    sys.exit(run_tests(Scratch, TESTS))
