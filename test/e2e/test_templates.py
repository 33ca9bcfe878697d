#!/usr/bin/env python3
"""Templates API over REST (issue 8), real stack and real builds: a template
built from `debian` + `jq` reaches `ready` and a sandbox of it has jq; a
package apt cannot find ends in `error` with apt's message in the log and
changes nothing else; a setup script runs inside a VM of the new image (not
on the host) and what it writes is in every sandbox of the template, a
failing one ends in `error` with its output in the log; names are per team;
400/403/404/409 cases; DELETE removes the template and its image name on the
host.

Needs the `debian` image (ctest fixture image.debian). The jq image is cached
by its recipe in the image cache (TORPOR_IMAGE_CACHE), so only the first run
on a machine builds it (~40 s here)."""

import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Stack, expect_error, run_tests, wait_until  # noqa: E402

BUILD_TIMEOUT = float(os.environ.get("TORPOR_TEMPLATE_BUILD_WAIT", "900"))
ctx = {}


def get_template(s, name, key=None):
    st, body = s.request("GET", f"/v1/templates/{name}", **({"key": key} if key else {}))
    assert st == 200, f"GET template {name}: {st} {body}"
    return body


def wait_template(s, name, timeout=BUILD_TIMEOUT, key=None):
    def done():
        t = get_template(s, name, key)
        return t if t["status"] != "building" else None
    return wait_until(done, timeout, interval=1, what=f"template {name} leaves building")


def image_id(s, name):
    rows = s.sql(f"SELECT id FROM templates WHERE name = '{name}'")
    assert len(rows) == 1, rows
    return rows[0][0]


def test_public_templates_are_listed(s):
    st, body = s.request("GET", "/v1/templates")
    assert st == 200, (st, body)
    by_name = {t["name"]: t for t in body}
    for name in ("minimal", "debian"):
        assert name in by_name, f"{name} not listed: {body}"
        assert by_name[name]["public"] is True and by_name[name]["status"] == "ready", by_name[name]
    assert re.fullmatch(r"[0-9a-f]{64}", by_name["debian"]["digest"] or ""), by_name["debian"]
    assert by_name["debian"]["size_bytes"] > 0, by_name["debian"]
    assert get_template(s, "minimal")["public"] is True


def test_unknown_template_is_404(s):
    expect_error(s.request("GET", "/v1/templates/no-such-template"), 404, "not_found", "GET unknown")
    expect_error(s.request("GET", "/v1/templates/no-such-template/log"), 404, "not_found", "log of unknown")
    expect_error(s.request("DELETE", "/v1/templates/no-such-template"), 404, "not_found", "DELETE unknown")


def test_builtin_templates_cannot_be_deleted(s):
    for name in ("debian", "minimal"):
        expect_error(s.request("DELETE", f"/v1/templates/{name}"), 403, "forbidden", f"DELETE {name}")
    assert get_template(s, "debian")["status"] == "ready"


def test_invalid_build_requests_are_400_and_store_nothing(s):
    cases = [
        ("no name", {"packages": ["jq"]}),
        ("bad name", {"name": "Bad_Name"}),
        ("reserved debian", {"name": "debian"}),
        ("reserved minimal", {"name": "minimal"}),
        ("reserved prefix", {"name": "tpl-0123456789abcdef"}),
        ("other base", {"name": "x1", "base": "ubuntu"}),
        ("package not a string", {"name": "x2", "packages": [5]}),
        ("package name syntax", {"name": "x3", "packages": ["jq;rm -rf /"]}),
        ("package upper case", {"name": "x4", "packages": ["JQ"]}),
        ("too many packages", {"name": "x5", "packages": [f"p{i}" for i in range(65)]}),
        ("duplicate package", {"name": "x6", "packages": ["jq", "jq"]}),
        ("setup too large", {"name": "x7", "setup": "#" * (64 * 1024 + 1)}),
        ("setup not a string", {"name": "x9", "setup": ["echo"]}),
        ("unknown field", {"name": "x8", "extra": 1}),
    ]
    for what, body in cases:
        expect_error(s.request("POST", "/v1/templates", body), 400, "invalid_request", what)
    st, listed = s.request("GET", "/v1/templates")
    assert st == 200 and all(t["public"] for t in listed), listed
    assert s.sql("SELECT count(*) FROM templates") == [["0"]]


