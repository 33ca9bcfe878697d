#!/usr/bin/env python3
"""docs/openapi.yaml itself (no stack): OpenAPI 3.1, every $ref resolves,
every schema is valid JSON Schema 2020-12, every object schema is strict
(additionalProperties: false, or a typed map), every operation has an
operationId and no `default` response (so an undescribed status always fails
the e2e check), and every error response carries the error schema. Also that
the checker rejects what it must (unknown status, wrong error code, extra
field), so the e2e validation cannot silently pass everything. And that
torpor-cp's route table (`torpor-cp routes`) and the spec's paths agree both
ways: no route the spec lacks, no spec operation no route serves."""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openapi_check  # noqa: E402
from openapi_check import OpenAPIChecker, SpecViolation  # noqa: E402

SPEC = OpenAPIChecker()


def walk(node, path="#"):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}/{i}")


def test_version_and_refs():
    assert SPEC.spec["openapi"].startswith("3.1."), SPEC.spec["openapi"]
    for where, node in walk(SPEC.spec):
        if isinstance(node, dict) and "$ref" in node:
            try:
                SPEC._deref({"$ref": node["$ref"]})
            except (KeyError, ValueError) as e:
                raise AssertionError(f"{where}: $ref {node['$ref']} does not resolve ({e})")


def test_object_schemas_are_strict():
    for name, schema in SPEC.spec["components"]["schemas"].items():
        SPEC._validator(schema)  # raises on an invalid schema
        for where, node in walk(schema, f"#/components/schemas/{name}"):
            if isinstance(node, dict) and node.get("type") == "object":
                ap = node.get("additionalProperties")
                assert ap is False or isinstance(ap, dict), f"{where}: object without additionalProperties: false"


def test_operations_are_complete():
    for template, item in SPEC.spec["paths"].items():
        for method in openapi_check.METHODS:
            op = item.get(method)
            if op is None:
                continue
            where = f"{method.upper()} {template}"
            assert op.get("operationId"), f"{where}: no operationId"
            assert "default" not in op["responses"], f"{where}: a default response hides undescribed statuses"
            for status, resp in op["responses"].items():
                resp = SPEC._deref(resp)
                if int(status) >= 400:
                    schema = resp["content"]["application/json"]["schema"]
                    assert "Error" in str(schema), f"{where} {status}: not the error schema"
            if template.startswith("/v1/") and op.get("security") != []:
                assert "401" in op["responses"], f"{where}: every /v1 route with a key can answer 401"


def rejects(*args):
    try:
        SPEC.check(*args)
    except SpecViolation:
        return True
    return False


def test_checker_rejects_what_the_spec_does_not_describe():
    sb = {"id": "sb-0123456789abcdef", "status": "running", "template": "minimal", "vcpus": 1, "disk_mb": 4096,
          "memory_mb": 128, "timeout_sec": 0, "host_id": "default",
          "created_at": "2026-11-29T14:18:20.458745Z", "started_at": None, "last_active_at": None,
          "last_updated": "2026-11-29T14:18:20.458745Z",
          "network": {"egress": "allow", "allow": [], "deny": []}, "auto_resume": False}
    SPEC.check("GET", "/v1/sandboxes/sb-0123456789abcdef", 200, "application/json", sb)
    assert rejects("GET", "/v1/sandboxes/sb-0123456789abcdef", 200, "application/json", dict(sb, extra=1))
    assert rejects("GET", "/v1/sandboxes/sb-0123456789abcdef", 200, "application/json", dict(sb, status="asleep"))
    assert rejects("GET", "/v1/sandboxes/sb-0123456789abcdef", 201, "application/json", sb)
    assert rejects("POST", "/v1/sandboxes/sb-0123456789abcdef/ping", 200, "application/json", sb)
    err = {"error": {"code": "not_found", "message": "sandbox x not found"}}
    SPEC.check("GET", "/v1/sandboxes/sb-0123456789abcdef", 404, "application/json", err)
    assert rejects("GET", "/v1/sandboxes/sb-0123456789abcdef", 409, "application/json", err)
    assert rejects("GET", "/v1/sandboxes/sb-0123456789abcdef", 404, "text/plain", b"not found")
    SPEC.check("GET", "/v1/nothing", 404, "application/json", {"error": {"code": "not_found", "message": "no such route"}})
    assert rejects("GET", "/v1/nothing", 200, "application/json", [])
    SPEC.check("PUT", "/v1/sandboxes", 405, "application/json",
               {"error": {"code": "method_not_allowed", "message": "method not allowed"}})
    assert rejects("PUT", "/v1/sandboxes", 404, "application/json", err)


