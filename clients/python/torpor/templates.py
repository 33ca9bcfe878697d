"""Guest templates: list, build, build log.

These call the /v1/templates routes (``GET /v1/templates``,
``POST /v1/templates {name, base, packages, setup}``,
``GET /v1/templates/{name}/log``). A torpor-cp that does not have them yet
answers 404 "no such route", raised here as torpor.NotSupported.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .client import Client, path_segment


def list_templates(*, client: Optional[Client] = None) -> List[Dict[str, Any]]:
    """The templates the server knows (objects as the API returns them)."""
    c = client or Client()
    answer = c.json("GET", "/v1/templates")
    if isinstance(answer, dict) and isinstance(answer.get("templates"), list):
        return answer["templates"]
    return list(answer or [])


def build_template(name: str, base: Optional[str] = None, packages: Optional[Sequence[str]] = None,
                   setup: Optional[str] = None, *, client: Optional[Client] = None,
                   timeout: float = 1800.0) -> Any:
    """Asks the server to build template `name` from `base` with extra Debian
    `packages` and a `setup` shell script; returns the server's answer."""
    c = client or Client()
    body: Dict[str, Any] = {"name": name}
    if base is not None:
        body["base"] = base
    if packages is not None:
        body["packages"] = list(packages)
    if setup is not None:
        body["setup"] = setup
    return c.json("POST", "/v1/templates", body, timeout=timeout)


def template_log(name: str, *, client: Optional[Client] = None) -> str:
    """The build log of template `name`."""
    c = client or Client()
    _, answer = c.request("GET", f"/v1/templates/{path_segment(name)}/log")
    if answer is None:
        return ""
    if isinstance(answer, (bytes, bytearray)):
        return bytes(answer).decode(errors="replace")
    if isinstance(answer, dict) and isinstance(answer.get("log"), str):
        return answer["log"]
    return str(answer)