def test_unknown_sandbox_template_stays_400(s):
    expect_error(s.request("POST", "/v1/sandboxes", {"template": "no-such-template"}), 400, "invalid_request",
                 "create with unknown template")
    expect_error(s.request("POST", "/v1/sandboxes", {"template": "tpl-0123456789abcdef"}), 400,
                 "invalid_request", "create with an image name")


def test_bad_package_ends_in_error_with_apt_message(s):
    st, t = s.request("POST", "/v1/templates", {"name": "broken", "packages": ["no-such-package-xyz"]})
    assert st == 202 and t["status"] == "building" and t["packages"] == ["no-such-package-xyz"], (st, t)
    t = wait_template(s, "broken", timeout=300)
    assert t["status"] == "error", t
    assert "no-such-package-xyz" in t["error"], t
    st, log = s.request("GET", "/v1/templates/broken/log")
    assert st == 200 and isinstance(log, bytes), (st, log)
    assert b"Unable to locate package no-such-package-xyz" in log, log[-2000:]
    ctx["broken_image"] = image_id(s, "broken")
    assert not os.path.lexists(os.path.join(s.image_dir, ctx["broken_image"])), "a failed build left an image"
    # A failed template cannot be used.
    expect_error(s.request("POST", "/v1/sandboxes", {"template": "broken", "memory_mb": 128}), 409,
                 "template_not_ready", "create from a failed template")


def test_failed_template_can_be_deleted(s):
    assert s.request("DELETE", "/v1/templates/broken")[0] == 204
    expect_error(s.request("GET", "/v1/templates/broken"), 404, "not_found", "GET deleted")
    assert not os.path.exists(os.path.join(s.state_dir, "template-builds", ctx["broken_image"]))


def test_template_with_a_package_reaches_ready(s):
    st, t = s.request("POST", "/v1/templates", {"name": "with-jq", "packages": ["jq"]})
    assert st == 202 and t["status"] == "building" and not t["public"], (st, t)
    expect_error(s.request("POST", "/v1/templates", {"name": "with-jq", "packages": ["file"]}), 409,
                 "already_exists", "same name twice in one team")
    t = wait_template(s, "with-jq")
    assert t["status"] == "ready", t
    assert re.fullmatch(r"[0-9a-f]{64}", t["digest"] or ""), t
    assert t["size_bytes"] > 100 * 1024 * 1024, t
    st, log = s.request("GET", "/v1/templates/with-jq/log")
    assert st == 200 and b"build-rootfs:" in log, log[-2000:]
    ctx["jq_image"] = image_id(s, "with-jq")
    assert os.path.isfile(os.path.join(s.image_dir, ctx["jq_image"], "rootfs.img"))
    names = [x["name"] for x in s.request("GET", "/v1/templates")[1]]
    assert "with-jq" in names, names


SETUP = """set -e
echo "setup runs as $(id -u) on $(hostname)"
echo built-by-setup > /etc/torpor-setup-marker
test -f /.torpor-not-on-host || touch /.torpor-setup-was-in-a-vm
"""


