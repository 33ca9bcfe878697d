"""Guest templates: list, build, get, wait, build log, delete.

These call the /v1/templates routes of torpor-cp (docs/api.md "Templates"):
``GET /v1/templates``, ``POST /v1/templates {name, base, packages, setup}``
(asynchronous: 202 with status ``building``), ``GET /v1/templates/{name}``,
``GET /v1/templates/{name}/log`` (text) and ``DELETE /v1/templates/{name}``.
A template's ``status`` goes ``building`` -> ``ready`` | ``error`` (final);
wait_template() polls it until it is final.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from .client import Client, path_segment
from .errors import TorporError

FINAL_STATUSES = ("ready", "error")


def list_templates(*, client: Optional[Client] = None) -> List[Dict[str, Any]]:
    """The team's templates (by name), then the public ones (Template
    objects as the API returns them: name, status, base, packages, public,
    setup, size_bytes, digest, error, created_at)."""
    c = client or Client()
    answer = c.json("GET", "/v1/templates")
    if isinstance(answer, dict) and isinstance(answer.get("templates"), list):
        return answer["templates"]
    return list(answer or [])


def build_template(name: str, base: Optional[str] = None, packages: Optional[Sequence[str]] = None,
                   setup: Optional[str] = None, *, client: Optional[Client] = None,
                   timeout: float = 60.0) -> Dict[str, Any]:
    """Starts building template `name` from `base` (default ``debian``) with
    extra Debian `packages` and a `setup` bash script run inside a VM of the
    new image. Returns at once with the Template (status ``building``);
    wait_template() waits for the result. Only the fields given are sent.
    Raises TorporError ``already_exists`` (409) for a name the team has,
    InvalidRequest for bad input."""
    c = client or Client()
    body: Dict[str, Any] = {"name": name}
    if base is not None:
        body["base"] = base
    if packages is not None:
        body["packages"] = list(packages)
    if setup is not None:
        body["setup"] = setup
    return _template(c.json("POST", "/v1/templates", body, timeout=timeout), "POST /v1/templates")


def get_template(name: str, *, client: Optional[Client] = None) -> Dict[str, Any]:
    """The Template `name` as it is now (NotFound if the team has none of
    that name and it is not public). Reading a template that is building
    settles its status from the build host's answer."""
    c = client or Client()
    return _template(c.json("GET", f"/v1/templates/{path_segment(name)}"), "GET /v1/templates/{name}")


def template_log(name: str, *, client: Optional[Client] = None) -> str:
    """The build log of template `name` so far (its last 256 KiB; complete
    once the template is ready or error). NotFound for public templates."""
    c = client or Client()
    _, answer = c.request("GET", f"/v1/templates/{path_segment(name)}/log")
    if answer is None:
        return ""
    if isinstance(answer, (bytes, bytearray)):
        return bytes(answer).decode(errors="replace")
    if isinstance(answer, dict) and isinstance(answer.get("log"), str):
        return answer["log"]
    return str(answer)


def delete_template(name: str, *, client: Optional[Client] = None) -> None:
    """Deletes the team's template `name`. Raises TorporError with code
    ``template_in_use`` (409) while a sandbox uses it, ``template_not_ready``
    (409) while it builds, ``forbidden`` (403) for a public template, and
    NotFound for a name the team has no template of."""
    c = client or Client()
    c.request("DELETE", f"/v1/templates/{path_segment(name)}", timeout=120)


def wait_template(name: str, *, client: Optional[Client] = None, timeout: Optional[float] = None,
                  interval: float = 1.0,
                  on_poll: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Polls template `name` every `interval` seconds until its status is
    ``ready`` or ``error`` and returns it (a failed build is a result, not
    an exception: look at ``status`` and ``error``). on_poll(template) is
    called after each poll, e.g. to show progress or fetch the log.
    timeout: seconds (None = no limit); TorporError ``timeout`` (status 0)
    when it runs out."""
    c = client or Client()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        t = get_template(name, client=c)
        if on_poll is not None:
            on_poll(t)
        if t.get("status") in FINAL_STATUSES:
            return t
        if deadline is not None and time.monotonic() >= deadline:
            raise TorporError("timeout", 0, f"template {name} is still {t.get('status')} after {timeout:.0f} s")
        time.sleep(interval)


def _template(answer: Any, route: str) -> Dict[str, Any]:
    if not isinstance(answer, dict) or "name" not in answer or "status" not in answer:
        raise TorporError("bad_response", 0, f"{route}: expected a Template object, got {answer!r:.200}")
    return answer
