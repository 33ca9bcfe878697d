#!/usr/bin/env python3
"""Mutual TLS between the real binaries (issue 2): with --tls-* on both
sides the REST API works through the mTLS gRPC hop; a control plane without
a client certificate, or with one from another CA, is refused by the agent;
a control plane that trusts another CA refuses the agent. Refused calls
answer 502 agent_error and change nothing."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SOURCE_DIR, Stack, expect_error, run_tests  # noqa: E402

GEN_CERTS = os.path.join(SOURCE_DIR, "scripts", "gen-certs")
ctx = {}


def gen_certs(out):
    r = subprocess.run(["bash", GEN_CERTS, out], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"scripts/gen-certs {out} failed: {r.stderr.strip()}")
    return {n: os.path.join(out, n) for n in
            ("ca.pem", "agent.pem", "agent.key", "cp.pem", "cp.key")}


def tls_args(cert, key, ca):
    return ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca]


def test_rest_works_over_mtls(s):
    sb = s.create({"template": "minimal", "memory_mb": 128})
    ctx["id"] = sb["id"]
    assert s.exec(sb["id"], "echo over-mtls")["stdout"] == "over-mtls\n"
    st, _ = s.request("POST", f"/v1/sandboxes/{sb['id']}/ping")
    assert st == 204, st


def _refused(s, name, args):
    port = s.start_extra_cp(name, args)
    sid = ctx["id"]
    expect_error(s.request("POST", f"/v1/sandboxes/{sid}/ping", port=port), 502, "agent_error",
                 f"ping through {name}")
    # Nothing changed: the good control plane still sees a running, usable sandbox.
    assert s.status_of(sid) == "running"
    assert s.exec(sid, "echo still")["stdout"] == "still\n"


def test_cp_without_client_certificate_is_refused(s):
    _refused(s, "cp-plaintext", [])


def test_cp_with_certificate_of_another_ca_is_refused(s):
    o = ctx["other"]
    _refused(s, "cp-other-ca", tls_args(o["cp.pem"], o["cp.key"], ctx["good"]["ca.pem"]))


def test_cp_refuses_agent_of_another_ca(s):
    g, o = ctx["good"], ctx["other"]
    _refused(s, "cp-distrusts-agent", tls_args(g["cp.pem"], g["cp.key"], o["ca.pem"]))


def test_destroy(s):
    s.destroy(ctx["id"])


TESTS = [
    test_rest_works_over_mtls,
    test_cp_without_client_certificate_is_refused,
    test_cp_with_certificate_of_another_ca_is_refused,
    test_cp_refuses_agent_of_another_ca,
    test_destroy,
]


def main():
    certs_dir = tempfile.mkdtemp(prefix="torpor-e2e-certs-")
    try:
        ctx["good"] = g = gen_certs(os.path.join(certs_dir, "good"))
        ctx["other"] = gen_certs(os.path.join(certs_dir, "other"))
        return run_tests(lambda: Stack("tls",
                                       # The agent serves only a client named torpor-cp.
                                       agent_args=tls_args(g["agent.pem"], g["agent.key"], g["ca.pem"])
                                       + ["--tls-client-name", "torpor-cp"],
                                       cp_args=tls_args(g["cp.pem"], g["cp.key"], g["ca.pem"])),
                         TESTS)
    finally:
        shutil.rmtree(certs_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