def test_setup_script_runs_in_a_vm(s):
    assert not os.path.exists("/etc/torpor-setup-marker"), "the host has the marker already"
    st, t = s.request("POST", "/v1/templates", {"name": "with-setup", "setup": SETUP})
    assert st == 202 and t["setup"] is True and t["status"] == "building", (st, t)
    t = wait_template(s, "with-setup")
    st, log = s.request("GET", "/v1/templates/with-setup/log")
    assert t["status"] == "ready", (t, log[-3000:])
    assert b"setup runs as 0 on torpor" in log, log[-3000:]
    assert not os.path.exists("/etc/torpor-setup-marker"), "the setup script ran on the host"
    assert not os.path.exists("/.torpor-setup-was-in-a-vm"), "the setup script ran on the host"
    debian = get_template(s, "debian")
    assert re.fullmatch(r"[0-9a-f]{64}", t["digest"] or "") and t["digest"] != debian["digest"], (t, debian)
    img = image_id(s, "with-setup")
    assert not os.path.lexists(os.path.join(s.image_dir, img + ".base")), "the pre-setup image is still linked"
    sb = s.create({"template": "with-setup", "memory_mb": 128})
    r = s.exec(sb["id"], "cat /etc/torpor-setup-marker; ls /.torpor-setup-was-in-a-vm; ls /tmp/torpor-setup.sh")
    assert r["stdout"].startswith("built-by-setup\n/.torpor-setup-was-in-a-vm\n"), r
    assert r["exit_code"] != 0, "the setup script itself stayed in the image"
    s.destroy(sb["id"])
    assert s.request("DELETE", "/v1/templates/with-setup")[0] == 204
    assert not os.path.lexists(os.path.join(s.image_dir, img))
    assert not os.path.exists(os.path.join(s.state_dir, "template-builds", img))


def test_failing_setup_script_ends_in_error(s):
    st, t = s.request("POST", "/v1/templates",
                      {"name": "bad-setup", "setup": "echo about to fail; echo oops >&2; exit 3"})
    assert st == 202, (st, t)
    t = wait_template(s, "bad-setup")
    assert t["status"] == "error" and "exited with code 3" in t["error"], t
    st, log = s.request("GET", "/v1/templates/bad-setup/log")
    assert b"about to fail" in log and b"oops" in log, log[-3000:]
    img = image_id(s, "bad-setup")
    assert not os.path.lexists(os.path.join(s.image_dir, img)), "a failed setup left an image"
    assert not os.path.lexists(os.path.join(s.image_dir, img + ".base"))
    # The setup VM is gone.
    assert not os.path.exists(os.path.join(s.state_dir, "sandboxes", img + ".setup")), "setup VM left behind"
    expect_error(s.request("POST", "/v1/sandboxes", {"template": "bad-setup"}), 409, "template_not_ready",
                 "create from a failed setup")
    assert s.request("DELETE", "/v1/templates/bad-setup")[0] == 204


def mounts_under(path):
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(path.rstrip("/") + "/")]


