"""Checks REST responses against docs/openapi.yaml (the contract).

Contract:
  checker = OpenAPIChecker(spec_path)     # or default_checker()
  checker.check(method, path, status, content_type, body)
raises SpecViolation (an AssertionError) when the response is not one the
spec describes:
  - the path (query ignored) matches a path template whose path parameters
    fit their schemas, and the method is one of its operations; otherwise
    the response must be the spec's `x-unknown-route` (no template matches)
    or `x-method-not-allowed` (template matches, method does not);
  - the operation lists the status (no `default` responses are used);
  - a response without content has an empty body; one with content has a
    Content-Type among the declared media types, and a JSON body valid
    against that media type's schema (JSON Schema 2020-12, $refs resolved
    within the spec).
body is what test/e2e/harness.py's Stack.request returns: parsed JSON for
JSON answers, bytes otherwise, None when the body is empty.

Needs python3-yaml and python3-jsonschema (>= 4.0, for draft 2020-12).
"""

import copy
import os
import re

import jsonschema
import yaml

SPEC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "docs", "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class SpecViolation(AssertionError):
    pass


class OpenAPIChecker:
    def __init__(self, spec_path=SPEC_PATH):
        with open(spec_path) as f:
            self.spec = yaml.safe_load(f)
        self.components = self.spec.get("components", {})
        self._validators = {}
        self.routes = []  # (regex, template, path item, [(name, validator)])
        for template, item in self.spec["paths"].items():
            params = {}
            for p in item.get("parameters", []):
                p = self._deref(p)
                if p["in"] == "path":
                    params[p["name"]] = p.get("schema", {"type": "string"})
            names = re.findall(r"\{([^}/]+)\}", template)
            regex = "^" + re.sub(r"\\\{[^}/]+\\\}", "([^/]+)", re.escape(template)) + "$"
            self.routes.append((re.compile(regex), template, item,
                                [(n, self._validator(params.get(n, {"type": "string"}))) for n in names]))

    # ---- helpers ---------------------------------------------------------
    def _deref(self, obj):
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj and len(obj) == 1:
            ref = obj["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"only local $refs are supported: {ref}")
            obj = self.spec
            for part in ref[2:].split("/"):
                obj = obj[part.replace("~1", "/").replace("~0", "~")]
            seen += 1
            if seen > 20:
                raise ValueError(f"$ref loop at {ref}")
        return obj

    def _validator(self, schema):
        key = repr(schema)
        v = self._validators.get(key)
        if v is None:
            # The schema is checked with the spec's components beside it, so
            # "#/components/schemas/X" resolves against this root.
            root = copy.deepcopy(schema)
            if isinstance(root, dict):
                root = dict(root)
                root["components"] = self.components
            jsonschema.Draft202012Validator.check_schema(root)
            v = jsonschema.Draft202012Validator(root)
            self._validators[key] = v
        return v

    def _match(self, path):
        for regex, template, item, params in self.routes:
            m = regex.match(path)
            if not m:
                continue
            if all(v.is_valid(val) for (name, v), val in zip(params, m.groups())):
                return template, item
        return None, None

    # ---- the check -------------------------------------------------------
    def check(self, method, path, status, content_type, body):
        path = path.split("?", 1)[0]
        where = f"{method} {path} -> {status}"
        template, item = self._match(path)
        if template is None:
            self._check_response(where + " (no route in the spec)", self._deref(self.spec["x-unknown-route"]),
                                 content_type, body)
            if status != 404:
                raise SpecViolation(f"{where}: path matches no route of the spec, so the answer must be 404")
            return
        op = item.get(method.lower())
        if op is None:
            if status != 405:
                raise SpecViolation(f"{where}: the spec has no {method} on {template}; expected 405")
            self._check_response(where, self._deref(self.spec["x-method-not-allowed"]), content_type, body)
            return
        responses = op.get("responses", {})
        resp = responses.get(str(status))
        if resp is None:
            raise SpecViolation(f"{where}: status {status} is not in the spec for {method.upper()} {template} "
                                f"(it lists {', '.join(sorted(responses))})")
        self._check_response(f"{where} ({method.upper()} {template})", self._deref(resp), content_type, body)

    def _check_response(self, where, resp, content_type, body):
        content = resp.get("content")
        if not content:
            if body not in (None, b"", ""):
                raise SpecViolation(f"{where}: the spec declares no body, got {body!r:.200}")
            return
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if body is None:
            # Raw bytes may be empty (an empty file); a JSON body may not.
            if media in content and not _is_json(media):
                return
            raise SpecViolation(f"{where}: the spec declares a body ({', '.join(content)}), got none")
        if media not in content:
            raise SpecViolation(f"{where}: Content-Type {content_type!r} is not one the spec declares "
                                f"({', '.join(content)})")
        schema = content[media].get("schema")
        if schema is None:
            return
        if _is_json(media):
            errors = sorted(self._validator(schema).iter_errors(body), key=lambda e: list(e.path))
            if errors:
                details = "; ".join(f"at {'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
                                    for e in errors[:5])
                raise SpecViolation(f"{where}: body does not match the spec: {details}; body: {body!r:.300}")
        elif not isinstance(body, (bytes, str)):
            raise SpecViolation(f"{where}: expected raw {media} bytes, got {type(body).__name__}")


def _is_json(media):
    return media == "application/json" or media.endswith("+json")


_default = None


def default_checker():
    """The checker for the repository's docs/openapi.yaml, loaded once."""
    global _default
    if _default is None:
        _default = OpenAPIChecker()
    return _default
