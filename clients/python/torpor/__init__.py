"""Torpor Python SDK: sandboxes that pause to disk when idle.

    from torpor import Sandbox
    with Sandbox.create(memory_mb=128) as sbx:
        print(sbx.exec("uname -a").stdout)

Connection settings come from arguments or TORPOR_URL / TORPOR_API_KEY.
Errors are torpor.TorporError subclasses with .code (the API's error code)
and .status (HTTP status).
"""

from .client import Client
from .errors import (AgentError, ConnectionFailed, FileChanged, InsufficientStorage, InvalidRequest, InvalidState,
                     NotFound, NotSupported, ServerError, TooLarge, TorporError, Unauthorized)
from .sandbox import STATUSES, ExecResult, Files, Sandbox
from .templates import build_template, delete_template, get_template, list_templates, template_log, wait_template

__version__ = "0.1.0"

__all__ = [
    "AgentError", "Client", "ConnectionFailed", "ExecResult", "FileChanged", "Files", "InsufficientStorage",
    "InvalidRequest", "InvalidState",
    "NotFound", "NotSupported", "STATUSES", "Sandbox", "ServerError", "TooLarge", "TorporError", "Unauthorized",
    "build_template", "delete_template", "get_template", "list_templates", "template_log", "wait_template",
    "__version__",
]
