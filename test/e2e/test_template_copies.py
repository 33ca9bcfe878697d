#!/usr/bin/env python3
"""A custom template built once and copied byte-identical to another host
(issue 8, docs/templates.md "Copies"). Two agents on loopback with their own
image dirs: the stack's ("default") builds `debian` + jq; a host added
afterwards (h2) gets the image from the control plane's copier, under the
same image name with the same digest, without a request; with "default"
drained, a sandbox of the template is placed on h2 and has jq, its root disk
on exactly that digest; paused, it moves back to the builder and resumes
with its disk; GET /v1/templates still shows one status; DELETE removes the
copy from h2 too.

Needs the `debian` image (ctest fixture image.debian); the jq image is the
one test_templates builds (cached by recipe), so a second run builds
nothing."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Component, Stack, run_tests, wait_until  # noqa: E402
import test_hosts as th  # noqa: E402
from test_templates import BUILD_TIMEOUT, get_template, image_id, wait_template  # noqa: E402

ctx = th.ctx


def start_agent_with_own_images(s, name):
    """An agent with its own state dir and its own image dir (only the
    built-in images, linked), so a custom template reaches it only by a copy."""
    state = os.path.join(s.tmp, f"state-{name}")
    images = os.path.join(s.tmp, f"images-{name}")
    os.makedirs(state)
    os.makedirs(images)
    for builtin in ("minimal", "debian"):
        os.symlink(os.path.realpath(os.path.join(s.image_dir, builtin)), os.path.join(images, builtin))
    s.other_state_dirs.append(state)
    argv = [s.agent_bin, "--listen", "127.0.0.1:0", "--state-dir", state, "--image-dir", images,
            "--accel", os.environ.get("TORPOR_ACCEL", "auto"), "--reaper-interval", str(s.reaper_interval),
            "--metrics-addr", "off"]
    comp = Component(f"torpor-agent-{name}", argv, os.path.join(s.tmp, f"agent-{name}.log"))
    s.extra.append(comp)
    comp.start()
    m = comp.wait_log(r"event=agent_ready\b[^\n]*\bport=(\d+)", 120, what=f"{name} agent_ready")
    return comp, int(m.group(1)), images


def test_template_built_on_one_host(s):
    ctx["admin"] = th.cp_cli(s, "keys", "create", "--team", "ops", "--admin").strip().splitlines()[-1]
    st, t = s.request("POST", "/v1/templates", {"name": "with-jq", "packages": ["jq"]})
    assert st == 202, (st, t)
    t = wait_template(s, "with-jq", BUILD_TIMEOUT)
    assert t["status"] == "ready" and re.fullmatch(r"[0-9a-f]{64}", t["digest"] or ""), t
    ctx["digest"], ctx["image"] = t["digest"], image_id(s, "with-jq")
    rows = s.sql(f"SELECT host_id, builder, status, digest FROM template_hosts WHERE template_id = '{ctx['image']}'")
    assert rows == [["default", "t", "ready", ctx["digest"]]], rows


def test_a_host_added_later_gets_a_verified_copy(s):
    comp, port, images = start_agent_with_own_images(s, "h2")
    ctx["h2_images"], ctx["h2_log"] = images, os.path.join(s.tmp, "agent-h2.log")
    th.cp_cli(s, "hosts", "add", "--id", "h2", "--addr", f"127.0.0.1:{port}")
    t0 = time.monotonic()

    def copied():
        rows = s.sql(f"SELECT status, digest FROM template_hosts WHERE template_id = '{ctx['image']}' "
                     "AND host_id = 'h2'")
        return rows and rows[0][0] == "ready" and rows[0]
    row = wait_until(copied, 180, interval=0.5, what="the copy on h2 ready")
    elapsed = time.monotonic() - t0
    assert row[1] == ctx["digest"], row
    link = os.path.join(images, ctx["image"])
    with open(os.path.join(link, "rootfs.sha256")) as f:
        assert f.read().strip() == ctx["digest"]
    # The bytes themselves, not just the label.
    import hashlib
    h = hashlib.sha256()
    with open(os.path.join(link, "rootfs.img"), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    assert h.hexdigest() == ctx["digest"]
    log = open(os.path.join(s.tmp, "cp.log")).read()
    m = re.search(rf"event=template_copied template_id={ctx['image']} from=default to=h2 digest=\w+ "
                  r"bytes=(\d+) holes=(\d+) chunks=(\d+) duration_ms=(\d+)", log)
    assert m, "no template_copied event in the control plane's log"
    data, holes, chunks, ms = (int(x) for x in m.groups())
    print(f"  copy of {ctx['image']} to h2: {ms} ms, {data >> 20} MiB of data + {holes >> 20} MiB of holes "
          f"in {chunks} chunks (ready seen after {elapsed:.1f} s)")
    # One status for the template, as before.
    t = get_template(s, "with-jq")
    assert t["status"] == "ready" and t["digest"] == ctx["digest"], t


def test_with_the_builder_drained_a_sandbox_lands_on_the_copy(s):
    th.cp_cli(s, "hosts", "drain", "--id", "default")
    sb = s.create({"template": "with-jq", "memory_mb": 128})
    ctx["sb"] = sb["id"]
    assert sb["host_id"] == "h2" and sb["status"] == "running", sb
    r = s.exec(sb["id"], "echo '{\"a\": [1, 2]}' | jq -c '.a | length'")
    assert r["exit_code"] == 0 and r["stdout"] == "2\n", r
    log = open(ctx["h2_log"]).read()
    m = re.search(rf"event=create_done sandbox_id={sb['id']} template={ctx['image']} .*base_digest=(\w+)", log)
    assert m and m.group(1) == ctx["digest"], m and m.group(0)
    th.cp_cli(s, "hosts", "undrain", "--id", "default")


def test_a_paused_sandbox_of_the_template_moves_back_to_the_builder(s):
    sid = ctx["sb"]
    r = s.exec(sid, "echo kept > /root/on-disk && sync")
    assert r["exit_code"] == 0, r
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/pause")
    assert st == 200 and body["status"] == "paused", (st, body)
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/move", {"host_id": "default"}, key=ctx["admin"])
    assert st == 200 and body["host_id"] == "default", (st, body)
    st, body = s.request("POST", f"/v1/sandboxes/{sid}/resume")
    assert st == 200 and body["status"] == "running", (st, body)
    r = s.exec(sid, "cat /root/on-disk && jq --version")
    assert r["exit_code"] == 0 and r["stdout"].startswith("kept\njq-"), r
    s.destroy(sid)


def test_delete_removes_the_copy_too(s):
    st, body = s.request("DELETE", "/v1/templates/with-jq")
    assert st == 204, (st, body)
    assert not os.path.lexists(os.path.join(ctx["h2_images"], ctx["image"])), "h2 kept the copy"
    assert not os.path.lexists(os.path.join(s.image_dir, ctx["image"])), "the builder kept it"
    assert s.sql(f"SELECT count(*) FROM template_hosts WHERE template_id = '{ctx['image']}'") == [["0"]]


if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("tplcopy", reconcile_interval=1.0, reaper_interval=1), [
        test_template_built_on_one_host,
        test_a_host_added_later_gets_a_verified_copy,
        test_with_the_builder_drained_a_sandbox_lands_on_the_copy,
        test_a_paused_sandbox_of_the_template_moves_back_to_the_builder,
        test_delete_removes_the_copy_too,
    ]))
