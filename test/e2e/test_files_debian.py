#!/usr/bin/env python3
"""The `debian` template as the default, and files of any size on its root
disk (issue 8), over REST with real QEMU: a create without a template is a
Debian sandbox whose root filesystem has the disk_mb asked for and runs
python3; a wheel uploaded with files/write installs with pip (no internet);
a 200 MiB file round-trips byte-identical through PUT/GET files/content; a
full disk is ENOSPC inside the guest and 507 over REST with the old file
intact, and the host, the agent and another sandbox are unaffected.

Needs the `debian` image (ctest fixture image.debian builds it, cached)."""

import hashlib
import http.client
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, b64, check_answer, expect_error, run_tests, tiny_wheel  # noqa: E402

ctx = {}
MiB = 1024 * 1024
BIG = 200 * MiB


def test_default_create_is_debian_with_disk_mb_and_python(s):
    sb = s.create({"memory_mb": 256, "disk_mb": 1024})
    assert sb["template"] == "debian" and sb["disk_mb"] == 1024, sb
    ctx["a"] = sid = sb["id"]
    r = s.exec(sid, "python3 -c 'import sys; print(sys.version_info[0] * 14)'")
    assert r["exit_code"] == 0 and r["stdout"] == "42\n", r
    r = s.exec(sid, "df -k --output=size / | tail -1")
    kb = int(r["stdout"])
    assert 1024 * 1024 * 0.85 < kb <= 1024 * 1024, f"root filesystem is {kb} KiB, not ~1 GiB (disk_mb 1024)"


def test_pip_installs_an_uploaded_wheel(s):
    sid = ctx["a"]
    whl = "/root/mypkg-1.0-py3-none-any.whl"
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/files/write", {"path": whl, "content_base64": b64(tiny_wheel())})
    assert st == 204, (st, body)
    r = s.exec(sid, f"python3 -m pip install --no-index --no-deps --break-system-packages {whl} 2>&1",
               timeout_sec=600)
    assert r["exit_code"] == 0, f"pip install failed: {r}"
    r = s.exec(sid, "cd / && python3 -c 'import mypkg; print(mypkg.VALUE)'")
    assert r["stdout"] == "from the wheel\n", r


def pattern_chunks(total, seed=b"torpor"):
    """total bytes of reproducible data, 1 MiB at a time (never all held)."""
    block = hashlib.sha512(seed).digest() * (MiB // 64)
    for i in range(total // MiB):
        yield bytes([i & 0xff]) + block[1:]
    if total % MiB:
        yield block[: total % MiB]


def test_200mib_file_roundtrips_byte_identical(s):
    sid = ctx["a"]
    want = hashlib.sha256()
    for c in pattern_chunks(BIG):
        want.update(c)
    st, res = s.request("PUT", f"/v1/sandboxes/{sid}/files/content?path=/root/big.bin", pattern_chunks(BIG),
                        timeout=1800)
    assert st == 200 and res["size"] == BIG, (st, res)
    r = s.exec(sid, "sha256sum /root/big.bin", timeout_sec=300)
    assert r["stdout"].split()[0] == want.hexdigest(), f"in the guest: {r}"
    # GET, streamed: hashed as it arrives.
    path = f"/v1/sandboxes/{sid}/files/content?path=/root/big.bin"
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=1800)
    try:
        conn.request("GET", path, headers={"X-API-Key": s.key_a})
        resp = conn.getresponse()
        if resp.status != 200:
            raise AssertionError((resp.status, check_answer("GET", path, resp.status, resp.getheaders(), resp.read())))
        assert int(resp.getheader("Content-Length")) == BIG, resp.getheaders()
        got, n = hashlib.sha256(), 0
        while True:
            piece = resp.read(MiB)
            if not piece:
                break
            if n == 0:  # a raw body is checked by its media type: the first piece will do
                check_answer("GET", path, resp.status, resp.getheaders(), piece)
            got.update(piece)
            n += len(piece)
    finally:
        conn.close()
    assert n == BIG and got.hexdigest() == want.hexdigest(), f"GET returned {n} bytes, sha256 {got.hexdigest()}"
    s.exec(sid, "rm -f /root/big.bin")


def test_full_disk_is_enospc_and_507_with_old_file_intact(s):
    sb = s.create({"template": "debian", "memory_mb": 128, "disk_mb": 512})
    ctx["b"] = sid = sb["id"]
    base = f"/v1/sandboxes/{sid}/files/content?path=/root/keep.txt"
    st, res = s.request("PUT", base, b"the old content\n")
    assert st == 200, (st, res)
    r = s.exec(sid, "dd if=/dev/zero of=/root/fill bs=1M 2>&1; echo rc=$?", timeout_sec=600)
    assert "No space left on device" in r["stdout"] and "rc=1" in r["stdout"], f"dd did not hit ENOSPC: {r}"
    expect_error(s.request("PUT", base, b"n" * (8 * MiB)), 507, "insufficient_storage", "PUT on a full disk")
    st, got = s.request("GET", base)
    assert st == 200 and got == b"the old content\n", f"old file after a 507: {st} {got!r}"
    r = s.exec(sid, "ls -a /root | grep -c torpor-up || true")
    assert r["stdout"].strip() == "0", f"temp file left after a 507: {r}"
    # The other sandbox, the agent and the host are fine.
    r = s.exec(ctx["a"], "echo alive > /root/other && cat /root/other")
    assert r["stdout"] == "alive\n", r
    assert s.agent.alive() and s.cp.alive()
    st, lst = s.request("GET", "/v1/sandboxes")
    assert st == 200 and {x["id"] for x in lst} >= {ctx["a"], sid}, lst
    # Space freed: the write goes through.
    s.exec(sid, "rm -f /root/fill && sync")
    st, res = s.request("PUT", base, b"the new content\n")
    assert st == 200, (st, res)
    r = s.exec(sid, "cat /root/keep.txt")
    assert r["stdout"] == "the new content\n", r


def test_listing_shows_the_root_disk(s):
    st, lst = s.request("GET", f"/v1/sandboxes/{ctx['b']}/files?path=/root")
    assert st == 200, (st, lst)
    names = {e["name"]: e for e in lst["entries"]}
    assert names["keep.txt"]["size"] == len(b"the new content\n") and names["keep.txt"]["type"] == "file", lst
    st, lst = s.request("GET", f"/v1/sandboxes/{ctx['b']}/files?path=/usr")
    assert st == 200 and {"bin", "lib"} <= {e["name"] for e in lst["entries"] if e["type"] in ("dir", "symlink")}, lst


TESTS = [
    test_default_create_is_debian_with_disk_mb_and_python,
    test_pip_installs_an_uploaded_wheel,
    test_200mib_file_roundtrips_byte_identical,
    test_full_disk_is_enospc_and_507_with_old_file_intact,
    test_listing_shows_the_root_disk,
]

if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("files-debian"), TESTS))