def remove_cache(path):
    """Never through a mount a killed mmdebstrap may have left (its tree has
    a bind mount of the host's /dev/shm)."""
    for m in sorted(mounts_under(path), reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", path], capture_output=True)


def test_agent_killed_mid_build_leaves_error_and_nothing_running(s):
    """Last: the agent is restarted with an empty image cache, so the build
    really runs (mmdebstrap) when the agent is SIGKILLed."""
    cache = tempfile.mkdtemp(prefix="torpor-e2e-cache-", dir="/var/tmp")
    try:
        s.agent.env = dict(os.environ, TORPOR_IMAGE_CACHE=cache)
        s.restart_agent()
        st, t = s.request("POST", "/v1/templates", {"name": "interrupted", "packages": ["file"]})
        assert st == 202, (st, t)
        img = image_id(s, "interrupted")

        def build_processes(pattern=cache):
            out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
            return out.stdout.split()
        # Killed while mmdebstrap runs: the recipe's bash dies with the agent,
        # mmdebstrap (its child) is killed by the next start.
        wait_until(lambda: build_processes("mmdebstrap .*" + cache), 120, interval=0.5, what="mmdebstrap runs")
        # While it builds: not usable, not deletable.
        assert get_template(s, "interrupted")["status"] == "building"
        expect_error(s.request("POST", "/v1/sandboxes", {"template": "interrupted"}), 409, "template_not_ready",
                     "create from a template still building")
        expect_error(s.request("DELETE", "/v1/templates/interrupted"), 409, "template_not_ready",
                     "DELETE while building")
        time.sleep(1)
        s.restart_agent()
        wait_until(lambda: not build_processes(), 30, what="no process of the killed build is left")
        assert not mounts_under(cache), f"the killed build left mounts: {mounts_under(cache)}"
        log = s.agent.log_text(since_start=True)
        assert "event=template_build_orphans_killed" in log and "event=template_build_interrupted" in log, log
        t = get_template(s, "interrupted")
        assert t["status"] == "error" and "interrupted" in t["error"], t
        assert not os.path.lexists(os.path.join(s.image_dir, img)), "an interrupted build left an image"
        assert not [d for d in os.listdir(cache) if not d.startswith(".lock") and ".tmp." not in d], \
            os.listdir(cache)
        assert s.request("DELETE", "/v1/templates/interrupted")[0] == 204
    finally:
        remove_cache(cache)


def test_templates_are_per_team(s):
    expect_error(s.request("GET", "/v1/templates/with-jq", key=s.key_b), 404, "not_found", "other team's template")
    names = [x["name"] for x in s.request("GET", "/v1/templates", key=s.key_b)[1]]
    assert "with-jq" not in names, names
    expect_error(s.request("POST", "/v1/sandboxes", {"template": "with-jq"}, key=s.key_b), 400, "invalid_request",
                 "other team's template in create")
    expect_error(s.request("POST", "/v1/sandboxes", {"template": ctx["jq_image"]}, key=s.key_b), 400,
                 "invalid_request", "other team's image name in create")


def test_sandbox_of_the_template_has_the_package(s):
    sb = s.create({"template": "with-jq", "memory_mb": 128})
    assert sb["template"] == "with-jq" and sb["status"] == "running", sb
    ctx["sb"] = sb["id"]
    r = s.exec(sb["id"], "echo '{\"a\": [1, 2]}' | jq -c '.a | length'; jq --version")
    assert r["exit_code"] == 0 and r["stdout"].startswith("2\njq-"), r
    # The sandbox's root disk sits on exactly the template's image.
    log = open(os.path.join(s.tmp, "agent.log")).read()
    m = re.search(rf"event=create_done sandbox_id={sb['id']} template={ctx['jq_image']} .*base_digest=(\w+)", log)
    assert m and m.group(1) == get_template(s, "with-jq")["digest"], (m and m.group(0), ctx["jq_image"])


def test_template_in_use_cannot_be_deleted(s):
    expect_error(s.request("DELETE", "/v1/templates/with-jq"), 409, "template_in_use", "DELETE while used")
    assert get_template(s, "with-jq")["status"] == "ready"
    s.destroy(ctx["sb"])


def test_delete_removes_the_template(s):
    assert s.request("DELETE", "/v1/templates/with-jq")[0] == 204
    expect_error(s.request("GET", "/v1/templates/with-jq"), 404, "not_found", "GET deleted")
    assert not os.path.lexists(os.path.join(s.image_dir, ctx["jq_image"])), "image link left behind"
    expect_error(s.request("POST", "/v1/sandboxes", {"template": "with-jq"}), 400, "invalid_request",
                 "create from a deleted template")


if __name__ == "__main__":
    sys.exit(run_tests(lambda: Stack("templates"), [
        test_public_templates_are_listed,
        test_unknown_template_is_404,
        test_builtin_templates_cannot_be_deleted,
        test_invalid_build_requests_are_400_and_store_nothing,
        test_unknown_sandbox_template_stays_400,
        test_bad_package_ends_in_error_with_apt_message,
        test_failed_template_can_be_deleted,
        test_template_with_a_package_reaches_ready,
        test_templates_are_per_team,
        test_sandbox_of_the_template_has_the_package,
        test_template_in_use_cannot_be_deleted,
        test_delete_removes_the_template,
        test_setup_script_runs_in_a_vm,
        test_failing_setup_script_ends_in_error,
        test_agent_killed_mid_build_leaves_error_and_nothing_running,
    ]))
