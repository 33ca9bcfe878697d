"""Exceptions raised by the Torpor SDK.

Every failure of an API call is a TorporError carrying the API's error code
(``invalid_request``, ``unauthorized``, ``not_found``, ``method_not_allowed``,
``invalid_state``, ``too_large``, ``internal_error``, ``agent_error``,
``unavailable``), the HTTP status and the server's message. Subclasses let
callers catch the common cases by type; ``code`` and ``status`` are always set.
"""

from __future__ import annotations

from typing import Optional


class TorporError(Exception):
    """An API call failed.

    Attributes:
        code: the API's error code (``"not_found"``, ...), or a client-side
            code: ``"connection_error"`` (server unreachable), ``"bad_response"``
            (an answer that is not what the API documents), ``"not_supported"``.
        status: the HTTP status (0 when no answer was received).
        message: the server's (or the client's) explanation.
    """

    def __init__(self, code: str, status: int, message: str):
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message


class InvalidRequest(TorporError):
    """400 invalid_request: bad input (nothing was changed)."""


class Unauthorized(TorporError):
    """401 unauthorized: the API key is missing or unknown."""


class NotFound(TorporError):
    """404 not_found: no such sandbox (or another team's), or a missing file."""


class InvalidState(TorporError):
    """409 invalid_state: the sandbox is not in a state the operation needs."""


class TooLarge(TorporError):
    """413 too_large: request body or file content over the limit."""


class InsufficientStorage(TorporError):
    """507 insufficient_storage: the sandbox's disk is full (the old file is
    intact)."""


class FileChanged(TorporError):
    """409 file_changed: the file was replaced while it was being read."""


class AgentError(TorporError):
    """502 agent_error: the host agent is unreachable, too slow or failed."""


class ServerError(TorporError):
    """500 internal_error or 503 unavailable."""


class NotSupported(TorporError):
    """The server has no such route (an older torpor-cp): the feature is not
    available there. code is ``"not_supported"``, status 404."""


class ConnectionFailed(TorporError):
    """The server could not be reached (code ``"connection_error"``, status 0)."""


_BY_CODE = {
    "invalid_request": InvalidRequest,
    "unauthorized": Unauthorized,
    "not_found": NotFound,
    "invalid_state": InvalidState,
    "too_large": TooLarge,
    "insufficient_storage": InsufficientStorage,
    "file_changed": FileChanged,
    "agent_error": AgentError,
    "internal_error": ServerError,
    "unavailable": ServerError,
}


def error_from_response(status: int, body: Optional[object], route: str) -> TorporError:
    """The exception for an error answer (status >= 400) of ``route``."""
    code, message = None, None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        message = body["error"].get("message")
    if not isinstance(code, str) or not code:
        code = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 409: "invalid_state",
                413: "too_large", 507: "insufficient_storage", 502: "agent_error", 503: "unavailable"}.get(status, "http_error")
    if not isinstance(message, str) or not message:
        message = f"HTTP {status} from {route}"
    if status == 404 and code == "not_found" and message == "no such route":
        return NotSupported("not_supported", 404,
                            f"the server has no route {route} (a torpor-cp without this feature)")
    return _BY_CODE.get(code, TorporError)(code, status, message)