def route_table():
    """torpor-cp's route table as [(METHOD or "*", pattern)], from `torpor-cp
    routes` (the binary of $TORPOR_BUILD_DIR, default <source>/build)."""
    source = os.environ.get("TORPOR_SOURCE_DIR",
                            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    cp = os.path.join(os.environ.get("TORPOR_BUILD_DIR", os.path.join(source, "build")), "controlplane", "torpor-cp")
    env = {k: v for k, v in os.environ.items() if k != "TORPOR_DATABASE_URL"}  # it needs none
    out = subprocess.run([cp, "routes"], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, f"torpor-cp routes: exit {out.returncode}: {out.stderr}"
    rows = [tuple(line.split(" ", 1)) for line in out.stdout.splitlines()]
    assert len(rows) > 10 and all(len(r) == 2 for r in rows), out.stdout
    return rows


def spec_path_regex(pattern):
    """A route pattern as a regex over spec path templates: "{id}" is one
    spec parameter segment ({id}, {name}, ...), a final "*" one or more."""
    out = ""
    for seg in pattern.split("/")[1:]:
        if seg == "*":
            out += r"(/\{[^/{}]+\})+"
        elif seg == "{id}":
            out += r"/\{[^/{}]+\}"
        else:
            out += "/" + re.escape(seg)
    return re.compile("^" + (out or "/") + "$")


def route_spec_mismatches(rows, paths):
    """What differs between route table rows and the spec's paths: a row no
    spec operation describes, or a spec operation no row serves."""
    problems = []
    served = set()  # (spec template, method) some row serves
    for method, pattern in rows:
        rx = spec_path_regex(pattern)
        templates = [t for t in paths if rx.match(t)]
        ops = [(t, m.upper()) for t in templates for m in openapi_check.METHODS if m in paths[t]]
        mine = [(t, m) for t, m in ops if method in ("*", m)]
        if not mine:
            problems.append(f"route {method} {pattern} is not in docs/openapi.yaml")
        served.update(mine)
    for t, item in paths.items():
        for m in openapi_check.METHODS:
            if m in item and (t, m.upper()) not in served:
                problems.append(f"spec operation {m.upper()} {t} is served by no route of torpor-cp")
    return problems


def test_route_table_and_spec_paths_agree():
    problems = route_spec_mismatches(route_table(), SPEC.spec["paths"])
    assert not problems, "; ".join(problems)


def test_route_comparison_catches_a_missing_row_or_path():
    rows = route_table()
    paths = SPEC.spec["paths"]
    assert not route_spec_mismatches(rows, paths)
    no_pause = [r for r in rows if r[1] != "/v1/sandboxes/{id}/pause"]
    assert route_spec_mismatches(no_pause, paths) == [
        "spec operation POST /v1/sandboxes/{id}/pause is served by no route of torpor-cp"]
    no_hosts = {t: i for t, i in paths.items() if t != "/v1/hosts"}
    assert route_spec_mismatches(rows, no_hosts) == ["route GET /v1/hosts is not in docs/openapi.yaml"]
    wrong_method = [("PUT", p) if p == "/v1/hosts" else (m, p) for m, p in rows]
    assert len(route_spec_mismatches(wrong_method, paths)) == 2


def main():
    tests = [test_version_and_refs, test_object_schemas_are_strict, test_operations_are_complete,
             test_checker_rejects_what_the_spec_does_not_describe, test_route_table_and_spec_paths_agree,
             test_route_comparison_catches_a_missing_row_or_path]
    failed = 0
    for t in tests:
        try:
            t()
            print(f"ok   {t.__name__}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {t.__name__}: {e}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
